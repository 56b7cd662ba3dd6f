"""The fold's training slices held on the training device, batches gathered there.

The network-grid caches of these datasets are small: ATLAS R2.0 whole at 192² is about 11 GB in
float16, ISLES 2018 at 256² under 1 GB. With ``cache_on_device: true`` the DataModule copies the
rows of the fold's training cases once to the training device (:class:`DeviceCache`), and its
loader yields only *keys*: each sample's position and augmentation seed, drawn by the same
:class:`~datamodules.samplers.EpochSampler` in the same order as the loader path. The batch is
then assembled on the device — slice stacks with their context, or volumes with their depth
window and padding, exactly as :class:`~datamodules.datasets.SliceDataset` and
:class:`~datamodules.datasets.VolumeDataset` assemble them — and augmented there in one
resampling. No worker process, no host copy of a sample.

Under DDP each process holds the whole training set, not a shard: the sampler draws a new
global permutation every epoch and each process takes every ``world_size``-th draw of it, so any
process may draw any sample (the order would otherwise depend on the number of processes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import ConfigurationError
from datamodules.cache import SliceCache
from datamodules.geometry import SliceGeometry, VolumeGeometry


def _size(count: float) -> str:
    """A byte count for a reader: ``11.52 GB``, ``310.4 MB``, ``82 KB``."""
    if count >= 1e9:
        return f"{count / 1e9:.2f} GB"
    if count >= 1e6:
        return f"{count / 1e6:.1f} MB"
    return f"{count / 1e3:.0f} KB"


class SampleKeys(Dataset):
    """The samples of a training split as keys only: ``{"position", "seed"}`` per item."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, int]:
        position, seed = key if isinstance(key, tuple) else (key, -1)
        return {"position": position, "seed": seed}


def free_bytes(device: torch.device) -> int:
    """Memory free on ``device`` (a GPU's free memory; the host's available memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    for line in open("/proc/meminfo").read().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


class DeviceCache:
    """The rows of a split's cases on a device, and the batches of their training samples.

    Args:
        cache: The split's cache.
        cases: The training cases (all their rows are copied, so the context of a slice never
            needs a row that is not there).
        geometry: The cache's geometry (context stacking, or a volume's depth policy).
        device: Where the rows go.
        dtype: The images' dtype there (the training precision's, or float16); labels are uint8.

    Raises:
        ConfigurationError: When the rows do not fit in the device's free memory.
    """

    def __init__(
        self,
        cache: SliceCache,
        cases: np.ndarray,
        geometry: SliceGeometry,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.geometry = geometry
        cases = np.asarray(cases, dtype=np.int64)
        offsets = cache.case_offsets
        lengths = offsets[cases + 1] - offsets[cases]
        # Where each case's rows start on the device, by cache case index.
        self.start = np.full(len(offsets) - 1, -1, dtype=np.int64)
        self.start[cases] = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(cases) else []
        self.offsets = offsets
        rows = cache.slice_rows(cases)
        images = cache.images
        per_row = int(np.prod(images.shape[1:])) * torch.tensor([], dtype=dtype).element_size()
        per_row += int(np.prod(cache.labels.shape[1:]))
        needed, free = len(rows) * per_row, free_bytes(device)
        if needed > 0.9 * free:
            raise ConfigurationError(
                f"The training cache does not fit on {device}: {len(rows)} slices of "
                f"{tuple(images.shape[1:])} in {str(dtype).removeprefix('torch.')} plus their "
                f"labels need {_size(needed)}, and {_size(free)} are free. Set "
                "data.init_args.cache_on_device: false (the loader then reads the cache from "
                "disk), choose a smaller image_size, or a device with more memory."
            )
        chunks, labels = [], []
        for first in range(0, len(rows), 4096):  # bounded host memory while copying
            block = rows[first : first + 4096]
            chunks.append(torch.from_numpy(np.asarray(images[block])).to(device, dtype))
            labels.append(torch.from_numpy(np.asarray(cache.labels[block])).to(device))
        self.images = torch.cat(chunks) if chunks else torch.empty(0, device=device, dtype=dtype)
        self.labels = torch.cat(labels) if labels else torch.empty(0, device=device)
        self.device = device

    def _device_row(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Device rows of cache rows, and the device rows ``[first, last)`` of their cases."""
        case = np.searchsorted(self.offsets, row, side="right") - 1
        start = self.start[case]
        return (
            start + (row - self.offsets[case]),
            start,
            start + self.offsets[case + 1] - self.offsets[case],
        )

    def slices(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Training stacks of cache rows: ``image (B, K·C, h, w)`` float32, ``label (B, 1, h, w)``
        uint8, as :class:`~datamodules.datasets.SliceDataset` makes them (zeros for context
        offsets outside the case)."""
        row, first, last = self._device_row(np.asarray(rows, dtype=np.int64))
        wanted = row[:, None] + np.asarray(self.geometry.context, dtype=np.int64)[None, :]  # (B, K)
        inside = (wanted >= first[:, None]) & (wanted < last[:, None])  # on the host: no sync
        # index_select copies whole rows (ten times faster than advanced indexing on a CPU).
        rows_of = self._on_device(np.where(inside, wanted, 0).reshape(-1))
        stacks = self.images.index_select(0, rows_of)  # (B·K, C, h, w), a new tensor
        if not inside.all():  # context beyond a case's ends: zeros, as SliceDataset gives
            stacks.index_fill_(0, self._on_device(np.flatnonzero(~inside)), 0)
        label = self.labels.index_select(0, self._on_device(row))
        image = stacks.view(len(row), -1, *stacks.shape[2:]).float()  # (B, K·C, h, w)
        return {"image": image, "label": label[:, None]}

    def _on_device(self, index: np.ndarray) -> torch.Tensor:
        """Host indices on the device, without waiting for it (the mask decisions are made on
        the host: a boolean mask on a GPU would need its count back first)."""
        return torch.as_tensor(np.ascontiguousarray(index, dtype=np.int64)).to(
            self.device, non_blocking=True
        )

    def volumes(self, cases: Sequence[int], seeds: Sequence[int]) -> dict[str, torch.Tensor]:
        """Training volumes of cases: ``image (B, C, D, h, w)`` float32, ``label (B, 1, D, h, w)``
        uint8, with :class:`~datamodules.datasets.VolumeDataset`'s depth window (drawn from the
        sample's seed), padding, and the batch padded to its deepest volume."""
        geometry = self.geometry
        assert isinstance(geometry, VolumeGeometry), "volumes need a volume geometry"
        images, labels = [], []
        for case, seed in zip(cases, seeds):
            first = int(self.offsets[case])
            last = int(self.offsets[case + 1])
            depth = geometry.depth
            if depth is not None and last - first > depth:
                generator = np.random.default_rng(None if seed < 0 else seed)
                first = int(generator.integers(first, last - depth + 1))
                last = first + depth
            start = int(self.start[case]) + first - int(self.offsets[case])
            stop = start + last - first
            images.append(geometry.pad_depth(geometry.volume(self.images[start:stop].float())))
            labels.append(geometry.pad_depth(self.labels[start:stop][None]))
        deepest = max(int(image.shape[-3]) for image in images)
        image = torch.stack([geometry.pad_depth(i, deepest) for i in images])
        label = torch.stack([geometry.pad_depth(m, deepest) for m in labels])
        return {"image": image, "label": label}


def cache_dtype(precision: Any, given: str | None) -> torch.dtype:
    """The device cache's image dtype: as given, else the training precision's (bfloat16 for
    ``bf16-*``, float16 for ``16-*``, float32 otherwise, so a full-precision run sees exactly
    the loader's values)."""
    if given is not None:
        return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[
            given
        ]
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return torch.float32
