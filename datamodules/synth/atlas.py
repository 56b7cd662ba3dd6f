"""Synthetic twins of the ATLAS R1.1, R1.2 and R2.0 extracts, in their exact on-disk layouts.

The twin copies the real layout (``shared/specs/datasets.md`` §1–3 and §5) under ``DIR``, the
folder an archive is extracted into, which is also the ``root`` that
:mod:`datamodules.atlas_reader` takes:

* R1.1: ``DIR/ATLAS_R1.1/`` with the 15-column metadata CSV (ids without leading zeros, Session
  with a leading space, quoted fields with commas), ``Site<k>/<NNNNNN>/t0<1|2>/`` folders with
  the real subject ids of each site (the first subject is Site8's 031948, which has ``t01`` and
  ``t02``), ``*_t1w_deface_stx.nii.gz`` (float32 in [0, 100]) and 1–3
  ``*_LesionSmooth[_<k>]_stx.nii.gz`` masks (float64) per scan.
* R1.2: ``DIR/atlas_standard/c<NNNN>/c<NNNN>s<NNNN>t<NN>/`` (the two standard-space parts
  unzipped into one folder) with ``*_t1w_stx.nii.gz`` and the R1.1 mask conventions; the first
  subject has timepoints ``t01`` and ``t02``. The archive's ``.xlsx`` sheets are not written.
* R2.0: ``DIR/ATLAS_2/`` with the SupplementaryInfo CSV, a CSV export of the MetaData sheet, the
  template ``MNI152NLin2009aSym.nii.gz``, ``Training/R<NNN>/dataset_description.json`` (identical
  in every cohort), ``sub-r<NNN>s<NNN>/ses-1/anat/`` with the T1w (float32, roughly [0, 150]) and
  the ``label-L_desc-T1lesion`` mask (uint8 {0, 1}), AppleDouble/.DS_Store dot-files that
  readers must skip, and ``Testing/`` (T1w only) when testing subjects are asked for.

Mask-value quirks: R1.x masks store 1 and 255 as 0.9999999997671694 and ≈254.99999994 (value ×
(1 − 2⁻³²)). Subjects are taken in a fixed order (R1.1: 031948, then round-robin over the
sites; R1.2: c0001s0001 with ``t01``/``t02``, then round-robin over nine cohorts). The first
subject's sessions use the ≈1 and the ≈255 style with two mask files each, the second subject
the multi-valued style {0, ≈1, ≈2, ≈253, ≈254, ≈255} with three files, and later subjects
alternate ≈1/≈255 with 1–3 files; each file holds some of the scan's lesions. In R2.0, the
first subject of cohort R039 is ``sub-r039s002`` and its mask (float64) has the value 0.01, as
in the real release. Column names of the R2.0 CSVs beyond the six seen in public code
(datasets.md §3.2) are placeholders; ``qform``/``sform`` codes are unknown (§6) and set to 4
(MNI152) here.

Anatomy is the MNI152 2009a template bundled with nilearn (skull-stripped, so the background is
exactly 0), shifted by a few mm per subject, scaled by a per-session gain and a smooth separable
bias field, with noise inside the brain. Lesions are T1-hypointense ellipsoids with a wavy
boundary, centred on grey or white matter and confined to the brain; their volumes follow a
log-normal fitted to the real R2.0 quartiles (13, 1159, 5290, 36236, 496656 mm³), so most are
small. Every Training scan has at least one lesion; the sessions of a subject share the lesions.

Every voxel depends only on ``(seed, release, subject, session)`` and the size, never on how
many subjects were asked for, and the files are byte-identical between runs (gzip mtime 0).

``size="tiny"`` is for tests only: every 5th voxel of the template grid, i.e. 40×47×38 at 5 mm
with the same origin (-98, -134, -72), and lesion volumes capped at 40 voxels.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from datamodules.synth import common, mni

logger = logging.getLogger(__name__)

Release = Literal["R1.1", "R1.2", "R2.0"]
Size = Literal["full", "tiny"]

GENERATOR_VERSION = 1
MARKER_FILE = common.MARKER_FILE
RELEASES = ("R1.1", "R1.2", "R2.0")
GZIP_LEVEL = 1  # the T1 noise is incompressible anyway; level 6 costs 2× the time for ~3 %
TINY_STEP = 5
NEAR_ONE = 1.0 - 2.0**-32  # real R1.1 masks store 1 as 0.9999999997671694
HUNDREDTH_SUBJECT = ("R039", 2)  # sub-r039s002: mask max 0.01 in the real R2.0

R11_CSV = "ATLAS_Meta-Data_Release_1.1_standard_mni.csv"
R11_HEADER = (
    "INDI Site ID", "INDI Subject ID", "Session", "# Strokes LH Cortical",
    "# Strokes LH subcortical", "# Strokes RH Cortical", "# Strokes RH subcortical",
    "Other Location", "Stroke type", "Primary Stroke Location",
    "Primary Stroke Location Hemisphere", "Vascular territory", "PVH", "DWMH", "Notes",
)  # fmt: skip
# INDI subject-id ranges per site and the nine Site8 subjects with a t02 session (§1.3).
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
R20_SUPPLEMENTARY = "20211112_ATLAS_2.0_SupplementaryInfo.csv"
R20_METADATA = "20220425_ATLAS_2.0_MetaData.csv"
R20_TEMPLATE = "MNI152NLin2009aSym.nii.gz"
LIMITS = {"R1.1": (220, 0), "R1.2": (239, 0), "R2.0": (655, 300)}  # (training, testing)

_LESION_LOG_MEDIAN, _LESION_LOG_SIGMA = np.log(5290.0), 2.55  # quartiles 1159 / 36236 mm³
_LESION_MM3 = (13.0, 496656.0)
_TINY_MIN_VOXELS, _TINY_MAX_VOXELS = 12, 40
_MAX_LESIONS = 3
_MULTI_VALUES = (1.0, 2.0, 253.0, 254.0, 255.0)
_RELEASE_INDEX = {release: i for i, release in enumerate(RELEASES)}
_SPLIT_INDEX = {"Training": 0, "Testing": 1}


@dataclass(frozen=True)
class _Scan:
    split: str
    folder: str  # relative to DIR, posix
    stem: str  # file-name prefix
    subject: tuple[int, ...]  # rng key shared by a subject's sessions
    session: int
    mask_style: str  # "one", "255", "multi", "binary", "hundredth" or "none"
    mask_files: int
    csv_row: tuple[int, int, str] | None = None  # R1.1 (site, id, session)
    rank: int = 0  # subject's place in the (count-independent) selection order


# ----------------------------------------------------------------------------- plans


def _r11_plan(subjects: int) -> list[_Scan]:
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
                _Scan("Training", folder, f"{subject_id:06d}", (subject_id,), session_index,
                      "", 0, (site, subject_id, session), rank)
            )  # fmt: skip
    return sorted(scans, key=lambda scan: scan.folder)


def _r12_plan(subjects: int) -> list[_Scan]:
    scans = []
    for index in range(subjects):
        cohort, number = index % R12_COHORTS + 1, index // R12_COHORTS + 1
        for timepoint in (1, 2) if index == 0 else (1,):
            stem = f"c{cohort:04d}s{number:04d}t{timepoint:02d}"
            folder = f"{R12_FOLDER}/c{cohort:04d}/{stem}"
            scans.append(
                _Scan("Training", folder, stem, (cohort, number), timepoint - 1, "", 0, None, index)
            )
    return scans


def _r20_plan(subjects: int, testing_subjects: int) -> list[_Scan]:
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
                _Scan(split, f"ATLAS_2/{split}/{cohort}/{sub}/ses-1/anat", f"{sub}_ses-1",
                      (_SPLIT_INDEX[split], site, number), 0, style, int(split == "Training"))
            )  # fmt: skip
    return sorted(scans, key=lambda scan: scan.folder)


def _with_r1_mask_styles(scans: list[_Scan], seed: int, release: str) -> list[_Scan]:
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
            rng = _rng(seed, release, "files", scan.subject)
            files = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
        styled.append(
            _Scan(scan.split, scan.folder, scan.stem, scan.subject, scan.session, style, files,
                  scan.csv_row, scan.rank)
        )  # fmt: skip
    return styled


def plan_scans(
    release: Release, subjects: int, testing_subjects: int = 0, seed: int = 0
) -> list[_Scan]:
    """The scans a twin holds, in folder order (private layout records; for tests and docs)."""
    if release == "R1.1":
        return _with_r1_mask_styles(_r11_plan(subjects), seed, release)
    if release == "R1.2":
        return _with_r1_mask_styles(_r12_plan(subjects), seed, release)
    return _r20_plan(subjects, testing_subjects)


# ----------------------------------------------------------------------------- anatomy


_RNG_KIND = {"subject": 0, "session": 1, "files": 2}


def _rng(seed: int, release: str, kind: str, key: tuple[int, ...]) -> np.random.Generator:
    return common._generator(seed, (_RELEASE_INDEX[release], _RNG_KIND[kind], *key))


@dataclass(frozen=True)
class _Grid:
    t1: np.ndarray
    brain: np.ndarray
    tissue_index: np.ndarray  # flat indices of voxels with GM + WM > 0.7
    gm_share: np.ndarray  # GM / (GM + WM), to call a lesion cortical or subcortical
    affine: np.ndarray
    step: float


@lru_cache(maxsize=2)
def _grid(size: Size) -> _Grid:
    template = mni.load_template()
    step = 1 if size == "full" else TINY_STEP
    t1, gm, wm = (volume[::step, ::step, ::step] for volume in template)
    affine = np.array(mni.template_affine())
    affine[:3, :3] *= step
    tissue = gm + wm
    return _Grid(
        t1=np.ascontiguousarray(t1),
        brain=np.ascontiguousarray(t1 > 0),
        tissue_index=np.flatnonzero(tissue > 0.7),
        gm_share=np.ascontiguousarray(gm / np.maximum(tissue, 1e-3)),
        affine=affine,
        step=float(step),
    )


def _shifted(volume: np.ndarray, shift: tuple[int, int, int]) -> np.ndarray:
    """``volume`` moved by whole voxels, zero-filled (the anatomy lies well inside the box)."""
    out = np.zeros_like(volume)
    source, target = [], []
    for n, s in zip(volume.shape, shift, strict=True):
        source.append(slice(max(0, -s), n - max(0, s)))
        target.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(target)] = volume[tuple(source)]
    return out


@dataclass
class _Lesion:
    centre: np.ndarray  # (3,) voxel index on the subject's (shifted) grid
    inverse_axes: np.ndarray  # (3, 3): voxel offset → unit-ball coordinates
    waves: np.ndarray  # (3, 4): wave vector (rad/voxel) and phase of the boundary ripples
    depth: float  # relative T1 drop at the core
    cortical: bool
    left: bool


def lesion_volume_mm3(rng: np.random.Generator) -> float:
    """One lesion volume: log-normal through the real R2.0 quartiles, clipped to 13–496 656."""
    volume = float(np.exp(rng.normal(_LESION_LOG_MEDIAN, _LESION_LOG_SIGMA)))
    return float(np.clip(volume, *_LESION_MM3))


def _draw_lesions(
    rng: np.random.Generator, grid: _Grid, shift: np.ndarray, size: Size
) -> list[_Lesion]:
    """Three candidate lesions of a subject; a scan uses the first ``max(K, mask files)``."""
    lesions = []
    voxel_mm3 = grid.step**3
    for _ in range(_MAX_LESIONS):
        flat = grid.tissue_index[rng.integers(len(grid.tissue_index))]
        source = np.array(np.unravel_index(flat, grid.t1.shape))
        voxels = lesion_volume_mm3(rng) / voxel_mm3
        if size == "tiny":
            voxels = float(np.clip(voxels, _TINY_MIN_VOXELS, _TINY_MAX_VOXELS))
        ratios = np.exp(rng.uniform(-0.4, 0.4, size=2))
        radius = (3 * voxels / (4 * np.pi * ratios.prod())) ** (1 / 3)
        semi_axes = np.maximum(radius * np.array([1.0, *ratios]), 0.5)
        rotation, upper = np.linalg.qr(rng.standard_normal((3, 3)))
        rotation *= np.sign(np.diag(upper))
        directions = rng.standard_normal((3, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wave_vectors = 2 * np.pi * directions / (radius * rng.uniform(0.8, 1.6, size=(3, 1)))
        waves = np.concatenate([wave_vectors, rng.uniform(0, 2 * np.pi, size=(3, 1))], axis=1)
        x_mm = grid.affine[0, 0] * source[0] + grid.affine[0, 3]
        lesions.append(
            _Lesion(
                centre=source + shift,
                inverse_axes=np.diag(1 / semi_axes) @ rotation.T,
                waves=waves,
                depth=float(rng.uniform(0.35, 0.65)),
                cortical=bool(grid.gm_share.flat[flat] > 0.5),
                left=bool(x_mm < 0),
            )
        )
    return lesions


def _lesion_box(lesion: _Lesion, shape: tuple[int, ...], brain: np.ndarray):
    """Box slices, binary mask and soft weight (both in the box) of one lesion."""
    reach = 1.6 / np.linalg.svd(lesion.inverse_axes, compute_uv=False).min()
    lo = np.maximum(np.floor(lesion.centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(lesion.centre + reach).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    offsets = [
        (np.arange(a, b, dtype=np.float32) - np.float32(c)).reshape([-1 if i == axis else 1
                                                                    for i in range(3)])
        for axis, (a, b, c) in enumerate(zip(lo, hi, lesion.centre, strict=True))
    ]  # fmt: skip
    inverse = lesion.inverse_axes.astype(np.float32)
    radius2 = sum(
        (inverse[row, 0] * offsets[0] + inverse[row, 1] * offsets[1] + inverse[row, 2] * offsets[2])
        ** 2
        for row in range(3)
    )
    ripple = sum(
        np.sin(w[0] * offsets[0] + w[1] * offsets[1] + w[2] * offsets[2] + w[3])
        for w in lesion.waves.astype(np.float32)
    )
    radius = np.sqrt(radius2) * (1 + np.float32(0.08) * ripple)
    inside = brain[box]
    binary = (radius <= 1) & inside
    centre = tuple(int(c - a) for c, a in zip(lesion.centre, lo, strict=True))
    if all(0 <= c < n for c, n in zip(centre, binary.shape, strict=True)):
        binary[centre] = True  # even the smallest lesion covers its centre voxel
    soft = np.clip((1.15 - radius) / 0.3, 0, 1) * inside
    soft = np.maximum(soft, binary)
    return box, binary, soft.astype(np.float32)


def _bias_field(rng: np.random.Generator, grid: _Grid) -> list[np.ndarray]:
    """Separable smooth gain, one broadcastable factor per axis (≈ ±8 %)."""
    factors = []
    for axis, n in enumerate(grid.t1.shape):
        mm = np.arange(n, dtype=np.float32) * np.float32(grid.step)
        wavelength, phase = rng.uniform(180, 400), rng.uniform(0, 2 * np.pi)
        amplitude = rng.uniform(0, 0.08)
        factor = 1 + amplitude * np.cos(2 * np.pi * mm / wavelength + phase)
        factors.append(
            factor.astype(np.float32).reshape([-1 if i == axis else 1 for i in range(3)])
        )
    return factors


# ----------------------------------------------------------------------------- writing


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=4)
    image.header.set_sform(affine, code=4)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"synthetic ATLAS twin (lightning-data)"
    # nibabel's .nii.gz writer stamps the gzip header with the time: gzip here with mtime 0
    return gzip.compress(image.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def _write(path: Path, payload: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return len(payload)


def _file_names(release: str, stem: str, files: int) -> tuple[str, list[str]]:
    if release == "R2.0":
        return (
            f"{stem}_space-MNI152NLin2009aSym_T1w.nii.gz",
            [f"{stem}_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"] * files,
        )
    t1 = f"{stem}_t1w_deface_stx.nii.gz" if release == "R1.1" else f"{stem}_t1w_stx.nii.gz"
    masks = [f"{stem}_LesionSmooth{'' if k == 0 else f'_{k}'}_stx.nii.gz" for k in range(files)]
    return t1, masks


def _mask_volume(scan: _Scan, boxes, shape) -> np.ndarray:
    """One mask file from its lesions' ``(box, binary, soft)``, in the scan's value style."""
    if scan.mask_style == "binary":
        mask = np.zeros(shape, dtype=np.uint8)
        for box, binary, _ in boxes:
            mask[box] |= binary.astype(np.uint8)
        return mask
    mask = np.zeros(shape, dtype=np.float64)
    if scan.mask_style != "multi":
        value = {"one": NEAR_ONE, "255": 255.0 * NEAR_ONE, "hundredth": 0.01}[scan.mask_style]
        for box, binary, _ in boxes:
            mask[box][binary] = value
        return mask
    weight = np.zeros(shape, dtype=np.float32)  # soft weight, ranked into five value bands
    for box, binary, soft in boxes:
        weight[box] = np.maximum(weight[box], np.where(binary, soft + 1, 0))
    inside = np.flatnonzero(weight)
    order = np.argsort(weight.flat[inside], kind="stable")
    bands = np.asarray(_MULTI_VALUES)[np.arange(inside.size) * len(_MULTI_VALUES) // inside.size]
    mask.flat[inside[order]] = bands * NEAR_ONE
    return mask


def _render_scan(
    release: str, scan: _Scan, seed: int, size: Size
) -> tuple[tuple[str, np.ndarray], list[tuple[str, np.ndarray]], list[_Lesion]]:
    """``(t1 name, t1)``, ``[(mask name, mask), …]`` and the lesions of one scan."""
    grid = _grid(size)
    subject_rng = _rng(seed, release, "subject", scan.subject)
    shift_mm = subject_rng.uniform(-4, 4, size=3)
    shift = np.rint(shift_mm / grid.step).astype(int)
    count = int(subject_rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    lesions = _draw_lesions(subject_rng, grid, shift, size)[: max(count, scan.mask_files)]
    session_rng = _rng(seed, release, "session", scan.subject + (scan.session,))

    brain = _shifted(grid.brain, tuple(shift))
    gain = session_rng.uniform(0.85, 0.97) * (100.0 if release != "R2.0" else 150.0)
    t1 = _shifted(grid.t1, tuple(shift)) * np.float32(gain)
    for factor in _bias_field(session_rng, grid):
        t1 *= factor
    inside = np.flatnonzero(brain)
    noise = session_rng.standard_normal(inside.size, dtype=np.float32)
    t1.reshape(-1)[inside] += np.float32(session_rng.uniform(0.6, 1.4) * gain / 100) * noise
    boxes = [_lesion_box(lesion, t1.shape, brain) for lesion in lesions]
    for (box, _, soft), lesion in zip(boxes, lesions, strict=True):
        t1[box] *= 1 - np.float32(lesion.depth) * soft
    t1 = np.clip(t1, 0, 100 if release != "R2.0" else None, out=t1)

    t1_name, mask_names = _file_names(release, scan.stem, scan.mask_files)
    masks = []
    for k, name in enumerate(mask_names):
        mine = [box for index, box in enumerate(boxes) if index % scan.mask_files == k]
        masks.append((name, _mask_volume(scan, mine, t1.shape)))
    return (t1_name, t1), masks, lesions


def _r11_csv_row(scan: _Scan, lesions: list[_Lesion]) -> list[str]:
    site, subject_id, session = scan.csv_row
    counts = [
        sum(lesion.left == left and lesion.cortical == cortical for lesion in lesions)
        for left, cortical in ((True, True), (True, False), (False, True), (False, False))
    ]
    main = lesions[0]
    location = "Frontal, parietal" if main.cortical else "Basal ganglia, corona radiata"
    territory = "MCA" if main.cortical else "Lacunar"
    return [
        f"Site{site}", str(subject_id), f" {session}", *map(str, counts), "0", "Embolic",
        location, "Left" if main.left else "Right", territory, "1", "1", "",
    ]  # fmt: skip


def _csv_text(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# Only the first seven names are known (datasets.md §3.2); the cohort sits at index 23, where an
# X-Net port reads it.
_R20_METADATA_HEADER = (
    "Subject ID", "Session", "# Lesions LH Cortical and White Matter", "# Lesions LH Subcortical",
    "# Lesions RH Cortical and White Matter", "# Lesions RH Subcortical",
    "# Lesions Other Location", *(f"Unspecified {i:02d}" for i in range(7, 23)), "Site",
)  # fmt: skip


def _r20_metadata_row(scan: _Scan, lesions: list[_Lesion]) -> list[str]:
    sub, cohort = scan.stem.split("_")[0], scan.folder.split("/")[2]
    counts = [
        sum(lesion.left == left and lesion.cortical == cortical for lesion in lesions)
        for left, cortical in ((True, True), (True, False), (False, True), (False, False))
    ]
    return [sub, "ses-1", *map(str, counts), "0", *([""] * 16), cohort]


def _r20_extras(tmp: Path, scans: list[_Scan], lesions_of: dict, size: Size) -> int:
    base = tmp / "ATLAS_2"
    written = 0
    rows = [_r20_metadata_row(scan, lesions_of[scan]) for scan in scans if scan.split == "Training"]
    written += _write(base / R20_METADATA, _csv_text(_R20_METADATA_HEADER, rows).encode())
    supplementary = [
        [scan.stem.split("_")[0], "ses-1", scan.folder.split("/")[2], scan.split] for scan in scans
    ]
    text = _csv_text(("Subject ID", "Session", "Site", "Split"), supplementary)
    written += _write(base / R20_SUPPLEMENTARY, text.encode())
    grid = _grid(size)
    template = (grid.t1 * np.float32(100.0)).astype(np.float32)
    written += _write(base / R20_TEMPLATE, _nifti_bytes(template, grid.affine))
    description = json.dumps(
        {
            "Name": "ATLAS R2.0 (synthetic twin)",
            "BIDSVersion": "1.6.0",
            "DatasetType": "derivative",
        },
        indent=2,
    ).encode()
    for cohort in sorted({scan.folder.rsplit("/", 3)[0] for scan in scans}):
        written += _write(tmp / cohort / "dataset_description.json", description)
        _write(tmp / cohort / ".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(24))
    first = scans[0]
    # AppleDouble resource-fork junk next to a T1, as the real tarball carries hidden files
    t1_name, _ = _file_names("R2.0", first.stem, 0)
    _write(tmp / first.folder / f"._{t1_name}", common._APPLE_DOUBLE)
    return written


# ----------------------------------------------------------------------------- the twin


def _validate(release, subjects, testing_subjects, seed, size) -> None:
    if release not in RELEASES:
        raise ValueError(f"release must be one of {RELEASES}, got {release!r}")
    max_training, max_testing = LIMITS[release]
    if not (isinstance(subjects, int) and 1 <= subjects <= max_training):
        raise ValueError(
            f"subjects must be an integer from 1 to {max_training} (ATLAS {release} has "
            f"{max_training} training subjects), got {subjects!r}"
        )
    if not (isinstance(testing_subjects, int) and 0 <= testing_subjects <= max_testing):
        hint = "has no Testing split" if max_testing == 0 else f"has {max_testing} testing subjects"
        raise ValueError(
            f"testing_subjects must be an integer from 0 to {max_testing} (ATLAS {release} "
            f"{hint}), got {testing_subjects!r}"
        )
    common._check_seed_and_size(seed, size)


def _describe(release, scans, seed, size, total_bytes, lesion_voxels) -> dict:
    splits = {}
    for split in ("Training", "Testing"):
        chosen = [scan for scan in scans if scan.split == split]
        if chosen:
            splits[split] = {
                "subjects": len({scan.subject for scan in chosen}),
                "scans": [scan.folder for scan in chosen],
                "mask_files": sum(scan.mask_files for scan in chosen),
            }
    return {
        **common._marker(
            f"ATLAS {release} (synthetic twin; no real patient data)",
            "datamodules.synth.atlas",
            GENERATOR_VERSION,
        ),
        "release": release,
        "seed": seed,
        "size": size,
        "shape": list(_grid(size).t1.shape),
        "nifti_bytes": total_bytes,
        "lesion_voxels": lesion_voxels,
        "splits": splits,
    }


def write_atlas_twin(
    root: Path,
    release: Release,
    subjects: int,
    testing_subjects: int = 0,
    seed: int = 0,
    size: Size = "full",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic ATLAS extract root ``root`` holding one release's exact layout.

    The twin is built in a hidden sibling directory and renamed into place at the end, so an
    interrupted run leaves no half-written twin behind.

    Args:
        root: Directory to create (its parents are created too); it may exist if empty. The
            release folder (``ATLAS_R1.1/``, ``atlas_standard/``, ``ATLAS_2/``) goes inside it,
            so ``root`` is what :func:`datamodules.atlas_reader.scan_atlas` takes.
        release: ``"R1.1"``, ``"R1.2"`` or ``"R2.0"``.
        subjects: Training subjects (R1.1 ≤ 220, R1.2 ≤ 239, R2.0 ≤ 655). R1.x subjects with a
            second session bring two scans.
        testing_subjects: R2.0 ``Testing/`` subjects (T1w only, ≤ 300); must be 0 for R1.x.
        seed: Seed for anatomy, lesions and noise. Same arguments, same bytes.
        size: ``"full"`` (197×233×189, 1 mm) or ``"tiny"`` (40×47×38, 5 mm; tests only).
        overwrite: Replace an existing non-empty ``root``; only a previous twin (one holding
            ``SYNTHETIC_TWIN.json``) is ever replaced.
        progress: Show a tqdm bar over scans on stderr.

    Returns:
        ``root``.

    Raises:
        ValueError: If the release, a count, the seed or the size is out of range.
        FileExistsError: If ``root`` is not empty and ``overwrite`` is false, or is not a twin.
        NotADirectoryError: If ``root`` is a file.
    """
    root = Path(os.path.abspath(root))  # abspath, not resolve: keep the user's symlinks
    _validate(release, subjects, testing_subjects, seed, size)
    common._check_target(root, overwrite)
    scans = plan_scans(release, subjects, testing_subjects, seed)
    logger.info("writing a %d-scan synthetic ATLAS %s twin to %s", len(scans), release, root)

    def build(tmp: Path) -> dict:
        total, lesions_of, lesion_voxels = 0, {}, {}
        affine = _grid(size).affine
        for scan in tqdm(scans, unit="scan", disable=not progress):
            t1, masks, lesions_of[scan] = _render_scan(release, scan, seed, size)
            for name, volume in [t1, *masks]:
                total += _write(tmp / scan.folder / name, _nifti_bytes(volume, affine))
            if masks:
                union = np.logical_or.reduce([mask > 0 for _, mask in masks])
                lesion_voxels[scan.folder] = int(union.sum())
        if release == "R1.1":
            rows = [_r11_csv_row(scan, lesions_of[scan]) for scan in scans]
            text = _csv_text(R11_HEADER, rows)
            total += _write(tmp / "ATLAS_R1.1" / R11_CSV, text.encode())
        elif release == "R2.0":
            total += _r20_extras(tmp, scans, lesions_of, size)
        return _describe(release, scans, seed, size, total, lesion_voxels)

    common._write_atomically(root, overwrite, build)
    logger.info("wrote %s", root)
    return root
