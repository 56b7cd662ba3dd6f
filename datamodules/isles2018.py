"""ISLES 2018 CT-perfusion data for 2D networks: slices to train on, whole cases to evaluate."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from monai.data import DataLoader, DistributedSampler, set_track_meta
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import default_collate

from datamodules.cache import CacheItem, SliceCache, build_slice_cache, cache_key
from datamodules.datasets import CaseDataset, SliceDataset, single_case_collate
from datamodules.errors import DataValidationError
from datamodules.isles2018_reader import (
    ISLESCase,
    check_root,
    read_case,
    read_shape,
    scan_isles2018,
)
from datamodules.normalization import normalize_channels
from datamodules.splits import grouped_kfold
from datamodules.transforms import slice_augmentation

log = logging.getLogger(__name__)

Channel = Literal["CT", "CBF", "CBV", "MTT", "Tmax", "PWI_max", "DWI"]
Split = Literal["TRAINING", "TESTING"]
# Perfusion maps are 0 outside the brain (datasets.md §4.4); their support is the brain mask.
_BRAIN_SUPPORT = ("CBF", "CBV", "MTT", "Tmax")


class ISLES2018DataModule(pl.LightningDataModule):
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
        image_size: int | None = None,
        augment: bool = True,
        rotate_degrees: float = 10.0,
        translate_fraction: float = 0.1,
        scale_range: tuple[float, float] = (0.9, 1.1),
        flip_axes: tuple[int, ...] = (0,),
        predict_split: Split = "TESTING",
    ) -> None:
        super().__init__()
        channels = list(channels or ["CT", "Tmax", "CBF", "CBV", "MTT"])
        if not 0 <= fold < num_folds:
            raise ValueError(
                f"fold must be in [0, {num_folds - 1}] for num_folds={num_folds}, got {fold}"
            )
        self.save_hyperparameters()
        self.hparams["channels"] = channels
        self.hparams["clip_channels"] = list(["CT"] if clip_channels is None else clip_channels)
        self.data_dir = Path(data_dir)
        self.cache_root = (
            Path(cache_dir) if cache_dir else self.data_dir.parent / ".cache" / "strokeseg"
        )
        self.caches: dict[str, SliceCache] = {}
        self.train_cases = self.val_cases = np.empty(0, dtype=np.int64)

    # -- data preparation ---------------------------------------------------------------
    @staticmethod
    def check_data_dir(data_dir: str | Path) -> None:
        """Fail fast, without decoding anything, if ``data_dir`` is not an ISLES 2018 extract."""
        check_root(data_dir)

    def _settings(self) -> dict[str, Any]:
        return {"dataset": "isles2018", "channels": self.hparams.channels,
                "normalization": self.hparams.normalization,
                "clip_channels": self.hparams.clip_channels}  # fmt: skip

    def _items(self, split: str) -> tuple[list[CacheItem], dict[str, ISLESCase]]:
        needs = {"PWI_max": "PWI", "DWI": "DWI"}
        cases = scan_isles2018(self.data_dir, split)
        items, by_name = [], {}
        for case in cases:
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
            by_name[case.name] = case
        return items, by_name

    def _load(self, cases: dict[str, ISLESCase]):
        channels = list(self.hparams.channels)
        extra = [m for m in _BRAIN_SUPPORT if m not in channels]

        def load(item: CacheItem):
            image, label, spacing = read_case(cases[item.name], channels + extra)
            brain = (image[[channels.index(m) if m in channels else len(channels) + extra.index(m)
                            for m in _BRAIN_SUPPORT]] > 0).any(axis=0)  # fmt: skip
            clip = [c in self.hparams.clip_channels for c in channels]
            image = normalize_channels(
                image[: len(channels)], brain, self.hparams.normalization, clip
            )
            return image, label, spacing

        return load

    def cache_path(self, split: str) -> Path:
        items, _ = self._items(split)
        return self.cache_root / f"isles2018-{split}-{cache_key(items, self._settings())}"

    def prepare_data(self) -> None:
        """Validate and decode every case of the needed split once (local rank 0 only)."""
        for split in self._splits_for_stage():
            items, cases = self._items(split)
            directory = self.cache_root / f"isles2018-{split}-{cache_key(items, self._settings())}"
            build_slice_cache(directory, items, self._load(cases), self.hparams.channels,
                              self._settings())  # fmt: skip

    def _splits_for_stage(self) -> list[str]:
        trainer = getattr(self, "trainer", None)
        predicting = trainer is not None and trainer.state.fn == "predict"
        return [self.hparams.predict_split] if predicting else ["TRAINING"]

    # -- splits ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Plain tensors in the hot path: MONAI's MetaTensor bookkeeping costs far more than the
        # 2D resampling itself (performance.md), and nothing downstream reads its metadata.
        set_track_meta(False)
        for split in self._splits_for_stage():
            self.caches[split] = SliceCache(self.cache_path(split))
        if "TRAINING" in self.caches:
            cache = self.caches["TRAINING"]
            self.train_cases, self.val_cases = grouped_kfold(
                cache.patient, self.hparams.num_folds, self.hparams.fold, self.hparams.split_seed
            )
            trainer = getattr(self, "trainer", None)
            # trainer.log_dir is a collective under DDP: every rank must ask for it.
            log_dir = trainer.log_dir if trainer is not None else None
            if log_dir is not None:
                self._write_split(Path(log_dir))

    @rank_zero_only
    def _write_split(self, log_dir: Path) -> None:
        cache = self.caches["TRAINING"]
        names = cache.case_names
        split = {
            "fold": self.hparams.fold,
            "num_folds": self.hparams.num_folds,
            "split_seed": self.hparams.split_seed,
            "unit": "patient",
            "train_cases": [names[i] for i in self.train_cases],
            "val_cases": [names[i] for i in self.val_cases],
            "train_patients": sorted({int(p) for p in cache.patient[self.train_cases]}),
            "val_patients": sorted({int(p) for p in cache.patient[self.val_cases]}),
            "cache": str(cache.directory),
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "split.json").write_text(json.dumps(split, indent=1))

    # -- loaders --------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        cache = self.caches["TRAINING"]
        transform = None
        if self.hparams.augment:
            transform = slice_augmentation(self.hparams.rotate_degrees, self.hparams.translate_fraction,
                                           tuple(self.hparams.scale_range), self.hparams.flip_axes)  # fmt: skip
        dataset = SliceDataset(
            cache, cache.slice_rows(self.train_cases), self.hparams.image_size, transform
        )
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=workers, persistent_workers=workers > 0,
                          collate_fn=default_collate, drop_last=len(dataset) > self.hparams.batch_size)  # fmt: skip

    def _case_loader(self, cache: SliceCache, cases: np.ndarray) -> DataLoader:
        dataset = CaseDataset(cache, cases, self.hparams.image_size)
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # No padding: every case is evaluated exactly once across ranks (a padded sampler
            # would count some cases twice and change the mean).
            sampler = DistributedSampler(dataset, even_divisible=False, shuffle=False)
        return DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=min(self.hparams.num_workers, 1),
                          collate_fn=single_case_collate)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self._case_loader(self.caches["TRAINING"], self.val_cases)

    def test_dataloader(self) -> DataLoader:
        """The validation fold, evaluated with the test metrics (the official test set has no
        labels; use ``predict`` to write its masks)."""
        return self._case_loader(self.caches["TRAINING"], self.val_cases)

    def predict_dataloader(self) -> DataLoader:
        cache = self.caches[self.hparams.predict_split]
        return self._case_loader(cache, np.arange(len(cache)))

    def case_source(self, split: str, case_index: int) -> Path:
        """The CT file a case was decoded from (its header is reused for written predictions)."""
        return Path(self.caches[split].meta["sources"][case_index][0])
