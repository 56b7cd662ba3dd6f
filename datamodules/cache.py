"""Preprocessing cache: every source volume is decoded once into memory-mappable slice arrays.

Layout of one cache directory (``<cache_root>/<dataset>-<key>/``)::

    images.npy   float32 (S, C, H, W)   all axial slices of all cases, case after case
    labels.npy   uint8   (S, H, W)      {0, 1}; zeros for cases without a label
    index.npz    case_offsets (N+1,), spacing (N, 3) as (dz, dh, dw) mm, has_label (N,),
                 patient (N,) int, case_number (N,) int, label_voxels (S,) int (lesion voxels
                 of every slice, for foreground-aware sampling)
    meta.json    channels, settings, case names and source files (read once, never per item)

``S`` is the total number of slices, slice ``s`` of case ``n`` is row ``case_offsets[n] + s``:
a training sample is one contiguous read, and all indexes are numpy arrays (no per-item Python
objects for DataLoader workers to copy on read). The key hashes the source files (path, size,
mtime) and the preprocessing settings, so changing either builds a new cache. A build writes
into a temporary sibling folder that is renamed into place only when complete: an interrupted
or failed build leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2  # 2: per-slice lesion voxel counts in index.npz


@dataclass(frozen=True)
class CacheItem:
    """What the cache needs to know about one case before decoding it.

    Attributes:
        name: Unique case name, e.g. ``"TRAINING/case_7"``.
        patient: Integer patient id used for grouped splits.
        case_number: Case number shown in reports.
        shape: Spatial shape ``(H, W, D)`` of the case (read from a header, not decoded).
        sources: Files the case is decoded from (fingerprinted for the key).
    """

    name: str
    patient: int
    case_number: int
    shape: tuple[int, int, int]
    sources: tuple[Path, ...]


# (image (C, H, W, D) float32, label (H, W, D) uint8 or None, spacing (dh, dw, dd) mm)
LoadFn = Callable[[CacheItem], tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]]


def cache_key(items: Sequence[CacheItem], settings: dict[str, Any]) -> str:
    """Hash of the source files (resolved path, size, mtime) and the preprocessing settings."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"version": CACHE_FORMAT_VERSION, **settings}, sort_keys=True).encode()
    )
    for item in items:
        for path in item.sources:
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def build_slice_cache(
    directory: Path,
    items: Sequence[CacheItem],
    load: LoadFn,
    channels: Sequence[str],
    settings: dict[str, Any],
) -> Path:
    """Decode every item once and write the cache at ``directory`` (atomically).

    Args:
        directory: Final cache folder; returned unchanged if it already exists.
        items: Cases in a fixed order.
        load: Decodes one item (see :data:`LoadFn`).
        channels: Channel names, in the order ``load`` stacks them.
        settings: Preprocessing settings, recorded in ``meta.json``.

    Returns:
        ``directory``.

    Raises:
        Whatever ``load`` raises for a bad file; the partial build is deleted first.
    """
    if (directory / "meta.json").is_file():
        return directory
    if not items:
        raise ValueError(f"Nothing to cache for {directory}: the case list is empty.")
    heights = {item.shape[:2] for item in items}
    if len(heights) != 1:
        raise ValueError(
            f"All cases must share one in-plane shape to be cached together; found {heights}."
        )
    height, width = heights.pop()
    depths = np.array([item.shape[2] for item in items], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(depths)])
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        shape = (int(offsets[-1]), len(channels), height, width)
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.float32, shape)
        labels = np.lib.format.open_memmap(
            tmp / "labels.npy", "w+", np.uint8, shape[:1] + shape[2:]
        )
        spacing = np.zeros((len(items), 3), dtype=np.float64)
        has_label = np.zeros(len(items), dtype=bool)
        label_voxels = np.zeros(int(offsets[-1]), dtype=np.int64)
        for n, item in enumerate(tqdm(items, desc=f"Caching {directory.name}", unit="case")):
            image, label, (dh, dw, dd) = load(item)
            if image.shape != (len(channels), height, width, depths[n]):
                raise ValueError(
                    f"{item.name}: decoded image has shape {image.shape}, expected "
                    f"{(len(channels), height, width, int(depths[n]))} from its header."
                )
            rows = slice(offsets[n], offsets[n + 1])
            images[rows] = np.moveaxis(image, -1, 0)  # (C, H, W, D) -> (D, C, H, W)
            if label is not None:
                labels[rows] = np.moveaxis(label, -1, 0)
                label_voxels[rows] = np.count_nonzero(label, axis=(0, 1))
                has_label[n] = True
            spacing[n] = (dd, dh, dw)
        images.flush()
        labels.flush()
        del images, labels
        np.savez(
            tmp / "index.npz",
            case_offsets=offsets,
            spacing=spacing,
            has_label=has_label,
            label_voxels=label_voxels,
            patient=np.array([item.patient for item in items], dtype=np.int64),
            case_number=np.array([item.case_number for item in items], dtype=np.int64),
        )
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "channels": list(channels),
            "settings": settings,
            "cases": [item.name for item in items],
            "sources": [[str(p) for p in item.sources] for item in items],
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            tmp.rename(directory)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Wrote cache %s (%d cases, %d slices)", directory, len(items), offsets[-1])
    return directory


class SliceCache:
    """Read side of a cache directory; arrays are memory-mapped lazily in each process.

    Args:
        directory: A folder written by :func:`build_slice_cache`.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not (self.directory / "meta.json").is_file():
            raise FileNotFoundError(
                f"{self.directory} is not a complete cache (no meta.json); run prepare_data first."
            )
        self.meta = json.loads((self.directory / "meta.json").read_text())
        with np.load(self.directory / "index.npz") as index:
            self.case_offsets = index["case_offsets"]
            self.spacing = index["spacing"]
            self.has_label = index["has_label"]
            self.label_voxels = index["label_voxels"]  # (S,) lesion voxels of every slice
            self.patient = index["patient"]
            self.case_number = index["case_number"]
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each worker instead of being pickled.
        return {**self.__dict__, "_images": None, "_labels": None}

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.directory / "images.npy", mmap_mode="r")
        return self._images

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.load(self.directory / "labels.npy", mmap_mode="r")
        return self._labels

    @property
    def channels(self) -> list[str]:
        return self.meta["channels"]

    @property
    def case_names(self) -> list[str]:
        return self.meta["cases"]

    def __len__(self) -> int:
        return len(self.case_offsets) - 1

    def case_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The case index of every row."""
        return np.searchsorted(self.case_offsets, rows, side="right") - 1

    def slice_rows(self, cases: np.ndarray) -> np.ndarray:
        """Rows of ``images``/``labels`` that belong to the given case indices, in order."""
        starts, stops = self.case_offsets[cases], self.case_offsets[cases + 1]
        return np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]).astype(np.int64)
