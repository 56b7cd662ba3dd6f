"""Datasets over a :class:`~datamodules.cache.SliceCache`: slice stacks (2D) or volumes (3D) for
training, whole cases for validation, test and prediction. None decodes a NIfTI file or
resamples anything: the cache already holds the network grid, the
:class:`~datamodules.geometry.SliceGeometry` stacks the context slices and the
:class:`~datamodules.geometry.VolumeGeometry` pads volumes in depth.

A training dataset says which of its samples hold lesion voxels (``has_lesion``), so the
DataModule can oversample them whatever a sample is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import Dataset, default_collate

from datamodules.cache import CacheItem, SliceCache
from datamodules.geometry import SliceGeometry, VolumeGeometry

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
        defer_augmentation: Leave ``transform`` to the caller and return the sample's seed as
            ``"seed"`` (the DataModule then augments the batch on its device).
        inputs: How many leading cache channels are network input; the rest are image targets,
            returned as ``"target"`` (transformed with the input). ``None``: all are input.
    """

    def __init__(
        self,
        cache: SliceCache,
        rows: np.ndarray,
        geometry: SliceGeometry,
        transform: Transform | None = None,
        defer_augmentation: bool = False,
        inputs: int | None = None,
    ) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.geometry = geometry
        # Case bounds of every row, so the context never crosses into another case.
        case = cache.case_of_rows(self.rows)
        self.first = cache.case_offsets[case]
        self.last = cache.case_offsets[case + 1]
        self.transform = None if defer_augmentation else transform
        self.defer_augmentation = defer_augmentation
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.rows)

    def has_lesion(self) -> np.ndarray:
        """``(N,)`` bool: the samples whose slice has lesion voxels."""
        return np.asarray(self.cache.label_voxels[self.rows] > 0)

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
        if self.defer_augmentation:  # split after the augmentation, on the device
            sample["seed"] = -1 if seed is None else seed
            return sample
        return split_targets(augment(sample, self.transform, seed), self.inputs)


class VolumeDataset(Dataset):
    """One training volume per item: ``{"image": (C, D, h, w) float32, "label": (1, D, h, w) uint8}``.

    A case's network-grid slices are one contiguous read of the cache, stacked along depth and
    padded by the :class:`~datamodules.geometry.VolumeGeometry` to its ``depth``. A case deeper
    than ``depth`` gives a random window of ``depth`` slices (drawn from the sample's seed).

    Args:
        cache: The preprocessed cache.
        cases: ``(M,)`` case indices of this split.
        geometry: The cache's in-plane geometry with the depth policy.
        transform: Dict transform applied last (augmentation); the label stays uint8.
        defer_augmentation, inputs: As :class:`SliceDataset`.
    """

    def __init__(
        self,
        cache: SliceCache,
        cases: np.ndarray,
        geometry: VolumeGeometry,
        transform: Transform | None = None,
        defer_augmentation: bool = False,
        inputs: int | None = None,
    ) -> None:
        self.cache = cache
        self.cases = np.asarray(cases, dtype=np.int64)
        self.geometry = geometry
        self.transform = None if defer_augmentation else transform
        self.defer_augmentation = defer_augmentation
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.cases)

    def has_lesion(self) -> np.ndarray:
        """``(M,)`` bool: the cases with lesion voxels."""
        running = np.concatenate([[0], np.cumsum(self.cache.label_voxels, dtype=np.int64)])
        offsets = self.cache.case_offsets
        return np.asarray(running[offsets[self.cases + 1]] - running[offsets[self.cases]] > 0)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """The volume at ``key``: a position, or ``(position, seed)`` (see :class:`SliceDataset`)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        case = int(self.cases[index])
        first, last = int(self.cache.case_offsets[case]), int(self.cache.case_offsets[case + 1])
        depth = self.geometry.depth
        if depth is not None and last - first > depth:
            generator = np.random.default_rng(seed)
            first = int(generator.integers(first, last - depth + 1))
            last = first + depth
        slices = torch.from_numpy(np.array(self.cache.images[first:last]))  # (D, C, h, w)
        labels = torch.from_numpy(np.array(self.cache.labels[first:last]))  # (D, h, w)
        sample: dict[str, Any] = {
            "image": self.geometry.pad_depth(self.geometry.volume(slices)).contiguous(),
            "label": self.geometry.pad_depth(labels[None]).contiguous(),
        }
        if self.defer_augmentation:  # split after the augmentation, on the device
            sample["seed"] = -1 if seed is None else seed
            return sample
        return split_targets(augment(sample, self.transform, seed), self.inputs)


class VolumeCollate:
    """Collate volumes of different depths: each is zero-padded (centred, as the geometry pads)
    to the batch's deepest; batch size 1 or a fixed-depth geometry never needs it."""

    def __init__(self, geometry: VolumeGeometry) -> None:
        self.geometry = geometry

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        deepest = max(int(sample["image"].shape[-3]) for sample in batch)
        padded = [
            {**s, **{k: self.geometry.pad_depth(s[k], deepest) for k in ("image", "label")}}
            for s in batch
        ]
        return default_collate(padded)


def split_targets(
    sample: dict[str, Any], inputs: int | None, batched: bool = False
) -> dict[str, Any]:
    """Move the image channels from ``inputs`` on to ``"target"``: channels first in a sample,
    second in a batch (``batched``)."""
    image = sample["image"]
    channels = 1 if batched else 0
    if inputs is None or image.shape[channels] <= inputs:
        return sample
    return {
        **sample,
        "image": image.narrow(channels, 0, inputs),
        "target": image.narrow(channels, inputs, image.shape[channels] - inputs),
    }


def augment(
    sample: dict[str, Any], transform: Transform | None, seed: int | None
) -> dict[str, Any]:
    """Apply the augmentation to ``{"image", "label"}`` (seeded when a seed is given; other keys
    are passed through); keep a uint8 label."""
    if transform is None:
        return sample
    if seed is not None and isinstance(transform, Randomizable):
        transform.set_random_state(seed=seed)
    augmented = transform({"image": sample["image"], "label": sample["label"]})
    return {
        **sample,
        "image": torch.as_tensor(augmented["image"]).as_subclass(torch.Tensor),
        "label": torch.as_tensor(augmented["label"]).as_subclass(torch.Tensor).to(torch.uint8),
    }


class CaseDataset(Dataset):
    """One whole case per item, for per-case evaluation and prediction.

    A 2D module segments the slices one by one; a 3D module stacks them into a volume with the
    item's :class:`~datamodules.geometry.VolumeGeometry`. Each item describes itself, so that no callback needs the DataModule:

    ========================  =============================================================
    ``image``                 ``(N, K·C, h, w)`` float32, the case's slices on the network
                              grid with their context (N = D, or the held-out slices)
    ``target``                ``(N, T, h, w)`` float32 image targets (seed 002's DWI) on the
                              network grid, or ``None``
    ``label``                 ``(N, H, W)`` uint8 on the native grid, or ``None``
    ``native_shape``          ``(N, H, W)``
    ``spacing``               ``(3,)`` float64 mm along ``(D, H, W)``
    ``intensity``             ``(C + T, 2)`` float64 each channel's normalisation (offset,
                              scale): raw = value · scale + offset (NaN if not recorded)
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
        inputs: How many leading channels are network input; the rest are returned as
            ``"target"`` ``(N, T, h, w)`` (``None`` when the cache holds no more).
    """

    def __init__(
        self,
        cache: SliceCache,
        cases: np.ndarray,
        geometry: SliceGeometry,
        items: Sequence[CacheItem],
        rows: np.ndarray | None = None,
        inputs: int | None = None,
    ) -> None:
        self.cache = cache
        self.cases = np.asarray(cases, dtype=np.int64)
        self.geometry = geometry
        self.items = list(items)
        self.rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        self.inputs = inputs

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
        target = None
        if self.inputs is not None and image.shape[1] > self.inputs:
            image, target = image[:, : self.inputs], image[:, self.inputs :]
        has_label = bool(self.cache.has_label[case])
        label = self.cache.native_label(case)[targets] if has_label else None
        _, height, width = (int(n) for n in self.cache.native_shape[case])
        item = self.items[case]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "target": None if target is None else torch.from_numpy(np.ascontiguousarray(target)),
            "label": None if label is None else torch.from_numpy(np.ascontiguousarray(label)),
            "native_shape": (len(targets), height, width),
            "spacing": torch.from_numpy(self.cache.spacing[case].copy()),
            "intensity": torch.from_numpy(self.cache.intensity[case].copy()),
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
