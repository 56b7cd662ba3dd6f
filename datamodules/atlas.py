"""ATLAS (R1.1, R1.2, R2.0) T1 data for 2D and 2.5D networks, split by subject."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from datamodules.atlas_reader import check_atlas_root, read_scan, scan_atlas
from datamodules.base import LoadFn, SliceDataModule
from datamodules.cache import CacheItem
from datamodules.isles2018_reader import read_shape
from datamodules.normalization import normalize_channels

Release = Literal["R1.1", "R1.2", "R2.0"]

# Slices are served as (rows = y, cols = x), the orientation of the published h5 files
# (``transpose(2, 1, 0)`` of the NIfTI array): 233 rows × 197 columns. Crops are in that frame.
PREPROCESSING: dict[str, dict[str, Any]] = {
    # D-UNet code (papers.md §2): PIL box (10, 40, 190, 220) = rows 40:220, cols 10:190,
    # resized to 192×192; 4-slice stack [i-2, i-1, i, i+1], target slice i.
    "dunet": {"crop": (40, 220, 10, 190), "image_size": 192, "context": (-2, -1, 0, 1)},
    # VCA-Net / X-Net code (papers.md §1, datasets.md §1.6): crop [5:229, 2:194] -> 224×192,
    # no resize (the paper says "resized": crop=None, image_size=[224, 192]).
    "vcanet": {"crop": (5, 229, 2, 194), "image_size": None, "context": (0,)},
    "none": {"crop": None, "image_size": None, "context": (0,)},
}


class ATLASDataModule(SliceDataModule):
    """ATLAS T1 slices (2D or 4-slice 2.5D stacks) with per-subject K-fold splits.

    ``prepare_data`` decodes every scan once (T1 min–max scaled to [0, 1] per scan; masks
    merged with OR after ``> 0``) into the shared slice cache; a subject's sessions (R1.1 Site8
    ``t01``/``t02``) always land in the same fold. Validation and test evaluate whole scans in
    3D on the native 197×233×189 grid: predictions on the crop are resized back and are 0
    outside it.

    Args:
        data_dir: The extract root holding ``ATLAS_R1.1/``, the R1.2 standard-space folders or
            ``ATLAS_2/`` (a synthetic twin: ``lightning-data synth atlas``).
        release: ``"R1.1"``, ``"R1.2"`` or ``"R2.0"``; ``None`` detects it from the layout.
        cache_dir: Where caches go (default ``<data_dir>/../.cache/strokeseg``).
        preprocessing: Named geometry preset (``"dunet"``, ``"vcanet"``, ``"none"``); ``crop``,
            ``image_size`` and ``context`` override its parts.
        crop: ``(row0, row1, col0, col1)`` of the 233×197 slice.
        image_size: Resize the (cropped) slice to this int or ``[h, w]``.
        context: Slice offsets stacked as channels (D-UNet: ``[-2, -1, 0, 1]``).
        fold: Validation fold. ``num_folds=5, fold=0`` is D-UNet's 80/20 subject split.
        num_folds: Number of folds.
        split_seed: Seed of the subject (or slice) shuffle.
        split_unit: ``"subject"`` (default: a subject's scans never straddle folds) or
            ``"slice"``: VCA-Net's random 9:1 split of slices (with ``num_folds=10``), which
            leaks subjects into validation; it warns, and validation then scores each subject
            on its held-out slices only.
        batch_size: Training slices per batch (D-UNet: 36; VCA-Net: 8).
        num_workers: DataLoader workers.
        foreground_fraction: Share of training samples drawn from slices with lesion voxels
            (``None``: uniform over slices, as both papers do).
        augment: Random affine augmentation of training slices.
        rotate_degrees, translate_fraction, scale_range, flip_axes, random_order: The
            augmentation (defaults: the D-UNet code's Keras ``ImageDataGenerator``: rotation 20°,
            shift 0.1, zoom 0.2, horizontal flip, fixed order).
        predict_split: ``"Testing"`` (R2.0) or ``"Training"``.
    """

    dataset_name = "atlas"
    train_split = "Training"
    channel_names = ["T1"]

    def __init__(
        self,
        data_dir: str = "data/atlas",
        release: Release | None = None,
        cache_dir: str | None = None,
        preprocessing: Literal["dunet", "vcanet", "none"] = "dunet",
        crop: tuple[int, int, int, int] | None = None,
        image_size: int | tuple[int, int] | None = None,
        context: tuple[int, ...] | None = None,
        fold: int = 0,
        num_folds: int = 5,
        split_seed: int = 0,
        split_unit: Literal["subject", "slice"] = "subject",
        batch_size: int = 36,
        num_workers: int = 2,
        foreground_fraction: float | None = None,
        augment: bool = True,
        rotate_degrees: float = 20.0,
        translate_fraction: float = 0.1,
        scale_range: tuple[float, float] = (0.8, 1.2),
        flip_axes: tuple[int, ...] = (1,),
        random_order: bool = False,
        predict_split: Literal["Training", "Testing"] = "Testing",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        preset = PREPROCESSING[preprocessing]
        for key in ("crop", "image_size", "context"):
            if self.hparams[key] is None:
                self.hparams[key] = preset[key]
        self._init_paths()

    @staticmethod
    def check_data_dir(data_dir: str | Path, release: Release | None = None) -> None:
        """Fail fast, without decoding anything, if ``data_dir`` holds no ATLAS release."""
        check_atlas_root(data_dir, release)

    def _settings(self) -> dict[str, Any]:
        return {"dataset": "atlas", "intensity": "minmax", "orientation": "yxz"}

    def _items(self, split: str) -> tuple[list[CacheItem], LoadFn]:
        scans = {scan.name: scan for scan in scan_atlas(self.data_dir, self.hparams.release, split)}
        subjects = {s: i for i, s in enumerate(sorted({scan.subject for scan in scans.values()}))}
        items = []
        for number, scan in enumerate(scans.values()):
            x, y, z = read_shape(scan.t1)
            sources = (scan.t1, *scan.masks)
            items.append(CacheItem(scan.name, subjects[scan.subject], number, (y, x, z), sources))

        def load(item: CacheItem):
            t1, mask, (sx, sy, sz) = read_scan(scans[item.name])
            image = normalize_channels(t1[None], t1 > 0, "minmax")
            image = np.ascontiguousarray(np.transpose(image, (0, 2, 1, 3)))  # (1, Y, X, Z)
            label = None if mask is None else np.ascontiguousarray(np.transpose(mask, (1, 0, 2)))
            return image, label, (sy, sx, sz)

        return items, load

    def to_source_order(self, volume: np.ndarray) -> np.ndarray:
        return np.transpose(volume, (2, 1, 0))  # (Z, Y, X) -> (X, Y, Z)
