"""Per-case segmentation metric presets, one per source of reported numbers (docs/metrics.md)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

ISLES2018_METRICS: tuple[str, ...] = (
    "dice",
    "hd",
    "assd",
    "precision",
    "recall",
    "avd",
    "jaccard",
)
ATLAS_DUNET_METRICS: tuple[str, ...] = ("dice", "recall", "precision", "tp", "fp", "fn")
ATLAS_VCANET_METRICS: tuple[str, ...] = ("dice", "iou", "hd", "sensitivity", "precision", "f1")
ATLAS2_CHALLENGE_METRICS: tuple[str, ...] = (
    "dice",
    "volume_difference",
    "lesion_f1",
    "lesion_count_difference",
)
ISLES2022_METRICS: tuple[str, ...] = (
    "dice",
    "volume_difference_ml",
    "lesion_f1",
    "lesion_count_difference",
)
# Distances that are +inf when exactly one mask is empty; summaries count these, not average them.
UNBOUNDED_METRICS: frozenset[str] = frozenset({"hd", "assd"})
# Per-case voxel counts: pooled over cases (global Dice), not averaged.
VOXEL_COUNT_METRICS: frozenset[str] = frozenset({"tp", "fp", "fn"})
#: Which way a score is better.
Direction = Literal["higher", "lower"]
#: Which way is better for each score a preset returns (and the report's pooled
#: ``global_dice``): ``"higher"`` for overlaps and detection rates, ``"lower"`` for distances and
#: volume or count errors. The voxel counts have none: they are pooled, not compared. Rankings of
#: experiments (:mod:`evaluation.ranking`) read the direction here and nowhere else.
METRIC_DIRECTIONS: dict[str, Direction] = {
    "dice": "higher",
    "global_dice": "higher",
    "jaccard": "higher",
    "iou": "higher",
    "precision": "higher",
    "recall": "higher",
    "sensitivity": "higher",
    "f1": "higher",
    "lesion_f1": "higher",
    "hd": "lower",
    "assd": "lower",
    "avd": "lower",
    "volume_difference": "lower",
    "volume_difference_ml": "lower",
    "lesion_count_difference": "lower",
}


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a bool mask, refusing values other than 0/1."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array; found {type(array).__name__}.")
    if array.dtype == np.bool_:
        return array
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(
            f"{name} must be a binary mask (bool or values in {{0, 1}}); found dtype {array.dtype} "
            f"with values in [{array.min()}, {array.max()}]. Threshold probabilities first (0.5)."
        )
    return array.astype(bool)


def _validate_case(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Check one case's masks and spacing; return bool masks and the spacing as floats."""
    pred, target = _as_mask(pred, "pred"), _as_mask(target, "target")
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            "Expected pred and target of the same 3D shape; found "
            f"{pred.shape} and {target.shape}. Evaluate whole cases (stack a 2D net's slices; "
            "add a singleton axis for a single slice)."
        )
    spacing_arr = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing_arr.shape != (3,) or not np.all(np.isfinite(spacing_arr) & (spacing_arr > 0)):
        raise ValueError(
            "Expected spacing as 3 positive finite mm values in the masks' axis order "
            f"(NIfTI header.get_zooms()[:3]); found {list(np.asarray(spacing).reshape(-1))}."
        )
    return pred, target, tuple(float(s) for s in spacing_arr)


def _crop_to_union(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the union's bounding box plus a 1-voxel margin (clipped to the image)."""
    union = pred | target
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(hits[0] - 1, 0), hits[-1] + 2))
    return pred[tuple(box)], target[tuple(box)]


def _directed_surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 mm distances pred surface -> target surface and back (both non-empty)."""
    # Imported here: MONAI (and torch with it) costs seconds, and a report of finished folds
    # reads only this module's tables.
    from monai.metrics.utils import get_surface_distance

    # Surfaces as in MONAI's get_mask_edges: the mask XOR its 6-connected erosion, with the outside
    # of the image counted as background. Computed here on the cropped numpy arrays because
    # get_mask_edges' MetaTensor cropping costs several times the distance queries on a 256x256xZ
    # case; tests pin the result to compute_hausdorff_distance / compute_average_surface_distance.
    pred, target = _crop_to_union(pred, target)
    pred_edges = pred ^ ndimage.binary_erosion(pred)
    target_edges = target ^ ndimage.binary_erosion(target)
    pred_to_target = get_surface_distance(pred_edges, target_edges, "euclidean", spacing)
    target_to_pred = get_surface_distance(target_edges, pred_edges, "euclidean", spacing)
    return np.asarray(pred_to_target, np.float64), np.asarray(target_to_pred, np.float64)


def isles2018(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """ISLES 2018 per-case metrics: Dice, HD (max, mm), ASSD (mm), precision, recall, AVD (mL),
    Jaccard.

    Follows the ISLES 2015/2016 evaluator (``loli/ISLESevaluation``,
    ``validateLabelImages-ISLES.cxx``, ITK), whose lineage the ISLES 2018 challenge and
    Abulnaga & Rubin (arXiv:1811.01085) §5.2 / Table 2 use (docs/datasets.md §4.7):

    * ``dice`` = 2|P ∩ G| / (|P| + |G|).
    * ``hd``: symmetric Hausdorff distance, the full maximum (not HD95), eq. 7, in mm.
    * ``assd`` = ½ (mean d(P_s → G_s) + mean d(G_s → P_s)), eqs. 7-8, in mm. This is *not*
      MONAI's ``compute_average_surface_distance(symmetric=True)``, which averages over the
      union of both surfaces' points and so weights the larger surface more.
    * ``precision`` = |P ∩ G| / |P| (positive predictive value); ``recall`` = |P ∩ G| / |G|.
    * ``avd`` = | |P| - |G| | x voxel volume / 1000, in mL. (The ITK tool writes the *signed*
      volume error in mm³; the challenge ranks its absolute value, reported here in mL.)
    * ``jaccard`` = |P ∩ G| / |P ∪ G| (IoU), which seed 001 reports beside Dice, precision and
      recall; per case it equals dice / (2 - dice).

    Surfaces are the mask voxels removed by a 6-connected binary erosion (as MONAI's
    ``get_mask_edges``); distances are Euclidean between voxel centres in mm, from MONAI's
    ``get_surface_distance`` with ``spacing`` (float32 inside MONAI, so ~1e-7 relative). HD
    equals ``monai.metrics.compute_hausdorff_distance(..., percentile=None, spacing=spacing)``.
    The ITK tool uses Maurer distance maps on its own contour definition, so sub-voxel
    discretisation differences from the challenge's numbers are possible. Seed 003's Table 2
    prints HD/ASSD on another scale (x1e6, docs/metrics.md); these are plain mm.

    Empty-mask conventions (deterministic, never NaN):

    ======================  ====  ======  ======  =========  ======  ================  =======
    case                    dice  hd      assd    precision  recall  avd               jaccard
    ======================  ====  ======  ======  =========  ======  ================  =======
    both empty              1     0       0       1          1       0                 1
    target empty only       0     inf     inf     0          0       volume of pred    0
    pred empty only         0     inf     inf     0          0       volume of target  0
    ======================  ====  ======  ======  =========  ======  ================  =======

    That is, precision (recall) is 0 when its denominator, the prediction (target), is empty
    while the other mask is not; 1 when both are empty.

    Args:
        pred: predicted mask, bool (or 0/1) array of shape (X, Y, Z), any axis order.
        target: reference mask, same shape and axis order as ``pred``.
        spacing: voxel size in mm per axis, in the same order as the arrays' axes (e.g.
            ``nib.load(f).header.get_zooms()[:3]`` for an array from ``get_fdata()``).

    Returns:
        ``{"dice", "hd", "assd", "precision", "recall", "avd", "jaccard"}`` as Python floats.

    Raises:
        ValueError: if the masks are not binary, differ in shape or are not 3D, or ``spacing``
            is not three positive finite numbers.
    """
    pred, target, spacing = _validate_case(pred, target, spacing)
    n_pred = int(np.count_nonzero(pred))
    n_target = int(np.count_nonzero(target))
    n_both = int(np.count_nonzero(pred & target))
    voxel_ml = math.prod(spacing) / 1000.0
    avd = abs(n_pred - n_target) * voxel_ml

    if n_pred == 0 and n_target == 0:
        return {
            "dice": 1.0,
            "hd": 0.0,
            "assd": 0.0,
            "precision": 1.0,
            "recall": 1.0,
            "avd": 0.0,
            "jaccard": 1.0,
        }
    if n_pred == 0 or n_target == 0:
        inf = math.inf
        return {
            "dice": 0.0,
            "hd": inf,
            "assd": inf,
            "precision": 0.0,
            "recall": 0.0,
            "avd": avd,
            "jaccard": 0.0,
        }

    pred_to_target, target_to_pred = _directed_surface_distances(pred, target, spacing)
    return {
        "dice": 2.0 * n_both / (n_pred + n_target),
        "hd": float(max(pred_to_target.max(), target_to_pred.max())),
        "assd": float(0.5 * (pred_to_target.mean() + target_to_pred.mean())),
        "precision": n_both / n_pred,
        "recall": n_both / n_target,
        "avd": avd,
        "jaccard": n_both / (n_pred + n_target - n_both),
    }


def _overlap_counts(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """Voxel counts (TP, FP, FN) of two bool masks."""
    tp = int(np.count_nonzero(pred & target))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(target)) - tp


def atlas_dunet(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """D-UNet per-case metrics on ATLAS: Dice, recall, precision, and TP/FP/FN voxel counts.

    Zhou et al., D-UNet (arXiv:1908.05104), Tables 2-3 (docs/metrics.md, preset ``atlas_dunet``):
    per-case Dice, recall and precision over the whole scan (all 189 slices stacked), reported
    as mean ± sd over cases, plus a *global* Dice that pools the voxel counts of all cases,
    2ΣTP / (2ΣTP + ΣFP + ΣFN). The counts are returned per case so that
    :class:`evaluation.case_metrics.CaseMetrics` can pool them (``global_dice``) and give the
    standard deviations (``dice_std``, ``recall_std``, ``precision_std``).

    * ``dice`` = 2TP / (2TP + FP + FN); ``recall`` = TP / (TP + FN);
      ``precision`` = TP / (TP + FP); ``tp``, ``fp``, ``fn`` voxel counts (as floats).

    The caller applies the threshold (0.5 in D-UNet). ``spacing`` is validated but unused:
    every value here is a voxel count or a ratio of counts.

    Empty-mask conventions (deterministic, never NaN; as ``isles2018``). Every ATLAS R1.1 scan
    has a lesion, so the empty-target rows arise only on synthetic or cropped data:

    ======================  ====  ======  =========
    case                    dice  recall  precision
    ======================  ====  ======  =========
    both empty              1     1       1
    target empty only       0     0       0
    pred empty only         0     0       0
    ======================  ====  ======  =========

    Args:
        pred: predicted mask, bool (or 0/1) array of shape (X, Y, Z).
        target: reference mask, same shape and axis order as ``pred``.
        spacing: voxel size in mm per axis (validated only).

    Returns:
        ``{"dice", "recall", "precision", "tp", "fp", "fn"}`` as Python floats.

    Raises:
        ValueError: if the masks are not binary, differ in shape or are not 3D, or ``spacing``
            is not three positive finite numbers.
    """
    pred, target, _ = _validate_case(pred, target, spacing)
    tp, fp, fn = _overlap_counts(pred, target)
    counts = {"tp": float(tp), "fp": float(fp), "fn": float(fn)}
    if tp + fp + fn == 0:
        return {"dice": 1.0, "recall": 1.0, "precision": 1.0, **counts}
    return {
        "dice": 2.0 * tp / (2 * tp + fp + fn),
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        **counts,
    }


def atlas_vcanet(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]
) -> dict[str, float]:
    """VCA-Net per-case metrics on ATLAS: Dice, IoU, HD (max, mm), sensitivity, precision, F1.

    VCA-Net (seed 000) Table 1 (docs/metrics.md, preset ``atlas_vcanet``). The paper's table is not
    self-consistent (its DSC column, 0.88, and its F1 column, 0.37, cannot both be per-case
    overlaps of the same masks), so every value here is **per case, in 3D**:

    * ``dice`` = 2TP / (2TP + FP + FN); ``iou`` = TP / (TP + FP + FN).
    * ``hd``: symmetric Hausdorff distance, the full maximum, in mm, computed exactly as in
      :func:`isles2018` (surfaces by 6-connected erosion, ``spacing`` per axis).
    * ``sensitivity`` = TP / (TP + FN); ``precision`` = TP / (TP + FP).
    * ``f1`` = 2 · precision · sensitivity / (precision + sensitivity). For binary masks this
      equals ``dice`` per case; it is kept as its own column because the paper reports both
      (a per-slice average with empty slices is what would make them differ).

    Empty-mask conventions (deterministic, never NaN):

    ======================  ====  ===  ===  ===========  =========  ==
    case                    dice  iou  hd   sensitivity  precision  f1
    ======================  ====  ===  ===  ===========  =========  ==
    both empty              1     1    0    1            1          1
    target empty only       0     0    inf  0            0          0
    pred empty only         0     0    inf  0            0          0
    ======================  ====  ===  ===  ===========  =========  ==

    ``f1`` is 0 when both masks are non-empty but do not overlap (precision = sensitivity = 0).
    :class:`evaluation.case_metrics.CaseMetrics` counts the infinite HDs (``hd_inf``) instead
    of averaging them.

    Args:
        pred: predicted mask, bool (or 0/1) array of shape (X, Y, Z).
        target: reference mask, same shape and axis order as ``pred``.
        spacing: voxel size in mm per axis, in the arrays' axis order.

    Returns:
        ``{"dice", "iou", "hd", "sensitivity", "precision", "f1"}`` as Python floats.

    Raises:
        ValueError: if the masks are not binary, differ in shape or are not 3D, or ``spacing``
            is not three positive finite numbers.
    """
    pred, target, spacing = _validate_case(pred, target, spacing)
    tp, fp, fn = _overlap_counts(pred, target)
    if tp + fp + fn == 0:
        return {
            "dice": 1.0,
            "iou": 1.0,
            "hd": 0.0,
            "sensitivity": 1.0,
            "precision": 1.0,
            "f1": 1.0,
        }
    if tp + fn == 0 or tp + fp == 0:
        return {
            "dice": 0.0,
            "iou": 0.0,
            "hd": math.inf,
            "sensitivity": 0.0,
            "precision": 0.0,
            "f1": 0.0,
        }
    pred_to_target, target_to_pred = _directed_surface_distances(pred, target, spacing)
    sensitivity, precision = tp / (tp + fn), tp / (tp + fp)
    return {
        "dice": 2.0 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "hd": float(max(pred_to_target.max(), target_to_pred.max())),
        "sensitivity": sensitivity,
        "precision": precision,
        "f1": (2.0 * precision * sensitivity / (precision + sensitivity) if tp else 0.0),
    }


def atlas2_challenge(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]
) -> dict[str, float]:
    """ATLAS R2.0 challenge (MICCAI 2022) per-case metrics: Dice, volume difference, lesion F1/count.

    Follows the official scorer ``npnl/atlas2_grand_challenge`` ``isles/scoring.py``
    (docs/datasets.md §3.5, docs/metrics.md preset ``atlas2_challenge``):

    * ``dice`` = 2|P ∩ G| / (|P| + |G|).
    * ``volume_difference`` = | |P| - |G| | in **voxels** (1 voxel = 1 mm³ in ATLAS R2.0). This is
      the scorer's correct batch path, not its non-batch bug (``truth_vol = np.sum(prediction)``).
    * Lesions are the connected components of ``scipy.ndimage.label`` with its default structure
      (face connectivity: 6 neighbours in 3D; ISLES'22 uses 26, so its numbers differ). A
      ground-truth lesion overlapping the prediction by >= 1 voxel is a TP, one with no overlap
      a FN; a predicted lesion with no ground-truth overlap is a FP.
      ``lesion_f1`` = TP / (TP + (FP + FN) / 2).
    * ``lesion_count_difference`` = | #lesions(P) - #lesions(G) |.

    ``spacing`` is validated but unused (all values are in voxels or counts).

    Empty-mask conventions (the scorer's; deterministic, never NaN):

    ======================  ====  =================  =========  =======================
    case                    dice  volume_difference  lesion_f1  lesion_count_difference
    ======================  ====  =================  =========  =======================
    both empty              1     0                  1          0
    target empty only       0     |P|                0          #lesions(P)
    pred empty only         0     |G|                0          #lesions(G)
    ======================  ====  =================  =========  =======================

    Args:
        pred: predicted mask, bool (or 0/1) array of shape (X, Y, Z).
        target: reference mask, same shape and axis order as ``pred``.
        spacing: voxel size in mm per axis (validated only).

    Returns:
        ``{"dice", "volume_difference", "lesion_f1", "lesion_count_difference"}`` as floats.

    Raises:
        ValueError: if the masks are not binary, differ in shape or are not 3D, or ``spacing``
            is not three positive finite numbers.
    """
    pred, target, _ = _validate_case(pred, target, spacing)
    return _lesion_challenge(pred, target, structure=None, voxel_volume=1.0)


def _lesion_challenge(
    pred: np.ndarray, target: np.ndarray, structure: np.ndarray | None, voxel_volume: float
) -> dict[str, float]:
    """Dice, volume difference, lesion-wise F1 and lesion-count difference of validated masks,
    as the ATLAS R2.0 and ISLES 2022 challenges score them: lesions are the connected components
    of ``scipy.ndimage.label`` with ``structure``; a true lesion overlapped by one predicted voxel
    is a TP, one without a FN, a predicted component touching no true lesion a FP;
    ``lesion_f1 = TP / (TP + (FP + FN) / 2)``; both empty: Dice and F1 1, differences 0. The
    volume difference is in voxels × ``voxel_volume``."""
    tp, fp, fn = _overlap_counts(pred, target)
    target_labels, n_target = ndimage.label(target, structure=structure)
    pred_labels, n_pred = ndimage.label(pred, structure=structure)
    # Components hit by the other mask: the non-zero labels found under it.
    target_hit = np.count_nonzero(np.unique(target_labels[pred]))
    pred_hit = np.count_nonzero(np.unique(pred_labels[target]))
    lesion_tp, lesion_fn, lesion_fp = target_hit, n_target - target_hit, n_pred - pred_hit
    lesions = lesion_tp + (lesion_fp + lesion_fn) / 2
    return {
        "dice": 2.0 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        # |P| - |G| = (TP + FP) - (TP + FN)
        "volume_difference": float(abs(fp - fn)) * voxel_volume,
        "lesion_f1": lesion_tp / lesions if lesions else 1.0,
        "lesion_count_difference": float(abs(n_pred - n_target)),
    }


#: ISLES 2022's lesions: 26-connected components (a 3×3×3 structuring element).
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def isles2022(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """ISLES 2022 challenge per-case metrics, as its evaluation code computes them
    (docs/metrics.md, preset ``isles2022``).

    * ``dice`` = 2|P ∩ G| / (|P| + |G|); 1 when both masks are empty.
    * ``volume_difference_ml`` = | |P| − |G| | × the voxel volume in ml (the product of the
      header spacings in mm, ÷ 1000).
    * Lesions are 26-connected components (3×3×3 structuring element; ATLAS R2.0 uses 6, so
      diagonal neighbours that are one lesion here are two there). ``lesion_f1`` =
      TP / (TP + (FP + FN) / 2) with a true lesion detected when one voxel of it is predicted;
      1 when neither mask has a lesion. ``lesion_count_difference`` = | #lesions(P) −
      #lesions(G) |.

    Args:
        pred: predicted mask, bool (or 0/1) array of shape (X, Y, Z).
        target: reference mask, same shape and axis order as ``pred``.
        spacing: voxel size in mm per axis.

    Returns:
        ``{"dice", "volume_difference_ml", "lesion_f1", "lesion_count_difference"}`` as floats.

    Raises:
        ValueError: if the masks are not binary, differ in shape or are not 3D, or ``spacing``
            is not three positive finite numbers.
    """
    pred, target, spacing = _validate_case(pred, target, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    scores = _lesion_challenge(pred, target, FULL_CONNECTIVITY, voxel_ml)
    scores["volume_difference_ml"] = scores.pop("volume_difference")
    return {key: scores[key] for key in ISLES2022_METRICS}


MetricPreset = Callable[[np.ndarray, np.ndarray, Sequence[float]], dict[str, float]]
# The preset names, for typed settings (``SegmentationModule(metrics=...)``).
PresetName = Literal["isles2018", "atlas_dunet", "atlas_vcanet", "atlas2_challenge", "isles2022"]

METRIC_PRESETS: dict[str, MetricPreset] = {
    "isles2018": isles2018,
    "atlas_dunet": atlas_dunet,
    "atlas_vcanet": atlas_vcanet,
    "atlas2_challenge": atlas2_challenge,
    "isles2022": isles2022,
}
# Keys each preset returns, known before any case is seen (CaseMetrics registers one state each).
PRESET_METRICS: dict[str, tuple[str, ...]] = {
    "isles2018": ISLES2018_METRICS,
    "atlas_dunet": ATLAS_DUNET_METRICS,
    "atlas_vcanet": ATLAS_VCANET_METRICS,
    "atlas2_challenge": ATLAS2_CHALLENGE_METRICS,
    "isles2022": ISLES2022_METRICS,
}
# Metrics whose per-case standard deviation CaseMetrics reports (as "<metric>_std"); "dice"
# for every preset, plus what a paper prints as mean ± sd (D-UNet Table 2).
PRESET_STD_METRICS: dict[str, tuple[str, ...]] = {
    "isles2018": ("dice",),
    "atlas_dunet": ("dice", "recall", "precision"),
    "atlas_vcanet": ("dice",),
    "atlas2_challenge": ("dice",),
    "isles2022": ("dice",),
}


def get_preset(name: str) -> MetricPreset:
    """Look up a per-case metric preset by name.

    Args:
        name: a key of :data:`METRIC_PRESETS`, e.g. ``"isles2018"``.

    Returns:
        The preset ``fn(pred, target, spacing) -> dict[str, float]``.

    Raises:
        ValueError: if ``name`` is not registered; the message lists the valid names.
    """
    if name not in METRIC_PRESETS:
        raise ValueError(
            f"Unknown metric preset {name!r}; valid presets: {sorted(METRIC_PRESETS)}."
        )
    return METRIC_PRESETS[name]
