"""Datasets over a :class:`~datamodules.cache.SliceCache`: 2D (or 2.5D) slices for training,
whole cases for validation, test and prediction. Neither ever decodes a NIfTI file.

Both share the slice geometry: an optional ``crop`` ``(h0, h1, w0, w1)`` of the native slice,
an optional resize to ``image_size`` and an optional ``context`` of neighbouring slices stacked
as channels (D-UNet: ``(-2, -1, 0, 1)``, zero outside the case).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.cache import SliceCache

Size = int | Sequence[int] | None


def _size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _resize(image: torch.Tensor, size: tuple[int, int] | None, label: bool = False) -> torch.Tensor:
    """Resize ``(N, C, H, W)``: bilinear with antialiasing, nearest for labels."""
    if size is None or tuple(image.shape[-2:]) == size:
        return image
    if label:
        return F.interpolate(image, size=size, mode="nearest-exact")
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


class _Geometry:
    """Crop, context stacking and resize shared by the two datasets."""

    def __init__(self, cache: SliceCache, image_size: Size, crop: Sequence[int] | None,
                 context: Sequence[int]) -> None:  # fmt: skip
        self.cache = cache
        self.image_size = _size(image_size)
        self.crop = tuple(int(c) for c in crop) if crop is not None else None
        self.context = np.asarray(tuple(context), dtype=np.int64)

    def _window(self) -> tuple[slice, slice]:
        if self.crop is None:
            return slice(None), slice(None)
        h0, h1, w0, w1 = self.crop
        return slice(h0, h1), slice(w0, w1)

    def _stack(self, rows: np.ndarray, first: int, last: int) -> torch.Tensor:
        """Images of ``rows`` with their context: ``(N, C * len(context), h, w)``."""
        hs, ws = self._window()
        images = self.cache.images
        neighbours = rows[:, None] + self.context[None, :]  # (N, K)
        inside = (neighbours >= first) & (neighbours < last)
        channels = images.shape[1]
        height = len(range(*hs.indices(images.shape[2])))
        width = len(range(*ws.indices(images.shape[3])))
        out = np.zeros((len(rows), len(self.context), channels, height, width), dtype=np.float32)
        for k in range(len(self.context)):
            valid = inside[:, k]
            if valid.any():
                out[valid, k] = images[neighbours[valid, k], :, hs, ws]
        return torch.from_numpy(out.reshape(len(rows), -1, height, width))  # (N, K*C, h, w)


class SliceDataset(_Geometry, Dataset):
    """One training slice per item: ``{"image": (C, h, w) float32, "label": (1, h, w) float32}``.

    Args:
        cache: The preprocessed cache.
        rows: ``(N,)`` int64 cache rows (slices) of this split.
        image_size: Resize to this size (int or ``(h, w)``); ``None`` keeps the (cropped) grid.
        transform: Dict transform applied last (augmentation).
        crop: ``(h0, h1, w0, w1)`` window of the native slice, applied before resizing.
        context: Slice offsets stacked as channels, zero-padded at the case's ends.
    """

    def __init__(
        self,
        cache: SliceCache,
        rows: np.ndarray,
        image_size: Size = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        crop: Sequence[int] | None = None,
        context: Sequence[int] = (0,),
    ) -> None:
        super().__init__(cache, image_size, crop, context)
        self.rows = np.asarray(rows, dtype=np.int64)
        # Case bounds of every row, so the context never crosses into another case.
        case = cache.case_of_rows(self.rows)
        self.first = cache.case_offsets[case]
        self.last = cache.case_offsets[case + 1]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index : index + 1]
        image = self._stack(row, int(self.first[index]), int(self.last[index]))  # (1, C, h, w)
        hs, ws = self._window()
        label = torch.from_numpy(self.cache.labels[row[0], hs, ws].astype(np.float32))[None, None]
        image = _resize(image, self.image_size)[0]
        label = _resize(label, tuple(image.shape[-2:]), label=True)[0]
        sample = {"image": image, "label": label}
        if self.transform is not None:
            sample = self.transform(sample)
            sample = {k: torch.as_tensor(v).as_subclass(torch.Tensor) for k, v in sample.items()}
        return sample


class CaseDataset(_Geometry, Dataset):
    """One whole case per item, for per-case 3D evaluation of 2D networks.

    Items: ``image`` (D, C, h, w) float32 (slices as a batch, cropped/resized/stacked like
    training); ``label`` (D, H, W) uint8 on the native grid; ``spacing`` (3,) float64 mm for
    the (D, H, W) axes; ``crop_box`` (4,) int64 ``(h0, h1, w0, w1)`` of the native grid the
    network sees; ``case_index`` int; ``has_label`` bool.

    With ``rows`` (a slice-level split), a case is only its slices among ``rows``, stacked in
    order: ``image`` is (D', C, h, w) and ``label`` (D', H, W); the context still comes from
    the whole case.

    Args:
        cache: The preprocessed cache.
        cases: ``(N,)`` case indices of this split.
        image_size, crop, context: As for :class:`SliceDataset`.
        rows: Optional ``(S,)`` cache rows to evaluate; ``None``: every slice of each case.
    """

    def __init__(self, cache: SliceCache, cases: np.ndarray, image_size: Size = None,
                 crop: Sequence[int] | None = None, context: Sequence[int] = (0,),
                 rows: np.ndarray | None = None) -> None:  # fmt: skip
        super().__init__(cache, image_size, crop, context)
        self.cases = np.asarray(cases, dtype=np.int64)
        self.rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        first, last = int(self.cache.case_offsets[case]), int(self.cache.case_offsets[case + 1])
        rows = np.arange(first, last)
        if self.rows is not None:
            rows = self.rows[np.searchsorted(self.rows, first) : np.searchsorted(self.rows, last)]
        image = self._stack(rows, first, last)  # (D, C, h, w)
        label = np.array(self.cache.labels[rows])  # (D, H, W)
        height, width = label.shape[1:]
        box = self.crop if self.crop is not None else (0, height, 0, width)
        return {
            "image": _resize(image, self.image_size),
            "label": torch.from_numpy(label),
            "spacing": torch.from_numpy(self.cache.spacing[case].copy()),
            "crop_box": torch.tensor(box, dtype=torch.int64),
            "case_index": int(case),
            "has_label": bool(self.cache.has_label[case]),
        }


def single_case_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate for :class:`CaseDataset` loaders with ``batch_size=1`` (cases differ in depth)."""
    (case,) = batch
    return case
