"""Datasets over a :class:`~datamodules.cache.SliceCache`: slice stacks for training, whole cases
for validation, test and prediction. Neither decodes a NIfTI file nor resamples anything: the
cache already holds the network grid, and the :class:`~datamodules.geometry.SliceGeometry`
stacks the context slices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import Dataset

from datamodules.cache import CacheItem, SliceCache
from datamodules.geometry import SliceGeometry

Transform = Callable[..., Mapping[Any, Any]]


class SliceDataset(Dataset):
    """One training sample per item: ``{"image": (K·C, h, w) float32, "label": (1, h, w) uint8}``.

    A sample is one contiguous read of the slice and its context rows; the label is the
    network-grid label of the slice itself.

    Args:
        cache: The preprocessed cache.
        rows: ``(N,)`` int64 cache rows (slices) of this split.
        geometry: The cache's geometry (its ``context`` is stacked here).
        transform: Dict transform applied last (augmentation); the label stays uint8.
    """

    def __init__(
        self,
        cache: SliceCache,
        rows: np.ndarray,
        geometry: SliceGeometry,
        transform: Transform | None = None,
    ) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.geometry = geometry
        # Case bounds of every row, so the context never crosses into another case.
        case = cache.case_of_rows(self.rows)
        self.first = cache.case_offsets[case]
        self.last = cache.case_offsets[case + 1]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """The sample at ``key``: a position, or ``(position, seed)`` from
        :class:`~datamodules.samplers.EpochSampler`, whose seed fixes the sample's augmentation
        whichever worker process draws it."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        row = int(self.rows[index])
        images, labels = self.cache.images, self.cache.labels
        image = self.geometry.sample(images, row, int(self.first[index]), int(self.last[index]))
        label = np.array(labels[row : row + 1])  # (1, h, w)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "label": torch.from_numpy(label),
        }
        if self.transform is not None:
            if seed is not None and isinstance(self.transform, Randomizable):
                self.transform.set_random_state(seed=seed)
            augmented = self.transform(sample)
            sample = {
                "image": torch.as_tensor(augmented["image"]).as_subclass(torch.Tensor),
                "label": torch.as_tensor(augmented["label"])
                .as_subclass(torch.Tensor)
                .to(torch.uint8),
            }
        return sample


class CaseDataset(Dataset):
    """One whole case per item, for per-case evaluation and prediction of 2D networks.

    Each item describes itself, so that no callback needs the DataModule:

    ========================  =============================================================
    ``image``                 ``(N, K·C, h, w)`` float32, the case's slices on the network
                              grid with their context (N = D, or the held-out slices)
    ``label``                 ``(N, H, W)`` uint8 on the native grid, or ``None``
    ``native_shape``          ``(N, H, W)``
    ``spacing``               ``(3,)`` float64 mm along ``(D, H, W)``
    ``geometry``              the :class:`~datamodules.geometry.SliceGeometry`
    ``case``, ``case_index``  name and index in the cache
    ``source``                the reference image (its header is copied into predictions)
    ``prediction``            where the case's prediction goes (:class:`PredictionTarget`)
    ========================  =============================================================

    Args:
        cache: The preprocessed cache.
        cases: ``(M,)`` case indices of this split.
        geometry: The cache's geometry.
        items: The cache's cases, in cache order (names, sources, prediction targets).
        rows: Optional cache rows to evaluate (a slice-level split); ``None``: every slice.
    """

    def __init__(
        self,
        cache: SliceCache,
        cases: np.ndarray,
        geometry: SliceGeometry,
        items: Sequence[CacheItem],
        rows: np.ndarray | None = None,
    ) -> None:
        self.cache = cache
        self.cases = np.asarray(cases, dtype=np.int64)
        self.geometry = geometry
        self.items = list(items)
        self.rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = int(self.cases[index])
        first, last = int(self.cache.case_offsets[case]), int(self.cache.case_offsets[case + 1])
        targets = np.arange(last - first)
        if self.rows is not None:
            held_out = self.rows[
                np.searchsorted(self.rows, first) : np.searchsorted(self.rows, last)
            ]
            targets = held_out - first
        image = self.geometry.stack(self.cache.images[first:last], targets)  # (N, K*C, h, w)
        has_label = bool(self.cache.has_label[case])
        label = self.cache.native_label(case)[targets] if has_label else None
        _, height, width = (int(n) for n in self.cache.native_shape[case])
        item = self.items[case]
        return {
            "image": torch.from_numpy(image),
            "label": None if label is None else torch.from_numpy(np.ascontiguousarray(label)),
            "native_shape": (len(targets), height, width),
            "spacing": torch.from_numpy(self.cache.spacing[case].copy()),
            "geometry": self.geometry,
            "case": item.name,
            "case_index": case,
            "source": str(item.sources[0]),
            "prediction": item.prediction,
        }


def single_case_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate for :class:`CaseDataset` loaders with ``batch_size=1`` (cases differ in depth)."""
    (case,) = batch
    return case
