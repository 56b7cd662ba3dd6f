"""What an ATLAS twin holds: which subjects and scans, their folders, file names and mask styles.

Layouts under ``DIR``, the folder an archive is extracted into (``docs/datasets.md`` §1–3):

* R1.1: ``ATLAS_R1.1/Site<k>/<NNNNNN>/t0<1|2>/`` with the real subject ids of each site
  (``docs/datasets.md`` §1.3), ``<NNNNNN>_t1w_deface_stx.nii.gz`` and 1–3
  ``<NNNNNN>_LesionSmooth[_<k>]_stx.nii.gz`` masks per scan.
* R1.2: ``atlas_standard/c<NNNN>/c<NNNN>s<NNNN>t<NN>/`` (the two standard-space parts unzipped
  into one folder) with ``*_t1w_stx.nii.gz`` and the R1.1 mask conventions.
* R2.0: ``ATLAS_2/{Training,Testing}/R<NNN>/sub-r<NNN>s<NNN>/ses-1/anat/`` with
  ``*_space-MNI152NLin2009aSym_T1w.nii.gz`` and, in Training only, one
  ``*_label-L_desc-T1lesion_mask.nii.gz``.

Subjects are taken in a fixed order, so a subject's scans never depend on how many subjects were
asked for. R1.1: Site8's 031948 (which has ``t01`` and ``t02``), then round-robin over the
sites. R1.2: ``c0001s0001`` with ``t01``/``t02``, then round-robin over nine cohorts. R2.0:
round-robin over the cohorts; the first subject of cohort R039 is ``sub-r039s002``.

Mask-value styles of R1.x: the first subject's sessions use the ≈1 and the ≈255 style with two
mask files each, the second subject the multi-valued style {0, ≈1, ≈2, ≈253, ≈254, ≈255} with
three files, and later subjects alternate ≈1/≈255 with 1–3 files. R2.0 masks are binary, except
``sub-r039s002``'s, which holds 0.01 as in the real release.

Random streams are keyed by ``(seed, release, kind, subject[, session])``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from core.errors import ConfigurationError
from datamodules.synth import common

Release = Literal["R1.1", "R1.2", "R2.0"]

RELEASES = ("R1.1", "R1.2", "R2.0")
LIMITS = {"R1.1": (220, 0), "R1.2": (239, 0), "R2.0": (655, 300)}  # (training, testing)
HUNDREDTH_SUBJECT = ("R039", 2)  # sub-r039s002: mask max 0.01 in the real R2.0
# INDI subject ids per site, and the nine Site8 subjects with a t02 (docs/datasets.md §1.3).
R11_SITES = {
    1: (31768, 31822), 2: (31823, 31856), 3: (31857, 31883), 4: (31884, 31895),
    5: (31896, 31922), 6: (31923, 31936), 7: (31937, 31947), 8: (31948, 31973),
    9: (31974, 31987),
}  # fmt: skip
R11_SECOND_SESSION = frozenset({31948, 31950, 31952, 31954, 31955, 31957, 31959, 31961, 31972})
R12_COHORTS = 9
R12_FOLDER = "atlas_standard"
R20_TRAINING_COHORTS = ("R001", "R039", "R009", "R005", "R014", "R038", "R040", "R052")
R20_TESTING_COHORTS = ("R005", "R014", "R052", "R009")
R20_TESTING_FIRST_NUMBER = 101  # keeps testing subjects apart from training ones per cohort

_RELEASE_INDEX = {release: i for i, release in enumerate(RELEASES)}
_RNG_KIND = {"subject": 0, "session": 1, "files": 2}
_SPLIT_INDEX = {"Training": 0, "Testing": 1}


@dataclass(frozen=True)
class Scan:
    """One scan folder of a twin and how its masks are written."""

    split: str
    folder: str  # relative to DIR, posix
    stem: str  # file-name prefix
    subject: tuple[int, ...]  # rng key shared by a subject's sessions
    session: int
    mask_style: str  # "one", "255", "multi", "binary", "hundredth" or "none"
    mask_files: int
    csv_row: tuple[int, int, str] | None = None  # R1.1 (site, id, session)
    rank: int = 0  # subject's place in the (count-independent) selection order


def _r11_plan(subjects: int) -> list[Scan]:
    ids = [R11_SITES[8][0]]
    pools = {site: [i for i in range(lo, hi + 1) if i not in ids] for site, (lo, hi) in
             R11_SITES.items()}  # fmt: skip
    while len(ids) < subjects:
        for site in R11_SITES:
            if pools[site] and len(ids) < subjects:
                ids.append(pools[site].pop(0))
    site_of = {i: site for site, (lo, hi) in R11_SITES.items() for i in range(lo, hi + 1)}
    scans = []
    for rank, subject_id in enumerate(ids[:subjects]):
        site = site_of[subject_id]
        sessions = ("t01", "t02") if subject_id in R11_SECOND_SESSION else ("t01",)
        for session_index, session in enumerate(sessions):
            folder = f"ATLAS_R1.1/Site{site}/{subject_id:06d}/{session}"
            scans.append(
                Scan("Training", folder, f"{subject_id:06d}", (subject_id,), session_index,
                     "", 0, (site, subject_id, session), rank)
            )  # fmt: skip
    return sorted(scans, key=lambda scan: scan.folder)


def _r12_plan(subjects: int) -> list[Scan]:
    scans = []
    for index in range(subjects):
        cohort, number = index % R12_COHORTS + 1, index // R12_COHORTS + 1
        for timepoint in (1, 2) if index == 0 else (1,):
            stem = f"c{cohort:04d}s{number:04d}t{timepoint:02d}"
            folder = f"{R12_FOLDER}/c{cohort:04d}/{stem}"
            scans.append(
                Scan("Training", folder, stem, (cohort, number), timepoint - 1, "", 0, None, index)
            )
    return scans


def _r20_plan(subjects: int, testing_subjects: int) -> list[Scan]:
    scans = []
    for split, cohorts, count in (
        ("Training", R20_TRAINING_COHORTS, subjects),
        ("Testing", R20_TESTING_COHORTS, testing_subjects),
    ):
        first = 1 if split == "Training" else R20_TESTING_FIRST_NUMBER
        for index in range(count):
            cohort = cohorts[index % len(cohorts)]
            number = first + index // len(cohorts)
            if split == "Training" and cohort == HUNDREDTH_SUBJECT[0]:
                number += HUNDREDTH_SUBJECT[1] - 1
            site = int(cohort[1:])
            sub = f"sub-r{site:03d}s{number:03d}"
            style = "none"
            if split == "Training":
                hundredth = (cohort, number) == HUNDREDTH_SUBJECT
                style = "hundredth" if hundredth else "binary"
            scans.append(
                Scan(split, f"ATLAS_2/{split}/{cohort}/{sub}/ses-1/anat", f"{sub}_ses-1",
                     (_SPLIT_INDEX[split], site, number), 0, style, int(split == "Training"))
            )  # fmt: skip
    return sorted(scans, key=lambda scan: scan.folder)


def _with_r1_mask_styles(scans: list[Scan], seed: int, release: str) -> list[Scan]:
    """Give R1.x scans their value style and file count (see the module docstring).

    Both depend on the subject's selection rank, never on how many subjects were asked for, and
    a subject's sessions share the file count (and so the lesions).
    """
    styled = []
    for scan in scans:
        if scan.rank == 0:  # the two-session subject: ≈1 then ≈255, two files each
            style, files = ("one", "255")[min(scan.session, 1)], 2
        elif scan.rank == 1:
            style, files = "multi", 3
        else:
            style = "one" if scan.rank % 2 == 0 else "255"
            subject_rng = rng(seed, release, "files", scan.subject)
            files = int(subject_rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        styled.append(replace(scan, mask_style=style, mask_files=files))
    return styled


def rng(seed: int, release: str, kind: str, key: tuple[int, ...]) -> np.random.Generator:
    """The random stream of a subject, a session or a subject's mask-file count (``kind``)."""
    return common.generator(seed, (_RELEASE_INDEX[release], _RNG_KIND[kind], *key))


def check_counts(release: object, subjects: object, testing_subjects: object) -> None:
    """Raise ``ConfigurationError`` unless the release is known and both counts fit it."""
    if release not in RELEASES:
        raise ConfigurationError(f"release must be one of {RELEASES}, got {release!r}")
    max_training, max_testing = LIMITS[release]
    if not (isinstance(subjects, int) and 1 <= subjects <= max_training):
        raise ConfigurationError(
            f"subjects must be an integer from 1 to {max_training} (ATLAS {release} has "
            f"{max_training} training subjects), got {subjects!r}"
        )
    if not (isinstance(testing_subjects, int) and 0 <= testing_subjects <= max_testing):
        hint = "has no Testing split" if max_testing == 0 else f"has {max_testing} testing subjects"
        raise ConfigurationError(
            f"testing_subjects must be an integer from 0 to {max_testing} (ATLAS {release} "
            f"{hint}), got {testing_subjects!r}"
        )


def plan_scans(
    release: Release, subjects: int, testing_subjects: int = 0, seed: int = 0
) -> list[Scan]:
    """The scans a twin holds, in folder order (layout records; for tests and docs)."""
    if release == "R1.1":
        return _with_r1_mask_styles(_r11_plan(subjects), seed, release)
    if release == "R1.2":
        return _with_r1_mask_styles(_r12_plan(subjects), seed, release)
    return _r20_plan(subjects, testing_subjects)


def file_names(release: str, stem: str, files: int) -> tuple[str, list[str]]:
    """The T1 file name and the ``files`` mask file names of a scan."""
    if release == "R2.0":
        return (
            f"{stem}_space-MNI152NLin2009aSym_T1w.nii.gz",
            [f"{stem}_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"] * files,
        )
    t1 = f"{stem}_t1w_deface_stx.nii.gz" if release == "R1.1" else f"{stem}_t1w_stx.nii.gz"
    masks = [f"{stem}_LesionSmooth{'' if k == 0 else f'_{k}'}_stx.nii.gz" for k in range(files)]
    return t1, masks
