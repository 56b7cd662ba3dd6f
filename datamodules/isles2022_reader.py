"""Reader for the public ISLES 2022 BIDS release (layout: :mod:`datamodules.isles2022_layout`).

A file is recognised by its BIDS entities alone (subject, session, suffix), wherever it lies
under the root, so the release (``rawdata/…/dwi/``, ``derivatives/…``) and the copies that
differ from it (``_rawdata``/``_derivatives``, no modality folders, ``flair`` in lower case,
masks a folder deeper) read the same. Every other file (sidecars, ``_snp.png`` snapshots,
``participants.tsv``, README) is ignored, as are dot-folders, ``__MACOSX`` and the suite's own
predictions (``derivatives/strokeseg_prediction/``). Scanning decodes
nothing; :func:`read_case` decodes one case onto the voxel grid of its DWI:

* DWI and ADC share a grid with the lesion mask (the lesions were traced on the DWI). ADC and
  mask must lie on the DWI's grid, up to axis flips or permutations, which are undone exactly
  (:func:`datamodules.nifti.align_to_reference`); any other difference is refused.
* FLAIR is not co-registered: it has its own resolution, orientation (often 1 mm sagittal,
  possibly oblique) and field of view. :func:`flair_on_dwi_grid` resamples it onto the DWI's
  grid with SimpleITK, either through the two headers' world coordinates (``"header"``: the
  scans of one session share the scanner's frame) or after a rigid mutual-information
  registration (``"rigid"``: for a patient who moved between the two scans).
* Mask values are {0, 1} in varying dtypes (uint8, float32, float64); a voxel is lesion where
  the mask is ``> 0``, as for the ATLAS masks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from core.errors import ConfigurationError, DataValidationError
from datamodules.isles2022_layout import (
    CHANNELS,
    MASK,
    PREDICTION_DERIVATIVE,
    WRITTEN_SUFFIX,
    FileEntities,
    case_name,
    file_stem,
    mask_path,
    not_found,
    parse_name,
    raw_path,
    sidecar_path,
)
from datamodules.nifti import align_to_reference, grid_affine, load_volume

log = logging.getLogger(__name__)

#: How FLAIR is put on the DWI's grid: through the headers, or after a rigid registration.
FlairAlignment = Literal["header", "rigid"]
FLAIR_ALIGNMENTS: tuple[str, ...] = get_args(FlairAlignment)

# Every case has these; FLAIR is needed only when a model asks for it.
_REQUIRED = ("DWI", "ADC")
# Folders an archive tool adds beside the data (dot-folders are skipped too), and the suite's
# own prediction derivative: masks predicted into a copy of the release are not ground truth.
_SKIPPED_FOLDERS = frozenset({"__MACOSX", PREDICTION_DERIVATIVE})
# nibabel's world frame is RAS, ITK's is LPS: the same point has x and y negated.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

# Rigid registration. The seed fixes the metric's random samples, so a case gets the same
# transform every time, up to the order in which ITK's threads add up the metric (measured:
# translations within 4e-7 mm over 60 runs; bit-identical with one thread for all of SimpleITK,
# sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)). Smoothing is in mm: DWI voxels are
# anisotropic.
_SEED = 2022
_HISTOGRAM_BINS = 50
_SAMPLING = 0.1
_SHRINK = (4, 2, 1)
_SMOOTHING_MM = (2.0, 1.0, 0.0)
_LEARNING_RATE = 1.0
_MIN_STEP = 1e-3
_ITERATIONS = 200


@dataclass(frozen=True)
class ISLES2022Case:
    """One session of one subject: the files found for it, by role.

    Attributes:
        subject: The ``sub-`` label, e.g. ``"strokecase0001"``.
        session: The ``ses-`` label, e.g. ``"0001"``.
        files: Role (``"DWI"``, ``"ADC"``, ``"FLAIR"``, ``"mask"``) → image file. DWI and ADC
            are always there; FLAIR and the mask only when found.
    """

    subject: str
    session: str
    files: Mapping[str, Path]

    @property
    def name(self) -> str:
        """The suite's name of the case, ``"sub-strokecase0001/ses-0001"``."""
        return case_name(self.subject, self.session)

    def path(self, role: str) -> Path:
        """The file of ``role``.

        Raises:
            DataValidationError: If the case has no such file; the message names the subject,
                the role, the files found and where the release keeps the missing one.
            ConfigurationError: If ``role`` is not a channel of :data:`CHANNELS` nor ``"mask"``.
        """
        if role not in CHANNELS and role != MASK:
            raise ConfigurationError(
                f"Unknown ISLES 2022 role {role!r}; valid roles: {[*CHANNELS, MASK]}."
            )
        if role not in self.files:
            raise _missing(self, role, "the dataset root")
        return self.files[role]

    def sidecar(self, role: str) -> dict[str, Any] | None:
        """The JSON sidecar beside the file of ``role``, parsed, or ``None`` if there is none.

        Only the sidecar named like its image is read (``…_dwi.json``); a misnamed one (the
        release's ``…_dw.json``) counts as absent.

        Raises:
            DataValidationError: If the case has no file of ``role``, or the sidecar is not a
                JSON object; the message names the file.
        """
        path = sidecar_path(self.path(role))
        if not path.is_file():
            return None
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataValidationError(
                f"{path}: not valid JSON ({error}). Fix the sidecar, restore it from the "
                "original release, or delete it (sidecars are optional)."
            ) from error
        if not isinstance(content, dict):
            raise DataValidationError(
                f"{path}: a BIDS sidecar holds a JSON object, found a {type(content).__name__}. "
                "Fix the sidecar, restore it from the original release, or delete it."
            )
        return content


# ----------------------------------------------------------------------------- scanning


def _missing(case: ISLES2022Case, role: str, where: str) -> DataValidationError:
    stem = file_stem(case.subject, case.session)
    release = mask_path(case.subject, case.session) if role == MASK else None
    release = release or raw_path(case.subject, case.session, role)
    found = ", ".join(f"{r} ({p})" for r, p in sorted(case.files.items())) or "nothing"
    remedy = (
        "Restore it from the original release, or predict without labels (masks are only "
        "required for training and evaluation)."
        if role == MASK
        else f"Restore it from the original release, or drop {role} from the channels "
        "(data.init_args.channels) if it is optional."
    )
    return DataValidationError(
        f"{case.name}: no {'lesion mask' if role == MASK else role + ' image'} for subject "
        f"{case.subject}. It is looked for as a file named {stem}_{WRITTEN_SUFFIX[role]}.nii[.gz] "
        f"at any depth under {where} (the release keeps it at {release}); found: {found}. "
        f"{remedy}"
    )


def _images(root: Path) -> Iterator[tuple[Path, FileEntities]]:
    """Every image of the dataset under ``root``, in a fixed order, recognised by its name."""
    visited: set[str] = set()
    for folder, folders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a link back into the tree: its files were seen already
            folders[:] = []
            continue
        visited.add(real)
        folders[:] = sorted(
            f for f in folders if not f.startswith(".") and f not in _SKIPPED_FOLDERS
        )
        for name in sorted(names):
            entities = None if name.startswith(".") else parse_name(name)
            if entities is None:
                log.debug("Ignoring %s: not an image of the ISLES 2022 layout", Path(folder, name))
                continue
            yield Path(folder, name), entities


def _root_or_error(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise not_found(path, "does not exist")
    if not path.is_dir():
        raise not_found(path, "is not a folder")
    return path


def check_root(root: str | Path) -> Path:
    """Fail fast, decoding nothing, if ``root`` holds no ISLES 2022 DWI image at any depth.

    Returns:
        The root as a path (``~`` expanded).

    Raises:
        DatasetNotFoundError: With the path looked at, the expected layout and the command
            that writes a synthetic twin.
    """
    path = _root_or_error(root)
    if any(entities.role == "DWI" for _, entities in _images(path)):
        return path
    raise not_found(path, "holds no DWI image (sub-<label>_ses-<label>_dwi.nii.gz) at any depth")


def scan_isles2022(root: str | Path, require_masks: bool) -> list[ISLES2022Case]:
    """List the cases under ``root``, decoding nothing.

    Args:
        root: The dataset's folder (the one holding ``rawdata/`` and ``derivatives/``); any
            folder above the images works, since files are matched by name at any depth.
        require_masks: Refuse a case without a lesion mask (training, evaluation).

    Returns:
        One :class:`ISLES2022Case` per (subject, session), sorted by subject then session.

    Raises:
        DatasetNotFoundError: If the root is missing or holds no DWI image.
        DataValidationError: If a case lacks its DWI or ADC, has two files of one role (both
            are named), or lacks a mask while ``require_masks`` is set.
    """
    path = _root_or_error(root)
    found: dict[tuple[str, str], dict[str, Path]] = {}
    for file, entities in _images(path):
        files = found.setdefault((entities.subject, entities.session), {})
        earlier = files.setdefault(entities.role, file)
        if earlier != file:
            name = case_name(entities.subject, entities.session)
            raise DataValidationError(
                f"{name}: two {entities.role} files for subject {entities.subject}, {earlier} "
                f"and {file}. A role has one file per session; move the other copy out of "
                f"{path}."
            )
    if not any("DWI" in files for files in found.values()):
        raise not_found(
            path, "holds no DWI image (sub-<label>_ses-<label>_dwi.nii.gz) at any depth"
        )
    cases = [ISLES2022Case(s, t, files) for (s, t), files in sorted(found.items())]
    for case in cases:
        for role in _REQUIRED + ((MASK,) if require_masks else ()):
            if role not in case.files:
                raise _missing(case, role, str(path))
    return cases


# ----------------------------------------------------------------------------- FLAIR


def _world_affine(path: Path) -> np.ndarray:
    """The voxel → world (RAS, mm) affine a file's header means; one is needed to resample."""
    affine = grid_affine(nib.load(str(path)))
    if affine is None:
        raise DataValidationError(
            f"{path}: the header states no orientation (no qform, and no sform or an identity "
            "one), so the "
            "FLAIR cannot be placed on the DWI's grid. Restore the file from the original "
            "release (its header carries the scanner's orientation)."
        )
    return affine


def _sitk_image(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of ``data`` (nibabel's (X, Y, Z)) lying where ``affine`` puts it.

    The geometry is taken from nibabel's affine, converted from RAS to ITK's LPS, never from
    ITK's own NIfTI reader, so that nibabel and ITK agree by construction (ITK chooses between
    qform and sform by rules of its own).
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T, dtype=np.float32))  # (Z, Y, X)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((_RAS_TO_LPS @ affine[:3, 3]).tolist())
    image.SetDirection((_RAS_TO_LPS @ (affine[:3, :3] / spacing)).ravel().tolist())
    return image


def _rigid(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """The rigid transform (fixed → moving points) maximising Mattes mutual information.

    The search starts from the headers' alignment (identity), rotating about the DWI's centre:
    both scans come from one session, so their headers are the best first guess. Matching the
    centres of the two fields of view instead (``CenteredTransformInitializer``, GEOMETRY)
    would shift a FLAIR that also covers the neck by tens of millimetres before the search.
    """
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in fixed.GetSize()])
    start = sitk.Euler3DTransform()
    start.SetCenter(centre)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=_HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(_SAMPLING, _SEED)
    method.SetInterpolator(sitk.sitkLinear)
    # Gradients at the sampled points only: a gradient image of a whole 1 mm FLAIR per level
    # would take most of the time (measured 5 s against 1.5 s for a 176×256×256 FLAIR).
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=_LEARNING_RATE, minStep=_MIN_STEP, numberOfIterations=_ITERATIONS
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(_SHRINK))
    method.SetSmoothingSigmasPerLevel(list(_SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(start, inPlace=False)
    return method.Execute(fixed, moving)


def _flair_on_grid(
    flair: Path, dwi: Path, dwi_data: np.ndarray, alignment: FlairAlignment
) -> np.ndarray:
    if alignment not in FLAIR_ALIGNMENTS:
        raise ConfigurationError(
            f"Unknown FLAIR alignment {alignment!r}; valid: {list(FLAIR_ALIGNMENTS)}."
        )
    flair_data, _ = load_volume(flair)
    moving = _sitk_image(flair_data, _world_affine(flair))
    fixed = _sitk_image(dwi_data, _world_affine(dwi))
    transform: sitk.Transform = sitk.Transform()  # identity: the headers' alignment
    if alignment == "rigid":
        try:
            transform = _rigid(fixed, moving)
        except RuntimeError as error:  # e.g. the images do not overlap at all
            reason = str(error).strip().splitlines()[-1]  # ITK's own words, without its source path
            raise DataValidationError(
                f"{flair}: rigid registration onto {dwi} failed ({reason}). Check that both "
                "files are of the same session, or use the headers' alignment "
                "(flair_alignment: header)."
            ) from error
    resampled = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out = np.ascontiguousarray(sitk.GetArrayFromImage(resampled).T)  # (X, Y, Z)
    if not np.isfinite(out).all():
        raise DataValidationError(
            f"{flair}: resampling onto the grid of {dwi} gave NaN or infinite values. Check "
            "both files' headers, or restore them from the original release."
        )
    if not out.any():
        log.warning("%s: covers none of the grid of %s; its channel is all 0", flair, dwi)
    return out


def flair_on_dwi_grid(flair: Path, dwi: Path, alignment: FlairAlignment = "header") -> np.ndarray:
    """Resample a FLAIR onto the voxel grid of its session's DWI.

    Args:
        flair: The FLAIR file (any orientation, spacing and field of view).
        dwi: The DWI file whose grid the case uses.
        alignment: ``"header"`` maps voxels through the two headers' world coordinates
            (identity transform); ``"rigid"`` first registers FLAIR to DWI with a rigid
            (Euler) transform maximising Mattes mutual information, on a three-level pyramid
            with a fixed seed: repeatable up to float rounding (bit for bit when SimpleITK runs
            on one thread).

    Returns:
        ``(X, Y, Z)`` float32 in the DWI's nibabel array order, trilinear; 0 where the DWI's
        field of view reaches beyond the FLAIR's.

    Raises:
        DataValidationError: Unreadable file, non-3D or non-finite data, a header without
            orientation, or a registration that fails; the message names the file.
        ConfigurationError: If ``alignment`` is not one of :data:`FLAIR_ALIGNMENTS`.
    """
    dwi_data, _ = load_volume(dwi)
    return _flair_on_grid(Path(flair), Path(dwi), dwi_data, alignment)


# ----------------------------------------------------------------------------- decoding


def _lesion(case: ISLES2022Case, reference: Path) -> np.ndarray:
    """The case's mask on the DWI's grid, ``> 0``, as uint8 {0, 1}."""
    path = case.path(MASK)
    data, _ = load_volume(path)
    data = align_to_reference(data, path, reference)
    values = np.unique(data)
    if (values > 0).sum() > 1 or (values < 0).any():  # {0, 1} and {0, 255} are binary
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" …" if values.size > 8 else "")
        log.warning("%s: mask values are not binary (%s); lesion is taken as > 0", path, shown)
    lesion = (data > 0).astype(np.uint8)
    if not lesion.any():
        log.warning("%s: the lesion mask is empty", path)
    return lesion


def read_case(
    case: ISLES2022Case,
    channels: Sequence[str],
    flair_alignment: FlairAlignment = "header",
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """Decode one case onto the voxel grid of its DWI.

    Args:
        case: The case to read.
        channels: Channels to return, in this order, from :data:`CHANNELS`.
        flair_alignment: How FLAIR is put on the DWI's grid (:func:`flair_on_dwi_grid`).

    Returns:
        ``(image, label, spacing)``: image ``(C, X, Y, Z)`` float32 in ``channels`` order, in
        the DWI file's nibabel array order; label ``(X, Y, Z)`` uint8 in {0, 1} (mask ``> 0``),
        or ``None`` for a case without a mask; spacing ``(dx, dy, dz)`` in mm, the DWI's zooms.

    Raises:
        ConfigurationError: Unknown channel or FLAIR alignment.
        DataValidationError: A requested file missing, unreadable, non-3D or non-finite, an ADC
            or mask off the DWI's grid (beyond axis flips/permutations), or a FLAIR that cannot
            be resampled; the message names the file.
    """
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels:
        raise ConfigurationError(
            f"Unknown or no ISLES 2022 channel(s) {unknown or list(channels)}; valid channels: "
            f"{list(CHANNELS)} (data.init_args.channels)."
        )
    if flair_alignment not in FLAIR_ALIGNMENTS:
        raise ConfigurationError(
            f"Unknown FLAIR alignment {flair_alignment!r}; valid: {list(FLAIR_ALIGNMENTS)}."
        )
    reference = case.path("DWI")
    dwi, zooms = load_volume(reference)
    planes: dict[str, np.ndarray] = {"DWI": dwi.astype(np.float32, copy=False)}
    for channel in dict.fromkeys(channels):
        if channel == "ADC":
            path = case.path("ADC")
            adc, _ = load_volume(path)
            planes[channel] = align_to_reference(adc, path, reference).astype(np.float32)
        elif channel == "FLAIR":
            planes[channel] = _flair_on_grid(case.path("FLAIR"), reference, dwi, flair_alignment)
    label = _lesion(case, reference) if MASK in case.files else None
    image = np.stack([planes[c] for c in channels])  # (C, X, Y, Z)
    return image, label, (zooms[0], zooms[1], zooms[2])
