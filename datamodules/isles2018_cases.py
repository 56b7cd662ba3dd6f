"""The ISLES 2018 case → patient → slab table shipped with the suite.

One row per official case (94 training, 62 testing), from ``datamodules/data/isles2018_cases.csv``
(see docs/datasets.md §4.3–4.5). The table drives two things: per-patient
cross-validation (both slabs of a two-slab patient stay in one fold) and the synthetic twin,
which copies the real slab depth, frame count and voxel spacing of each case.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

SPLITS = ("TRAINING", "TESTING")


@dataclass(frozen=True)
class CaseInfo:
    """One row of the case table.

    Attributes:
        split: ``"TRAINING"`` or ``"TESTING"``.
        case: Case number inside its split (``case_7`` → 7; testing restarts at 1).
        patient: Patient number inside its split (training 1–63, testing 1–40).
        slab: ``"A"``/``"B"`` for two-slab patients, ``""`` otherwise.
        shape: ``(X, Y, Z)`` of every 3D volume of the case.
        frames: Number of time points ``T`` of the 4D perfusion series.
        spacing: ``(dx, dy, dz)`` in mm (old-release header; ``None`` for testing cases).
        ids: SMIR object id per modality token (``"CT"``, ``"CT_CBF"``, …, ``"OT"``).
    """

    split: str
    case: int
    patient: int
    slab: str
    shape: tuple[int, int, int]
    frames: int
    spacing: tuple[float, float, float] | None
    ids: dict[str, int]

    @property
    def patient_key(self) -> str:
        """A key unique across splits, e.g. ``"TRAINING/p14"``."""
        return f"{self.split}/p{self.patient}"


def _parse_row(row: dict[str, str]) -> CaseInfo:
    inplane, slice_mm = row["inplane_mm_oldrelease"], row["slice_mm_oldrelease"]
    spacing = (float(inplane), float(inplane), float(slice_mm)) if inplane and slice_mm else None
    ids = {key[3:]: int(value) for key, value in row.items() if key.startswith("id_") and value}
    return CaseInfo(
        split=row["split"],
        case=int(row["case"].removeprefix("case_")),
        patient=int(row["patient"]),
        slab=row["slab"],
        shape=(int(row["X"]), int(row["Y"]), int(row["Z"])),
        frames=int(row["T_4dpwi"]),
        spacing=spacing,
        ids=ids,
    )


@lru_cache(maxsize=1)
def load_case_table() -> tuple[CaseInfo, ...]:
    """Return all 156 rows of the shipped case table, training first, in case order."""
    text = resources.files("datamodules").joinpath("data/isles2018_cases.csv").read_text()
    rows = [_parse_row(row) for row in csv.DictReader(text.splitlines())]
    return tuple(sorted(rows, key=lambda r: (SPLITS.index(r.split), r.case)))


def case_info(split: str, case: int) -> CaseInfo:
    """Look up one case.

    Raises:
        KeyError: If the split/case pair is not one of the official 156 cases.
    """
    for row in load_case_table():
        if row.split == split and row.case == case:
            return row
    raise KeyError(
        f"{split}/case_{case} is not an ISLES 2018 case: TRAINING has case_1..case_94, "
        "TESTING has case_1..case_62"
    )
