"""A synthetic ISLES 2022 case's anatomy: head pose, image grids, tissue maps and lesions.

Everything lives in three frames. The *template* frame is the MNI152 2009a template bundled with
nilearn (:mod:`datamodules.synth.mni`, mm). A case's *pose* (a few degrees of rotation, a few
mm of shift, a head-size scale of ±8 %) places the template in the *scanner* frame, where each
image grid sits: the DWI grid (shared by DWI, ADC and the mask) and the FLAIR grid, each with its
centre's matrix, spacing and axis directions, turned by a few degrees (the slices' obliquity) and
centred on the brain within a few mm. A voxel is sampled from the template through one affine
map, grid voxel → scanner → template, so DWI and FLAIR see the same head on different grids.

Lesions are drawn in the template frame, rendered there once (on the template's 1 mm grid, or
a coarser one for large lesions and the tiny twin) and sampled into each grid like the anatomy.
A lesion is an ellipsoid with a rippled boundary, soft over a few tenths of its radius, confined
to tissue (grey + white matter ≥ 0.4, so never into ventricles or outside the brain) and, when
lateral, to its hemisphere. A case has one lesion (62 %) or 2–6 (38 %); the first is large and
territorial (20–150 ml, 22 %), medium (1–20 ml, 40 %), small (0.05–1 ml, 32 %) or tiny
(0.01–0.1 ml and alone, 6 %); the others are small (0.02–1 ml). Lesions keep a DWI voxel's
diagonal plus its longest side apart, so that each stays its own 26-connected component; one
that finds no room is dropped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from datamodules.synth import mni
from datamodules.synth.common import Size, box_offsets, rippled_radius_parts
from datamodules.synth.isles2022.plan import GridSpec

_BRAIN_CENTRE_MM = np.array([0.0, -18.0, 8.0])  # template mm, roughly the brain's centre
# the direction a voxel axis points to in the scanner's RAS+ frame, by its nibabel axis code
_AXIS_VECTORS = {
    code: sign * np.eye(3)[axis] for axis, pair in enumerate(("RL", "AP", "SI"))
    for code, sign in zip(pair, (1.0, -1.0))
}  # fmt: skip
_KINDS = ("large", "medium", "small", "tiny")
_KIND_P = (0.22, 0.4, 0.32, 0.06)
_KIND_ML = {
    "large": (20.0, 150.0),
    "medium": (1.0, 20.0),
    "small": (0.05, 1.0),
    "tiny": (0.01, 0.1),
}
_SATELLITE_ML = (0.02, 1.0)
_SEVERAL_P = 0.38
_SEVERAL_COUNTS, _SEVERAL_COUNT_P = (2, 3, 4, 5, 6), (0.35, 0.25, 0.18, 0.12, 0.1)
_PLACEMENT_TRIES = 40
_RIPPLE_FLOOR = 0.8  # a rippled radius never shrinks below 80 %: bounds a lesion's reach
_EDGE = (0.85, 1.15)  # the soft boundary runs from weight 1 to 0 between these radii


@dataclass(frozen=True)
class TemplateMaps:
    """Template volumes on the 1 mm grid (float32 in [0, 1]) and where lesions may start."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray  # brain − GM − WM, clipped to [0, 1]
    flair: np.ndarray  # FLAIR-like contrast: GM 1, WM 0.8, CSF 0.15
    tissue: np.ndarray  # GM + WM
    anywhere: np.ndarray  # template mm (N, 3) of tissue voxels a lesion may be centred on
    territorial: np.ndarray  # the lateral, supratentorial subset for large lesions


@dataclass(frozen=True)
class Grid:
    """An image grid: its voxels and voxel → scanner mm affine (float32-exact, as stored)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm."""
        zooms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(zooms[0]), float(zooms[1]), float(zooms[2])


@dataclass(frozen=True)
class Lesion:
    """One lesion in the template frame."""

    centre_mm: np.ndarray  # (3,)
    inverse_axes: np.ndarray  # (3, 3): mm offset → unit-ball coordinates
    waves: np.ndarray  # (3, 4): wave vector (rad/mm) and phase of the boundary ripples
    ripple: float  # relative amplitude of each ripple
    side: float  # +1 right hemisphere, -1 left, 0 either
    extent_mm: float  # weight < 0.5 (outside the mask) beyond this distance from the centre
    kind: str  # "large", "medium", "small" or "tiny" (the first lesion), else "satellite"
    volume_ml: float  # drawn in the scanner frame, before confinement to tissue

    @property
    def reach_mm(self) -> float:
        """No weight at all beyond this distance from the centre."""
        return _EDGE[1] * self.extent_mm


@dataclass(frozen=True)
class RenderedLesion:
    """A lesion's soft weight in [0, 1] on a box of the template grid (or a subsampled one)."""

    affine: np.ndarray  # array voxel → template mm
    weight: np.ndarray  # float32


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation about the x, then y, then z axis by ``angles_deg``."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _resample(
    array: np.ndarray, voxel_map: np.ndarray, lo: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """``array`` on the grid box of ``shape`` starting at voxel ``lo`` (trilinear, 0 outside)."""
    offset = voxel_map[:3, :3] @ lo + voxel_map[:3, 3]
    return ndimage.affine_transform(
        array, voxel_map[:3, :3], offset=offset, output_shape=shape, order=1, mode="constant",
        cval=0.0, output=np.float32, prefilter=False,
    )  # fmt: skip


def _voxel_map(grid: Grid, pose: np.ndarray, array_affine: np.ndarray) -> np.ndarray:
    """The 4×4 map from a grid's voxels to the voxels of a template-frame array."""
    return np.linalg.inv(array_affine) @ np.linalg.inv(pose) @ grid.affine


@lru_cache(maxsize=1)
def template_maps() -> TemplateMaps:
    """Tissue maps and lesion-centre candidates of the template, once per process."""
    template = mni.load_template()
    brain = mni.brain_mask()
    csf = np.clip(brain - template.gm - template.wm, 0, 1).astype(np.float32)
    flair = template.gm + np.float32(0.8) * template.wm + np.float32(0.15) * csf
    tissue = template.gm + template.wm
    index = np.argwhere(tissue > 0.7)
    points = index + mni.template_affine()[:3, 3]
    x, y, z = points.T
    anywhere = points[(z > -40) & (z < 70)]
    territorial = points[(np.abs(x) > 20) & (np.abs(x) < 48) & (y > -60) & (y < 35) & (z > 0)]
    return TemplateMaps(template.gm, template.wm, csf, flair, tissue, anywhere, territorial)


def draw_pose(rng: np.random.Generator) -> np.ndarray:
    """Template mm → scanner mm (4×4): rotation of a few degrees, shift, head-size scale."""
    rotation = _rotation(rng.uniform([-12, -4, -8], [12, 4, 8]))
    scale = rng.uniform(0.92, 1.08)
    centre_in_scanner = rng.uniform([-6, -10, -8], [6, 10, 12])
    pose = np.eye(4)
    pose[:3, :3] = scale * rotation
    pose[:3, 3] = centre_in_scanner - pose[:3, :3] @ _BRAIN_CENTRE_MM
    return pose


def draw_grid(spec: GridSpec, size: Size, pose: np.ndarray, rng: np.random.Generator) -> Grid:
    """A grid of ``spec`` with a random obliquity, centred near the brain."""
    shape, spacing = spec.grid(size)
    directions = np.array([_AXIS_VECTORS[code] for code in spec.axes], dtype=np.float64).T
    tilt = _rotation(rng.uniform(-np.array(spec.tilt_deg), spec.tilt_deg))
    linear = tilt @ directions @ np.diag(spacing)
    fov_centre = pose[:3, :3] @ _BRAIN_CENTRE_MM + pose[:3, 3] + rng.uniform(-4, 4, size=3)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = fov_centre - linear @ ((np.array(shape) - 1) / 2)
    # the header stores float32: use exactly what a reader will see
    return Grid(shape, affine.astype(np.float32).astype(np.float64))


def sample(volume: np.ndarray, grid: Grid, pose: np.ndarray) -> np.ndarray:
    """A template-grid volume on ``grid`` (trilinear; 0 outside the template)."""
    voxel_map = _voxel_map(grid, pose, mni.template_affine())
    return _resample(volume, voxel_map, np.zeros(3, dtype=int), grid.shape)


def draw_lesions(rng: np.random.Generator, scale: float, gap_mm: float) -> list[Lesion]:
    """A case's lesions (see the module docstring); ``gap_mm`` keeps them apart."""
    kind = str(rng.choice(_KINDS, p=_KIND_P))
    several = kind != "tiny" and rng.random() < _SEVERAL_P
    count = int(rng.choice(_SEVERAL_COUNTS, p=_SEVERAL_COUNT_P)) if several else 1
    side = float(rng.choice([-1.0, 1.0]))
    lesions: list[Lesion] = []
    for index in range(count):
        own_kind = kind if index == 0 else "satellite"
        low, high = _KIND_ML.get(own_kind, _SATELLITE_ML)
        volume_ml = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        volume_mm3 = 1000 * volume_ml / scale**3
        own_side = side if index == 0 or rng.random() < 0.75 else -side
        shape = _draw_shape(rng, volume_mm3, large=own_kind == "large")
        pool = _candidates(own_kind == "large", own_side, own_kind in ("large", "medium"))
        for _ in range(_PLACEMENT_TRIES):
            centre = pool[rng.integers(len(pool))].astype(np.float64)
            if all(_apart(centre, shape[3], other, gap_mm) for other in lesions):
                break
        else:
            continue  # no room left: the case keeps fewer lesions
        inverse_axes, waves, ripple, extent = shape
        lateral = abs(centre[0]) > 12
        own_side = own_side if lateral else 0.0
        lesions.append(
            Lesion(centre, inverse_axes, waves, ripple, own_side, extent, own_kind, volume_ml)
        )
    return lesions


@lru_cache(maxsize=8)
def _candidates(territorial: bool, side: float, lateral: bool) -> np.ndarray:
    """Template mm (N, 3) where a lesion may be centred, on one side of the midline."""
    maps = template_maps()
    pool = maps.territorial if territorial else maps.anywhere
    return pool[pool[:, 0] * side > (8 if lateral else 2)]


def _draw_shape(
    rng: np.random.Generator, volume_mm3: float, large: bool
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Inverse axes, ripple waves, ripple amplitude and extent (mm) of an ellipsoid lesion."""
    spread = 0.6 if large else 0.4
    ratios = np.exp(rng.uniform(-spread, spread, size=2))
    radius = (3 * volume_mm3 / (4 * np.pi * ratios.prod())) ** (1 / 3)
    semi_axes = np.maximum(radius * np.array([1.0, *ratios]), 0.6)
    rotation, upper = np.linalg.qr(rng.standard_normal((3, 3)))
    rotation *= np.sign(np.diag(upper))
    directions = rng.standard_normal((3, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    vectors = 2 * np.pi * directions / (radius * rng.uniform(0.6, 1.4, size=(3, 1)))
    waves = np.concatenate([vectors, rng.uniform(0, 2 * np.pi, size=(3, 1))], axis=1)
    ripple = 0.12 if large else 0.07
    extent = float(semi_axes.max()) / _RIPPLE_FLOOR
    return np.diag(1 / semi_axes) @ rotation.T, waves, ripple, extent


def _apart(centre: np.ndarray, extent: float, other: Lesion, gap_mm: float) -> bool:
    """Whether a lesion at ``centre`` keeps ``gap_mm`` of healthy tissue from ``other``."""
    distance = float(np.linalg.norm(centre - other.centre_mm))
    return distance > extent + other.extent_mm + gap_mm


def render_lesion(lesion: Lesion, step: int) -> RenderedLesion:
    """The lesion's weight on every ``step``-th voxel of the template grid, in its box."""
    maps = template_maps()
    origin = mni.template_affine()[:3, 3]
    centre = lesion.centre_mm - origin  # template voxel index (1 mm, axes aligned)
    lo = np.maximum(np.floor(centre - lesion.reach_mm).astype(int), 0)
    hi = np.minimum(np.ceil(centre + lesion.reach_mm).astype(int) + 1, maps.tissue.shape)
    box = tuple(slice(a, b, step) for a, b in zip(lo, hi))
    offsets = box_offsets(lo, hi, centre, step)
    radius2, ripple = rippled_radius_parts(offsets, lesion.inverse_axes, lesion.waves)
    factor = np.maximum(1 + np.float32(lesion.ripple) * ripple, np.float32(_RIPPLE_FLOOR))
    radius = np.sqrt(radius2) * factor
    weight = np.clip((_EDGE[1] - radius) / np.float32(_EDGE[1] - _EDGE[0]), 0, 1)
    weight *= np.clip(2.5 * maps.tissue[box] - 0.5, 0, 1)  # tissue only: no CSF, no outside
    if lesion.side != 0:
        x_mm = offsets[0] + np.float32(lesion.centre_mm[0])
        weight *= np.clip((lesion.side * x_mm + 2) / 4, 0, 1)
    affine = np.diag([float(step)] * 3 + [1.0])
    affine[:3, 3] = origin + lo
    return RenderedLesion(affine, weight.astype(np.float32))


def lesion_weight(rendered: list[RenderedLesion], grid: Grid, pose: np.ndarray) -> np.ndarray:
    """The lesions' weight on ``grid`` (the maximum where two meet), float32 in [0, 1]."""
    weight = np.zeros(grid.shape, dtype=np.float32)
    for lesion in rendered:
        voxel_map = _voxel_map(grid, pose, lesion.affine)
        corners = np.array(list(itertools.product(*[(0, n - 1) for n in lesion.weight.shape])))
        inverse = np.linalg.inv(voxel_map)
        on_grid = inverse[:3, :3] @ corners.T + inverse[:3, 3:4]
        lo = np.maximum(np.floor(on_grid.min(axis=1)).astype(int), 0)
        hi = np.minimum(np.ceil(on_grid.max(axis=1)).astype(int) + 1, grid.shape)
        if np.any(hi <= lo):
            continue  # outside the field of view
        values = _resample(lesion.weight, voxel_map, lo, tuple(hi - lo))
        region = weight[tuple(slice(a, b) for a, b in zip(lo, hi))]
        np.maximum(region, values, out=region)
    return weight


def centre_voxel(lesion: Lesion, grid: Grid, pose: np.ndarray) -> tuple[int, int, int] | None:
    """The grid voxel nearest the lesion's centre, or ``None`` outside the field of view."""
    point = np.linalg.inv(grid.affine) @ pose @ np.append(lesion.centre_mm, 1.0)
    voxel = np.rint(point[:3]).astype(int)
    if np.any(voxel < 0) or np.any(voxel >= grid.shape):
        return None
    return int(voxel[0]), int(voxel[1]), int(voxel[2])
