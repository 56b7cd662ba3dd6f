"""The ISLES 2018 modality volumes of a synthetic patient's cases, in their on-disk dtypes.

Modelling choices (the real values are only partly known, ``docs/datasets.md`` §4.4):

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
* MR_DWI (float32, training only, optional): hyperintense core.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage

from datamodules.isles2018_cases import CaseInfo
from datamodules.synth.common import Size
from datamodules.synth.isles2018 import anatomy, plan
from datamodules.synth.isles2018.anatomy import Geometry, Lesions

_GAMMA_ALPHA = 3.0
# Outside the brain: CT value (before the patient's skull scale) against distance to the
# brain in mm: CSF gap, inner table, diploe, outer table, scalp, air.
_SKULL_KNOTS_MM = np.array([0.0, 1.8, 2.6, 4.0, 5.5, 7.0, 8.4, 9.2, 13.5, 14.5])
_SKULL_HU = np.array([8.0, 8.0, 1700.0, 1750.0, 700.0, 1600.0, 1650.0, 40.0, 30.0, 0.0])


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    sigma_mm: float,
) -> np.ndarray:
    """Unit-variance noise smoothed in-plane by ``sigma_mm``."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    sigma = (sigma_mm / spacing[0], sigma_mm / spacing[1], 0.0)
    noise = ndimage.gaussian_filter(noise, sigma)
    return noise / max(float(noise.std()), 1e-6)


def _perfusion_series(
    ct: np.ndarray,
    head: np.ndarray,
    support: np.ndarray,
    cbv: np.ndarray,
    mtt: np.ndarray,
    tmax: np.ndarray,
    geometry: Geometry,
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


def _render_case(
    points: np.ndarray,
    sampled: dict[str, np.ndarray],
    geometry: Geometry,
    patient: anatomy.Patient,
    lesions: Lesions,
    rng: np.random.Generator,
    dwi: bool,
) -> dict[str, np.ndarray]:
    """All images of one case, keyed by modality token, in their on-disk dtypes."""
    p = patient.params
    gm, wm, brain, distance = (sampled[k] for k in ("gm", "wm", "brain", "distance"))
    shape = geometry.shape
    tissue = np.minimum(gm + wm, 1.0)
    csf = np.clip(brain - tissue, 0.0, 1.0)
    tissue_weight = np.clip((tissue - 0.3) / 0.4, 0.0, 1.0)
    core, penumbra = anatomy.lesion_weights(points, lesions, p["penumbra_ratio"])
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


def render_patient(
    slabs: Sequence[CaseInfo], seed: int, size: Size, dwi: bool
) -> Iterator[tuple[CaseInfo, Geometry, dict[str, np.ndarray]]]:
    """Draw the patient of ``slabs`` and render its cases one at a time.

    Args:
        slabs: The one or two case-table rows of one patient.
        seed: Twin seed; the patient and each case have their own stream (:func:`plan.rng`).
        size: ``"full"`` or ``"tiny"``.
        dwi: Also render ``MR_DWI`` (training cases only).

    Yields:
        ``(row, geometry, images)`` per slab, ``images`` keyed by modality token.
    """
    split = slabs[0].split
    patient_rng = plan.rng(seed, "patient", split, slabs[0].patient)
    patient = anatomy.draw_patient(patient_rng)
    geometries = anatomy.geometries(slabs, patient, size, patient_rng)
    sampled = []
    for geometry in geometries:
        points = anatomy.grid_mm(geometry, patient)
        sampled.append((points, anatomy.sample_anatomy(points)))
    lesions = anatomy.place_lesions(patient, sampled, patient_rng)
    for row, geometry, (points, volumes) in zip(slabs, geometries, sampled, strict=True):
        case_rng = plan.rng(seed, "case", split, row.case)
        with_dwi = dwi and split == "TRAINING"
        images = _render_case(points, volumes, geometry, patient, lesions, case_rng, with_dwi)
        yield row, geometry, images
