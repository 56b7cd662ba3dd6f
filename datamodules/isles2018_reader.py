"""Reader for the real ISLES 2018 layout (SMIR export; docs/datasets.md §4).

::

    <root>/TRAINING/case_1/SMIR.Brain.XX.O.CT.345562/SMIR.Brain.XX.O.CT.345562.nii
                          /SMIR.Brain.XX.O.CT_4DPWI.345561/...   (4D: X, Y, Z, T)
                          /SMIR.Brain.XX.O.CT_CBF|CT_CBV|CT_MTT|CT_Tmax.<id>/...
                          /SMIR.Brain.XX.O.OT.345566/...          (training only)
                          /SMIR.Brain.XX.O.MR_DWI.<id>/...        (optional)
    <root>/TESTING/case_1/...                                     (no OT)

Modalities are matched by their token (``CT_CBF`` and the earlier release's ``MR_CBF`` both mean
CBF), never by the opaque SMIR id. ``__MACOSX`` and dot-files are ignored. Voxel spacing comes
from ``header.get_zooms()`` (pixdim): the sform of these files is an identity matrix, so
``img.affine`` would claim 1 mm voxels. Every volume of a case must lie on the CT's voxel grid
(:func:`datamodules.nifti.align_to_reference`): a map or OT with another spacing is refused
with both files named, one stored with flipped or permuted axes is reoriented exactly.
Names are matched without regard to letter case (``Training/``, ``Case_7``, ``CT_TMAX``,
``.NII``), and case numbers may be zero-padded (``case_07``): copies made by other tools or file
systems differ in these. Folders of a split that are not ``case_<N>`` (``case_5 copy``) are
reported, never silently dropped; two folders with one case number are refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ConfigurationError, DatasetNotFoundError, DataValidationError
from datamodules.isles2018_cases import SPLITS, case_info
from datamodules.nifti import align_to_reference, load_volume

log = logging.getLogger(__name__)

_FOLDER_RE = re.compile(
    r"^SMIR\.Brain\.XX\.O\.(?P<token>CT|(?:CT|MR)_(?:4DPWI|CBF|CBV|MTT|Tmax|DWI)|OT)\.(?P<id>\d+)$",
    re.IGNORECASE,
)
_CASE_RE = re.compile(r"^case_0*(?P<case>[1-9]\d*)$", re.IGNORECASE)

# Token (without the CT_/MR_ prefix, lower case) → canonical modality name used across the suite.
_CANONICAL = {
    "ct": "CT",
    "4dpwi": "PWI",
    "cbf": "CBF",
    "cbv": "CBV",
    "mtt": "MTT",
    "tmax": "Tmax",
    "dwi": "DWI",
    "ot": "OT",
}
REQUIRED_MODALITIES = ("CT", "CBF", "CBV", "MTT", "Tmax")
# Channels a model can ask for; PWI_max is derived from the 4D series (per-voxel max over time).
CHANNELS = ("CT", "CBF", "CBV", "MTT", "Tmax", "PWI_max", "DWI")

SYNTH_HINT = "lightning-data synth isles2018 {root} --cases 30 --seed 0"

EXPECTED_LAYOUT = """\
  <root>/TRAINING/case_<N>/SMIR.Brain.XX.O.<MOD>.<id>/SMIR.Brain.XX.O.<MOD>.<id>.nii
      with <MOD> in CT, CT_4DPWI, CT_CBF, CT_CBV, CT_MTT, CT_Tmax, OT (and optionally MR_DWI)
  <root>/TESTING/case_<N>/...  (same, without OT)"""


@dataclass(frozen=True)
class ISLESCase:
    """One case folder of the dataset.

    Attributes:
        split: ``"TRAINING"`` or ``"TESTING"``.
        case: Case number inside the split.
        directory: The ``case_N`` folder.
        files: Canonical modality (``"CT"``, ``"PWI"``, ``"CBF"``, …, ``"OT"``, ``"DWI"``) → ``.nii``.
        patient_key: Patient identifier for per-patient splits (from the shipped case table).
        ids: Canonical modality → the SMIR object id of its folder.
    """

    split: str
    case: int
    directory: Path
    files: Mapping[str, Path]
    patient_key: str
    ids: Mapping[str, int]

    @property
    def name(self) -> str:
        return f"{self.split}/case_{self.case}"

    def path(self, modality: str) -> Path:
        """Return the file of ``modality``, or raise naming the folder that is missing."""
        if modality not in self.files:
            token = {"PWI": "CT_4DPWI", "OT": "OT", "CT": "CT", "DWI": "MR_DWI"}.get(
                modality, f"CT_{modality}"
            )
            channel = {"PWI": "PWI_max", "DWI": "DWI"}.get(modality)
            otherwise = (
                f"or drop {channel} from the experiment's data.init_args.channels (and targets)"
                if channel
                else "or move the case folder out of the split: every case needs its CT and "
                "four perfusion maps (the brain mask), and a TRAINING case its OT"
            )
            raise DataValidationError(
                f"{self.directory}: no {modality} folder. Expected a folder named "
                f"SMIR.Brain.XX.O.{token}.<id>/ holding SMIR.Brain.XX.O.{token}.<id>.nii. "
                f"Found: {', '.join(sorted(self.files)) or 'nothing'}. Restore the folder from "
                f"the original archive, {otherwise}."
            )
        return self.files[modality]


def check_root(root: str | Path) -> Path:
    """Fail fast (no file decoding) if ``root`` does not look like an ISLES 2018 extract.

    Raises:
        DatasetNotFoundError: With the path looked at, the expected layout and the command
            that writes a synthetic twin.
    """
    root = Path(root).expanduser()
    if root.is_dir() and any(split_folder(root, split) is not None for split in SPLITS):
        return root
    found = "does not exist" if not root.exists() else "has no TRAINING/ or TESTING/ folder"
    raise DatasetNotFoundError(
        f"ISLES 2018 data not found: {root.resolve()} {found}.\n"
        f"Expected the layout of the official ISLES2018_Training.zip / ISLES2018_Testing.zip:\n"
        f"{EXPECTED_LAYOUT}\n"
        f"Unzip the real data there (or point data.init_args.data_dir at it), or write a synthetic "
        f"twin with the same layout:\n  {SYNTH_HINT.format(root=root)}"
    )


def _named(folder: Path, name: str) -> list[Path]:
    """The entries of ``folder`` called ``name`` up to letter case (dot-files aside)."""
    wanted = name.lower()
    return sorted(
        p for p in folder.iterdir() if p.name.lower() == wanted and not p.name.startswith(".")
    )


def split_folder(root: Path, split: str) -> Path | None:
    """The folder of ``split`` under ``root`` (``TRAINING``, or ``Training`` as some copies name
    it), or ``None`` if there is none.

    The folder may also sit one level down, as unzipping each archive into a folder named after
    it leaves it (``<root>/ISLES2018_Training/TRAINING``); ``__MACOSX`` and dot-folders are not
    looked into.

    Raises:
        DatasetNotFoundError: If several folders could be the split (``TRAINING`` and
            ``Training``, or two nested copies): which one holds the data is not for the suite
            to guess.
    """
    if not root.is_dir():
        return None
    found = [p for p in _named(root, split) if p.is_dir()]
    if not found:
        parents = sorted(
            p
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"
        )
        found = [p for parent in parents for p in _named(parent, split) if p.is_dir()]
    if len(found) > 1:
        raise DatasetNotFoundError(
            f"{root}: {len(found)} folders could hold the {split} split "
            f"({', '.join(str(p.relative_to(root)) for p in found)}). Keep one of them (merge or "
            "remove the others), or point data.init_args.data_dir at the folder that holds the "
            "one to use."
        )
    return found[0] if found else None


def _modality_files(case_dir: Path) -> tuple[dict[str, Path], dict[str, int]]:
    files: dict[str, Path] = {}
    ids: dict[str, int] = {}
    for folder in sorted(case_dir.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        match = _FOLDER_RE.match(folder.name)
        if match is None:
            log.warning("Ignoring %s: not a SMIR.Brain.XX.O.<MOD>.<id> folder", folder)
            continue
        token = match["token"].lower()
        modality = _CANONICAL[token if token == "ct" else token.split("_", 1)[-1]]
        nii = next(
            (
                path
                for ext in (".nii", ".nii.gz")
                for path in _named(folder, f"{folder.name}{ext}")
                if path.is_file()
            ),
            None,
        )
        if nii is None:
            raise DataValidationError(
                f"{folder}: expected the file {folder.name}.nii inside it (the file stem equals "
                "the folder name); it is missing. Re-extract this case from the original archive."
            )
        if modality in files:
            raise DataValidationError(
                f"{case_dir}: two {modality} folders ({files[modality].parent.name} and "
                f"{folder.name}). Keep one of them."
            )
        files[modality] = nii
        ids[modality] = int(match["id"])
    return files, ids


def scan_isles2018(root: str | Path, split: str = "TRAINING") -> list[ISLESCase]:
    """List the cases of one split, sorted by case number, without decoding any file.

    Args:
        root: Folder holding ``TRAINING/`` and/or ``TESTING/``.
        split: ``"TRAINING"`` or ``"TESTING"``.

    Returns:
        One :class:`ISLESCase` per ``case_N`` folder.

    Raises:
        DatasetNotFoundError: If the root or split folder is missing or holds no case.
        DataValidationError: If a case lacks a required modality (OT too, for TRAINING).
    """
    root = check_root(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    found = split_folder(root, split)
    if found is None:
        raise DatasetNotFoundError(
            f"{root}: no {split}/ folder (found only "
            + ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir()))
            + f"). Expected:\n{EXPECTED_LAYOUT}\nUnzip ISLES2018_{split.title()}.zip into "
            f"{root}, or point data.init_args.data_dir at the folder that holds {split}/."
        )
    split_dir = found
    folders = [d for d in split_dir.iterdir() if d.is_dir()]
    numbered: dict[int, Path] = {}
    for folder in sorted(folders):
        match = _CASE_RE.match(folder.name)
        if match is None:
            continue
        number = int(match["case"])
        if number in numbered:
            raise DataValidationError(
                f"{split_dir}: {numbered[number].name} and {folder.name} are both case "
                f"{number}. Keep one of them (remove or rename the other), then run again."
            )
        numbered[number] = folder
    odd = sorted(
        d.name for d in folders if d not in numbered.values() and not d.name.startswith(".")
    )
    if odd:
        log.warning(
            "%s: ignoring %d folder(s) not named case_<N>: %s. Rename "
            "them to case_<N> to include them, or move them out of %s to silence this.",
            split_dir,
            len(odd),
            ", ".join(odd),
            split_dir,
        )
    if not numbered:
        raise DatasetNotFoundError(
            f"No case_<N> folders in {split_dir}"
            + (f" (found only {', '.join(odd[:5])})" if odd else "")
            + f".\nExpected:\n{EXPECTED_LAYOUT}\nSynthetic twin: {SYNTH_HINT.format(root=root)}"
        )
    cases = []
    owners: dict[int, Path] = {}  # SMIR id -> its folder (ids are unique in the dataset)
    for number, case_dir in sorted(numbered.items()):
        try:
            patient_key = case_info(split, number).patient_key
        except KeyError:
            patient_key = f"{split}/{case_dir.name}"
            log.warning(
                "%s is not in the official case table; treated as its own patient", case_dir
            )
        files, ids = _modality_files(case_dir)
        case = ISLESCase(split, number, case_dir, files, patient_key, ids)
        for modality in REQUIRED_MODALITIES + (("OT",) if split == "TRAINING" else ()):
            case.path(modality)
        for modality, smir_id in ids.items():
            folder = files[modality].parent
            if smir_id in owners:
                raise DataValidationError(
                    f"{folder}: SMIR id {smir_id} is also the id of {owners[smir_id]}. Every "
                    "file of the release has its own id, so one of these case folders is "
                    "probably a copy of the other (its prediction would replace the other's "
                    "SMIR.<method>.<id>.nii): remove or restore the duplicate."
                )
            owners[smir_id] = folder
        cases.append(case)
    return cases


def read_case(
    case: ISLESCase, channels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """Decode and validate one case.

    Args:
        case: The case to read.
        channels: Channels to return, from :data:`CHANNELS` (``PWI_max`` is the per-voxel
            maximum over time of the 4D perfusion series).

    Returns:
        ``(image, label, spacing)``: image ``(C, X, Y, Z)`` float32 in channel order; label
        ``(X, Y, Z)`` uint8 in {0, 1}, or ``None`` for a case without OT; spacing ``(dx, dy, dz)``
        in mm from the CT header.

    Raises:
        DataValidationError: Unreadable file, shape mismatch between modalities, non-finite
            values, or an OT that is not binary; the message names the file.
    """
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ConfigurationError(
            f"Unknown channel(s) {unknown}; valid channels: {list(CHANNELS)} (data.init_args.channels)."
        )
    reference = case.path("CT")
    ct, spacing = load_volume(reference)

    def _checked(modality: str) -> np.ndarray:
        """The modality on the CT's grid; the 4D series reduced to its maximum over time."""
        if modality == "CT":
            return ct
        path = case.path(modality)
        data, _ = load_volume(path, ndim=4 if modality == "PWI" else 3)
        if modality == "PWI":
            data = data.max(axis=3)
        return align_to_reference(data, path, reference)

    planes = [_checked("PWI" if c == "PWI_max" else c).astype(np.float32) for c in channels]
    label = None
    if "OT" in case.files:
        ot = _checked("OT")
        values = np.unique(ot)
        if not np.isin(values, (0, 1)).all():
            raise DataValidationError(
                f"{case.path('OT')}: the lesion mask must be binary {{0, 1}}; found values "
                f"{values[:8].tolist()}{' …' if values.size > 8 else ''}. Binarise it (e.g. > 0) "
                "or restore the original file."
            )
        label = ot.astype(np.uint8)
    return np.stack(planes), label, (spacing[0], spacing[1], spacing[2])  # (C, X, Y, Z)
