"""Connected-component post-processing of predicted masks, chosen by cross-validation.

nnU-Net (Isensee et al., arXiv:1809.10486, §2.4 "post-processing") decides on its
post-processing from the cross-validation and keeps it only when it helps. Stroke lesions are
often several, so beside keeping the largest component (nnU-Net's choice) the candidates here
remove the components smaller than a volume (in ml, so that a choice means the same at every
voxel spacing):

=====================  ====================================================================
choice string          what it does to a predicted mask
=====================  ====================================================================
``none``               nothing
``min_size:<k>``       removes the predicted components smaller than ``k`` ml
                       (``k`` ml = ``k`` × 1000 mm³ ÷ the voxel volume, rounded up, in voxels)
``largest``            keeps only the largest component (the first of equal ones)
=====================  ====================================================================

Components are those of the metrics preset's lesions: 6-connected (face neighbours) for
``atlas2_challenge``, whose scorer labels lesions so, and 26-connected (3×3×3) for every other
preset (ISLES 2022's rule; the presets without lesions have no rule of their own). A component
the filter sees is therefore exactly a lesion the preset counts.

Every candidate of :data:`CANDIDATES` is scored per validation case by
:func:`score_candidates` from one labelling of the prediction (a candidate only keeps a subset
of its components), and :func:`select` picks one from the out-of-fold means
(docs/metrics.md, "Post-processing").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from core.errors import DataValidationError
from core.run_layout import ExperimentLayout, ModelFolderLayout
from evaluation.metrics import FULL_CONNECTIVITY

#: The choice that changes nothing (and the one old run folders get).
NONE = "none"
LARGEST = "largest"
MIN_SIZE = "min_size"
#: The minimum sizes tried, in ml: from a few voxels of a 1 mm grid to a small lacune.
MIN_SIZES_ML: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
#: What the cross-validation scores, ``none`` first.
CANDIDATES: tuple[str, ...] = (
    NONE,
    *(f"{MIN_SIZE}:{k:g}" for k in MIN_SIZES_ML),
    LARGEST,
)
#: The mean Dice by which a candidate must beat ``none`` to be chosen: below it, a difference
#: of a few cases' small components is noise of the folds, not a rule worth applying.
MARGIN = 0.005
#: The scores per candidate: the presets' primary metric and the lesion-wise F1.
CANDIDATE_METRICS: tuple[str, ...] = ("dice", "lesion_f1")
#: The presets whose lesions are 6-connected (``scipy.ndimage.label``'s default structure).
_FACE_CONNECTED_PRESETS = frozenset({"atlas2_challenge"})


def structure_for(preset: str) -> np.ndarray | None:
    """The structuring element of ``preset``'s lesions (``None``: 6-connected)."""
    return None if preset in _FACE_CONNECTED_PRESETS else FULL_CONNECTIVITY


def parse(choice: str) -> tuple[str, float]:
    """Split a choice string into its kind and its size in ml (0 for ``none``/``largest``).

    Raises:
        ValueError: For another string, naming the valid forms.
    """
    text = str(choice).strip()
    if text in (NONE, LARGEST):
        return text, 0.0
    kind, _, size = text.partition(":")
    if kind == MIN_SIZE:
        try:
            ml = float(size)
        except ValueError:
            ml = math.nan
        if math.isfinite(ml) and ml > 0:
            return MIN_SIZE, ml
    raise ValueError(
        f"Unknown post-processing {choice!r}: expected 'none', 'largest' or 'min_size:<ml>' "
        f"with a positive volume in ml (the cross-validation tries {', '.join(CANDIDATES)})."
    )


def format_choice(kind: str, ml: float = 0.0) -> str:
    """The choice string of a kind and size (the inverse of :func:`parse`)."""
    return f"{MIN_SIZE}:{ml:g}" if kind == MIN_SIZE else kind


def min_voxels(ml: float, spacing: Sequence[float]) -> int:
    """The fewest voxels of a component of at least ``ml`` ml at ``spacing`` (mm per axis)."""
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=np.float64)))
    # The small tolerance keeps 0.1 ml at 1 mm³ voxels 100 voxels, not 101 by rounding.
    return max(1, math.ceil(ml * 1000.0 / voxel_mm3 - 1e-9))


def _keep(sizes: np.ndarray, choice: str, spacing: Sequence[float]) -> np.ndarray:
    """Which components (sizes of labels 1…n, in order) a choice keeps, as a bool array."""
    kind, ml = parse(choice)
    if kind == MIN_SIZE:
        return sizes >= min_voxels(ml, spacing)
    keep = np.ones(sizes.shape, dtype=bool)
    if kind == LARGEST and sizes.size:
        keep[:] = False
        keep[int(np.argmax(sizes))] = True
    return keep


def apply(
    mask: np.ndarray,
    choice: str,
    spacing: Sequence[float],
    structure: np.ndarray | None = FULL_CONNECTIVITY,
) -> np.ndarray:
    """Post-process one case's binary mask.

    Args:
        mask: the thresholded prediction, bool or 0/1, any number of dimensions.
        choice: a choice string (module docstring), ``none`` returns the mask unchanged.
        spacing: voxel size in mm per axis, in the mask's axis order.
        structure: the components' connectivity (:func:`structure_for` of the preset).

    Returns:
        The post-processed mask, of ``mask``'s shape and dtype.

    Raises:
        ValueError: For an unknown choice string.
    """
    if parse(choice)[0] == NONE:
        return mask
    labels, count = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    kept = np.concatenate([[False], _keep(sizes, choice, spacing)])
    return kept[labels].astype(mask.dtype, copy=False)


def score_candidates(
    pred: np.ndarray,
    target: np.ndarray,
    spacing: Sequence[float],
    candidates: Sequence[str] = CANDIDATES,
    structure: np.ndarray | None = FULL_CONNECTIVITY,
) -> dict[str, dict[str, float]]:
    """Dice and lesion-wise F1 of every candidate applied to one case's prediction.

    One labelling of each mask serves every candidate. The values equal the ISLES 2022 /
    ATLAS R2.0 presets' ``dice`` and ``lesion_f1`` of :func:`apply`'s mask (same conventions:
    1 when both masks are empty; a true lesion is detected by one voxel of a kept component).

    Args:
        pred: thresholded prediction, bool (X, Y, Z).
        target: reference mask of the same shape.
        spacing: voxel size in mm per axis.
        candidates: choice strings.
        structure: the lesions' connectivity (:func:`structure_for` of the preset).

    Returns:
        ``{choice: {"dice": …, "lesion_f1": …}}``.
    """
    pred, target = pred.astype(bool, copy=False), target.astype(bool, copy=False)
    labels, count = ndimage.label(pred, structure=structure)
    target_labels, target_count = ndimage.label(target, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    overlap = np.bincount(labels[target], minlength=count + 1)[1:]
    both = pred & target
    # (predicted component, true lesion) pairs that share a voxel, labels from 1.
    pairs = np.unique(np.stack([labels[both], target_labels[both]]), axis=1)
    target_voxels = int(np.count_nonzero(target))
    scores: dict[str, dict[str, float]] = {}
    for choice in candidates:
        keep = _keep(sizes, choice, spacing)
        tp, predicted = int(overlap[keep].sum()), int(sizes[keep].sum())
        voxels = predicted + target_voxels
        hit_pairs = pairs[:, keep[pairs[0] - 1]] if pairs.size else pairs
        lesion_tp = np.unique(hit_pairs[1]).size
        lesion_fp = int(np.count_nonzero(keep & (overlap == 0)))
        lesion_fn = target_count - lesion_tp
        lesions = lesion_tp + (lesion_fp + lesion_fn) / 2
        scores[choice] = {
            "dice": 2.0 * tp / voxels if voxels else 1.0,
            "lesion_f1": lesion_tp / lesions if lesions else 1.0,
        }
    return scores


def select(means: Mapping[str, Mapping[str, float]], margin: float = MARGIN) -> tuple[str, str]:
    """Choose a post-processing from the candidates' mean scores over out-of-fold cases.

    A candidate qualifies when its mean Dice beats ``none``'s by more than ``margin`` and its
    mean lesion-wise F1 is not below ``none``'s (a filter that gains Dice by deleting true small
    lesions is no gain for stroke, where a missed lesion is a missed infarct). Of those, the one
    with the highest Dice wins; without any, ``none``.

    Args:
        means: ``{choice: {"dice": mean, "lesion_f1": mean}}``, ``none`` included.
        margin: The Dice a candidate must gain over ``none``.

    Returns:
        The choice and a sentence on why.
    """
    base = means.get(NONE)
    if base is None or not math.isfinite(base.get("dice", math.nan)):
        return NONE, "no out-of-fold scores without post-processing to compare with"
    base_dice, base_f1 = base["dice"], base.get("lesion_f1", math.nan)
    qualified = []
    for choice, values in means.items():
        dice, f1 = values.get("dice", math.nan), values.get("lesion_f1", math.nan)
        if choice == NONE or not dice > base_dice + margin:
            continue
        if math.isfinite(base_f1) and not f1 >= base_f1 - 1e-12:
            continue
        qualified.append((dice, choice))
    if not qualified:
        return NONE, (
            f"no candidate beats none's Dice by more than {margin:g} without lowering lesion F1"
        )
    dice, choice = max(qualified, key=lambda item: item[0])  # the first of equal ones
    return choice, f"Dice {dice - base_dice:+.4f} over none, lesion F1 not lower"


def report_choice(experiment_dir: Path) -> tuple[str, Path | None]:
    """The post-processing chosen by the cross-validation report of ``experiment_dir`` (an
    experiment folder, or a model folder exported from one).

    Returns:
        The choice string and the ``summary.json`` it came from; ``("none", None)`` without a
        report (a report written before the suite chose post-processing also gives ``none``).

    Raises:
        DataValidationError: For a ``summary.json`` that is not JSON.
    """
    model_folder = ModelFolderLayout(Path(experiment_dir))
    # A model folder's choice is its own summary.json (in its manifest), never a report/ folder
    # written into it afterwards.
    summary = (
        model_folder.summary
        if model_folder.manifest.is_file()
        else ExperimentLayout(Path(experiment_dir)).report.summary
    )
    if not summary.is_file():
        return NONE, None
    try:
        chosen = json.loads(summary.read_text(encoding="utf-8")).get("postprocessing") or {}
    except json.JSONDecodeError as error:
        raise DataValidationError(
            f"{summary} is not readable JSON ({error}); write the report again "
            "(lightning-cv report <experiment>)."
        ) from error
    return str(chosen.get("choice", NONE)), summary


def chosen_postprocessing(run_dir: Path) -> tuple[str, Path | None]:
    """The post-processing of the experiment above ``run_dir`` (a fold, an ensemble, or a
    stage of either, ``…/fold0/predict``): :func:`report_choice` of the nearest of its three
    parents that holds a report; ``("none", None)`` when none does."""
    for folder in list(Path(run_dir).absolute().parents)[:3]:
        choice, summary = report_choice(folder)
        if summary is not None:
            return choice, summary
    return NONE, None
