"""ISLES 2022 MRI (DWI, ADC, FLAIR) for 2D, 2.5D and 3D networks, split by subject."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from core.errors import ConfigurationError
from datamodules import isles2022_layout as layout
from datamodules.base import CacheDtype, SliceDataModule, SplitUnit
from datamodules.cache import CacheItem, DecodedCase
from datamodules.geometry import geometry_for
from datamodules.isles2022_reader import (
    FlairAlignment,
    ISLES2022Case,
    check_root,
    read_case,
    scan_isles2022,
)
from datamodules.normalization import Normalization, normalize_channels
from datamodules.transforms import Augmentation

Channel = Literal["DWI", "ADC", "FLAIR"]
Split = Literal["training", "all"]
# Slices are (H, W) = (X, Y) of the DWI's NIfTI array, stacked along Z: the release's DWI and
# ADC are axial acquisitions stored slice by slice along Z (docs/datasets.md §7).
_AXES = (2, 0, 1)


def _case_number(subject: str, fallback: int) -> int:
    digits = "".join(c for c in subject if c.isdigit())
    return int(digits) if digits else fallback


class ISLES2022DataModule(SliceDataModule):
    """ISLES 2022 (DWI, ADC, FLAIR; BIDS) for 2D, 2.5D or 3D networks, per-subject K-fold CV.

    The reader (:mod:`datamodules.isles2022_reader`) finds files by their BIDS entities, puts
    the FLAIR — acquired on its own grid, not co-registered — onto the DWI's grid (by header
    geometry, or by a rigid registration) and the mask on the DWI's grid too. Every case is
    decoded once into the shared cache on the network grid. Centres differ in voxel size, so
    by default every slice is resampled to a target in-plane spacing of 2 mm and padded or
    cropped to 128 × 128 (256 mm, a whole head); predictions go back to each case's own DWI grid
    and header (:class:`~datamodules.geometry.SliceGeometry`).

    Training cases are those with a mask (``"training"``: every case must have one);
    ``predict_split: all`` predicts every case of ``data_dir`` — masks optional — e.g. a
    held-out folder laid out like the release. Predictions are written as the BIDS derivative
    ``derivatives/strokeseg_prediction/sub-…/ses-…/sub-…_ses-…_msk.nii.gz``.

    Args:
        data_dir: The release's root (holding ``rawdata/`` and ``derivatives/``, whatever the
            copy calls them; a synthetic twin: ``lightning-data synth isles2022``).
        cache_dir: Where caches are written; default ``<data_dir>/../.cache/strokeseg``.
        channels: Input channels in order, from ``DWI``, ``ADC``, ``FLAIR``.
        flair_alignment: ``"header"`` (resample FLAIR by the headers' world coordinates) or
            ``"rigid"`` (register FLAIR to the DWI first: mutual information, rigid).
        normalization: Per case and channel over the head (DWI > 0): ``"zscore"``,
            ``"minmax"`` or ``"none"``. ADC stays in its own units until then.
        target_spacing: In-plane voxel size (mm) slices are resampled to, or ``None`` to
            resize every slice to ``image_size`` whatever its voxel size.
        image_size: The network grid (int or ``[h, w]``).
        crop: ``(row0, row1, col0, col1)`` window of the native slices, or ``None``.
        context: Slice offsets stacked as channels (2.5D; ``[0]``: the slice alone).
        fold: Validation fold, ``0 ≤ fold < num_folds``.
        num_folds: Number of folds.
        split_seed: Seed of the subject shuffle.
        split_unit: ``"subject"`` or ``"slice"`` (see :class:`SliceDataModule`).
        batch_size: Training samples per batch.
        num_workers: DataLoader worker processes.
        foreground_fraction: Share of training samples drawn from slices with lesion voxels;
            ``None``: uniform over slices.
        augmentation: The random affine of training samples, or ``None``.
        predict_split: ``"all"`` (every case, masks optional) or ``"training"``.
        spatial_dims: 2 (slices or stacks) or 3 (volumes).
        depth: With ``spatial_dims: 3``, the volumes' depth (see
            :class:`~datamodules.geometry.VolumeGeometry`); ``None``: each case's own.
        augment_on_device: Augment training batches on the training device; ``None``: on a
            GPU only (see :class:`~datamodules.base.SliceDataModule`).
        cache_on_device: Hold the fold's training samples on the training device.
        device_cache_dtype: Their dtype there; ``None``: the training precision's.
        predict_cases: Predict cases given as files (case → {image → NIfTI}) instead of a
            split of ``data_dir`` (``lightning-cv segment``; see
            :class:`~datamodules.base.SliceDataModule`).
    """

    dataset_name = "isles2022"
    train_split = "training"
    predict_splits = get_args(Split)
    reference_image = "DWI"

    def __init__(
        self,
        data_dir: str = "data/isles2022",
        cache_dir: str | None = None,
        channels: tuple[Channel, ...] = ("DWI", "ADC", "FLAIR"),
        flair_alignment: FlairAlignment = "header",
        normalization: Normalization = "zscore",
        target_spacing: float | tuple[float, float] | None = 2.0,
        image_size: int | tuple[int, int] = 128,
        crop: tuple[int, int, int, int] | None = None,
        context: tuple[int, ...] = (0,),
        fold: int = 0,
        num_folds: int = 5,
        split_seed: int = 0,
        split_unit: SplitUnit = "subject",
        batch_size: int = 16,
        num_workers: int = 2,
        foreground_fraction: float | None = None,
        augmentation: Augmentation | None = Augmentation(
            rotate_degrees=15.0,
            translate_fraction=0.1,
            scale_range=(0.9, 1.1),
            flip_axes=(0,),
            random_order=False,
        ),
        predict_split: Split = "all",
        spatial_dims: Literal[2, 3] = 2,
        depth: int | None = None,
        augment_on_device: bool | None = None,
        cache_on_device: bool = False,
        device_cache_dtype: CacheDtype | None = None,
        predict_cases: dict[str, dict[str, str]] | None = None,
    ) -> None:
        unknown = [c for c in channels if c not in layout.CHANNELS]
        if unknown or not channels or len(set(channels)) != len(channels):
            raise ConfigurationError(
                f"channels must be distinct names from {list(layout.CHANNELS)}, got "
                f"{list(channels)}; fix data.init_args.channels."
            )
        geometry = geometry_for(
            spatial_dims, _AXES, crop, image_size, context, depth, target_spacing
        )
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
            predict_cases=predict_cases,
        )
        self.save_hyperparameters()
        self.flair_alignment: FlairAlignment = flair_alignment
        self.normalization: Normalization = normalization
        self._cases: dict[str, ISLES2022Case] = {}

    @staticmethod
    def check_data_dir(data_dir: str | Path) -> None:
        """Fail fast, without decoding anything, if ``data_dir`` holds no ISLES 2022 case."""
        check_root(data_dir)

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "channels": self.channel_names,
            "normalization": self.normalization,
        }
        if "FLAIR" in self.channel_names:
            settings["flair_alignment"] = self.flair_alignment
        return settings

    def _scan(self, split: str) -> list[CacheItem]:
        cases = scan_isles2022(self.data_dir, require_masks=split == self.train_split)
        patients = {s: i for i, s in enumerate(sorted({case.subject for case in cases}))}
        items = []
        for number, case in enumerate(cases):
            # The DWI comes first: its header is the case's grid, copied into predictions.
            sources = (case.path("DWI"),) + tuple(
                case.path(c) for c in self.channel_names if c != "DWI"
            )
            if layout.MASK in case.files:
                sources += (case.path(layout.MASK),)
            items.append(
                CacheItem(
                    case.name,
                    patients[case.subject],
                    _case_number(case.subject, number),
                    sources,
                    layout.prediction_target(case.subject, case.session),
                )
            )
            self._cases[case.name] = case
        return items

    def _case_from_files(self, name: str, files: Mapping[str, Path]) -> CacheItem:
        self._cases[name] = ISLES2022Case(name, "1", dict(files))
        sources = (files["DWI"],) + tuple(files[c] for c in self.channel_names if c != "DWI")
        return CacheItem(name, 0, 1, sources)

    def _load(self, item: CacheItem, channels: Sequence[str]) -> DecodedCase:
        case = self._cases[item.name]
        wanted = list(channels)
        extra = [] if "DWI" in wanted else ["DWI"]
        image, label, zooms = read_case(case, wanted + extra, self.flair_alignment)
        head: np.ndarray = image[(wanted + extra).index("DWI")] > 0
        intensity = np.empty((len(wanted), 2))
        normalised = np.empty((len(wanted), *image.shape[1:]), dtype=np.float32)
        for index, channel in enumerate(wanted):
            # FLAIR is 0 where its field of view misses the DWI's: those zeros are not tissue.
            region = head & (image[index] != 0) if channel == "FLAIR" else head
            normalised[index] = normalize_channels(
                image[index : index + 1],
                region,
                self.normalization,
                stats=intensity[index : index + 1],
            )[0]
        image = normalised
        return DecodedCase(image, label, zooms, intensity)
