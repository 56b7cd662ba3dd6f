"""A synthetic ISLES 2018 patient: pose, physiology, slab geometry, sampled anatomy, lesions.

Every case is a slab of the case's Z slices at its slice spacing through one synthetic patient:
the MNI152 2009a template bundled with nilearn, turned by a few degrees and shifted by a few mm,
with per-patient intensity and physiology scales. Both slabs of a two-slab patient come from the
same patient (same pose, same lesions) at partly overlapping heights. Testing rows carry no
spacing; a training row with the same Z (and frame count, where one exists) lends its spacing.

Lesions are 1–3 smooth ellipsoidal blobs with a wavy boundary on one side of the brain, one
centred on tissue of each slab so that no training OT is empty, inside a hypoperfused penumbra
of about twice the core's radius.

``size="tiny"`` keeps the field of view but samples it 32×32 in-plane (so the in-plane spacing
is 8× the real one), keeps at most the central 4 slices and at most 6 frames spread over the
real acquisition (``pixdim[4]`` = T/6 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from datamodules.isles2018_cases import CaseInfo, load_case_table
from datamodules.synth import mni
from datamodules.synth.common import Size

TINY_INPLANE, TINY_MAX_SLICES, TINY_MAX_FRAMES = 32, 4, 6
_PIVOT_MM = np.array([0.0, -18.0, 0.0])  # roughly the brain's centre in MNI space
_SLAB_CENTRE_RANGE_MM = (-5.0, 30.0)  # basal ganglia to ventricle bodies, where CTP slabs sit
_SLAB_LIMITS_MM = (-75.0, 95.0)


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


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz, cx, sx, cy, sy = (
        f(np.deg2rad(a)) for a in (yaw, pitch, roll) for f in (np.cos, np.sin)
    )
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def _spacing_for(row: CaseInfo, rng: np.random.Generator) -> tuple[float, float, float]:
    """The row's spacing, or for a testing row that of a training row with the same protocol."""
    if row.spacing is not None:
        return row.spacing
    training = [r for r in load_case_table() if r.split == "TRAINING" and r.spacing]
    same_z = [r for r in training if r.shape[2] == row.shape[2]]
    same_frames = [r for r in same_z if r.frames == row.frames]
    donors = [r.spacing for r in same_frames or same_z if r.spacing is not None]
    return donors[rng.integers(len(donors))]


@dataclass(frozen=True)
class Geometry:
    """The grid of one slab: voxels, spacing (mm), frames and their duration, height (mm)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    frames: int
    frame_seconds: float
    slab_centre_mm: float


@dataclass(frozen=True)
class Patient:
    """Pose (``rotation`` (3, 3), ``pivot`` (3,) world mm) and scalar parameters of a patient."""

    rotation: np.ndarray
    pivot: np.ndarray
    params: dict[str, float]


@dataclass(frozen=True)
class Lesions:
    """A patient's lesion blobs in world mm and the ripple that makes their boundary irregular."""

    centres: np.ndarray  # (K, 3) world mm
    inverse_axes: np.ndarray  # (K, 3, 3): world offset → unit-ball coords
    wave_vectors: np.ndarray  # (8, 3) rad/mm
    wave_phases: np.ndarray  # (8,)


def draw_patient(rng: np.random.Generator) -> Patient:
    """Draw a patient's pose and parameters (intensity scales, physiology, slab height)."""
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
    return Patient(rotation=rotation, pivot=_PIVOT_MM + shift, params=params)


def geometries(
    slabs: Sequence[CaseInfo], patient: Patient, size: Size, rng: np.random.Generator
) -> list[Geometry]:
    """The grid of each slab of a patient, the two slabs of a pair overlapping in height."""
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
    result = []
    for row, offset in zip(slabs, offsets, strict=True):
        row_spacing = row.spacing or spacing
        nx, ny, nz = row.shape
        frames, seconds = row.frames, 1.0
        if size == "tiny":
            factor = nx / TINY_INPLANE
            row_spacing = (row_spacing[0] * factor, row_spacing[1] * factor, row_spacing[2])
            nx = ny = TINY_INPLANE
            nz = min(nz, TINY_MAX_SLICES)
            frames = min(frames, TINY_MAX_FRAMES)
            seconds = row.frames / frames
        result.append(Geometry((nx, ny, nz), row_spacing, frames, seconds, centre + offset))
    return result


def grid_mm(geometry: Geometry, patient: Patient) -> np.ndarray:
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


def sample_anatomy(points: np.ndarray) -> dict[str, np.ndarray]:
    """GM, WM, brain (all in [0, 1]) and mm from the brain at world points (3, X, Y, Z)."""
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


def place_lesions(
    patient: Patient,
    slabs: list[tuple[np.ndarray, dict[str, np.ndarray]]],
    rng: np.random.Generator,
) -> Lesions:
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
    return Lesions(
        centres=np.array(centres),
        inverse_axes=np.array(inverse_axes),
        wave_vectors=2 * np.pi * directions / wavelengths,
        wave_phases=rng.uniform(0, 2 * np.pi, size=8),
    )


def lesion_weights(
    points: np.ndarray, lesions: Lesions, penumbra_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft core and penumbra weights in [0, 1], shape (X, Y, Z)."""
    flat = points.reshape(3, -1)
    radius2 = np.full(flat.shape[1], np.inf, dtype=np.float32)
    for centre, inverse in zip(lesions.centres, lesions.inverse_axes, strict=True):
        # unit-ball coordinates: inverse @ (p - centre), written as a matrix product and a shift
        unit = inverse.astype(np.float32) @ flat - (inverse @ centre).astype(np.float32)[:, None]
        radius2 = np.minimum(radius2, np.einsum("ij,ij->j", unit, unit))
    near = radius2 < (1.5 * penumbra_ratio) ** 2
    radius = np.full(flat.shape[1], np.inf, dtype=np.float32)
    wave_vectors = lesions.wave_vectors.astype(np.float32)
    waves = np.sin(wave_vectors @ flat[:, near] + lesions.wave_phases.astype(np.float32)[:, None])
    wobble = np.clip(waves.sum(axis=0) / 2.0, -2, 2)  # 8 unit sines: variance 4
    radius[near] = np.sqrt(radius2[near]) * (1 + 0.2 * wobble)
    with np.errstate(over="ignore"):
        core = 1 / (1 + np.exp((radius - 1.0) / 0.05))
        penumbra = 1 / (1 + np.exp((radius - penumbra_ratio) / 0.15))
    shape = points.shape[1:]
    return core.reshape(shape).astype(np.float32), penumbra.reshape(shape).astype(np.float32)
