"""The isles2022 preset: hand-computed cases (several lesions, diagonal contacts, empties, ml) and
the challenge's lesion loop, written out independently, on random masks."""

import numpy as np
import pytest
from scipy import ndimage

from evaluation.metrics import (
    ISLES2022_METRICS,
    PRESET_METRICS,
    atlas2_challenge,
    get_preset,
    isles2022,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def _blank() -> np.ndarray:
    return np.zeros((6, 6, 6), dtype=bool)


def _diagonal_case() -> tuple[np.ndarray, np.ndarray]:
    """Target: lesion A = two voxels touching at a corner only, lesion B = two face neighbours;
    prediction: one voxel of A and an isolated false positive."""
    target, pred = _blank(), _blank()
    target[1, 1, 1] = target[2, 2, 2] = True  # A: one lesion under 26-connectivity only
    target[4, 4, 4] = target[4, 4, 5] = True  # B
    pred[1, 1, 1] = True
    pred[0, 4, 0] = True
    return pred, target


def test_several_lesions_with_a_corner_contact_hand_computed():
    pred, target = _diagonal_case()
    out = isles2022(pred, target, (1.0, 1.0, 2.0))
    assert list(out) == list(ISLES2022_METRICS) == list(PRESET_METRICS["isles2022"])
    # |P| = 2, |G| = 4, |P ∩ G| = 1.
    assert out["dice"] == pytest.approx(2 * 1 / (2 + 4))
    # |2 − 4| voxels × 2 mm³ = 4 mm³ = 0.004 ml.
    assert out["volume_difference_ml"] == pytest.approx(0.004)
    # 26-connectivity: lesions A, B; TP = A, FN = B, FP = the isolated voxel: 1 / (1 + 1).
    assert out["lesion_f1"] == pytest.approx(0.5)
    assert out["lesion_count_difference"] == 0.0  # 2 predicted, 2 true
    # ATLAS R2.0's 6-connectivity splits A in two: TP 1, FN 2, FP 1 → 1 / 2.5; counts 2 vs 3.
    atlas = atlas2_challenge(pred, target, (1.0, 1.0, 1.0))
    assert atlas["lesion_f1"] == pytest.approx(0.4)
    assert atlas["lesion_count_difference"] == 1.0


def test_one_predicted_component_over_two_lesions_detects_both():
    target, pred = _blank(), _blank()
    target[1, 1, 1:3] = True
    target[1, 4, 1:3] = True  # two lesions three columns apart
    pred[1, 1:5, 1] = True  # one bar touching both
    out = isles2022(pred, target, (1.0, 1.0, 1.0))
    assert out["lesion_f1"] == 1.0  # TP 2, FP 0, FN 0
    assert out["lesion_count_difference"] == 1.0  # 1 predicted component, 2 true lesions
    assert out["dice"] == pytest.approx(2 * 2 / (4 + 4))


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("both", {"dice": 1.0, "volume_difference_ml": 0.0, "lesion_f1": 1.0,
                  "lesion_count_difference": 0.0}),
        # 3 voxels of 0.5 × 0.5 × 3 mm = 2.25 mm³ = 0.00225 ml, one false lesion.
        ("target", {"dice": 0.0, "volume_difference_ml": 0.00225, "lesion_f1": 0.0,
                    "lesion_count_difference": 1.0}),
        # Two missed lesions of 1 voxel each.
        ("pred", {"dice": 0.0, "volume_difference_ml": 0.0015, "lesion_f1": 0.0,
                  "lesion_count_difference": 2.0}),
    ],
    ids=["both-empty", "target-empty", "prediction-empty"],
)  # fmt: skip
def test_empty_masks_follow_the_challenge(which, expected):
    pred, target = _blank(), _blank()
    if which == "target":
        pred[2, 2, 1:4] = True
    if which == "pred":
        target[0, 0, 0] = target[5, 5, 5] = True
    out = isles2022(pred, target, (0.5, 0.5, 3.0))
    assert out == pytest.approx(expected)


def _challenge_loop(pred: np.ndarray, target: np.ndarray, spacing) -> dict[str, float]:
    """The challenge's definitions as it writes them: one loop over each mask's components."""
    full = np.ones((3, 3, 3))
    true_labels, n_true = ndimage.label(target, structure=full)
    pred_labels, n_pred = ndimage.label(pred, structure=full)
    tp = sum(bool((pred & (true_labels == k)).any()) for k in range(1, n_true + 1))
    fn = n_true - tp
    fp = sum(not (target & (pred_labels == k)).any() for k in range(1, n_pred + 1))
    both = pred.sum() + target.sum()
    return {
        "dice": 2.0 * (pred & target).sum() / both if both else 1.0,
        "volume_difference_ml": abs(int(pred.sum()) - int(target.sum())) * np.prod(spacing) / 1000,
        "lesion_f1": tp / (tp + (fp + fn) / 2) if tp + fp + fn else 1.0,
        "lesion_count_difference": float(abs(n_pred - n_true)),
    }


@pytest.mark.parametrize("seed", range(6))
def test_random_sparse_masks_agree_with_the_challenges_loop(seed):
    rng = np.random.default_rng(seed)
    target = rng.random((12, 10, 8)) > 0.93  # many small lesions, diagonal contacts included
    pred = (rng.random((12, 10, 8)) > 0.95) | (target & (rng.random((12, 10, 8)) > 0.4))
    spacing = (0.9, 1.1, 2.5)
    assert isles2022(pred, target, spacing) == pytest.approx(_challenge_loop(pred, target, spacing))


def test_the_preset_is_registered():
    assert get_preset("isles2022") is isles2022
