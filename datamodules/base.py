"""What every dataset of the suite shares: cache → grouped split → slice and case loaders.

A subclass says how to list its cases (:meth:`SliceDataModule._items`) and how to decode one
(the returned load function); the base builds the memory-mapped cache in ``prepare_data``,
splits the training cases by patient/subject in ``setup`` (written to the run directory as
``split.json``) and serves 2D (or 2.5D, with ``context``) slices for training and whole cases
for validation, test and prediction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from monai.data import DataLoader, DistributedSampler, set_track_meta
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch.utils.data import Sampler, WeightedRandomSampler, default_collate

from datamodules.cache import CacheItem, SliceCache, build_slice_cache, cache_key
from datamodules.datasets import CaseDataset, SliceDataset, single_case_collate
from datamodules.splits import grouped_kfold, slice_kfold
from datamodules.transforms import slice_augmentation

log = logging.getLogger(__name__)

LoadFn = Callable[[CacheItem], tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]]


class SliceDataModule(pl.LightningDataModule):
    """Base of the suite's DataModules (see the module docstring).

    Subclasses call ``self.save_hyperparameters()`` in their ``__init__`` with at least:
    ``data_dir, cache_dir, fold, num_folds, split_seed, batch_size, num_workers, image_size,
    augment, rotate_degrees, translate_fraction, scale_range, flip_axes, predict_split``, and
    optionally ``crop`` (``(h0, h1, w0, w1)`` of the native slice), ``context`` (slice
    offsets stacked as channels, e.g. ``(-2, -1, 0, 1)``), ``foreground_fraction`` and
    ``split_unit``, then call :meth:`_init_paths`.

    ``foreground_fraction`` (``None``: every training slice equally often, as the papers do)
    draws that share of each epoch's training samples from slices with lesion voxels, with
    replacement, like nnU-Net's foreground oversampling; under DDP Lightning shards the sampler.

    ``split_unit`` is ``"subject"`` (the default and the honest split: :func:`grouped_kfold`)
    or ``"slice"`` (:func:`slice_kfold`, VCA-Net's random split of slices, which leaks
    subjects into validation and warns so). With ``"slice"``, every subject with held-out
    slices is a validation case evaluated on those slices only, stacked in their order.
    """

    dataset_name = "dataset"
    train_split = "TRAINING"
    channel_names: list[str] = []

    def _init_paths(self) -> None:
        self.data_dir = Path(self.hparams.data_dir)
        cache_dir = self.hparams.cache_dir
        self.cache_root = (
            Path(cache_dir) if cache_dir else self.data_dir.parent / ".cache" / "strokeseg"
        )
        self.caches: dict[str, SliceCache] = {}
        self.train_cases = self.val_cases = np.empty(0, dtype=np.int64)
        self.train_rows = np.empty(0, dtype=np.int64)
        self.val_rows: np.ndarray | None = None  # held-out slices of a slice-level split
        num_folds, fold = self.hparams.num_folds, self.hparams.fold
        if not 0 <= fold < num_folds:
            raise ValueError(
                f"fold must be in [0, {num_folds - 1}] for num_folds={num_folds}, got {fold}"
            )
        fraction = self.hparams.get("foreground_fraction")
        if fraction is not None and not 0.0 < fraction < 1.0:
            raise ValueError(
                f"foreground_fraction must be in (0, 1) or null (uniform sampling), got {fraction}"
            )
        if self.hparams.get("split_unit", "subject") not in ("subject", "slice"):
            raise ValueError(
                f"split_unit must be 'subject' or 'slice', got {self.hparams.split_unit!r}"
            )

    # -- to implement ---------------------------------------------------------------------
    def _items(self, split: str) -> tuple[list[CacheItem], LoadFn]:
        """The cases of ``split`` (headers only) and the function that decodes one."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        """Preprocessing settings baked into the cache (they key it)."""
        raise NotImplementedError

    # -- cache ----------------------------------------------------------------------------
    def _cache_dir(self, split: str, items: list[CacheItem]) -> Path:
        return self.cache_root / f"{self.dataset_name}-{split}-{cache_key(items, self._settings())}"

    def cache_path(self, split: str) -> Path:
        items, _ = self._items(split)
        return self._cache_dir(split, items)

    def _splits_for_stage(self) -> list[str]:
        trainer = getattr(self, "trainer", None)
        predicting = trainer is not None and trainer.state.fn == "predict"
        return [self.hparams.predict_split] if predicting else [self.train_split]

    def prepare_data(self) -> None:
        """Validate and decode every case of the needed split once (local rank 0 only)."""
        for split in self._splits_for_stage():
            items, load = self._items(split)
            build_slice_cache(self._cache_dir(split, items), items, load, self.channel_names,
                              self._settings())  # fmt: skip

    # -- splits ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Plain tensors in the hot path: MONAI's MetaTensor bookkeeping costs far more than the
        # 2D resampling itself (performance.md), and nothing downstream reads its metadata.
        set_track_meta(False)
        for split in self._splits_for_stage():
            self.caches[split] = SliceCache(self.cache_path(split))
        if self.train_split in self.caches:
            self._split(self.caches[self.train_split])
            trainer = getattr(self, "trainer", None)
            # trainer.log_dir is a collective under DDP: every rank must ask for it.
            log_dir = trainer.log_dir if trainer is not None else None
            if log_dir is not None:
                self._write_split(Path(log_dir))

    def _split(self, cache: SliceCache) -> None:
        num_folds, fold, seed = self.hparams.num_folds, self.hparams.fold, self.hparams.split_seed
        if self.hparams.get("split_unit", "subject") == "subject":
            self.train_cases, self.val_cases = grouped_kfold(cache.patient, num_folds, fold, seed)
            self.train_rows, self.val_rows = cache.slice_rows(self.train_cases), None
            return
        rank_zero_warn(
            "split_unit='slice' splits slices, not subjects (VCA-Net's random_split): "
            "neighbouring slices of one subject are in training and validation, so validation "
            "scores are optimistic and not comparable with subject-level results. Use "
            "split_unit='subject' unless you are reproducing that paper's numbers.",
            category=UserWarning,
        )
        labelled = np.flatnonzero(cache.has_label)
        self.train_rows, self.val_rows = slice_kfold(
            cache.slice_rows(labelled), num_folds, fold, seed
        )
        self.train_cases = np.unique(cache.case_of_rows(self.train_rows))
        self.val_cases = np.unique(cache.case_of_rows(self.val_rows))

    @property
    def train_cache(self) -> SliceCache | None:
        return self.caches.get(self.train_split)

    @rank_zero_only
    def _write_split(self, log_dir: Path) -> None:
        cache = self.caches[self.train_split]
        names = cache.case_names
        split = {
            "fold": self.hparams.fold,
            "num_folds": self.hparams.num_folds,
            "split_seed": self.hparams.split_seed,
            "unit": "slice" if self.val_rows is not None else "patient",
            "train_cases": [names[i] for i in self.train_cases],
            "val_cases": [names[i] for i in self.val_cases],
            "train_patients": sorted({int(p) for p in cache.patient[self.train_cases]}),
            "val_patients": sorted({int(p) for p in cache.patient[self.val_cases]}),
            "cache": str(cache.directory),
        }
        if self.val_rows is not None:  # the held-out slice indices of every case
            case = cache.case_of_rows(self.val_rows)
            split["val_slices"] = {
                names[c]: (self.val_rows[case == c] - cache.case_offsets[c]).tolist()
                for c in self.val_cases
            }
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "split.json").write_text(json.dumps(split, indent=1))

    # -- loaders --------------------------------------------------------------------------
    def _geometry(self) -> dict[str, Any]:
        return {"image_size": self.hparams.image_size,
                "crop": self.hparams.get("crop"), "context": tuple(self.hparams.get("context") or (0,))}  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        cache = self.caches[self.train_split]
        transform = None
        if self.hparams.augment:
            transform = slice_augmentation(
                self.hparams.rotate_degrees, self.hparams.translate_fraction,
                tuple(self.hparams.scale_range), self.hparams.flip_axes,
                random_order=self.hparams.get("random_order", True),
            )  # fmt: skip
        dataset = SliceDataset(cache, self.train_rows, transform=transform, **self._geometry())
        sampler = self._foreground_sampler(cache, self.train_rows)
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=sampler is None,
                          sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                          collate_fn=default_collate,
                          drop_last=len(dataset) > self.hparams.batch_size)  # fmt: skip

    def _foreground_sampler(self, cache: SliceCache, rows: np.ndarray) -> Sampler | None:
        """Weighted sampling that draws ``foreground_fraction`` of the samples from lesion slices."""
        fraction = self.hparams.get("foreground_fraction")
        if fraction is None:
            return None
        lesion = cache.label_voxels[rows] > 0
        if lesion.all() or not lesion.any():
            rank_zero_warn(f"foreground_fraction={fraction} ignored: {lesion.sum()} of "
                           f"{len(rows)} training slices have lesion voxels.")  # fmt: skip
            return None
        weights = np.where(lesion, fraction / lesion.sum(), (1.0 - fraction) / (~lesion).sum())
        return WeightedRandomSampler(torch.from_numpy(weights), len(rows), replacement=True)

    def _case_loader(self, cache: SliceCache, cases: np.ndarray,
                     rows: np.ndarray | None = None) -> DataLoader:  # fmt: skip
        dataset = CaseDataset(cache, cases, rows=rows, **self._geometry())
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # No padding: every case is evaluated exactly once across ranks (a padded sampler
            # would count some cases twice and change the mean).
            sampler = DistributedSampler(dataset, even_divisible=False, shuffle=False)
        return DataLoader(dataset, batch_size=1, sampler=sampler,
                          num_workers=min(self.hparams.num_workers, 1),
                          collate_fn=single_case_collate)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self._case_loader(self.caches[self.train_split], self.val_cases, self.val_rows)

    def test_dataloader(self) -> DataLoader:
        """The validation fold, evaluated with the test metrics (official test sets have no
        labels; use ``predict`` to write their masks)."""
        return self._case_loader(self.caches[self.train_split], self.val_cases, self.val_rows)

    def predict_dataloader(self) -> DataLoader:
        cache = self.caches[self.hparams.predict_split]
        return self._case_loader(cache, np.arange(len(cache)))

    def to_source_order(self, volume: np.ndarray) -> np.ndarray:
        """A ``(D, H, W)`` prediction in the axis order of the source NIfTI array (X, Y, Z)."""
        return np.moveaxis(volume, 0, -1)

    def case_source(self, split: str, case_index: int) -> Path:
        """The file a case's reference grid comes from (its header is reused for predictions)."""
        return Path(self.caches[split].meta["sources"][case_index][0])
