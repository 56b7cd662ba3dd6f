"""The DWI, ADC, FLAIR and mask volumes of a synthetic ISLES 2022 case, in on-disk dtypes.

Modelling choices (the release's values are not copied):

* ADC (10⁻⁶ mm²/s): grey matter 800–900, white matter 680–760, CSF 2800–3200, lesion 300–500;
  exactly 0 outside the brain, as scanners mask the map; Gaussian noise of 25–50.
* DWI (b = 1000 s/mm², magnitude): grey matter at the centre's level, white matter 0.78–0.9 of
  it, CSF 0.12–0.22 (dark), lesion 2–3× (bright); a smooth multiplicative bias field of up to
  about ±20 % and Rician noise of 3–6 % of the level, which leaves a noise floor around the head.
* FLAIR: grey matter at the centre's level, white matter 0.8, CSF 0.15; the lesion is mildly
  bright (1.3–1.7×, sub-acute) in 70 % of cases and invisible (hyper-acute) in the others;
  bias field and Rician noise of 2–4 %.
* Mask: the lesions' weight ≥ 0.5 on the DWI grid, plus the voxel nearest each lesion's centre
  so that even the tiniest lesion is annotated; {0, 1} in the centre's dtype.

No skull or scalp is modelled: outside the brain the magnitude images hold only noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from datamodules.isles2022_layout import MASK
from datamodules.synth.common import Size
from datamodules.synth.isles2022 import anatomy, plan
from datamodules.synth.isles2022.anatomy import Grid
from datamodules.synth.isles2022.plan import Case

_FULL_RENDER_STEP, _LARGE_RENDER_STEP, _TINY_RENDER_STEP = 1, 2, 3
_LARGE_REACH_MM = 25.0
_HYPERACUTE_P = 0.3
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity, as the challenge counts


@dataclass(frozen=True)
class RenderedCase:
    """A case's volumes and what the marker records about it.

    Attributes:
        images: ``"DWI"``, ``"ADC"``, ``"FLAIR"`` and :data:`MASK`, in their on-disk dtypes.
        grids: ``"DWI"`` (also ADC's and the mask's) and ``"FLAIR"``.
        lesions: 26-connected components of the mask.
        lesion_ml: Mask volume in ml.
        flair_visible: Whether the lesions are bright on FLAIR (sub-acute).
    """

    images: dict[str, np.ndarray]
    grids: dict[str, Grid]
    lesions: int
    lesion_ml: float
    flair_visible: bool


def _bias_field(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """A smooth gain around 1 (separable cosines along the voxel axes, each ≤ ±7 %)."""
    field = np.ones((1, 1, 1), dtype=np.float32)
    for axis, (n, step) in enumerate(zip(grid.shape, grid.spacing)):
        mm = np.arange(n, dtype=np.float32) * np.float32(step)
        wavelength, phase = rng.uniform(200, 450), rng.uniform(0, 2 * np.pi)
        factor = 1 + rng.uniform(0, 0.07) * np.cos(2 * np.pi * mm / wavelength + phase)
        field = field * factor.astype(np.float32).reshape(
            [-1 if i == axis else 1 for i in range(3)]
        )
    return field


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of ``signal`` plus complex Gaussian noise of standard deviation ``sigma``."""
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def _stored(volume: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``volume`` in an on-disk dtype: integers rounded and clipped to the type's range."""
    target = np.dtype(dtype)
    if target.kind in "iu":
        info = np.iinfo(target)
        return np.clip(np.rint(volume), info.min, info.max).astype(target)
    return volume.astype(target)


@dataclass(frozen=True)
class _Contrast:
    """A case's tissue values (ADC in 10⁻⁶ mm²/s, DWI and FLAIR relative to grey matter)."""

    adc: tuple[float, float, float, float]  # grey, white, CSF, lesion
    dwi: tuple[float, float, float, float]
    flair_lesion: float  # 1: invisible (hyper-acute)
    gain: float  # of the centre's DWI and FLAIR levels


def _draw_contrast(rng: np.random.Generator) -> _Contrast:
    u = rng.uniform
    return _Contrast(
        adc=(u(800, 900), u(680, 760), u(2800, 3200), u(300, 500)),
        dwi=(1.0, u(0.78, 0.9), u(0.12, 0.22), 0.93 * u(2.0, 3.0)),  # lesion ≈ 2–3× tissue
        flair_lesion=1.0 if rng.random() < _HYPERACUTE_P else u(1.3, 1.7),
        gain=u(0.85, 1.15),
    )


def _render_step(lesion: anatomy.Lesion, size: Size) -> int:
    if size == "tiny":
        return _TINY_RENDER_STEP
    return _LARGE_RENDER_STEP if lesion.reach_mm > _LARGE_REACH_MM else _FULL_RENDER_STEP


def _diffusion(
    case: Case,
    grid: Grid,
    pose: np.ndarray,
    lesions: list[anatomy.Lesion],
    rendered: list[anatomy.RenderedLesion],
    contrast: _Contrast,
    rngs: tuple[np.random.Generator, np.random.Generator],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DWI, ADC (float32) and the boolean mask on the DWI grid; ``rngs``: (case, noise)."""
    rng, noise_rng = rngs
    maps = anatomy.template_maps()
    gm, wm, csf = (anatomy.sample(volume, grid, pose) for volume in (maps.gm, maps.wm, maps.csf))
    weight = anatomy.lesion_weight(rendered, grid, pose)
    for lesion in lesions:
        voxel = anatomy.centre_voxel(lesion, grid, pose)
        if voxel is not None:
            weight[voxel] = 1.0
    brain = gm + wm + csf
    grey, white, fluid, core = contrast.adc
    adc = (gm * grey + wm * white + csf * fluid) / np.maximum(brain, 0.05)
    adc += weight * (np.float32(core) - adc)
    adc += np.float32(rng.uniform(25, 50)) * noise_rng.standard_normal(grid.shape, np.float32)
    adc = np.where(np.maximum(brain, weight) >= 0.5, np.maximum(adc, 0), np.float32(0))
    grey, white, fluid, core = contrast.dwi
    dwi = gm * grey + wm * white + csf * fluid
    dwi += weight * (np.float32(core) - dwi)
    level = case.centre.dwi_level * contrast.gain
    dwi *= _bias_field(rng, grid) * np.float32(level)
    dwi = _rician(noise_rng, dwi, level * rng.uniform(0.03, 0.06))
    return dwi, adc, weight >= 0.5


def _flair(
    case: Case,
    grid: Grid,
    pose: np.ndarray,
    rendered: list[anatomy.RenderedLesion],
    contrast: _Contrast,
    rngs: tuple[np.random.Generator, np.random.Generator],
) -> np.ndarray:
    """FLAIR (float32) on its own grid; ``rngs``: (case, noise)."""
    rng, noise_rng = rngs
    flair = anatomy.sample(anatomy.template_maps().flair, grid, pose)
    weight = anatomy.lesion_weight(rendered, grid, pose)
    flair += weight * (np.float32(0.9 * contrast.flair_lesion) - flair)
    level = case.centre.flair_level * contrast.gain
    flair *= _bias_field(rng, grid) * np.float32(level)
    return _rician(noise_rng, flair, level * rng.uniform(0.02, 0.04))


def render_case(case: Case, seed: int, size: Size) -> RenderedCase:
    """Draw and render one case; its voxels depend only on ``(seed, case.number, size)``."""
    centre = case.centre
    rng = plan.rng(seed, "case", case.number)
    pose = anatomy.draw_pose(rng)
    grids = {
        "DWI": anatomy.draw_grid(centre.dwi, size, pose, rng),
        "FLAIR": anatomy.draw_grid(centre.flair, size, pose, rng),
    }
    contrast = _draw_contrast(rng)
    spacing = np.array(grids["DWI"].spacing)
    gap_mm = float(np.linalg.norm(spacing) + spacing.max())  # ≥ one voxel between lesions
    scale = float(np.cbrt(np.linalg.det(pose[:3, :3])))
    lesions = anatomy.draw_lesions(rng, scale, gap_mm)
    rendered = [anatomy.render_lesion(lesion, _render_step(lesion, size)) for lesion in lesions]
    rngs = (rng, plan.rng(seed, "noise", case.number))
    dwi, adc, mask = _diffusion(case, grids["DWI"], pose, lesions, rendered, contrast, rngs)
    flair = _flair(case, grids["FLAIR"], pose, rendered, contrast, rngs)
    images = {
        "DWI": _stored(dwi, centre.dtypes["DWI"]),
        "ADC": _stored(adc, centre.dtypes["ADC"]),
        "FLAIR": _stored(flair, centre.dtypes["FLAIR"]),
        MASK: mask.astype(centre.dtypes[MASK]),
    }
    _, components = ndimage.label(mask, structure=_CONNECTIVITY)
    return RenderedCase(
        images=images,
        grids=grids,
        lesions=int(components),
        lesion_ml=float(mask.sum()) * float(np.prod(spacing)) / 1000,
        flair_visible=contrast.flair_lesion > 1.0,
    )
