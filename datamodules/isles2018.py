"""ISLES 2018 CT-perfusion data for 2D networks: slices to train on, whole cases to evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from datamodules.base import LoadFn, SliceDataModule
from datamodules.cache import CacheItem
from datamodules.errors import DataValidationError
from datamodules.isles2018_reader import check_root, read_case, read_shape, scan_isles2018
from datamodules.normalization import normalize_channels

Channel = Literal["CT", "CBF", "CBV", "MTT", "Tmax", "PWI_max", "DWI"]
Split = Literal["TRAINING", "TESTING"]
# Perfusion maps are 0 outside the brain (datasets.md §4.4); their support is the brain mask.
_BRAIN_SUPPORT = ("CBF", "CBV", "MTT", "Tmax")


class ISLES2018DataModule(SliceDataModule):
    """ISLES 2018 (CT perfusion) for 2D segmentation networks, with per-patient K-fold CV.

    ``prepare_data`` decodes every case once into a memory-mapped cache (see
    :mod:`datamodules.cache`); ``setup`` splits the training cases by patient (both slabs of a
    two-slab patient stay in one fold) and writes the split to the run directory. Training
    items are single axial slices with the paper's augmentation; validation, test and predict
    items are whole cases, evaluated in 3D on their native grid.

    Defaults follow Abulnaga & Rubin 2018 (arXiv:1811.01085): channels CT, Tmax, CBF, CBV,
    MTT in the order of §4 ("a CT slice together with its four corresponding perfusion map
    slices (Tmax, CBF, CBV, MTT)"), 5-fold per-subject CV (§5), batch 8 (§4.6), and the
    augmentation of §4.1.

    Args:
        data_dir: Folder holding ``TRAINING/`` (and ``TESTING/`` for prediction).
        cache_dir: Where caches are written; default ``<data_dir>/../.cache/strokeseg``.
        channels: Input channels in order (``PWI_max`` = max over time of the 4D series).
        normalization: Per case and channel over the brain (perfusion support): ``"zscore"``,
            ``"minmax"`` to [0, 1] over the whole volume (Kervadec et al.), or ``"none"``.
        clip_channels: Channels clipped to the brain's 0.5–99.5th percentiles before the
            z-score (the CT's skull reaches 3071 HU). Perfusion maps are not clipped: the core
            lies in their tails.
        fold: Validation fold, ``0 ≤ fold < num_folds``.
        num_folds: Number of folds.
        split_seed: Seed of the patient shuffle.
        batch_size: Training slices per batch.
        num_workers: DataLoader worker processes.
        foreground_fraction: Share of training samples drawn from slices with lesion voxels
            (``None``: uniform over slices, as the paper does).
        image_size: Resize slices to this square size for the network (``None`` = native
            256×256); predictions are resized back before evaluation.
        augment: Apply the paper's augmentation to training slices.
        rotate_degrees: Rotation range (±, degrees).
        translate_fraction: Translation range (± fraction of the image side).
        scale_range: Zoom range.
        flip_axes: Axes to flip with probability 0.5 each.
        predict_split: Cases that ``predict`` runs on.
    """

    def __init__(
        self,
        data_dir: str = "data/isles2018",
        cache_dir: str | None = None,
        channels: list[Channel] | None = None,
        normalization: Literal["zscore", "minmax", "none"] = "zscore",
        clip_channels: list[Channel] | None = None,
        fold: int = 0,
        num_folds: int = 5,
        split_seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 2,
        foreground_fraction: float | None = None,
        image_size: int | None = None,
        augment: bool = True,
        rotate_degrees: float = 10.0,
        translate_fraction: float = 0.1,
        scale_range: tuple[float, float] = (0.9, 1.1),
        flip_axes: tuple[int, ...] = (0,),
        predict_split: Split = "TESTING",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hparams["channels"] = list(channels or ["CT", "Tmax", "CBF", "CBV", "MTT"])
        self.hparams["clip_channels"] = list(["CT"] if clip_channels is None else clip_channels)
        self.channel_names = self.hparams.channels
        self._init_paths()

    dataset_name = "isles2018"
    train_split = "TRAINING"

    @staticmethod
    def check_data_dir(data_dir: str | Path) -> None:
        """Fail fast, without decoding anything, if ``data_dir`` is not an ISLES 2018 extract."""
        check_root(data_dir)

    def _settings(self) -> dict[str, Any]:
        return {"dataset": "isles2018", "channels": self.hparams.channels,
                "normalization": self.hparams.normalization,
                "clip_channels": self.hparams.clip_channels}  # fmt: skip

    def _items(self, split: str) -> tuple[list[CacheItem], LoadFn]:
        needs = {"PWI_max": "PWI", "DWI": "DWI"}
        items, cases = [], {}
        for case in scan_isles2018(self.data_dir, split):
            wanted = {needs.get(c, c) for c in self.hparams.channels} | set(_BRAIN_SUPPORT)
            wanted |= {"OT"} & set(case.files)
            # The CT comes first: its header is the reference grid (and is reused for predictions).
            sources = (case.path("CT"),) + tuple(case.path(m) for m in sorted(wanted - {"CT"}))
            shape = read_shape(sources[0])
            if len(shape) != 3:
                raise DataValidationError(f"{sources[0]}: expected a 3D image, found shape {shape}")
            patient = case.patient_key.rsplit("/p", 1)
            patient_id = int(patient[1]) if len(patient) == 2 else 10_000 + case.case
            items.append(CacheItem(case.name, patient_id, case.case, tuple(shape), sources))
            cases[case.name] = case
        channels = list(self.hparams.channels)
        extra = [m for m in _BRAIN_SUPPORT if m not in channels]
        support = [channels.index(m) if m in channels else len(channels) + extra.index(m)
                   for m in _BRAIN_SUPPORT]  # fmt: skip
        clip = [c in self.hparams.clip_channels for c in channels]

        def load(item: CacheItem):
            image, label, spacing = read_case(cases[item.name], channels + extra)
            brain = (image[support] > 0).any(axis=0)
            image = normalize_channels(
                image[: len(channels)], brain, self.hparams.normalization, clip
            )
            return image, label, spacing

        return items, load
