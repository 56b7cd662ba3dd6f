"""Preprocessing cache: every case is decoded once, into the network's grid, memory-mappable.

Layout of one cache directory (``<cache_root>/<dataset>-<split>-<key>/``)::

    images.npy         float32 (S, C, h, w)  every slice of every case on the network grid
                                            (the geometry's crop + resize), case after case
    labels.npy         uint8   (S, h, w)     {0, 1} on the network grid (training targets)
    native_labels.npy  uint8   (B,)          each case's native (D, H, W) label, bit-packed
    index.npz          case_offsets (N+1,) slice rows; native_shape (N, 3) (D, H, W);
                       native_offsets (N+1,) bytes of native_labels; spacing (N, 3) mm along
                       (D, H, W); has_label (N,); patient (N,); case_number (N,);
                       label_voxels (S,) lesion voxels of every network-grid slice;
                       intensity (N, C, 2) each channel's normalisation (offset, scale), NaN if
                       the dataset did not record it
    meta.json          format, channels, settings (incl. the geometry), case names, sources

Slice ``s`` of case ``n`` is row ``case_offsets[n] + s``, so a training stack (a slice and its
context) is one contiguous read, and every index is a numpy array (DataLoader workers copy
Python objects on read). The key hashes the settings (the geometry included) and each source
file's path, size and mtime from ``stat()`` alone; headers are read only when building
(:mod:`datamodules.cache_build`). This module is the read side and the cache's vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.nifti import PredictionTarget

# 5: cases in the closest RAS axis order; 4: + per-case intensity offset/scale; 3: network-grid
# slices, …
CACHE_FORMAT_VERSION = 5


@dataclass(frozen=True)
class CacheItem:
    """One case as a reader lists it, before anything is decoded.

    Attributes:
        name: Unique case name, e.g. ``"TRAINING/case_7"``.
        patient: Integer patient id used for grouped splits.
        case_number: Case number shown in reports.
        sources: Files the case is decoded from; ``sources[0]`` is the reference image whose
            header defines the case's grid (and is copied into written predictions).
        prediction: Where a prediction of the case is written (default: ``<name>.nii.gz``
            with ``/`` replaced by ``_``).
    """

    name: str
    patient: int
    case_number: int
    sources: tuple[Path, ...]
    prediction: PredictionTarget | None = None

    def __post_init__(self) -> None:
        if self.prediction is None:
            default = PredictionTarget(self.name.replace("/", "_") + ".nii.gz")
            object.__setattr__(self, "prediction", default)


@dataclass(frozen=True)
class DecodedCase:
    """One decoded case in the source array order.

    Attributes:
        image: ``(C, X, Y, Z)`` float32, normalised.
        label: ``(X, Y, Z)`` uint8 {0, 1} on the image's grid, or ``None``.
        zooms: Voxel size ``(dx, dy, dz)`` in mm.
        intensity: ``(C, 2)`` each channel's normalisation ``(offset, scale)``, raw = value ·
            scale + offset (the way back, for display), or ``None``.
    """

    image: np.ndarray
    label: np.ndarray | None
    zooms: tuple[float, float, float]
    intensity: np.ndarray | None = None


LoadFn = Callable[[CacheItem], DecodedCase]


def cache_key(items: Sequence[CacheItem], settings: dict[str, Any]) -> str:
    """Hash of the settings and every source file's path, size and mtime (``stat()`` only)."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"version": CACHE_FORMAT_VERSION, **settings}, sort_keys=True).encode()
    )
    for item in items:
        for path in item.sources:
            stat = path.stat()
            digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class SliceCache:
    """Read side of a cache directory; arrays are memory-mapped lazily in each process.

    Args:
        directory: A folder written by :func:`build_slice_cache`.

    Raises:
        FileNotFoundError: If the folder is not a complete cache.
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
            self.native_shape = index["native_shape"]
            self.native_offsets = index["native_offsets"]
            self.spacing = index["spacing"]
            self.has_label = index["has_label"]
            self.label_voxels = index["label_voxels"]
            self.patient = index["patient"]
            self.case_number = index["case_number"]
            self.intensity = index["intensity"]
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each worker instead of being pickled.
        return {**self.__dict__, "_arrays": {}}

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            mapped = np.load(self.directory / f"{name}.npy", mmap_mode="r")
            # A plain ndarray view of the mapping: slicing it skips np.memmap's per-slice
            # bookkeeping, a few µs of each training sample.
            self._arrays[name] = np.asarray(mapped)
        return self._arrays[name]

    @property
    def images(self) -> np.ndarray:
        """``(S, C, h, w)`` float32 network-grid slices (memory-mapped)."""
        return self._array("images")

    @property
    def labels(self) -> np.ndarray:
        """``(S, h, w)`` uint8 network-grid labels (memory-mapped)."""
        return self._array("labels")

    def native_label(self, case: int) -> np.ndarray:
        """The case's label on its native ``(D, H, W)`` grid (zeros if it has none)."""
        shape = tuple(int(n) for n in self.native_shape[case])
        if not self.has_label[case]:
            return np.zeros(shape, dtype=np.uint8)
        start, stop = self.native_offsets[case], self.native_offsets[case + 1]
        bits = np.unpackbits(self._array("native_labels")[start:stop], count=int(np.prod(shape)))
        return bits.reshape(shape)

    @property
    def channels(self) -> list[str]:
        return list(self.meta["channels"])

    @property
    def case_names(self) -> list[str]:
        return list(self.meta["cases"])

    def __len__(self) -> int:
        return len(self.case_offsets) - 1

    def case_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The case index of every row."""
        return np.searchsorted(self.case_offsets, rows, side="right") - 1

    def slice_rows(self, cases: np.ndarray) -> np.ndarray:
        """Rows of ``images``/``labels`` that belong to the given case indices, in order."""
        starts, stops = self.case_offsets[cases], self.case_offsets[cases + 1]
        pieces = [np.arange(a, b, dtype=np.int64) for a, b in zip(starts, stops)]
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
