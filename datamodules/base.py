"""What every dataset of the suite shares: cache → grouped split → training and case loaders.

A subclass lists its cases (:meth:`SliceDataModule._scan`), decodes one
(:meth:`SliceDataModule._load`) and names its preprocessing (:meth:`SliceDataModule._settings`);
it passes its typed settings, a :class:`~datamodules.geometry.SliceGeometry` and an
:class:`~datamodules.transforms.Augmentation` to this base. The base builds the
memory-mapped cache in ``prepare_data``, splits the training cases by patient/subject in
``setup`` (written to the run directory as ``split.json``) and serves training samples and
whole, self-describing cases for validation, test and prediction.

The geometry decides what a training sample is: a slice stack for 2D networks
(:class:`~datamodules.datasets.SliceDataset`), a whole case as a volume for 3D networks when it
is a :class:`~datamodules.geometry.VolumeGeometry`
(:class:`~datamodules.datasets.VolumeDataset`). Both read the same cache and the same split, so
2D and 3D runs of one fold are scored on the same cases.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from monai.data import DataLoader, DistributedSampler, set_track_meta
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch.utils.data import default_collate

from core.errors import ConfigurationError, ConfigurationErrorOnEveryRank, DatasetNotFoundError
from core.io import write_text
from core.run_layout import RunLayout
from datamodules.batched_augmentation import BatchedAffine
from datamodules.cache import CacheItem, DecodedCase, SliceCache, cache_key
from datamodules.cache_build import build_slice_cache, check_cache_root
from datamodules.datasets import (
    CaseDataset,
    SliceDataset,
    VolumeCollate,
    VolumeDataset,
    single_case_collate,
    split_targets,
)
from datamodules.device_cache import DeviceCache, SampleKeys, cache_dtype
from datamodules.geometry import SliceGeometry, VolumeGeometry
from datamodules.nifti import PredictionTarget, case_shape
from datamodules.samplers import EpochSampler
from datamodules.splits import grouped_kfold, slice_kfold
from datamodules.transforms import Augmentation

log = logging.getLogger(__name__)

SplitUnit = Literal["subject", "slice"]
CacheDtype = Literal["float16", "bfloat16", "float32"]


def _epoch_to_train(trainer: pl.Trainer) -> int:
    """The epoch a fit is about to train, also while it restores from a checkpoint.

    A checkpoint written at the end of epoch *k* records *k* as begun but not completed, with
    its last batch done; Lightning then trains epoch *k + 1*, but counts it only after the
    training dataloader exists.
    """
    progress = trainer.fit_loop.epoch_progress.current
    finished = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    return progress.completed + int(finished and progress.ready > progress.completed)


def _run_seed() -> int:
    """The run's seed (``seed_everything``, which Lightning exports), else one drawn now."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else int(torch.randint(2**31 - 1, ()).item())


class SliceDataModule(pl.LightningDataModule):
    """Base of the suite's 2D DataModules (see the module docstring).

    Args:
        data_dir: The dataset's root folder.
        cache_dir: Where caches are written; ``None``: ``<data_dir>/../.cache/strokeseg``.
        channels: Input channel names, in the order the subclass's ``_load`` stacks them.
        targets: Image targets decoded after the inputs for the training split only (seed
            002's real DWI); samples and case items carry them as ``"target"``, transformed
            with the inputs. Needs a context of ``(0,)``.
        geometry: Source volume ↔ network input mapping (crop, resize, context, axis order).
        augmentation: Random affine of training slices, or ``None``.
        fold: Validation fold, ``0 ≤ fold < num_folds``.
        num_folds: Number of folds (≥ 2).
        split_seed: Seed of the patient (or slice) shuffle.
        split_unit: ``"subject"`` (the honest split: :func:`grouped_kfold`) or ``"slice"``
            (:func:`slice_kfold`, VCA-Net's random split of slices, which leaks subjects into
            validation and warns so; every subject with held-out slices is then a validation
            case evaluated on those slices only).
        batch_size: Training samples per batch.
        num_workers: DataLoader worker processes.
        foreground_fraction: Share of each epoch's training samples drawn from slices with
            lesion voxels (with replacement, like nnU-Net's oversampling); ``None``: every
            slice equally often, as the papers do.
        predict_split: The split ``predict`` runs on.
        augment_on_device: Augment each training batch after it reached the training device,
            all samples in one resampling (:meth:`on_after_batch_transfer`,
            :class:`~datamodules.batched_augmentation.BatchedAffine`), instead of sample by sample
            in the loader's workers; each sample's matrix is drawn from its own seed either way,
            so the two paths give the same samples up to interpolation rounding. ``None``
            (default): on the device when it is a GPU, in the workers on the CPU.
        cache_on_device: Copy the fold's training slices to the training device once and
            assemble and augment every training batch there, without loader workers
            (:mod:`datamodules.device_cache`); the same samples in the same order.
        device_cache_dtype: The images' dtype in the device cache; ``None``: the training
            precision's (bfloat16, float16, or float32 for a full-precision run).
        predict_cases: Predict cases given as files instead of ``predict_split`` of
            ``data_dir``: case name → {image name → NIfTI file} (``lightning-cv segment`` sets
            it). The image names are the model's channels plus the dataset's reference and
            support images (:meth:`files_needed`); missing and extra names are listed in the
            error. A case's mask is written as ``<case name>.nii.gz``.

    Raises:
        ConfigurationError: On an invalid fold, fraction or cache folder (the message says
            which setting and what to do).
    """

    dataset_name: ClassVar[str] = "dataset"
    train_split: ClassVar[str] = "TRAINING"
    #: The values ``predict_split`` accepts (its ``Literal``), for a command to check a split it
    #: passes on in its own terms (``lightning-cv predict --split``); empty: not listed.
    predict_splits: ClassVar[tuple[str, ...]] = ()
    #: The image whose grid and header a case's predictions take (``lightning-cv segment``
    #: writes its output on this image's grid, in its file format).
    reference_image: ClassVar[str] = ""

    def __init__(
        self,
        *,
        data_dir: str,
        cache_dir: str | None,
        channels: Sequence[str],
        geometry: SliceGeometry,
        augmentation: Augmentation | None,
        fold: int,
        num_folds: int,
        split_seed: int,
        split_unit: SplitUnit,
        batch_size: int,
        num_workers: int,
        foreground_fraction: float | None,
        predict_split: str,
        augment_on_device: bool | None = None,
        targets: Sequence[str] = (),
        cache_on_device: bool = False,
        device_cache_dtype: CacheDtype | None = None,
        predict_cases: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__()
        if num_folds < 2:
            raise ConfigurationError(f"num_folds must be at least 2, got {num_folds}.")
        if not 0 <= fold < num_folds:
            raise ConfigurationError(
                f"fold must be in [0, {num_folds - 1}] for num_folds={num_folds}, got {fold}. "
                f"Set data.init_args.fold to one of 0..{num_folds - 1}."
            )
        if foreground_fraction is not None and not 0.0 < foreground_fraction < 1.0:
            raise ConfigurationError(
                f"foreground_fraction must be in (0, 1) or null (uniform sampling), got "
                f"{foreground_fraction}."
            )
        if split_unit not in ("subject", "slice"):
            raise ConfigurationError(
                f"split_unit must be 'subject' or 'slice', got {split_unit!r}."
            )
        if isinstance(geometry, VolumeGeometry) and split_unit != "subject":
            raise ConfigurationError(
                "split_unit='slice' holds out single slices, which a 3D network cannot be "
                "scored on; use split_unit='subject' with spatial_dims 3."
            )
        if batch_size < 1 or num_workers < 0:
            raise ConfigurationError(
                f"batch_size must be ≥ 1 and num_workers ≥ 0, got {batch_size} and {num_workers}."
            )
        self.data_dir = Path(data_dir).expanduser()
        self.cache_root = (
            Path(cache_dir).expanduser()
            if cache_dir
            else self.data_dir.parent / ".cache" / "strokeseg"
        )
        check_cache_root(self.cache_root)
        self.channel_names = list(channels)
        self.target_names = list(targets)
        if self.target_names and geometry.context != (0,):
            raise ConfigurationError(
                f"targets {self.target_names} need a slice context of [0], got "
                f"{list(geometry.context)}."
            )
        self.geometry = geometry
        self.augmentation = augmentation
        self.fold, self.num_folds, self.split_seed = fold, num_folds, split_seed
        self.split_unit: SplitUnit = split_unit
        self.batch_size, self.num_workers = batch_size, num_workers
        self.foreground_fraction = foreground_fraction
        self.predict_split = predict_split
        self.augment_on_device = augment_on_device
        self.cache_on_device = cache_on_device
        self.device_cache_dtype = device_cache_dtype
        self.predict_cases = (
            None
            if predict_cases is None
            else {
                str(case): {k: Path(v) for k, v in files.items()}
                for case, files in predict_cases.items()
            }
        )
        self._batched: BatchedAffine | None = None
        self._device_cache: DeviceCache | None = None
        self.caches: dict[str, SliceCache] = {}
        self.train_cases = self.val_cases = np.empty(0, dtype=np.int64)
        self.train_rows = np.empty(0, dtype=np.int64)
        self.val_rows: np.ndarray | None = None  # held-out slices of a slice-level split
        # Listed and keyed once per process, shared by prepare_data and setup.
        self._items: dict[str, list[CacheItem]] = {}
        self._cache_dirs: dict[str, Path] = {}

    # -- to implement ---------------------------------------------------------------------
    def _scan(self, split: str) -> list[CacheItem]:
        """The cases of ``split`` in a fixed order, without decoding any file."""
        raise NotImplementedError

    def _load(self, item: CacheItem, channels: Sequence[str]) -> DecodedCase:
        """Decode, check and normalise ``channels`` of one case listed by :meth:`_scan`."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        """The dataset's preprocessing settings (channels, intensity normalisation, ...)."""
        raise NotImplementedError

    # -- what the network sees ------------------------------------------------------------
    @property
    def spatial_dims(self) -> int:
        """What a training sample is: 2, a slice stack; 3, a whole case as a volume."""
        return self.geometry.spatial_dims

    @property
    def network_size(self) -> tuple[int, int] | None:
        """The in-plane size ``(h, w)`` of the network grid: the resize target, else the crop
        window, else the first training case's own slices (read from its header only);
        ``None`` when there is no training case to ask."""
        if self.geometry.size is not None:
            return self.geometry.size
        if self.geometry.crop is not None:
            h0, h1, w0, w1 = self.geometry.crop
            return h1 - h0, w1 - w0
        items = self.items(self.train_split)
        if not items:
            return None
        _, height, width = self.geometry.native_shape(case_shape(items[0].sources[0]))
        return height, width

    def signature(self) -> dict[str, Any]:
        """Everything that decides the network's input: dataset, preprocessing and geometry.

        It is stored in checkpoints (:meth:`state_dict`); evaluating or predicting with a
        checkpoint whose signature differs is refused (:meth:`check_signature`).
        """
        return {
            **self._settings(),
            "geometry": self.geometry.settings(),
            **self.geometry.network_settings(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"signature": self.signature()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.check_signature(state_dict.get("signature"), "the checkpoint")

    def check_signature(
        self, saved: dict[str, Any] | None, where: str, remedy: str | None = None
    ) -> None:
        """Refuse to evaluate a network on inputs other than those it was trained on.

        Args:
            remedy: What the error tells the user to do (default: run with the training run's
                own configuration).

        Raises:
            ConfigurationError: Listing each setting that differs, with both values.
        """
        if saved is None:
            return
        current = json.loads(json.dumps(self.signature()))
        saved = json.loads(json.dumps(saved))
        differences = [
            f"{key}: trained with {saved.get(key)!r}, now {current.get(key)!r}"
            for key in sorted(set(saved) | set(current))
            if saved.get(key) != current.get(key)
        ]
        if differences:
            raise ConfigurationError(
                f"The data settings differ from those {where} was trained with, so its inputs "
                f"would not be what it learned on: {'; '.join(differences)}. "
                + (
                    remedy
                    or "Run with the training run's own configuration (--config "
                    "runs/<experiment>/fold<k>/config.yaml) or set these values back."
                )
            )

    # -- cache ----------------------------------------------------------------------------
    def items(self, split: str) -> list[CacheItem]:
        """The cases of ``split`` (listed once per process); with ``predict_cases``, the
        predict split is those cases."""
        if split not in self._items:
            if split == self.predict_split and self.predict_cases is not None:
                self._items[split] = [
                    self._files_case(number, name, files)
                    for number, (name, files) in enumerate(self.predict_cases.items())
                ]
            else:
                self._items[split] = self._scan(split)
        return self._items[split]

    def _files_case(self, number: int, name: str, files: Mapping[str, Path]) -> CacheItem:
        """A case of ``predict_cases``, after checking its image names and that the files
        exist; its mask is written as ``<name>.nii.gz``."""
        required, optional = self.files_needed()
        missing = [name for name in required if name not in files]
        extra = [name for name in files if name not in required and name not in optional]
        if missing or extra:
            raise ConfigurationError(
                f"{name}: this model reads the images {', '.join(required)}"
                + (f" (optionally {', '.join(optional)})" if optional else "")
                + f"; got {', '.join(files) or 'none'}."
                + (f" Missing: {', '.join(missing)}." if missing else "")
                + (f" Not used: {', '.join(extra)}." if extra else "")
                + " Give each as --image NAME=FILE."
            )
        absent = [f"{name}={path}" for name, path in files.items() if not path.is_file()]
        if absent:
            raise DatasetNotFoundError(
                f"{name}: image file(s) not found: {', '.join(absent)}. Check the paths given "
                "with --image."
            )
        item = self._case_from_files(name, files)
        target = PredictionTarget(f"{name}.nii.gz")
        return CacheItem(item.name, number, number + 1, item.sources, target)

    def files_needed(self) -> tuple[list[str], list[str]]:
        """``(required, optional)`` image names of a case given as files: the input channels,
        and what the dataset decodes beside them (its reference grid, support images)."""
        names = [self.reference_image] if self.reference_image else []
        return names + [c for c in self.channel_names if c not in names], []

    def _case_from_files(self, name: str, files: Mapping[str, Path]) -> CacheItem:
        """Case ``name`` made of ``files`` (names checked), registered so that ``_load`` reads
        it (patient, number and prediction name are set by the caller)."""
        raise ConfigurationError(
            f"{type(self).__name__} cannot read a case given as files; predict a split of "
            "data_dir instead."
        )

    def _cache_settings(self) -> dict[str, Any]:
        """What the cache's content depends on (recorded in it, and part of its key)."""
        return {
            "dataset": self.dataset_name,
            **self._settings(),
            "geometry": self.geometry.settings(),
        }

    def cache_path(self, split: str) -> Path:
        """The cache folder of ``split`` for the current files and settings."""
        if split not in self._cache_dirs:
            key = cache_key(self.items(split), self._cache_settings())
            self._cache_dirs[split] = self.cache_root / f"{self.dataset_name}-{split}-{key}"
        return self._cache_dirs[split]

    def preflight(self, stage: str) -> None:
        """Cheap checks before a trainer exists, so a settings mistake is the first thing a
        user reads: the folds against the patients, the crop against the first case's header.
        The cache build checks every case again.

        Raises:
            ConfigurationError: Naming the setting, what is wrong and what to do.
        """
        split = self.predict_split if stage == "predict" else self.train_split
        items = self.items(split)
        if items:
            first = items[0]
            self.geometry.check(case_shape(first.sources[0]), f"{first.name} ({first.sources[0]})")
        if stage != "predict":
            self.check_folds()

    def check_folds(self) -> None:
        """Refuse more folds than patients, from the case list alone (nothing is decoded).

        Raises:
            ConfigurationError: Naming the dataset, the counts and the setting to change.
        """
        if self.split_unit != "subject":
            return
        patients = len({item.patient for item in self.items(self.train_split)})
        if patients < self.num_folds:
            raise ConfigurationError(
                f"Cannot make {self.num_folds} folds from the {patients} patients of "
                f"{self.data_dir} ({self.train_split}): every fold needs at least one. Set "
                f"data.init_args.num_folds to at most {patients}, or add cases."
            )

    def _predicting(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.state.fn == "predict"

    def _splits_for_stage(self) -> list[str]:
        return [self.predict_split] if self._predicting() else [self.train_split]

    def prepare_data(self) -> None:
        """Validate and decode every case of the needed split once (local rank 0 only)."""
        settings = self._cache_settings()
        for split in self._splits_for_stage():
            channels = self.split_channels(split)
            build_slice_cache(
                self.cache_path(split),
                self.items(split),
                partial(self._load, channels=channels),
                channels,
                self.geometry,
                settings,
            )

    def _inputs(self) -> int | None:
        """How many leading image channels of a sample are network input (``None``: all; with
        targets the context is ``(0,)``, so a sample's channels are the cache's)."""
        return len(self.channel_names) if self.target_names else None

    def split_channels(self, split: str) -> list[str]:
        """The channels a split's cache holds: the inputs, then (training split) the targets."""
        return self.channel_names + (self.target_names if split == self.train_split else [])

    # -- splits ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Plain tensors in the hot path: MONAI's MetaTensor bookkeeping costs far more than
        # the work itself (docs/performance.md), and nothing downstream reads its metadata.
        set_track_meta(False)
        self._device_cache = None  # a new fold's cases
        for split in self._splits_for_stage():
            self.caches[split] = SliceCache(self.cache_path(split))
        if self.train_split in self.caches:
            self._split(self.caches[self.train_split])
        self._check_processes(stage)  # before the collective below, on every rank alike
        trainer = self.trainer
        if self.train_split in self.caches and trainer is not None:
            # trainer.log_dir is a collective under DDP: every rank must ask for it.
            log_dir = trainer.log_dir
            if log_dir is not None:
                self._write_split(Path(log_dir))

    def _check_processes(self, stage: str) -> None:
        """Refuse to share fewer cases than there are processes: the case loaders neither pad
        nor drop (each case is scored once), so every process needs a case of its own.

        Every rank decides from the same split and the same process group, so all ranks raise
        together and none is left waiting in a collective for another.

        Raises:
            ConfigurationError: Naming the stage, the cases, the processes and what to do.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        trainer = self.trainer
        if stage == "fit" and trainer is not None and trainer.limit_val_batches == 0:
            return  # no validation loader is made
        processes = torch.distributed.get_world_size()
        if self._predicting():
            cases = len(self.caches[self.predict_split])
            where, remedy = f"the {self.predict_split} split of {self.data_dir}", ""
        else:
            cases = len(self.val_cases)
            where = f"validation fold {self.fold} of {self.num_folds} ({self.data_dir})"
            remedy = ", or make the folds larger (fewer data.init_args.num_folds, or more cases)"
        if cases >= processes:
            return
        most, command = max(cases, 1), TrainerFn(stage).value
        raise ConfigurationErrorOnEveryRank(
            f"lightning {command} with {processes} processes: {where} holds {cases} "
            f"case{'' if cases == 1 else 's'}, and every process needs at least one (each case "
            f"is scored once, by one process). Run it in at most {most} "
            f"process{'' if most == 1 else 'es'} (--trainer.devices {most}){remedy}."
        )

    def _split(self, cache: SliceCache) -> None:
        self.check_folds()
        try:
            if self.split_unit == "subject":
                self.train_cases, self.val_cases = grouped_kfold(
                    cache.patient, self.num_folds, self.fold, self.split_seed
                )
                self.train_rows, self.val_rows = cache.slice_rows(self.train_cases), None
                return
            labelled = np.flatnonzero(cache.has_label)
            self.train_rows, self.val_rows = slice_kfold(
                cache.slice_rows(labelled), self.num_folds, self.fold, self.split_seed
            )
        except ValueError as error:
            raise ConfigurationError(
                f"{self.data_dir} ({self.train_split}): {error} (data.init_args.num_folds)."
            ) from error
        rank_zero_warn(
            "split_unit='slice' splits slices, not subjects (VCA-Net's random_split): "
            "neighbouring slices of one subject are in training and validation, so validation "
            "scores are optimistic and not comparable with subject-level results. Use "
            "split_unit='subject' unless you are reproducing that paper's numbers.",
            category=UserWarning,
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
        split: dict[str, Any] = {
            "fold": self.fold,
            "num_folds": self.num_folds,
            "split_seed": self.split_seed,
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
        write_text(RunLayout(log_dir).split, json.dumps(split, indent=1))

    # -- loaders --------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        sampler = EpochSampler(len(dataset), _run_seed(), self._foreground_weights(dataset))
        if self.cache_on_device:  # keys only: the batch is assembled on the device
            return DataLoader(
                SampleKeys(len(dataset)),
                batch_size=self.batch_size,
                sampler=self._at_epoch(sampler),
                num_workers=0,
                drop_last=len(sampler) > self.batch_size,
            )
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self._at_epoch(sampler),
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=VolumeCollate(dataset.geometry)
            if isinstance(dataset, VolumeDataset)
            else default_collate,
            # Per process: a rank with fewer samples than a batch keeps its one short batch.
            drop_last=len(sampler) > self.batch_size,
        )

    def _at_epoch(self, sampler: EpochSampler) -> EpochSampler:
        """The sampler told the epoch about to train: Lightning creates the first iterator (and
        worker prefetching starts) before it calls set_epoch; a resumed run must start from its
        own epoch's draws, not epoch 0's."""
        if self.trainer is not None:
            sampler.set_epoch(_epoch_to_train(self.trainer))
        return sampler

    def train_dataset(self) -> SliceDataset | VolumeDataset:
        """The fold's training samples: slice stacks, or whole cases for a volume geometry."""
        cache = self.caches[self.train_split]
        transform = self.augmentation.transform() if self.augmentation is not None else None
        defer = self._augments_on_device() or self.cache_on_device
        inputs = self._inputs()
        if isinstance(self.geometry, VolumeGeometry):
            return VolumeDataset(cache, self.train_cases, self.geometry, transform, defer, inputs)
        return SliceDataset(cache, self.train_rows, self.geometry, transform, defer, inputs)

    def _augments_on_device(self) -> bool:
        """Whether training batches are augmented on the device (see ``augment_on_device``)."""
        if self.augmentation is None:
            return False
        if self.augment_on_device is not None:
            return self.augment_on_device
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With augmentation on the device, augment a training batch where it now is, in one
        resampling; each sample's matrix comes from its own seed, so the batch equals the one
        the workers would have made. The seeds stay on the host (no device synchronisation)."""
        if isinstance(batch, dict) and "position" in batch:
            batch = self._assemble_on_device(batch)
        if not (isinstance(batch, dict) and "seed" in batch):
            return batch
        if self.augmentation is None:
            rest = {k: v for k, v in batch.items() if k != "seed"}
            return split_targets(rest, self._inputs(), batched=True)
        if self._batched is None:
            self._batched = BatchedAffine(self.augmentation)
        given = batch["seed"]  # a host list (transfer_batch_to_device), or the loader's tensor
        seeds = [
            None if seed < 0 else seed
            for seed in (given.tolist() if isinstance(given, torch.Tensor) else given)
        ]
        image, label = self._batched(batch["image"], batch["label"], seeds)
        rest = {k: v for k, v in batch.items() if k not in ("image", "label", "seed")}
        return {
            **rest,
            **split_targets({"image": image, "label": label}, self._inputs(), batched=True),
        }

    def _assemble_on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch of keys → its samples, gathered from the device cache (copied to the batch's
        device on the first batch of a fit)."""
        device = batch.get("device", torch.device("cpu"))
        if self._device_cache is None or self._device_cache.device != device:
            trainer = self.trainer  # the training precision sets the dtype (full: float32)
            precision = trainer.precision if trainer is not None else "32-true"
            self._device_cache = DeviceCache(
                self.caches[self.train_split],
                self.train_cases,
                self.geometry,
                device,
                cache_dtype(precision, self.device_cache_dtype),
            )
        positions, seeds = list(batch["position"]), list(batch["seed"])
        if isinstance(self.geometry, VolumeGeometry):
            samples = self._device_cache.volumes(self.train_cases[positions].tolist(), seeds)
        else:
            samples = self._device_cache.slices(self.train_rows[positions])
        return {**samples, "seed": seeds}

    def _foreground_weights(self, dataset: SliceDataset | VolumeDataset) -> np.ndarray | None:
        """Sampling weights that draw ``foreground_fraction`` of the samples from those with
        lesion voxels (``None``: uniform, every sample once per epoch)."""
        fraction = self.foreground_fraction
        if fraction is None:
            return None
        lesion = dataset.has_lesion()
        if lesion.all() or not lesion.any():
            rank_zero_warn(
                f"foreground_fraction={fraction} ignored: {lesion.sum()} of "
                f"{len(lesion)} training samples have lesion voxels."
            )
            return None
        return np.where(lesion, fraction / lesion.sum(), (1.0 - fraction) / (~lesion).sum())

    def _case_loader(
        self, split: str, cases: np.ndarray, rows: np.ndarray | None = None
    ) -> DataLoader:
        dataset = CaseDataset(
            self.caches[split], cases, self.geometry, self.items(split), rows,
            inputs=self._inputs(),
        )  # fmt: skip
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # No padding: every case is evaluated exactly once across ranks (a padded sampler
            # would count some cases twice and change the mean).
            sampler = DistributedSampler(dataset, even_divisible=False, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=1,
            sampler=sampler,
            num_workers=min(self.num_workers, 1),
            collate_fn=single_case_collate,
        )

    def val_dataloader(self) -> DataLoader:
        return self._case_loader(self.train_split, self.val_cases, self.val_rows)

    def test_dataloader(self) -> DataLoader:
        """The validation fold, evaluated with the test metrics (official test sets have no
        labels; use ``predict`` to write their masks)."""
        return self._case_loader(self.train_split, self.val_cases, self.val_rows)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        # A case item carries its geometry and prediction target (frozen dataclasses, which
        # Lightning's recursive mover refuses): move the tensors, pass the rest through. The
        # augmentation seeds of a batch stay on the host, as a list, where they are drawn from.
        # A batch of keys (the device cache's) is gathered on the device it was sent to.
        if isinstance(batch, dict):
            moved = {
                k: (v.tolist() if k in ("seed", "position") else v.to(device, non_blocking=True))
                if isinstance(v, torch.Tensor)
                else v
                for k, v in batch.items()
            }
            if "position" in moved:
                moved["device"] = device
            return moved
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def predict_dataloader(self) -> DataLoader:
        cache = self.caches[self.predict_split]
        return self._case_loader(self.predict_split, np.arange(len(cache)))
