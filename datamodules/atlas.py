"""ATLAS (R1.1, R1.2, R2.0) T1 data for 2D and 2.5D networks, split by subject."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from datamodules.atlas_layout import check_atlas_root
from datamodules.atlas_reader import ATLASScan, prediction_target, read_scan, scan_atlas
from datamodules.base import CacheDtype, SliceDataModule, SplitUnit
from datamodules.cache import CacheItem, DecodedCase
from datamodules.geometry import SliceGeometry
from datamodules.normalization import normalize_channels
from datamodules.transforms import Augmentation

Release = Literal["R1.1", "R1.2", "R2.0"]
Split = Literal["Training", "Testing"]

# Slices are (rows = y, cols = x), the orientation of the published h5 files (the NIfTI array
# transposed (2, 1, 0)): 233 rows × 197 columns. Crop windows are given in that frame.
_AXES = (2, 1, 0)


class ATLASDataModule(SliceDataModule):
    """ATLAS T1 slices (2D or 2.5D stacks) with per-subject K-fold splits.

    ``prepare_data`` decodes every scan once (T1 min–max scaled to [0, 1] per scan; masks
    merged with OR after ``> 0`` and put on the T1's grid) into the shared cache, on the
    network grid; a subject's sessions (R1.1 Site8 ``t01``/``t02``) always land in the same
    fold. Validation and test evaluate whole scans in 3D on their native grid (197×233×189 for
    the real releases): predictions on the window are resized back and are 0 outside it.

    The defaults are D-UNet's (Zhou et al., arXiv:1908.05104; its code's ``data_load.py``,
    docs/papers.md §2): the PIL box ``(10, 40, 190, 220)`` = rows 40:220, cols 10:190,
    resized to 192×192, 4-slice stacks ``[i-2, i-1, i, i+1]``, batch 36 and Keras'
    ``ImageDataGenerator`` augmentation. VCA-Net's code (docs/papers.md §1) uses
    ``crop: [5, 229, 2, 194]``, ``image_size: null``, ``context: [0]`` (``vcanet.yaml``).

    Args:
        data_dir: The extract root holding ``ATLAS_R1.1/``, the R1.2 standard-space folders or
            ``ATLAS_2/`` (a synthetic twin: ``lightning-data synth atlas``).
        release: ``"R1.1"``, ``"R1.2"`` or ``"R2.0"``; ``None`` detects it from the layout.
        cache_dir: Where caches go (default ``<data_dir>/../.cache/strokeseg``).
        crop: ``(row0, row1, col0, col1)`` window of the 233×197 slice, or ``None``.
        image_size: Resize the window to this int or ``[h, w]``; ``None`` keeps its size.
        context: Slice offsets stacked as channels (``[0]``: the slice alone).
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
        augmentation: The random affine of training slices, or ``None`` (VCA-Net).
        predict_split: ``"Testing"`` (R2.0) or ``"Training"``.
        augment_on_device: Augment training batches on the training device, in one resampling
            per batch, instead of in the loader's workers; ``None``: on a GPU only (see
            :class:`~datamodules.base.SliceDataModule`).
        cache_on_device: Hold the fold's training slices on the training device and assemble
            the batches there (see :mod:`datamodules.device_cache`).
        device_cache_dtype: Their dtype there; ``None``: the training precision's.
        predict_cases: Predict cases given as files (case → {image → NIfTI}) instead of a
            split of ``data_dir`` (``lightning-cv segment``; see
            :class:`~datamodules.base.SliceDataModule`).
    """

    dataset_name = "atlas"
    train_split = "Training"
    predict_splits = get_args(Split)
    reference_image = "T1"

    def __init__(
        self,
        data_dir: str = "data/atlas",
        release: Release | None = None,
        cache_dir: str | None = None,
        crop: tuple[int, int, int, int] | None = (40, 220, 10, 190),
        image_size: int | tuple[int, int] | None = 192,
        context: tuple[int, ...] = (-2, -1, 0, 1),
        fold: int = 0,
        num_folds: int = 5,
        split_seed: int = 0,
        split_unit: SplitUnit = "subject",
        batch_size: int = 36,
        num_workers: int = 2,
        foreground_fraction: float | None = None,
        augmentation: Augmentation | None = Augmentation(
            rotate_degrees=20.0,
            translate_fraction=0.1,
            scale_range=(0.8, 1.2),
            flip_axes=(1,),
            random_order=False,
        ),
        predict_split: Split = "Testing",
        augment_on_device: bool | None = None,
        cache_on_device: bool = False,
        device_cache_dtype: CacheDtype | None = None,
        predict_cases: dict[str, dict[str, str]] | None = None,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            cache_dir=cache_dir,
            channels=("T1",),
            geometry=SliceGeometry.create(_AXES, crop, image_size, context),
            augmentation=augmentation,
            fold=fold,
            num_folds=num_folds,
            split_seed=split_seed,
            split_unit=split_unit,
            batch_size=batch_size,
            num_workers=num_workers,
            foreground_fraction=foreground_fraction,
            predict_split=predict_split,
            augment_on_device=augment_on_device,
            cache_on_device=cache_on_device,
            device_cache_dtype=device_cache_dtype,
            predict_cases=predict_cases,
        )
        self.save_hyperparameters()
        self.release = release
        self._scans: dict[str, ATLASScan] = {}

    @staticmethod
    def check_data_dir(data_dir: str | Path, release: Release | None = None) -> None:
        """Fail fast, without decoding anything, if ``data_dir`` holds no ATLAS release."""
        check_atlas_root(data_dir, release)

    def _settings(self) -> dict[str, Any]:
        return {"channels": self.channel_names, "intensity": "minmax"}

    def _scan(self, split: str) -> list[CacheItem]:
        scans = scan_atlas(self.data_dir, self.release, split)
        subjects = {s: i for i, s in enumerate(sorted({scan.subject for scan in scans}))}
        items = []
        for number, scan in enumerate(scans):
            sources = (scan.t1, *scan.masks)
            items.append(
                CacheItem(
                    scan.name, subjects[scan.subject], number, sources, prediction_target(scan)
                )
            )
            self._scans[scan.name] = scan
        return items

    def _case_from_files(self, name: str, files: Mapping[str, Path]) -> CacheItem:
        self._scans[name] = ATLASScan(name, name, "Testing", files["T1"], ())
        return CacheItem(name, 0, 1, (files["T1"],))

    def _load(self, item: CacheItem, channels: Sequence[str]) -> DecodedCase:
        t1, mask, spacing = read_scan(self._scans[item.name])
        intensity = np.empty((1, 2))
        image = normalize_channels(t1[None], t1 > 0, "minmax", stats=intensity)  # (1, X, Y, Z)
        return DecodedCase(image, mask, spacing, intensity)
