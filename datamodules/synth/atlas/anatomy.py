"""The T1 and lesion-mask volumes of one synthetic ATLAS scan.

Anatomy is the MNI152 2009a template bundled with nilearn (skull-stripped, so the background is
exactly 0), shifted by a few mm per subject, scaled by a per-session gain and a smooth separable
bias field, with noise inside the brain: float32 in [0, 100] for R1.x and roughly [0, 150] for
R2.0. Lesions are T1-hypointense ellipsoids with a wavy boundary, centred on grey or white matter
and confined to the brain; their volumes follow a log-normal fitted to the real R2.0 quartiles
(13, 1159, 5290, 36236, 496656 mm³), so most are small. Every Training scan has at least one
lesion; the sessions of a subject share the lesions, and each mask file of a scan holds some of
them.

Mask values follow the scan's style (:mod:`.plan`): R1.x masks are float64 and store 1 and 255
as 0.9999999997671694 and ≈254.99999994 (value × (1 − 2⁻³²)); the multi-valued style ranks a
lesion's voxels into the bands ≈1, ≈2, ≈253, ≈254, ≈255; R2.0 masks are uint8 {0, 1}, and the
hundredth style is float64 {0, 0.01}.

``size="tiny"`` is for tests only: every 5th voxel of the template grid, i.e. 40×47×38 at 5 mm
with the same origin (-98, -134, -72), and lesion volumes capped at 40 voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from datamodules.synth import mni
from datamodules.synth.atlas import plan
from datamodules.synth.atlas.plan import Scan
from datamodules.synth.common import Size, box_offsets, rippled_radius_parts

TINY_STEP = 5
NEAR_ONE = 1.0 - 2.0**-32  # real R1.1 masks store 1 as 0.9999999997671694

_LESION_LOG_MEDIAN, _LESION_LOG_SIGMA = np.log(5290.0), 2.55  # quartiles 1159 / 36236 mm³
_LESION_MM3 = (13.0, 496656.0)
_TINY_MIN_VOXELS, _TINY_MAX_VOXELS = 12, 40
_MAX_LESIONS = 3
_MULTI_VALUES = (1.0, 2.0, 253.0, 254.0, 255.0)

# (box slices, binary mask, soft weight) of one lesion; the last two cover the box only
_Box = tuple[tuple[slice, ...], np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Grid:
    """The template on the twin's grid, with what lesion placement needs."""

    t1: np.ndarray
    brain: np.ndarray
    tissue_index: np.ndarray  # flat indices of voxels with GM + WM > 0.7
    gm_share: np.ndarray  # GM / (GM + WM), to call a lesion cortical or subcortical
    affine: np.ndarray
    step: float


@dataclass(frozen=True)
class Lesion:
    """One lesion of a subject, and where it lies for the metadata tables."""

    centre: np.ndarray  # (3,) voxel index on the subject's (shifted) grid
    inverse_axes: np.ndarray  # (3, 3): voxel offset → unit-ball coordinates
    waves: np.ndarray  # (3, 4): wave vector (rad/voxel) and phase of the boundary ripples
    depth: float  # relative T1 drop at the core
    cortical: bool
    left: bool


def _shifted(volume: np.ndarray, shift: tuple[int, ...]) -> np.ndarray:
    """``volume`` moved by whole voxels, zero-filled (the anatomy lies well inside the box)."""
    out = np.zeros_like(volume)
    source, target = [], []
    for n, s in zip(volume.shape, shift, strict=True):
        source.append(slice(max(0, -s), n - max(0, s)))
        target.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(target)] = volume[tuple(source)]
    return out


def _draw_lesions(
    rng: np.random.Generator, grid: Grid, shift: np.ndarray, size: Size
) -> list[Lesion]:
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
            Lesion(
                centre=source + shift,
                inverse_axes=np.diag(1 / semi_axes) @ rotation.T,
                waves=waves,
                depth=float(rng.uniform(0.35, 0.65)),
                cortical=bool(grid.gm_share.flat[flat] > 0.5),
                left=bool(x_mm < 0),
            )
        )
    return lesions


def _lesion_box(lesion: Lesion, shape: tuple[int, ...], brain: np.ndarray) -> _Box:
    """Box slices, binary mask and soft weight (both in the box) of one lesion."""
    reach = 1.6 / np.linalg.svd(lesion.inverse_axes, compute_uv=False).min()
    lo = np.maximum(np.floor(lesion.centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(lesion.centre + reach).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    offsets = box_offsets(lo, hi, lesion.centre)
    radius2, ripple = rippled_radius_parts(offsets, lesion.inverse_axes, lesion.waves)
    radius = np.sqrt(radius2) * (1 + np.float32(0.08) * ripple)
    inside = brain[box]
    binary = (radius <= 1) & inside
    centre = tuple(int(c - a) for c, a in zip(lesion.centre, lo, strict=True))
    if all(0 <= c < n for c, n in zip(centre, binary.shape, strict=True)):
        binary[centre] = True  # even the smallest lesion covers its centre voxel
    soft = np.clip((1.15 - radius) / 0.3, 0, 1) * inside
    soft = np.maximum(soft, binary)
    return box, binary, soft.astype(np.float32)


def _bias_field(rng: np.random.Generator, grid: Grid) -> list[np.ndarray]:
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


def _mask_volume(scan: Scan, boxes: list[_Box], shape: tuple[int, ...]) -> np.ndarray:
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


@lru_cache(maxsize=2)
def template_grid(size: Size) -> Grid:
    """The template (T1 in [0, 1], brain, tissue) on the full or the tiny grid."""
    template = mni.load_template()
    step = 1 if size == "full" else TINY_STEP
    t1, gm, wm = (volume[::step, ::step, ::step] for volume in template)
    affine = np.array(mni.template_affine())
    affine[:3, :3] *= step
    tissue = gm + wm
    return Grid(
        t1=np.ascontiguousarray(t1),
        brain=np.ascontiguousarray(t1 > 0),
        tissue_index=np.flatnonzero(tissue > 0.7),
        gm_share=np.ascontiguousarray(gm / np.maximum(tissue, 1e-3)),
        affine=affine,
        step=float(step),
    )


def lesion_volume_mm3(rng: np.random.Generator) -> float:
    """One lesion volume: log-normal through the real R2.0 quartiles, clipped to 13–496 656."""
    volume = float(np.exp(rng.normal(_LESION_LOG_MEDIAN, _LESION_LOG_SIGMA)))
    return float(np.clip(volume, *_LESION_MM3))


def render_scan(
    release: str, scan: Scan, seed: int, size: Size
) -> tuple[np.ndarray, list[np.ndarray], list[Lesion]]:
    """The T1, the ``scan.mask_files`` masks (in file order) and the lesions of one scan."""
    grid = template_grid(size)
    subject_rng = plan.rng(seed, release, "subject", scan.subject)
    shift_mm = subject_rng.uniform(-4, 4, size=3)
    shift = np.rint(shift_mm / grid.step).astype(int)
    count = int(subject_rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    lesions = _draw_lesions(subject_rng, grid, shift, size)[: max(count, scan.mask_files)]
    session_rng = plan.rng(seed, release, "session", scan.subject + (scan.session,))

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

    masks = []
    for k in range(scan.mask_files):
        mine = [box for index, box in enumerate(boxes) if index % scan.mask_files == k]
        masks.append(_mask_volume(scan, mine, t1.shape))
    return t1, masks, lesions
