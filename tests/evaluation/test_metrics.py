"""isles2018 preset: hand-computed anisotropic cases, MONAI relations, empties, invariances."""

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy import ndimage
from scipy.spatial.distance import cdist

from evaluation.metrics import (
    ISLES2018_METRICS,
    METRIC_PRESETS,
    PRESET_METRICS,
    get_preset,
    isles2018,
)

# MONAI 1.6's reference functions trip its own get_mask_edges(always_return_as_numpy) deprecation.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

SPACING = (0.8, 0.8, 12.0)  # ISLES 2018-like: fine in-plane, 12 mm slabs
VOXEL_ML = 0.8 * 0.8 * 12.0 / 1000  # 0.00768 mL


def _blank() -> np.ndarray:
    return np.zeros((8, 8, 6), dtype=bool)


def _slab_pair() -> tuple[np.ndarray, np.ndarray]:
    """Target: 3x3x2 block (z = 1, 2); prediction: its z = 1 slice only."""
    target, pred = _blank(), _blank()
    target[2:5, 2:5, 1:3] = True
    pred[2:5, 2:5, 1] = True
    return pred, target


def _random_blobs(seed: int, shape=(20, 18, 6)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), (2.0, 2.0, 0.7))
    target = field > np.quantile(field, 0.85)
    pred = np.roll(field, 2, axis=0) > np.quantile(field, 0.8)
    return pred, target


def _brute_force_distances(pred, target, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Reference: surfaces = mask minus its 6-connected erosion, all-pairs distances in mm."""

    def surface_mm(mask: np.ndarray) -> np.ndarray:
        edge = mask & ~ndimage.binary_erosion(mask)
        return np.argwhere(edge) * np.asarray(spacing)

    pairwise = cdist(surface_mm(pred), surface_mm(target))
    return pairwise.min(axis=1), pairwise.min(axis=0)


def _monai(fn, pred, target, **kwargs) -> float:
    as_batch = [torch.from_numpy(m)[None, None] for m in (pred, target)]
    return fn(*as_batch, include_background=True, spacing=SPACING, **kwargs).item()


def test_hand_computed_slab_case_along_the_anisotropic_axis() -> None:
    # Surfaces: all 18 target voxels (2 thick) and all 9 predicted voxels.
    # pred -> target: 9 x 0 mm; target -> pred: 9 x 0 mm (z = 1) and 9 x 12 mm (z = 2).
    # ASSD = 1/2 (0 + 108/18) = 3 mm; HD = 12 mm.
    # Dice = 2*9/(9+18) = 2/3; precision 9/9; recall 9/18; AVD = 9 voxels x 7.68 mm^3 = 0.06912 mL.
    pred, target = _slab_pair()
    out = isles2018(pred, target, SPACING)
    assert out == pytest.approx(
        {
            "dice": 2 / 3,
            "hd": 12.0,
            "assd": 3.0,
            "precision": 1.0,
            "recall": 0.5,
            "avd": 9 * VOXEL_ML,
            "jaccard": 9 / 18,  # the 9 predicted voxels lie inside the 18 target voxels
        }
    )


def test_hand_computed_shift_by_one_slab() -> None:
    # Both 3x3x2; pred shifted by +1 slice. Each direction: 9 x 0 and 9 x 12 mm -> mean 6 mm.
    target, pred = _blank(), _blank()
    target[2:5, 2:5, 1:3] = True
    pred[2:5, 2:5, 2:4] = True
    out = isles2018(pred, target, SPACING)
    assert out == pytest.approx(
        {
            "dice": 0.5,
            "hd": 12.0,
            "assd": 6.0,
            "precision": 0.5,
            "recall": 0.5,
            "avd": 0.0,
            "jaccard": 9 / 27,  # 9 shared voxels, 18 + 18 - 9 in the union
        }
    )


def test_hand_computed_in_plane_diagonals() -> None:
    # Target: one 3x3 in-plane square; pred: its centre voxel.
    # target -> pred: 0 (centre), 4 x 0.8 (edge-adjacent), 4 x 0.8*sqrt(2) (corners).
    target, pred = _blank(), _blank()
    target[2:5, 2:5, 3] = True
    pred[3, 3, 3] = True
    mean_target_to_pred = (4 * 0.8 + 4 * 0.8 * math.sqrt(2)) / 9  # 0.85839
    out = isles2018(pred, target, SPACING)
    assert out == pytest.approx(
        {
            "dice": 2 / 10,
            "hd": 0.8 * math.sqrt(2),
            "assd": 0.5 * mean_target_to_pred,  # 0.42920
            "precision": 1.0,
            "recall": 1 / 9,
            "avd": 8 * VOXEL_ML,
            "jaccard": 1 / 9,
        },
        rel=1e-6,
    )


def test_assd_is_mean_of_directed_means_not_monai_union_mean() -> None:
    pred, target = _slab_pair()
    out = isles2018(pred, target, SPACING)
    union_mean = _monai(compute_average_surface_distance, pred, target, symmetric=True)
    # MONAI pools the 9 + 18 surface points: (9 x 0 + 9 x 0 + 9 x 12) / 27 = 4 mm, not 3 mm.
    assert union_mean == pytest.approx(4.0)
    assert out["assd"] == pytest.approx(3.0)
    directed = [
        _monai(compute_average_surface_distance, a, b, symmetric=False)
        for a, b in ((pred, target), (target, pred))
    ]
    assert out["assd"] == pytest.approx(0.5 * sum(directed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_monai_hausdorff_and_brute_force_surfaces(seed: int) -> None:
    pred, target = _random_blobs(seed)
    out = isles2018(pred, target, SPACING)
    assert out["hd"] == pytest.approx(
        _monai(compute_hausdorff_distance, pred, target, percentile=None), rel=1e-6
    )
    forward, backward = _brute_force_distances(pred, target, SPACING)
    assert out["hd"] == pytest.approx(max(forward.max(), backward.max()), rel=1e-6)
    assert out["assd"] == pytest.approx(0.5 * (forward.mean() + backward.mean()), rel=1e-6)


# A perfect prediction, and two empty masks: every metric at its best value.
PERFECT = {
    "dice": 1.0,
    "hd": 0.0,
    "assd": 0.0,
    "precision": 1.0,
    "recall": 1.0,
    "avd": 0.0,
    "jaccard": 1.0,
}


def test_perfect_prediction() -> None:
    _, target = _random_blobs(3)
    out = isles2018(target, target.copy(), SPACING)
    assert out == PERFECT


def test_mask_touching_the_image_border() -> None:
    target, pred = _blank(), _blank()
    target[0:3, 0:3, 0] = True
    pred[0:3, 0:3, 0:2] = True
    out = isles2018(pred, target, SPACING)
    assert out["hd"] == pytest.approx(12.0)
    assert out["assd"] == pytest.approx(0.5 * (9 * 12.0 / 18))


@pytest.mark.parametrize(
    ("has_pred", "has_target", "expected"),
    [
        (
            False,
            False,
            PERFECT,  # both empty: agreement, as for a perfect prediction
        ),
        (
            True,
            False,
            {
                "dice": 0.0,
                "hd": math.inf,
                "assd": math.inf,
                "precision": 0.0,
                "recall": 0.0,
                "avd": 9 * VOXEL_ML,
                "jaccard": 0.0,
            },
        ),
        (
            False,
            True,
            {
                "dice": 0.0,
                "hd": math.inf,
                "assd": math.inf,
                "precision": 0.0,
                "recall": 0.0,
                "avd": 18 * VOXEL_ML,
                "jaccard": 0.0,
            },
        ),
    ],
)
def test_empty_mask_conventions(has_pred: bool, has_target: bool, expected: dict) -> None:
    pred, target = _slab_pair()
    pred = pred if has_pred else _blank()
    target = target if has_target else _blank()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI empty-mask (or other) warnings leak out
        out = isles2018(pred, target, SPACING)
    assert out == pytest.approx(expected)
    assert not any(math.isnan(v) for v in out.values())


def test_no_warnings_on_the_regular_path() -> None:
    pred, target = _random_blobs(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        isles2018(pred, target, SPACING)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_spacing_scales_distances_and_volume_only(scale: float) -> None:
    pred, target = _random_blobs(5)
    base = isles2018(pred, target, SPACING)
    scaled = isles2018(pred, target, [s * scale for s in SPACING])
    for key in ("dice", "precision", "recall"):
        assert scaled[key] == base[key]
    assert scaled["hd"] == pytest.approx(base["hd"] * scale, rel=1e-6)
    assert scaled["assd"] == pytest.approx(base["assd"] * scale, rel=1e-6)
    assert scaled["avd"] == pytest.approx(base["avd"] * scale**3, rel=1e-9)


def test_spacing_is_per_axis() -> None:
    # Stretching only z changes the z-offset case; stretching only x does not.
    pred, target = _slab_pair()
    assert isles2018(pred, target, (0.8, 0.8, 24.0))["hd"] == pytest.approx(24.0)
    assert isles2018(pred, target, (5.0, 0.8, 12.0))["hd"] == pytest.approx(12.0)


def test_invariant_to_a_consistent_axis_order() -> None:
    pred, target = _random_blobs(6)
    base = isles2018(pred, target, SPACING)
    order = (2, 0, 1)
    permuted = isles2018(
        pred.transpose(order), target.transpose(order), [SPACING[a] for a in order]
    )
    assert permuted == pytest.approx(base, rel=1e-6)


def test_swapping_pred_and_target_swaps_precision_and_recall() -> None:
    pred, target = _random_blobs(7)
    forward, backward = isles2018(pred, target, SPACING), isles2018(target, pred, SPACING)
    assert backward["precision"] == forward["recall"]
    assert backward["recall"] == forward["precision"]
    for key in ("dice", "hd", "assd", "avd", "jaccard"):
        assert backward[key] == pytest.approx(forward[key], rel=1e-6)
    assert forward["jaccard"] == pytest.approx(forward["dice"] / (2 - forward["dice"]))


def test_accepts_0_1_integer_and_float_masks() -> None:
    pred, target = _slab_pair()
    out = isles2018(pred.astype(np.uint8), target.astype(np.float32), SPACING)
    assert out == pytest.approx(isles2018(pred, target, SPACING))


@pytest.mark.parametrize(
    ("pred", "target", "spacing", "match"),
    [
        (np.full((4, 4, 2), 0.7), np.zeros((4, 4, 2)), SPACING, r"binary mask .* Threshold"),
        (np.zeros((4, 4, 2), bool), np.zeros((4, 4, 3), bool), SPACING, r"same 3D shape"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), bool), SPACING, r"same 3D shape"),
        (np.zeros((4, 4, 2), bool), np.zeros((4, 4, 2), bool), (1.0, 1.0), r"3 positive finite"),
        (np.zeros((4, 4, 2), bool), np.zeros((4, 4, 2), bool), (1.0, 0.0, 1.0), r"positive"),
        ([[[0]]], np.zeros((1, 1, 1), bool), SPACING, r"numpy array"),
    ],
)
def test_input_errors(pred, target, spacing, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        isles2018(pred, target, spacing)


def test_registry() -> None:
    assert get_preset("isles2018") is isles2018
    assert set(METRIC_PRESETS) == set(PRESET_METRICS)
    pred, target = _slab_pair()
    assert tuple(isles2018(pred, target, SPACING)) == ISLES2018_METRICS
    valid = r"\['atlas2_challenge', 'atlas_dunet', 'atlas_vcanet', 'isles2018', 'isles2022'\]"
    with pytest.raises(ValueError, match=rf"Unknown metric preset 'isles2015'.*{valid}"):
        get_preset("isles2015")
