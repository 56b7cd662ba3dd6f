"""Synthetic twin of the ISLES 2018 CT-perfusion archives (``TRAINING/``, ``TESTING/``).

The twin copies the real on-disk layout (``shared/specs/datasets.md`` §4.2–4.4 and §5):
folder and file names with the real SMIR ids, uncompressed ``.nii``, per-modality dtypes,
256×256×Z slabs with the Z, frame count and voxel spacing of each case's row in the case
table, the pixdim-versus-identity-sform header quirk, the real two-slab patient pairing and a
``__MACOSX/`` folder that readers must skip. The images are synthetic: anatomy is resampled
from the MNI152 2009a template bundled with nilearn, lesions are smooth blobs with a
hypoperfused penumbra, and no real patient data is involved. ``SYNTHETIC_TWIN.json`` at the
root says so.

Modelling choices (the real values are only partly known, §4.4):

* CT (int32, HU-like): grey matter ≈ 38, white matter ≈ 29, CSF ≈ 8, skull 700–2000 with dense
  inner/outer tables, scalp ≈ 35, and **0 outside the head**: air is stored as 0, not -1000,
  which matches the published whole-dataset mean of ≈ 80 HU (tureckova/ISLES2018) and the
  [0, 100] display window. The infarct core is a few HU hypodense.
* CBF/CBV (uint16, scaled integers as in the RAPID-derived maps): CBF grey ≈ 450, white ≈ 210;
  CBV grey ≈ 60, white ≈ 28. MTT/Tmax (float64, seconds): MTT ≈ 4–5.5 s, Tmax ≈ 0–2 s in
  healthy tissue. All four maps are 0 outside the brain.
* Core (= OT): CBF ×0.2–0.35, CBV ×0.4–0.6, MTT = CBV/CBF (central volume principle), Tmax
  > 6 s (≈ 9–14 s), DWI ×1.8–2.5. Penumbra, about twice the core's radius: CBF ×0.6–0.8, CBV
  ×0.9–1.1, Tmax 4–8 s, normal DWI and CT. Thresholding one map therefore does not give OT.
* CT_4DPWI (int16, X×Y×Z×T, 1 s per frame): the CT baseline plus, in the brain, a
  gamma-variate bolus whose height ∝ CBV, delayed by Tmax and widened by MTT, plus noise.
* MR_DWI (float32, training only, optional): an invented modality folder
  ``SMIR.Brain.XX.O.MR_DWI.<OT id + 1 000 000>`` (project decision in §4.2); hyperintense core.

Every case is a slab of the case's Z slices at its slice spacing through one synthetic
patient: the template turned by a few degrees and shifted by a few mm, with per-patient
intensity and physiology scales. Both slabs of a two-slab patient come from the same patient
(same pose, same lesions) at partly overlapping heights. Testing rows carry no spacing; a
training row with the same Z (and frame count, where one exists) lends its spacing.

Every voxel value depends only on ``(seed, split, case/patient)`` and the size, never on which
other cases were selected, and the files are byte-identical between runs.

``size="tiny"`` is for tests only and breaks the real layout on purpose: 32×32 in-plane over
the same field of view (so the in-plane spacing is 8× the real one), at most the central 4
slices, and at most 6 frames spread over the real acquisition (``pixdim[4]`` = T/6 s).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from datamodules.isles2018_cases import SPLITS, CaseInfo, load_case_table
from datamodules.synth import common, mni

logger = logging.getLogger(__name__)

Size = Literal["full", "tiny"]

GENERATOR_VERSION = 1
MARKER_FILE = common.MARKER_FILE
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

_TINY_INPLANE, _TINY_MAX_SLICES, _TINY_MAX_FRAMES = 32, 4, 6
_PIVOT_MM = np.array([0.0, -18.0, 0.0])  # roughly the brain's centre in MNI space
_SLAB_CENTRE_RANGE_MM = (-5.0, 30.0)  # basal ganglia to ventricle bodies, where CTP slabs sit
_SLAB_LIMITS_MM = (-75.0, 95.0)
_GAMMA_ALPHA = 3.0
# Outside the brain: CT value (before the patient's skull scale) against distance to the
# brain in mm: CSF gap, inner table, diploe, outer table, scalp, air.
_SKULL_KNOTS_MM = np.array([0.0, 1.8, 2.6, 4.0, 5.5, 7.0, 8.4, 9.2, 13.5, 14.5])
_SKULL_HU = np.array([8.0, 8.0, 1700.0, 1750.0, 700.0, 1600.0, 1650.0, 40.0, 30.0, 0.0])
_SEED_KIND = {"select": 0, "patient": 1, "case": 2}


def _rng(seed: int, kind: str, split: str, number: int) -> np.random.Generator:
    return common._generator(seed, (_SEED_KIND[kind], SPLITS.index(split), number))


# ----------------------------------------------------------------------------- case selection


def _protocol(row: CaseInfo) -> tuple[float, ...]:
    if row.spacing is None:
        return (row.shape[2],)
    return (row.shape[2], round(row.spacing[2]))


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
    rng = _rng(seed, "select", split, 0)
    for key in sorted(queues):
        order = rng.permutation(len(queues[key]))
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


# ----------------------------------------------------------------------------- anatomy


@dataclass(frozen=True)
class _HeadModel:
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray  # float32 {0, 1}; linear sampling makes its edge soft
    distance_2mm: np.ndarray  # mm from the brain, on a 2 mm grid (exact EDT at 1 mm costs 1.4 s)


@lru_cache(maxsize=1)
def _head_model() -> _HeadModel:
    template = mni.load_template()
    mask = mni.brain_mask()
    distance = ndimage.distance_transform_edt(~mask[::2, ::2, ::2], sampling=2.0)
    return _HeadModel(
        gm=template.gm,
        wm=template.wm,
        brain=mask.astype(np.float32),
        distance_2mm=distance.astype(np.float32),
    )


@dataclass(frozen=True)
class _Geometry:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    frames: int
    frame_seconds: float
    slab_centre_mm: float


@dataclass
class _Patient:
    rotation: np.ndarray  # (3, 3)
    pivot: np.ndarray  # (3,) world mm
    params: dict[str, float]
    lesion_centres: np.ndarray | None = None  # (K, 3) world mm
    lesion_inverse_axes: np.ndarray | None = None  # (K, 3, 3): world offset → unit-ball coords
    wave_vectors: np.ndarray | None = None  # (8, 3) rad/mm, boundary irregularity
    wave_phases: np.ndarray | None = None  # (8,)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz, cx, sx, cy, sy = (
        f(np.deg2rad(a)) for a in (yaw, pitch, roll) for f in (np.cos, np.sin)
    )
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def _draw_patient(rng: np.random.Generator) -> _Patient:
    u = rng.uniform
    shift = np.array([u(-5, 5), u(-6, 6), 0.0])
    params = {
        "ct_scale": u(0.95, 1.05),
        "ct_offset": u(-3, 3),
        "skull_scale": u(0.85, 1.15),
        "skull_thickness": u(0.85, 1.2),
        "core_hu": u(3, 6),
        "cbf_scale": u(0.8, 1.2),
        "cbv_scale": u(0.85, 1.15),
        "mtt0": u(3.8, 4.8),
        "tmax0": u(0.3, 1.0),
        "cbf_penumbra": u(0.6, 0.8),
        "cbf_core": u(0.2, 0.35),
        "cbv_penumbra": u(0.9, 1.1),
        "cbv_core": u(0.4, 0.6),
        "tmax_penumbra": u(4.0, 5.5),
        "tmax_core": u(4.5, 7.0),
        "penumbra_ratio": u(1.6, 2.4),
        "dwi_scale": u(500, 800),
        "dwi_core": u(1.8, 2.5),
        "arrival_s": u(5, 10),
        "hu_per_cbv": u(0.6, 0.8),
        "slab_centre_mm": u(*_SLAB_CENTRE_RANGE_MM),
        "slab_overlap": u(0.5, 0.9),
        "side": float(rng.choice([-1.0, 1.0])),
        "blobs": float(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])),
    }
    rotation = _rotation(u(-6, 6), u(-8, 8), u(-3, 3))
    return _Patient(rotation=rotation, pivot=_PIVOT_MM + shift, params=params)


def _spacing_for(row: CaseInfo, rng: np.random.Generator) -> tuple[float, float, float]:
    if row.spacing is not None:
        return row.spacing
    training = [r for r in load_case_table() if r.split == "TRAINING" and r.spacing]
    same_z = [r for r in training if r.shape[2] == row.shape[2]]
    same_frames = [r for r in same_z if r.frames == row.frames]
    donors = same_frames or same_z
    return donors[rng.integers(len(donors))].spacing


def _geometries(
    slabs: Sequence[CaseInfo], patient: _Patient, size: Size, rng: np.random.Generator
) -> list[_Geometry]:
    spacing = _spacing_for(slabs[0], rng)  # both slabs of a testing patient share one scanner
    extent = slabs[0].shape[2] * spacing[2]
    offsets = [0.0]
    if len(slabs) == 2:
        step = patient.params["slab_overlap"] * extent
        offsets = [-step / 2, step / 2]
    low, high = _SLAB_LIMITS_MM
    span = extent + offsets[-1] - offsets[0]
    centre = patient.params["slab_centre_mm"]
    if span < high - low:
        centre = float(np.clip(centre, low + span / 2, high - span / 2))
    else:
        centre = (low + high) / 2
    geometries = []
    for row, offset in zip(slabs, offsets, strict=True):
        row_spacing = row.spacing or spacing
        nx, ny, nz = row.shape
        frames, seconds = row.frames, 1.0
        if size == "tiny":
            factor = nx / _TINY_INPLANE
            row_spacing = (row_spacing[0] * factor, row_spacing[1] * factor, row_spacing[2])
            nx = ny = _TINY_INPLANE
            nz = min(nz, _TINY_MAX_SLICES)
            frames = min(frames, _TINY_MAX_FRAMES)
            seconds = row.frames / frames
        geometries.append(_Geometry((nx, ny, nz), row_spacing, frames, seconds, centre + offset))
    return geometries


def _grid_mm(geometry: _Geometry, patient: _Patient) -> np.ndarray:
    """World coordinates (3, X, Y, Z) of every voxel centre of a slab."""
    x, y, z = (
        (np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(step)
        for n, step in zip(geometry.shape, geometry.spacing, strict=True)
    )
    z = z + np.float32(geometry.slab_centre_mm)
    world = np.empty((3, *geometry.shape), dtype=np.float32)
    for axis, (rx, ry, rz) in enumerate(patient.rotation.astype(np.float32)):
        world[axis] = rx * x[:, None, None] + ry * y[None, :, None] + rz * z[None, None, :]
        world[axis] += np.float32(patient.pivot[axis])
    return world


def _sample_anatomy(points: np.ndarray) -> dict[str, np.ndarray]:
    head = _head_model()
    voxels = mni.world_to_voxel(points)
    anatomy = {
        name: ndimage.map_coordinates(volume, voxels, order=1, output=np.float32)
        for name, volume in (("gm", head.gm), ("wm", head.wm), ("brain", head.brain))
    }
    anatomy["distance"] = ndimage.map_coordinates(
        head.distance_2mm, voxels / 2, order=1, mode="constant", cval=1e3, output=np.float32
    )
    return anatomy


# ----------------------------------------------------------------------------- lesions


def _place_lesions(
    patient: _Patient,
    slabs: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    rng: np.random.Generator,
) -> None:
    """Put 1–3 blob centres on tissue voxels, one on a voxel of each slab (so no empty OT)."""
    side = patient.params["side"]
    candidates = []
    for points, anatomy in slabs:
        tissue = anatomy["gm"] + anatomy["wm"]
        ok = (tissue > 0.85) & (np.sign(points[0]) == side)
        if not ok.any():
            ok = tissue > 0.5
        if not ok.any():
            ok = tissue >= tissue.max()
        candidates.append(points[:, ok].T)
    centres = [pool[rng.integers(len(pool))] for pool in candidates]
    pool = np.concatenate(candidates)
    for _ in range(max(0, int(patient.params["blobs"]) - len(centres))):
        near = pool[np.linalg.norm(pool - centres[0], axis=1) < 30.0]
        centres.append(near[rng.integers(len(near))])
    inverse_axes = []
    for _ in centres:
        semi_axes = np.array([rng.uniform(7, 18), rng.uniform(7, 18), rng.uniform(8, 18)])
        angle = rng.uniform(0, np.pi)
        inverse_axes.append(np.diag(1 / semi_axes) @ _rotation(np.rad2deg(angle), 0, 0).T)
    directions = rng.standard_normal((8, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(15, 40, size=(8, 1))
    patient.lesion_centres = np.array(centres)
    patient.lesion_inverse_axes = np.array(inverse_axes)
    patient.wave_vectors = 2 * np.pi * directions / wavelengths
    patient.wave_phases = rng.uniform(0, 2 * np.pi, size=8)


def _lesion_weights(points: np.ndarray, patient: _Patient) -> tuple[np.ndarray, np.ndarray]:
    """Soft core and penumbra weights in [0, 1], shape (X, Y, Z)."""
    flat = points.reshape(3, -1)
    radius2 = np.full(flat.shape[1], np.inf, dtype=np.float32)
    for centre, inverse in zip(patient.lesion_centres, patient.lesion_inverse_axes, strict=True):
        # unit-ball coordinates: inverse @ (p - centre), written as a matrix product and a shift
        unit = inverse.astype(np.float32) @ flat - (inverse @ centre).astype(np.float32)[:, None]
        radius2 = np.minimum(radius2, np.einsum("ij,ij->j", unit, unit))
    ratio = patient.params["penumbra_ratio"]
    near = radius2 < (1.5 * ratio) ** 2
    radius = np.full(flat.shape[1], np.inf, dtype=np.float32)
    wave_vectors = patient.wave_vectors.astype(np.float32)
    waves = np.sin(wave_vectors @ flat[:, near] + patient.wave_phases.astype(np.float32)[:, None])
    wobble = np.clip(waves.sum(axis=0) / 2.0, -2, 2)  # 8 unit sines: variance 4
    radius[near] = np.sqrt(radius2[near]) * (1 + 0.2 * wobble)
    with np.errstate(over="ignore"):
        core = 1 / (1 + np.exp((radius - 1.0) / 0.05))
        penumbra = 1 / (1 + np.exp((radius - ratio) / 0.15))
    shape = points.shape[1:]
    return core.reshape(shape).astype(np.float32), penumbra.reshape(shape).astype(np.float32)


# ----------------------------------------------------------------------------- images


def _smooth_noise(rng: np.random.Generator, shape, spacing, sigma_mm: float) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=np.float32)
    sigma = (sigma_mm / spacing[0], sigma_mm / spacing[1], 0.0)
    noise = ndimage.gaussian_filter(noise, sigma)
    return noise / max(float(noise.std()), 1e-6)


def _render(
    points: np.ndarray,
    anatomy: dict[str, np.ndarray],
    geometry: _Geometry,
    patient: _Patient,
    rng: np.random.Generator,
    dwi: bool,
) -> dict[str, np.ndarray]:
    """All images of one case, keyed by modality token, in their on-disk dtypes."""
    p = patient.params
    gm, wm, brain, distance = (anatomy[k] for k in ("gm", "wm", "brain", "distance"))
    shape = geometry.shape
    tissue = np.minimum(gm + wm, 1.0)
    csf = np.clip(brain - tissue, 0.0, 1.0)
    tissue_weight = np.clip((tissue - 0.3) / 0.4, 0.0, 1.0)
    core, penumbra = _lesion_weights(points, patient)
    core *= tissue_weight
    penumbra *= tissue_weight
    support = brain > 0.5

    def white() -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    skull_hu = np.where(_SKULL_HU > 100, _SKULL_HU * p["skull_scale"], _SKULL_HU)
    outside = np.interp(distance / p["skull_thickness"], _SKULL_KNOTS_MM, skull_hu)
    outside = outside.astype(np.float32)
    head = (brain > 0) | (outside > 0)
    ct = p["ct_scale"] * (38 * gm + 29 * wm + 8 * csf) + p["ct_offset"] * brain
    ct += (1 - brain) * outside - p["core_hu"] * core + 3.0 * white()
    ct = np.where(head, np.rint(ct), 0).astype(np.int32)

    texture = _smooth_noise(rng, shape, geometry.spacing, 2.0)
    cbf_factor = 1 - (1 - p["cbf_penumbra"]) * penumbra - (p["cbf_penumbra"] - p["cbf_core"]) * core
    cbv_factor = 1 - (1 - p["cbv_penumbra"]) * penumbra - (p["cbv_penumbra"] - p["cbv_core"]) * core
    wm_share = wm / np.maximum(tissue, 1e-3)
    cbf = p["cbf_scale"] * (450 * gm + 210 * wm + 15 * csf) * cbf_factor
    cbf *= 1 + 0.10 * texture + 0.04 * white()
    cbv = p["cbv_scale"] * (60 * gm + 28 * wm + 2 * csf) * cbv_factor
    cbv *= 1 + 0.08 * texture + 0.04 * white()
    mtt = (p["mtt0"] + 0.6 * wm_share) * (cbv_factor / cbf_factor) * (1 + 0.05 * white())
    tmax = p["tmax0"] + p["tmax_penumbra"] * penumbra + p["tmax_core"] * core + 0.3 * white()
    maps = {
        "CT_CBF": np.rint(np.clip(cbf, 0, 65535)).astype(np.uint16),
        "CT_CBV": np.rint(np.clip(cbv, 0, 65535)).astype(np.uint16),
        "CT_MTT": np.clip(mtt, 0, 40).astype(np.float64),
        "CT_Tmax": np.clip(tmax, 0, 40).astype(np.float64),
    }
    for key in maps:
        maps[key][~support] = 0
    images = {"CT": ct, **maps, "OT": (core > 0.5).astype(np.uint8)}
    images["CT_4DPWI"] = _perfusion_series(
        ct, head, support, cbv, np.maximum(mtt, 0.5), np.maximum(tmax, 0.0), geometry, p, rng
    )
    if dwi:
        signal = p["dwi_scale"] * (1.0 * gm + 0.8 * wm + 0.3 * csf) * brain
        signal *= (1 + (p["dwi_core"] - 1) * core) * (1 + 0.05 * white())
        images["MR_DWI"] = (signal + np.abs(0.01 * p["dwi_scale"] * white())).astype(np.float32)
    return images


def _perfusion_series(
    ct: np.ndarray,
    head: np.ndarray,
    support: np.ndarray,
    cbv: np.ndarray,
    mtt: np.ndarray,
    tmax: np.ndarray,
    geometry: _Geometry,
    p: dict[str, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Baseline CT plus a gamma-variate bolus per brain voxel, one frame at a time (int16)."""
    brain_index = np.flatnonzero(support.ravel(order="F"))  # F order: a frame is one column
    rest_index = np.flatnonzero((head & ~support).ravel(order="F"))
    index = np.concatenate([brain_index, rest_index])
    n_brain, n_head = len(brain_index), len(index)
    baseline = np.clip(ct.ravel(order="F")[index], -30000, 30000).astype(np.float32)
    peak = (p["hu_per_cbv"] * cbv.ravel(order="F")[brain_index]).astype(np.float32)
    onset = (p["arrival_s"] + tmax.ravel(order="F")[brain_index]).astype(np.float32)
    rate = (1 / (0.8 + 0.35 * mtt.ravel(order="F")[brain_index])).astype(np.float32)
    # one noise pool read at a random offset per frame: fresh-looking noise without drawing
    # X·Y·Z·T normals, which would cost more than the rest of the series
    pool = 3.0 * rng.standard_normal(n_head + 4096, dtype=np.float32)
    offsets = rng.integers(0, 4096, size=geometry.frames)
    series = np.zeros((*geometry.shape, geometry.frames), dtype=np.int16, order="F")
    columns = series.reshape(-1, geometry.frames, order="F")
    alpha = np.float32(_GAMMA_ALPHA)
    for frame in range(geometry.frames):
        values = baseline + pool[offsets[frame] : offsets[frame] + n_head]
        x = np.maximum((np.float32(frame * geometry.frame_seconds) - onset) * rate, 0)
        scaled = x / alpha
        values[:n_brain] += peak * (scaled * scaled * scaled) * np.exp(alpha - x)
        columns[index, frame] = np.rint(values)
    return series


def _write_nifti(path: Path, data: np.ndarray, spacing, frame_seconds: float | None) -> None:
    """Write with the real quirk: pixdim = spacing, qform diag(spacing), sform identity."""
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_qform(np.diag([*spacing, 1.0]), code=2)
    header.set_sform(np.eye(4), code=2)
    zooms = tuple(spacing) if frame_seconds is None else (*spacing, frame_seconds)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"synthetic ISLES2018 twin (lightning-data)"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, None, header=header), path)


def file_ids(row: CaseInfo, dwi: bool = True) -> dict[str, int]:
    """SMIR ids of every file of a case: the table's ids, the 4DPWI id (CT id − 1) and, for a
    training case with ``dwi``, the invented DWI id (OT id + 1 000 000)."""
    ids = dict(row.ids)
    ids["CT_4DPWI"] = ids["CT"] - 1
    if dwi and "OT" in ids:
        ids["MR_DWI"] = ids["OT"] + DWI_ID_OFFSET
    return ids


def _write_case(root: Path, row: CaseInfo, images: dict, geometry: _Geometry, dwi: bool) -> int:
    written = 0
    for modality, file_id in sorted(file_ids(row, dwi).items()):
        stem = f"SMIR.Brain.XX.O.{modality}.{file_id}"
        path = root / row.split / f"case_{row.case}" / stem / f"{stem}.nii"
        data = images[modality]
        seconds = geometry.frame_seconds if data.ndim == 4 else None
        _write_nifti(path, data, geometry.spacing, seconds)
        written += path.stat().st_size
    return written


# ----------------------------------------------------------------------------- the twin


def _patients(rows: Sequence[CaseInfo]) -> list[list[CaseInfo]]:
    groups: dict[tuple[str, int], list[CaseInfo]] = {}
    for row in rows:
        groups.setdefault((row.split, row.patient), []).append(row)
    return list(groups.values())


def _generate(tmp: Path, rows: Sequence[CaseInfo], seed: int, size: Size, dwi: bool, bar) -> int:
    total_bytes = 0
    for slabs in _patients(rows):
        split, patient_number = slabs[0].split, slabs[0].patient
        patient_rng = _rng(seed, "patient", split, patient_number)
        patient = _draw_patient(patient_rng)
        geometries = _geometries(slabs, patient, size, patient_rng)
        sampled = []
        for geometry in geometries:
            points = _grid_mm(geometry, patient)
            sampled.append((points, _sample_anatomy(points)))
        _place_lesions(patient, sampled, patient_rng)
        for row, geometry, (points, anatomy) in zip(slabs, geometries, sampled, strict=True):
            case_rng = _rng(seed, "case", split, row.case)
            with_dwi = dwi and split == "TRAINING"
            images = _render(points, anatomy, geometry, patient, case_rng, with_dwi)
            total_bytes += _write_case(tmp, row, images, geometry, with_dwi)
            bar.update(1)
    return total_bytes


def _validate(cases, testing_cases, seed, size) -> None:
    for name, split, value in (
        ("cases", "TRAINING", cases),
        ("testing cases", "TESTING", testing_cases),
    ):
        limit = sum(row.split == split for row in load_case_table())
        if value is not None and not (isinstance(value, int) and 0 <= value <= limit):
            raise ValueError(
                f"{name} must be an integer from 0 to {limit} (ISLES 2018 {split} has {limit} "
                f"cases), got {value!r}"
            )
    common._check_seed_and_size(seed, size)


def _describe(rows, seed: int, size: Size, dwi: bool, total_bytes: int) -> dict:
    splits = {}
    for split in SPLITS:
        chosen = [row for row in rows if row.split == split]
        slices = sum(
            min(r.shape[2], _TINY_MAX_SLICES) if size == "tiny" else r.shape[2] for r in chosen
        )
        splits[split] = {
            "cases": [row.case for row in chosen],
            "patients": len({row.patient for row in chosen}),
            "slices": slices,
        }
    return {
        **common._marker(
            "ISLES 2018 (synthetic twin; no real patient data)",
            "datamodules.synth.isles2018",
            GENERATOR_VERSION,
        ),
        "seed": seed,
        "size": size,
        "dwi": dwi,
        "nifti_bytes": total_bytes,
        "splits": splits,
    }


def write_isles2018_twin(
    root: Path,
    cases: int | None = None,
    testing_cases: int | None = None,
    seed: int = 0,
    size: Size = "full",
    dwi: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic ISLES 2018 extract root (``TRAINING/``, ``TESTING/``, ``__MACOSX/``).

    The twin is built in a hidden sibling directory and renamed into place at the end, so an
    interrupted run leaves no half-written twin behind.

    Args:
        root: Directory to create (its parents are created too). It may exist if empty.
        cases: Training cases to write, chosen by :func:`select_cases` as whole patients
            (so one more when the last patient has two slabs); ``None`` writes all 94.
        testing_cases: Testing cases, chosen the same way; ``None`` writes all 62 when
            ``cases`` is ``None`` and 4 otherwise.
        seed: Seed for case selection, anatomy, lesions and noise. Same arguments, same bytes.
        size: ``"full"`` (the real 256×256 layout) or ``"tiny"`` (32×32, ≤ 4 slices,
            ≤ 6 frames; for tests only).
        dwi: Also write the optional ``MR_DWI`` folder in every training case.
        overwrite: Replace an existing non-empty ``root``; only a previous twin (one holding
            ``SYNTHETIC_TWIN.json``) is ever replaced.
        progress: Show a tqdm bar over cases on stderr.

    Returns:
        ``root``.

    Raises:
        ValueError: If a count, the seed or the size is out of range.
        FileExistsError: If ``root`` is not empty and ``overwrite`` is false, or is not a twin.
        NotADirectoryError: If ``root`` is a file.
    """
    root = Path(os.path.abspath(root))  # abspath, not resolve: keep the user's symlinks
    _validate(cases, testing_cases, seed, size)
    common._check_target(root, overwrite)
    if testing_cases is None and cases is not None:
        testing_cases = DEFAULT_TESTING_CASES_WITH_SUBSET
    rows = [*select_cases("TRAINING", cases, seed), *select_cases("TESTING", testing_cases, seed)]
    logger.info(
        "writing %d-case synthetic ISLES 2018 twin (seed %d, %s) to %s", len(rows), seed, size, root
    )

    def build(tmp: Path) -> dict:
        for split in SPLITS:
            (tmp / split).mkdir()
        (tmp / "__MACOSX" / "TRAINING").mkdir(parents=True)
        # AppleDouble header bytes, as in the real zip's resource-fork junk
        (tmp / "__MACOSX" / "TRAINING" / "._case_1").write_bytes(common._APPLE_DOUBLE)
        with tqdm(total=len(rows), unit="case", disable=not progress) as bar:
            total_bytes = _generate(tmp, rows, seed, size, dwi, bar)
        return _describe(rows, seed, size, dwi, total_bytes)

    common._write_atomically(root, overwrite, build)
    logger.info("wrote %s", root)
    return root
