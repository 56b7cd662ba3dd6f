"""What an ISLES 2018 twin holds: which cases, their SMIR ids and file names, dtypes and seeds.

Cases are rows of the shipped case table (:mod:`datamodules.isles2018_cases`), chosen as whole
patients so that both slabs of a two-slab patient are written together. Every file sits at
``<SPLIT>/case_<N>/SMIR.Brain.XX.O.<MODALITY>.<id>/SMIR.Brain.XX.O.<MODALITY>.<id>.nii`` with the
real ids (``docs/datasets.md`` §4.2); the 4D perfusion series takes the CT id − 1. ``MR_DWI``
(training only, optional) is an invented modality folder
``SMIR.Brain.XX.O.MR_DWI.<OT id + 1 000 000>``, a project decision (``docs/datasets.md`` §4.2).
The dtypes per modality are those of the real files (``docs/datasets.md`` §4.4).

Random streams are keyed by ``(seed, kind, split, number)``: one for the selection of a split,
one per patient (pose, physiology, lesions) and one per case (noise), so a case never depends
on which other cases were chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np

from core.errors import ConfigurationError
from datamodules.isles2018_cases import SPLITS, CaseInfo, load_case_table
from datamodules.synth import common

DWI_ID_OFFSET = 1_000_000
DEFAULT_TESTING_CASES_WITH_SUBSET = 4
MODALITY_DTYPES: dict[str, type[np.generic]] = {
    "CT": np.int32,
    "CT_4DPWI": np.int16,
    "CT_CBF": np.uint16,
    "CT_CBV": np.uint16,
    "CT_MTT": np.float64,
    "CT_Tmax": np.float64,
    "OT": np.uint8,
    "MR_DWI": np.float32,
}

_SEED_KIND = {"select": 0, "patient": 1, "case": 2}


def _protocol(row: CaseInfo) -> tuple[float, ...]:
    """A case's slab protocol: Z and, where known, the rounded slice thickness."""
    if row.spacing is None:
        return (row.shape[2],)
    return (row.shape[2], round(row.spacing[2]))


def rng(seed: int, kind: str, split: str, number: int) -> np.random.Generator:
    """The random stream of a split's selection, a patient or a case (``kind``)."""
    return common.generator(seed, (_SEED_KIND[kind], SPLITS.index(split), number))


def check_counts(cases: object, testing_cases: object) -> None:
    """Raise ``ConfigurationError`` unless both counts are ``None`` or fit their split."""
    for name, split, value in (
        ("cases", "TRAINING", cases),
        ("testing cases", "TESTING", testing_cases),
    ):
        limit = sum(row.split == split for row in load_case_table())
        if value is not None and not (isinstance(value, int) and 0 <= value <= limit):
            raise ConfigurationError(
                f"{name} must be an integer from 0 to {limit} (ISLES 2018 {split} has {limit} "
                f"cases), got {value!r}"
            )


def select_cases(split: str, count: int | None, seed: int) -> tuple[CaseInfo, ...]:
    """Choose ``count`` cases of a split as whole patients, stratified by slab protocol.

    Patients are shuffled per protocol (training: Z and slice thickness; testing: Z) and taken
    one at a time from the protocol furthest below its share of the real split, every protocol
    getting one patient before any gets a second. A two-slab patient brings both slabs, so the
    result holds ``count`` or, when the last patient is a pair and no single-slab patient can
    close the gap, ``count + 1`` cases.

    Args:
        split: ``"TRAINING"`` or ``"TESTING"``.
        count: Number of cases wanted; ``None`` means all of the split.
        seed: Selection seed.

    Returns:
        The chosen rows of the case table, in case order, with their real case numbers.
    """
    rows = [row for row in load_case_table() if row.split == split]
    if count is None or count >= len(rows):
        return tuple(rows)
    patients: dict[int, list[CaseInfo]] = {}
    for row in rows:
        patients.setdefault(row.patient, []).append(row)
    queues: dict[tuple[float, ...], list[list[CaseInfo]]] = {}
    for slabs in patients.values():
        queues.setdefault(_protocol(slabs[0]), []).append(slabs)
    selection_rng = rng(seed, "select", split, 0)
    for key in sorted(queues):
        order = selection_rng.permutation(len(queues[key]))
        queues[key] = [queues[key][i] for i in order]
    share = {key: sum(map(len, queue)) * count / len(rows) for key, queue in queues.items()}
    taken = dict.fromkeys(queues, 0)
    chosen: list[CaseInfo] = []
    while len(chosen) < count:
        ranked = sorted(
            (key for key in queues if queues[key]),
            key=lambda key: (taken[key] > 0, taken[key] - share[key], key),
        )
        key, index = ranked[0], 0
        if count - len(chosen) == 1 and len(queues[key][0]) == 2:
            singles = [(k, i) for k in ranked for i, p in enumerate(queues[k]) if len(p) == 1]
            key, index = singles[0] if singles else (key, 0)
        slabs = queues[key].pop(index)
        taken[key] += len(slabs)
        chosen.extend(slabs)
    return tuple(sorted(chosen, key=lambda row: row.case))


def plan_cases(cases: int | None, testing_cases: int | None, seed: int) -> list[CaseInfo]:
    """Training then testing rows of a twin; a training subset brings 4 testing cases."""
    if testing_cases is None and cases is not None:
        testing_cases = DEFAULT_TESTING_CASES_WITH_SUBSET
    return [*select_cases("TRAINING", cases, seed), *select_cases("TESTING", testing_cases, seed)]


def patients(rows: Sequence[CaseInfo]) -> list[list[CaseInfo]]:
    """``rows`` grouped by patient (one or two slabs each), in order of first appearance."""
    groups: dict[tuple[str, int], list[CaseInfo]] = {}
    for row in rows:
        groups.setdefault((row.split, row.patient), []).append(row)
    return list(groups.values())


def file_ids(row: CaseInfo, dwi: bool = True) -> dict[str, int]:
    """SMIR ids of every file of a case: the table's ids, the 4DPWI id (CT id − 1) and, for a
    training case with ``dwi``, the invented DWI id (OT id + 1 000 000)."""
    ids = dict(row.ids)
    ids["CT_4DPWI"] = ids["CT"] - 1
    if dwi and "OT" in ids:
        ids["MR_DWI"] = ids["OT"] + DWI_ID_OFFSET
    return ids


def case_files(row: CaseInfo, dwi: bool) -> dict[str, PurePosixPath]:
    """Path of every file of a case relative to the extract root, by modality, sorted."""
    files = {}
    for modality, file_id in sorted(file_ids(row, dwi).items()):
        stem = f"SMIR.Brain.XX.O.{modality}.{file_id}"
        files[modality] = PurePosixPath(row.split, f"case_{row.case}", stem, f"{stem}.nii")
    return files
