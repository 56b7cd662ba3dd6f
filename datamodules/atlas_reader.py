"""Reader for the three real ATLAS layouts, R1.1, R1.2 and R2.0 (docs/datasets.md §1–3).

Every reader function takes the same ``root``: the folder the archive was extracted into, i.e.
the parent of ``ATLAS_R1.1/``, of the R1.2 standard-space folder, or of ``ATLAS_2/`` (the folder
``lightning-data synth atlas DIR`` writes as ``DIR``). The release folder itself is accepted too.

::

    R1.1  <root>/ATLAS_R1.1/Site<k>/<NNNNNN>/t0<1|2>/<NNNNNN>_t1w_deface_stx.nii.gz
                                                    /<NNNNNN>_LesionSmooth[_<k>]_stx.nii.gz (≥ 1)
    R1.2  <root>/<any ≤ 3 folders>/c<NNNN>/c<NNNN>s<NNNN>t<NN>/c…t<NN>_t1w_stx.nii.gz
                                                             /c…t<NN>_LesionSmooth[_<k>]_stx.nii.gz
          (one merged folder such as atlas_standard/, or standard_MNI/standard_part{1,2}/)
    R2.0  <root>/ATLAS_2/{Training,Testing}/R<NNN>/sub-r<NNN>s<NNN>/ses-1/anat/
                                    sub-…_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
                                    sub-…_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz
                                    (Training only)

The split unit is the subject: the ``t01``/``t02`` sessions of an R1.1 Site8 subject (and the
``tNN`` timepoints of an R1.2 subject) share :attr:`ATLASScan.subject`. Mask values are not
uniformly 0/1 in R1.x (≈1, ≈255 or several values per file) and one R2.0 mask has max 0.01, so
:func:`read_scan` binarises every mask file with ``> 0`` and ORs the files of a scan, as every
published loader does. A mask file must lie on its T1's voxel grid: one saved with flipped or
permuted axes (the same lesion in world space) is reoriented exactly, any other difference is
refused with both files named (:func:`datamodules.nifti.align_to_reference`). Dot-files
(AppleDouble ``._*``, ``.DS_Store``) and the ``__MACOSX/`` folder of a zip made on macOS are
ignored; other folders that do not follow the layout (a ``site1``, an R2.0 ``ses-2``) are
reported, never silently dropped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ConfigurationError, DataValidationError
from datamodules.atlas_layout import (
    R11_MASK_RE,
    R11_SCAN_RE,
    R11_T1,
    R11_T1_RE,
    R12_COHORT_RE,
    R12_MASK_RE,
    R12_SCAN_RE,
    R12_T1,
    R12_T1_RE,
    R20_COHORT_RE,
    R20_MASK,
    R20_SUBJECT_RE,
    R20_T1,
    SPLITS,
    check_atlas_root,
    not_found,
    r12_cohort_parents,
    visible_dirs,
)
from datamodules.bids import derivative_target
from datamodules.nifti import PredictionTarget, align_to_reference, load_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ATLASScan:
    """One T1 scan (one session) and its lesion mask files.

    Attributes:
        name: Release-prefixed relative id, e.g. ``"R1.1/Site8/031948/t02"``,
            ``"R1.2/c0001/c0001s0001t01"``, ``"R2.0/Training/R001/sub-r001s001"``.
        subject: Split unit, shared by the sessions of one subject, e.g. ``"R1.1/031948"``,
            ``"R1.2/c0001s0001"``, ``"R2.0/sub-r001s001"``.
        split: ``"Training"`` or ``"Testing"`` (R1.x is all ``"Training"``).
        t1: The T1-weighted ``.nii.gz``.
        masks: Lesion mask files to OR together, in file-name order; empty for Testing.
    """

    name: str
    subject: str
    split: str
    t1: Path
    masks: tuple[Path, ...]


# ----------------------------------------------------------------------------- scanning


def _sorted_masks(masks: dict[int, Path]) -> tuple[Path, ...]:
    return tuple(masks[k] for k in sorted(masks))


def _r1_scan(
    folder: Path, key: str, t1_re: re.Pattern, t1_name: str, mask_re: re.Pattern, id_group: str
) -> tuple[Path, tuple[Path, ...]]:
    """T1 and masks of one R1.x scan folder whose files carry the id ``key`` (the T1 is
    ``t1_name.format(id=key)``)."""
    t1, masks = None, {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        t1_match, mask_match = t1_re.match(path.name), mask_re.match(path.name)
        match = t1_match or mask_match
        if match is None:
            log.warning("Ignoring %s: neither the scan's T1 nor a LesionSmooth mask", path)
            continue
        if match[id_group] != key:
            raise DataValidationError(
                f"{path}: the file is named for {match[id_group]} but sits in the folder of "
                f"{key} ({folder}). Move it to its own folder or restore the original archive."
            )
        if t1_match:
            t1 = path
        elif mask_match is not None:
            masks[int(mask_match["k"] or -1)] = path
    if t1 is None:
        raise DataValidationError(
            f"{folder}: no T1 file (expected {t1_name.format(id=key)}). Re-extract this scan "
            "from the original archive."
        )
    return t1, _sorted_masks(masks)


def _warn_ignored(where: Path, ignored: list[str], expected: str) -> None:
    if ignored:
        log.warning(
            "%s: ignoring %d folder(s) that do not follow the %s layout: %s. Rename them to the "
            "release's names to include them, or move them out to silence this.",
            where,
            len(ignored),
            expected,
            ", ".join(ignored[:20]) + (" …" if len(ignored) > 20 else ""),
        )


def _scan_r11(release_dir: Path) -> list[ATLASScan]:
    scans, ignored = [], []
    for site in visible_dirs(release_dir):
        if not re.fullmatch(r"Site[1-9]", site.name):
            ignored.append(site.name)
            continue
        for folder in (s for subject in visible_dirs(site) for s in visible_dirs(subject)):
            relative = folder.relative_to(release_dir).as_posix()
            match = R11_SCAN_RE.match(relative)
            if match is None:
                ignored.append(relative)
                continue
            t1, masks = _r1_scan(folder, match["sid"], R11_T1_RE, R11_T1, R11_MASK_RE, "sid")
            scans.append(
                ATLASScan(f"R1.1/{relative}", f"R1.1/{match['sid']}", "Training", t1, masks)
            )
    _warn_ignored(release_dir, ignored, "Site<k>/<NNNNNN>/t0<1|2>")
    return scans


def _scan_r12(release_dir: Path) -> list[ATLASScan]:
    scans: dict[str, ATLASScan] = {}
    ignored = []
    for parent in r12_cohort_parents(release_dir):
        for cohort in visible_dirs(parent):
            if not R12_COHORT_RE.match(cohort.name):
                continue
            for folder in visible_dirs(cohort):
                relative = folder.relative_to(parent).as_posix()
                match = R12_SCAN_RE.match(relative)
                if match is None:
                    ignored.append(folder.relative_to(release_dir).as_posix())
                    continue
                if f"R1.2/{relative}" in scans:
                    raise DataValidationError(
                        f"{folder}: the scan also exists at {scans[f'R1.2/{relative}'].t1.parent}. "
                        "Keep one copy."
                    )
                t1, masks = _r1_scan(folder, folder.name, R12_T1_RE, R12_T1, R12_MASK_RE, "scan")
                subject = f"R1.2/c{match['c']}s{match['s']}"
                scans[f"R1.2/{relative}"] = ATLASScan(
                    f"R1.2/{relative}", subject, "Training", t1, masks
                )
    _warn_ignored(release_dir, ignored, "c<NNNN>/c<NNNN>s<NNNN>t<NN>")
    return list(scans.values())


def _scan_r20(release_dir: Path, split: str) -> list[ATLASScan]:
    scans = []
    split_dir = release_dir / split
    if split_dir.is_symlink():  # a split folder linked in (lightning-cv challenge): name its files
        split_dir = split_dir.resolve()
    for cohort in visible_dirs(split_dir):
        if not R20_COHORT_RE.match(cohort.name):
            log.warning("Ignoring %s: not an R<NNN> cohort folder", cohort)
            continue
        for subject_dir in visible_dirs(cohort):
            anat = subject_dir / "ses-1" / "anat"
            relative = f"{split}/{anat.relative_to(split_dir).as_posix()}"
            if R20_SUBJECT_RE.match(relative) is None:
                log.warning("Ignoring %s: not a sub-r<NNN>s<NNN> folder of %s", subject_dir, cohort)
                continue
            others = [d.name for d in visible_dirs(subject_dir) if d.name != "ses-1"]
            if not anat.is_dir():
                found = f" (found {', '.join(others)})" if others else ""
                raise DataValidationError(
                    f"{subject_dir}: no ses-1/anat/ folder{found}; every ATLAS R2.0 subject has "
                    "one session, ses-1. Re-extract this subject from the original archive."
                )
            if others:
                log.warning(
                    "Ignoring %s in %s: the release has one session per subject, ses-1/anat/",
                    ", ".join(others),
                    subject_dir,
                )
            sub = subject_dir.name
            t1, mask = anat / R20_T1.format(sub=sub), anat / R20_MASK.format(sub=sub)
            if not t1.is_file():
                raise DataValidationError(
                    f"{anat}: no T1 file {t1.name}. Re-extract this subject from the archive."
                )
            masks = (mask,) if mask.is_file() else ()
            name = f"R2.0/{split}/{cohort.name}/{sub}"
            scans.append(ATLASScan(name, f"R2.0/{sub}", split, t1, masks))
    return scans


def scan_atlas(
    root: str | Path, release: str | None = None, split: str = "Training"
) -> list[ATLASScan]:
    """List the scans of one split without decoding any file.

    Args:
        root: See :func:`check_atlas_root`.
        release: One of :data:`ATLAS_RELEASES`, or ``None`` to detect it.
        split: ``"Training"`` or ``"Testing"`` (only R2.0 has a Testing split).

    Returns:
        The scans sorted by :attr:`ATLASScan.name`.

    Raises:
        DatasetNotFoundError: If the layout is missing or the split holds no scan.
        DataValidationError: If a scan folder has no T1, or a Training scan has no mask (the
            message names the folder), or a file sits in another scan's folder.
        ConfigurationError: If ``release`` is invalid or has no such split.
        ValueError: If ``split`` is not one of :data:`SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    release_dir, release = check_atlas_root(root, release)
    if split == "Testing" and release != "R2.0":
        raise ConfigurationError(
            f"ATLAS {release} has no Testing split (every scan has a mask and is 'Training'); "
            "predict on data.init_args.predict_split Training, or use an R2.0 extract."
        )
    if release == "R1.1":
        scans = _scan_r11(release_dir)
    elif release == "R1.2":
        scans = _scan_r12(release_dir)
    else:
        scans = _scan_r20(release_dir, split)
    if not scans:
        where = release_dir / split if release == "R2.0" else release_dir
        raise not_found(Path(root).expanduser(), f"has no ATLAS {release} scan in {where}")
    if split == "Training":
        for scan in scans:
            if not scan.masks:
                raise DataValidationError(
                    f"{scan.t1.parent}: Training scan {scan.name} has no lesion mask file. "
                    f"Expected {_mask_hint(release, scan)} beside {scan.t1.name}; re-extract it "
                    "from the original archive or remove the scan."
                )
    return sorted(scans, key=lambda scan: scan.name)


def _mask_hint(release: str, scan: ATLASScan) -> str:
    if release == "R2.0":
        return R20_MASK.format(sub=scan.subject.split("/")[-1])
    stem = scan.t1.name.split("_", 1)[0]
    return f"{stem}_LesionSmooth[_<k>]_stx.nii.gz"


# ----------------------------------------------------------------------------- predictions

_R20_DERIVATIVE = "atlas2_prediction"


def prediction_target(scan: ATLASScan) -> PredictionTarget:
    """Where a prediction of ``scan`` is written, inside the run's prediction folder.

    R2.0 scans follow the ATLAS R2.0 challenge's submission (docs/datasets.md §3.5): a BIDS
    derivative ``derivatives/atlas2_prediction/`` holding
    ``sub-…/ses-1/anat/sub-…_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz``,
    with a ``dataset_description.json`` beside it and at the root, which the challenge's
    evaluator finds through pybids (:func:`datamodules.bids.derivative_target`). R1.x has no
    challenge format: ``<release>_<site or cohort>_…_mask.nii.gz``.
    """
    if scan.name.startswith("R2.0/"):
        sub = scan.subject.split("/")[-1]
        return derivative_target(_R20_DERIVATIVE, f"{sub}/ses-1/anat/{R20_MASK.format(sub=sub)}")
    return PredictionTarget(scan.name.replace("/", "_") + "_mask.nii.gz")


# ----------------------------------------------------------------------------- decoding


def read_scan(scan: ATLASScan) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """Decode and validate one scan.

    Returns:
        ``(t1, mask, spacing)``: T1 ``(X, Y, Z)`` float32 as stored (R1.x in [0, 100]);
        mask ``(X, Y, Z)`` uint8 in {0, 1}, the OR over every mask file after ``> 0`` (so ≈1,
        ≈255, multi-valued and the 0.01-max mask of sub-r039s002 all count), or ``None`` when the
        scan has no mask; spacing ``(dx, dy, dz)`` in mm from the T1 header's zooms.

    Raises:
        DataValidationError: Unreadable or truncated ``.nii.gz``, a mask that does not lie on
            the T1's voxel grid (up to axis flips/permutations, which are undone), non-finite
            values, or a non-3D volume; the message names the file.
    """
    t1, zooms = load_volume(scan.t1)
    t1 = t1.astype(np.float32, copy=False)
    spacing = (zooms[0], zooms[1], zooms[2])
    if not scan.masks:
        return t1, None, spacing
    lesion = np.zeros(t1.shape, dtype=bool)
    for path in scan.masks:
        data, _ = load_volume(path)
        lesion |= align_to_reference(data, path, scan.t1) > 0
    if not lesion.any():
        log.warning("%s: every mask file is empty", scan.name)
    return t1, lesion.astype(np.uint8), spacing
