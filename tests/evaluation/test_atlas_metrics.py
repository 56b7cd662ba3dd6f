"""ATLAS presets (atlas_dunet, atlas_vcanet, atlas2_challenge): hand-computed cases, empties."""

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from evaluation.metrics import (
    ATLAS2_CHALLENGE_METRICS,
    ATLAS_DUNET_METRICS,
    ATLAS_VCANET_METRICS,
    METRIC_PRESETS,
    PRESET_METRICS,
    PRESET_STD_METRICS,
    atlas2_challenge,
    atlas_dunet,
    atlas_vcanet,
    get_preset,
    isles2018,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

SPACING = (0.8, 0.8, 12.0)
ISO = (1.0, 1.0, 1.0)  # ATLAS R2.0 is 1 mm isotropic


def _blank() -> np.ndarray:
    return np.zeros((8, 8, 6), dtype=bool)


def _slab_pair() -> tuple[np.ndarray, np.ndarray]:
    """Target: 3x3x2 block (18 voxels, z = 1, 2); prediction: its z = 1 slice (9 voxels)."""
    target, pred = _blank(), _blank()
    target[2:5, 2:5, 1:3] = True
    pred[2:5, 2:5, 1] = True
    return pred, target


def _random_blobs(seed: int, shape=(20, 18, 6)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), (1.5, 1.5, 0.7))
    target = field > np.quantile(field, 0.85)
    pred = np.roll(field, 3, axis=0) > np.quantile(field, 0.8)
    return pred, target


def _lesionwise_by_loops(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Reference: the scorer's definitions, one component at a time (F1, count difference)."""
    target_labels, n_target = ndimage.label(target)
    pred_labels, n_pred = ndimage.label(pred)
    tp = fn = fp = 0
    for k in range(1, n_target + 1):
        if pred[target_labels == k].sum() > 0:
            tp += 1
        else:
            fn += 1
    for k in range(1, n_pred + 1):
        if target[pred_labels == k].sum() == 0:
            fp += 1
    f1 = tp / (tp + (fp + fn) / 2) if tp + fp + fn else 1.0
    return f1, abs(n_pred - n_target)


# --- atlas_dunet ---------------------------------------------------------------------------


def test_atlas_dunet_hand_computed_slab() -> None:
    # TP = 9, FP = 0, FN = 9: dice = 18/27, recall = 9/18, precision = 9/9.
    out = atlas_dunet(*_slab_pair(), SPACING)
    assert tuple(out) == ATLAS_DUNET_METRICS
    assert out == pytest.approx(
        {"dice": 2 / 3, "recall": 0.5, "precision": 1.0, "tp": 9, "fp": 0, "fn": 9}
    )


def test_atlas_dunet_shifted_block() -> None:
    # Both 3x3x2, pred one slice higher: TP = 9, FP = 9, FN = 9 -> all ratios 1/2.
    target, pred = _blank(), _blank()
    target[2:5, 2:5, 1:3] = True
    pred[2:5, 2:5, 2:4] = True
    out = atlas_dunet(pred, target, SPACING)
    assert out == pytest.approx(
        {"dice": 0.5, "recall": 0.5, "precision": 0.5, "tp": 9, "fp": 9, "fn": 9}
    )


def test_atlas_dunet_ignores_spacing_and_matches_isles2018_overlaps() -> None:
    pred, target = _random_blobs(0)
    out = atlas_dunet(pred, target, SPACING)
    assert atlas_dunet(pred, target, (3.0, 0.5, 1.0)) == out
    reference = isles2018(pred, target, SPACING)
    for key in ("dice", "recall", "precision"):
        assert out[key] == pytest.approx(reference[key], rel=1e-12)
    assert out["tp"] + out["fn"] == target.sum()
    assert out["tp"] + out["fp"] == pred.sum()


# --- atlas_vcanet --------------------------------------------------------------------------


def test_atlas_vcanet_hand_computed_slab() -> None:
    # TP = 9, FP = 0, FN = 9: IoU = 9/18; HD = one 12 mm slab; F1 = 2·1·(1/2)/(3/2) = 2/3.
    out = atlas_vcanet(*_slab_pair(), SPACING)
    assert tuple(out) == ATLAS_VCANET_METRICS
    assert out == pytest.approx(
        {"dice": 2 / 3, "iou": 0.5, "hd": 12.0, "sensitivity": 0.5, "precision": 1.0, "f1": 2 / 3}
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_atlas_vcanet_relations(seed: int) -> None:
    pred, target = _random_blobs(seed)
    out = atlas_vcanet(pred, target, SPACING)
    reference = isles2018(pred, target, SPACING)
    assert out["hd"] == reference["hd"]
    assert out["f1"] == pytest.approx(out["dice"], rel=1e-12)  # per case, F1 == Dice
    assert out["iou"] == pytest.approx(out["dice"] / (2 - out["dice"]), rel=1e-12)
    assert out["sensitivity"] == reference["recall"]


def test_atlas_vcanet_disjoint_non_empty_masks() -> None:
    target, pred = _blank(), _blank()
    target[0, 0, 0] = True
    pred[0, 0, 3] = True
    out = atlas_vcanet(pred, target, SPACING)
    assert out == pytest.approx(
        {"dice": 0.0, "iou": 0.0, "hd": 36.0, "sensitivity": 0.0, "precision": 0.0, "f1": 0.0}
    )


# --- atlas2_challenge ----------------------------------------------------------------------


def test_atlas2_hand_computed_slab_and_correct_volume_difference() -> None:
    # |P| = 9, |G| = 18: volume difference 9 voxels (the scorer's non-batch bug would give 0).
    # One lesion each, overlapping: lesion TP = 1, FP = FN = 0 -> F1 = 1, count difference 0.
    out = atlas2_challenge(*_slab_pair(), SPACING)
    assert tuple(out) == ATLAS2_CHALLENGE_METRICS
    assert out == {
        "dice": pytest.approx(2 / 3),
        "volume_difference": 9.0,
        "lesion_f1": 1.0,
        "lesion_count_difference": 0.0,
    }


def test_atlas2_lesions_use_6_connectivity() -> None:
    # Target: two voxels touching only along an edge -> 2 lesions with 6-connectivity (1 with 26).
    # Prediction: the first of them plus a stray voxel far away.
    # Lesion TP = 1 (first), FN = 1 (second), FP = 1 (stray): F1 = 1 / (1 + 2/2) = 1/2.
    # (26-connectivity would give TP = 1, FN = 0, FP = 1: F1 = 2/3.)
    target, pred = _blank(), _blank()
    target[1, 1, 1] = target[2, 2, 1] = True
    pred[1, 1, 1] = pred[6, 6, 4] = True
    out = atlas2_challenge(pred, target, ISO)
    # Voxels: TP = 1, FP = 1, FN = 1 -> dice 2/4; |P| = |G| = 2.
    assert out == {
        "dice": 0.5,
        "volume_difference": 0.0,
        "lesion_f1": 0.5,
        "lesion_count_difference": 0.0,
    }


def test_atlas2_one_predicted_blob_covering_two_lesions() -> None:
    # Two GT lesions, both hit by one predicted component: TP = 2, FP = FN = 0, counts 1 vs 2.
    target, pred = _blank(), _blank()
    target[1, 1, 1] = target[1, 5, 1] = True
    pred[1, 0:7, 1] = True
    out = atlas2_challenge(pred, target, ISO)
    assert out["lesion_f1"] == 1.0
    assert out["lesion_count_difference"] == 1.0
    assert out["volume_difference"] == 5.0
    assert out["dice"] == pytest.approx(4 / 9)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_atlas2_matches_a_component_by_component_reference(seed: int) -> None:
    pred, target = _random_blobs(seed)
    pred = pred & (np.random.default_rng(seed).random(pred.shape) > 0.3)  # many small lesions
    out = atlas2_challenge(pred, target, ISO)
    f1, count_difference = _lesionwise_by_loops(pred, target)
    assert out["lesion_f1"] == pytest.approx(f1, rel=1e-12)
    assert out["lesion_count_difference"] == count_difference
    assert out["volume_difference"] == abs(int(pred.sum()) - int(target.sum()))
    assert out["dice"] == pytest.approx(isles2018(pred, target, ISO)["dice"], rel=1e-12)
    assert atlas2_challenge(pred, target, SPACING) == out  # voxels: spacing does not matter


# --- empty-mask conventions, all presets ---------------------------------------------------

EMPTY_CONVENTIONS = {
    # preset: {(has_pred, has_target): expected} on the slab pair (|P| = 9, |G| = 18)
    "atlas_dunet": {
        (False, False): {"dice": 1, "recall": 1, "precision": 1, "tp": 0, "fp": 0, "fn": 0},
        (True, False): {"dice": 0, "recall": 0, "precision": 0, "tp": 0, "fp": 9, "fn": 0},
        (False, True): {"dice": 0, "recall": 0, "precision": 0, "tp": 0, "fp": 0, "fn": 18},
    },
    "atlas_vcanet": {
        (False, False): {
            "dice": 1,
            "iou": 1,
            "hd": 0,
            "sensitivity": 1,
            "precision": 1,
            "f1": 1,
        },
        (True, False): {
            "dice": 0,
            "iou": 0,
            "hd": math.inf,
            "sensitivity": 0,
            "precision": 0,
            "f1": 0,
        },
        (False, True): {
            "dice": 0,
            "iou": 0,
            "hd": math.inf,
            "sensitivity": 0,
            "precision": 0,
            "f1": 0,
        },
    },
    "atlas2_challenge": {
        (False, False): {
            "dice": 1,
            "volume_difference": 0,
            "lesion_f1": 1,
            "lesion_count_difference": 0,
        },
        (True, False): {
            "dice": 0,
            "volume_difference": 9,
            "lesion_f1": 0,
            "lesion_count_difference": 1,
        },
        (False, True): {
            "dice": 0,
            "volume_difference": 18,
            "lesion_f1": 0,
            "lesion_count_difference": 1,
        },
    },
}


@pytest.mark.parametrize(
    ("preset", "has_pred", "has_target"),
    [
        (preset, has_pred, has_target)
        for preset in EMPTY_CONVENTIONS
        for has_pred, has_target in ((False, False), (True, False), (False, True))
    ],
)
def test_empty_mask_conventions(preset: str, has_pred: bool, has_target: bool) -> None:
    pred, target = _slab_pair()
    pred = pred if has_pred else _blank()
    target = target if has_target else _blank()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = get_preset(preset)(pred, target, SPACING)
    assert out == pytest.approx(EMPTY_CONVENTIONS[preset][(has_pred, has_target)])
    assert tuple(out) == PRESET_METRICS[preset]
    assert not any(math.isnan(v) for v in out.values())
    assert all(isinstance(v, float) for v in out.values())


@pytest.mark.parametrize("preset", ["atlas_dunet", "atlas_vcanet", "atlas2_challenge"])
def test_perfect_prediction(preset: str) -> None:
    _, target = _random_blobs(6)
    out = get_preset(preset)(target, target.copy(), SPACING)
    for key in ("dice", "recall", "precision", "iou", "sensitivity", "f1", "lesion_f1"):
        assert out.get(key, 1.0) == 1.0
    for key in ("hd", "fp", "fn", "volume_difference", "lesion_count_difference"):
        assert out.get(key, 0.0) == 0.0


@pytest.mark.parametrize("preset", ["atlas_dunet", "atlas_vcanet", "atlas2_challenge"])
def test_input_errors(preset: str) -> None:
    fn = get_preset(preset)
    with pytest.raises(ValueError, match=r"binary mask .* Threshold"):
        fn(np.full((4, 4, 2), 0.7), np.zeros((4, 4, 2)), SPACING)
    with pytest.raises(ValueError, match=r"same 3D shape"):
        fn(np.zeros((4, 4), bool), np.zeros((4, 4), bool), SPACING)
    with pytest.raises(ValueError, match=r"3 positive finite"):
        fn(np.zeros((4, 4, 2), bool), np.zeros((4, 4, 2), bool), (1.0, 1.0))


def test_registry() -> None:
    assert set(METRIC_PRESETS) == set(PRESET_METRICS) == set(PRESET_STD_METRICS)
    assert get_preset("atlas_dunet") is atlas_dunet
    assert get_preset("atlas_vcanet") is atlas_vcanet
    assert get_preset("atlas2_challenge") is atlas2_challenge
    assert all(names[0] == "dice" for names in PRESET_STD_METRICS.values())
    assert PRESET_STD_METRICS["atlas_dunet"] == ("dice", "recall", "precision")
