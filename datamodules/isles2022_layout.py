"""The ISLES 2022 BIDS layout: its file names, how a file is recognised, where predictions go.

The public release (docs/datasets.md §7) is a BIDS dataset::

    <root>/dataset_description.json
    <root>/rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz (+ .json)
    <root>/rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_adc.nii.gz (+ .json)
    <root>/rawdata/sub-strokecase0001/ses-0001/anat/sub-strokecase0001_ses-0001_FLAIR.nii.gz
    <root>/derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz

Copies differ: the top folders may be ``_rawdata``/``_derivatives``, the modality folders
(``dwi/``, ``anat/``) may be missing, the FLAIR suffix may be ``flair``, and the masks may sit
one folder deeper. The reader therefore recognises a file by its BIDS entities alone — subject,
session and suffix, parsed from the file name (:func:`parse_name`) — wherever it lies under the
root, and ignores every other file. The templates below are what the suite itself writes (the
synthetic twin, predictions). Nothing here opens a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import DatasetNotFoundError
from datamodules.bids import DERIVATIVES, DESCRIPTION, derivative_target
from datamodules.nifti import PredictionTarget

#: Input channels a model can ask for, in the suite's spelling.
CHANNELS = ("DWI", "ADC", "FLAIR")
#: The lesion mask's role (not a channel).
MASK = "mask"
#: BIDS suffix (lower case) → channel or :data:`MASK`.
SUFFIXES = {"dwi": "DWI", "adc": "ADC", "flair": "FLAIR", "msk": MASK}
#: The suffix each role is written with (the release spells FLAIR in capitals).
WRITTEN_SUFFIX = {"DWI": "dwi", "ADC": "adc", "FLAIR": "FLAIR", MASK: "msk"}
#: The BIDS datatype folder of each raw image.
DATATYPE = {"DWI": "dwi", "ADC": "dwi", "FLAIR": "anat"}
RAW_FOLDER = "rawdata"
DERIVATIVES_FOLDER = DERIVATIVES  # the masks' top folder, as BIDS names it
#: The BIDS description file at the root (the twin writes one; the reader ignores it).
DATASET_DESCRIPTION = DESCRIPTION
#: The derivative (pipeline) name predictions are written under.
PREDICTION_DERIVATIVE = "strokeseg_prediction"

SYNTH_HINT = "lightning-data synth isles2022 {root} --cases 40 --seed 0"

EXPECTED_LAYOUT = """\
  <root>/rawdata/sub-<label>/ses-<label>/[dwi/]sub-<label>_ses-<label>_dwi.nii.gz
  <root>/rawdata/sub-<label>/ses-<label>/[dwi/]sub-<label>_ses-<label>_adc.nii.gz
  <root>/rawdata/sub-<label>/ses-<label>/[anat/]sub-<label>_ses-<label>_FLAIR.nii.gz
  <root>/derivatives/.../sub-<label>_ses-<label>_msk.nii.gz   (training cases)
  (files are matched by their subject, session and suffix, at any depth)"""

# sub-<label>_ses-<label>[_<key>-<value>...]_<suffix>.nii[.gz]; labels are alphanumeric (BIDS).
# The extension in any case of letters (a copy made on a case-insensitive file system).
_NAME_RE = re.compile(
    r"^sub-(?P<sub>[A-Za-z0-9]+)_ses-(?P<ses>[A-Za-z0-9]+)"
    r"(?P<entities>(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)\.(?i:nii(?:\.gz)?)$"
)


@dataclass(frozen=True)
class FileEntities:
    """What a file name says about itself.

    Attributes:
        subject: The ``sub-`` label, e.g. ``"strokecase0001"``.
        session: The ``ses-`` label, e.g. ``"0001"``.
        role: A channel of :data:`CHANNELS` or :data:`MASK`.
        entities: Any further ``key-value`` entities (``"_acq-axial"``), kept verbatim: two files
            of one role that differ only here are a duplicate the reader refuses.
    """

    subject: str
    session: str
    role: str
    entities: str = ""


def parse_name(name: str) -> FileEntities | None:
    """The entities of a NIfTI file name, or ``None`` if it is not an image of this dataset."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    role = SUFFIXES.get(match["suffix"].lower())
    if role is None:
        return None
    return FileEntities(match["sub"], match["ses"], role, match["entities"])


def case_name(subject: str, session: str) -> str:
    """The suite's name of a case: ``sub-<label>/ses-<label>``."""
    return f"sub-{subject}/ses-{session}"


def file_stem(subject: str, session: str) -> str:
    return f"sub-{subject}_ses-{session}"


def raw_path(subject: str, session: str, channel: str) -> str:
    """Where the suite writes a raw image, relative to the root (the release's own layout)."""
    stem = file_stem(subject, session)
    return (
        f"{RAW_FOLDER}/sub-{subject}/ses-{session}/{DATATYPE[channel]}/"
        f"{stem}_{WRITTEN_SUFFIX[channel]}.nii.gz"
    )


def mask_path(subject: str, session: str) -> str:
    """Where the suite writes a lesion mask, relative to the root (the release's layout)."""
    stem = file_stem(subject, session)
    return f"{DERIVATIVES_FOLDER}/sub-{subject}/ses-{session}/{stem}_{WRITTEN_SUFFIX[MASK]}.nii.gz"


def prediction_target(subject: str, session: str) -> PredictionTarget:
    """Where a predicted mask goes in the prediction folder: the BIDS derivative
    ``derivatives/strokeseg_prediction/``, under the name and folders of the release's own
    masks, so that an evaluator written for the release's ``derivatives/`` reads it."""
    stem = file_stem(subject, session)
    inside = f"sub-{subject}/ses-{session}/{stem}_{WRITTEN_SUFFIX[MASK]}.nii.gz"
    return derivative_target(PREDICTION_DERIVATIVE, inside)


def sidecar_path(image_path: str | Path) -> Path:
    """The JSON sidecar beside an image (``….nii.gz`` → ``….json``)."""
    path = Path(image_path)
    name = path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name.rsplit(".", 1)[0]
    return path.with_name(stem + ".json")


def not_found(root: Path, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"ISLES 2022 data not found: {root.resolve()} {what}.\n"
        f"Expected the BIDS layout of the public release:\n{EXPECTED_LAYOUT}\n"
        f"Extract the real data there (or point data.init_args.data_dir at it), or write a "
        f"synthetic twin with the same layout:\n  {SYNTH_HINT.format(root=root)}"
    )
