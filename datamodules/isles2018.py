"""ISLES 2018 CT-perfusion data for 2D and 3D networks: slices or volumes to train on, whole
cases to evaluate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from datamodules.base import CacheDtype, SliceDataModule, SplitUnit
from datamodules.cache import CacheItem, DecodedCase
from datamodules.geometry import geometry_for
from datamodules.isles2018_reader import ISLESCase, check_root, read_case, scan_isles2018
from datamodules.nifti import PredictionTarget
from datamodules.normalization import Normalization, normalize_channels
from datamodules.transforms import Augmentation

Channel = Literal["CT", "CBF", "CBV", "MTT", "Tmax", "PWI_max", "DWI"]
Split = Literal["TRAINING", "TESTING"]
# Perfusion maps are 0 outside the brain (docs/datasets.md §4.4); their support is the brain.
_BRAIN_SUPPORT = ("CBF", "CBV", "MTT", "Tmax")
# Files the reader needs for a channel (PWI_max is the maximum over time of the 4D series).
_SOURCE_OF = {"PWI_max": "PWI"}
# Slices are (H, W) = (X, Y) of the NIfTI array, stacked along Z.
_AXES = (2, 0, 1)
# The name predictions are written under, as ISLES 2018 entries submitted them:
# SMIR.<method>.<id of the case's CT_MTT folder>.nii (docs/datasets.md §4.7).
_METHOD = "strokeseg"


class ISLES2018DataModule(SliceDataModule):
    """ISLES 2018 (CT perfusion) for 2D or 3D segmentation networks, with per-patient K-fold CV.

    ``prepare_data`` decodes every case once into a memory-mapped cache on the network grid
    (see :mod:`datamodules.cache`); ``setup`` splits the training cases by patient (both slabs
    of a two-slab patient stay in one fold) and writes the split to the run directory.
    Training items are single axial slices (``spatial_dims: 2``) or whole cases as volumes
    ``(C, D, h, w)`` (``spatial_dims: 3``) with the paper's augmentation; validation, test and
    predict items are whole cases, evaluated in 3D on their native grid. Both read one cache and
    one split: a 2D and a 3D run of the same fold and seed are scored on the same cases.

    Defaults follow Abulnaga & Rubin 2018 (arXiv:1811.01085): channels CT, Tmax, CBF, CBV,
    MTT in the order of §4 ("a CT slice together with its four corresponding perfusion map
    slices (Tmax, CBF, CBV, MTT)"), 5-fold per-subject CV (§5), batch 8 (§4.6), the native
    256×256 grid and the augmentation of §4.1.

    Args:
        data_dir: Folder holding ``TRAINING/`` (and ``TESTING/`` for prediction).
        cache_dir: Where caches are written; default ``<data_dir>/../.cache/strokeseg``.
        channels: Input channels in order (``PWI_max`` = max over time of the 4D series).
        normalization: Per case and channel over the brain (perfusion support): ``"zscore"``,
            ``"minmax"`` to [0, 1] over the whole volume (Kervadec et al.), or ``"none"``.
        clip_channels: Channels clipped to the brain's 0.5–99.5th percentiles before the
            z-score (the CT's skull reaches 3071 HU). Perfusion maps are not clipped: the core
            lies in their tails.
        image_size: Resize slices to this size (int or ``[h, w]``) for the network; ``None``
            keeps the native grid. Predictions are resized back before evaluation.
        crop: ``(row0, row1, col0, col1)`` window of the slices (rows = NIfTI x), or ``None``.
        fold: Validation fold, ``0 ≤ fold < num_folds``.
        num_folds: Number of folds.
        split_seed: Seed of the patient shuffle.
        split_unit: ``"subject"`` (patients) or ``"slice"`` (see :class:`SliceDataModule`).
        batch_size: Training slices per batch.
        num_workers: DataLoader worker processes.
        foreground_fraction: Share of training samples drawn from slices with lesion voxels
            (``None``: uniform over slices, as the paper does).
        augmentation: The random affine of training slices (§4.1), or ``None``.
        predict_split: Cases that ``predict`` runs on.
        spatial_dims: 2 (slices for 2D networks) or 3 (volumes for 3D networks).
        depth: With ``spatial_dims: 3``, the volumes' depth: cases are zero-padded (centred) to
            it, deeper ones windowed (seed 001: 32); ``None``: each case's own depth (seed 003's
            3D baselines, batch 1). See :class:`~datamodules.geometry.VolumeGeometry`.
        augment_on_device: Augment training batches on the training device, in one resampling
            per batch, instead of in the loader's workers; ``None``: on a GPU only (see
            :class:`~datamodules.base.SliceDataModule`).
        cache_on_device: Hold the fold's training slices on the training device and assemble
            the batches there (see :mod:`datamodules.device_cache`).
        device_cache_dtype: Their dtype there; ``None``: the training precision's.
        predict_cases: Predict cases given as files (case → {image → NIfTI}: CT, the four
            perfusion maps, PWI for ``PWI_max``, DWI) instead of a split of ``data_dir``
            (``lightning-cv segment``; see :class:`~datamodules.base.SliceDataModule`).
        targets: Image targets of the training cases, normalised like the inputs and served as
            ``"target"`` beside them (seed 002: ``[DWI]``, the real ``MR_DWI``); the testing
            cases have none.
    """

    dataset_name = "isles2018"
    train_split = "TRAINING"
    predict_splits = get_args(Split)
    reference_image = "CT"

    def __init__(
        self,
        data_dir: str = "data/isles2018",
        cache_dir: str | None = None,
        channels: tuple[Channel, ...] = ("CT", "Tmax", "CBF", "CBV", "MTT"),
        normalization: Normalization = "zscore",
        clip_channels: tuple[Channel, ...] = ("CT",),
        image_size: int | tuple[int, int] | None = None,
        crop: tuple[int, int, int, int] | None = None,
        fold: int = 0,
        num_folds: int = 5,
        split_seed: int = 0,
        split_unit: SplitUnit = "subject",
        batch_size: int = 8,
        num_workers: int = 2,
        foreground_fraction: float | None = None,
        augmentation: Augmentation | None = Augmentation(
            rotate_degrees=10.0,
            translate_fraction=0.1,
            scale_range=(0.9, 1.1),
            flip_axes=(0,),
            random_order=True,
        ),
        predict_split: Split = "TESTING",
        spatial_dims: Literal[2, 3] = 2,
        depth: int | None = None,
        augment_on_device: bool | None = None,
        targets: tuple[Channel, ...] = (),
        cache_on_device: bool = False,
        device_cache_dtype: CacheDtype | None = None,
        predict_cases: dict[str, dict[str, str]] | None = None,
    ) -> None:
        geometry = geometry_for(spatial_dims, _AXES, crop, image_size, depth=depth)
        super().__init__(
            data_dir=data_dir,
            cache_dir=cache_dir,
            channels=channels,
            geometry=geometry,
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
            targets=targets,
            predict_cases=predict_cases,
        )
        self.save_hyperparameters()
        self.normalization: Normalization = normalization
        self.clip_channels = tuple(clip_channels)
        self._cases: dict[str, ISLESCase] = {}

    @staticmethod
    def check_data_dir(data_dir: str | Path) -> None:
        """Fail fast, without decoding anything, if ``data_dir`` is not an ISLES 2018 extract."""
        check_root(data_dir)

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "channels": self.channel_names,
            "normalization": self.normalization,
            "clip_channels": list(self.clip_channels),
        }
        if self.target_names:  # only then: earlier checkpoints keep their signature
            settings["targets"] = self.target_names
        return settings

    def _scan(self, split: str) -> list[CacheItem]:
        items = []
        for case in scan_isles2018(self.data_dir, split):
            channels = self.split_channels(split)
            wanted = {_SOURCE_OF.get(c, c) for c in channels} | set(_BRAIN_SUPPORT)
            wanted |= {"OT"} & set(case.files)
            # The CT comes first: its header is the reference grid (and is reused for predictions).
            sources = (case.path("CT"),) + tuple(case.path(m) for m in sorted(wanted - {"CT"}))
            patient = case.patient_key.rsplit("/p", 1)
            patient_id = int(patient[1]) if len(patient) == 2 else 10_000 + case.case
            target = PredictionTarget(f"SMIR.{_METHOD}.{case.ids['MTT']}.nii")
            items.append(CacheItem(case.name, patient_id, case.case, sources, target))
            self._cases[case.name] = case
        return items

    def files_needed(self) -> tuple[list[str], list[str]]:
        # The CT is the grid; the four maps are the brain's support for the normalisation.
        sources = {_SOURCE_OF.get(c, c) for c in self.channel_names}
        return ["CT", *sorted((sources | set(_BRAIN_SUPPORT)) - {"CT"})], []

    def _case_from_files(self, name: str, files: Mapping[str, Path]) -> CacheItem:
        reference = files["CT"]
        self._cases[name] = ISLESCase("FILES", 1, reference.parent, dict(files), name, {})
        sources = (reference,) + tuple(files[m] for m in sorted(files) if m != "CT")
        return CacheItem(name, 0, 1, sources)

    def _load(self, item: CacheItem, channels: Sequence[str]) -> DecodedCase:
        channels = list(channels)
        extra = [m for m in _BRAIN_SUPPORT if m not in channels]
        image, label, spacing = read_case(self._cases[item.name], channels + extra)
        support = [(channels + extra).index(m) for m in _BRAIN_SUPPORT]
        brain: np.ndarray = np.any(image[support] > 0, axis=0)
        clip = [c in self.clip_channels for c in channels]
        intensity = np.empty((len(channels), 2))
        image = normalize_channels(
            image[: len(channels)], brain, self.normalization, clip, stats=intensity
        )
        return DecodedCase(image, label, spacing, intensity)
