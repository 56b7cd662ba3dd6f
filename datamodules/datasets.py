"""Datasets over a :class:`~datamodules.cache.SliceCache`: 2D slices for training, whole cases
for validation, test and prediction. Neither ever decodes a NIfTI file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.cache import SliceCache


def _resize(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` to ``size × size`` (no-op when ``size`` is None)."""
    if size is None or image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)  # fmt: skip


class SliceDataset(Dataset):
    """One axial slice per item: ``{"image": (C, h, w) float32, "label": (1, h, w) float32}``.

    Args:
        cache: The preprocessed cache.
        rows: ``(N,)`` int64 cache rows (slices) of this split.
        image_size: Resize slices to ``image_size × image_size`` (labels by nearest neighbour);
            ``None`` keeps the native grid.
        transform: Dict transform applied last (augmentation).
    """

    def __init__(
        self,
        cache: SliceCache,
        rows: np.ndarray,
        image_size: int | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.image_size = image_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image = torch.from_numpy(np.array(self.cache.images[row]))  # (C, H, W)
        label = torch.from_numpy(self.cache.labels[row].astype(np.float32))[None]  # (1, H, W)
        if self.image_size is not None:
            image = _resize(image[None], self.image_size)[0]
            label = F.interpolate(label[None], size=image.shape[-2:], mode="nearest-exact")[0]
        sample = {"image": image, "label": label}
        if self.transform is not None:
            sample = self.transform(sample)
            sample = {
                key: torch.as_tensor(value).as_subclass(torch.Tensor)
                for key, value in sample.items()
            }
        return sample


class CaseDataset(Dataset):
    """One whole case per item, for per-case 3D evaluation of 2D networks.

    Items: ``image`` (D, C, h, w) float32 (slices as a batch, resized like training);
    ``label`` (D, H, W) uint8 on the native grid; ``spacing`` (3,) float64 mm for the
    (D, H, W) axes; ``case_index`` int (row of the cache index); ``has_label`` bool.

    Args:
        cache: The preprocessed cache.
        cases: ``(N,)`` case indices of this split.
        image_size: As for :class:`SliceDataset`; predictions are compared on the native grid.
    """

    def __init__(self, cache: SliceCache, cases: np.ndarray, image_size: int | None = None) -> None:
        self.cache = cache
        self.cases = np.asarray(cases, dtype=np.int64)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        rows = slice(self.cache.case_offsets[case], self.cache.case_offsets[case + 1])
        image = torch.from_numpy(np.array(self.cache.images[rows]))  # (D, C, H, W)
        return {
            "image": _resize(image, self.image_size),
            "label": torch.from_numpy(np.array(self.cache.labels[rows])),  # (D, H, W)
            "spacing": torch.from_numpy(self.cache.spacing[case].copy()),
            "case_index": int(case),
            "has_label": bool(self.cache.has_label[case]),
        }


def single_case_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate for :class:`CaseDataset` loaders with ``batch_size=1`` (cases differ in depth)."""
    (case,) = batch
    return case
