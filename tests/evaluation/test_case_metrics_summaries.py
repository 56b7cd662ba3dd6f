"""CaseMetrics summaries beyond means: <metric>_std, pooled global_dice, ATLAS presets."""

import math

import numpy as np
import pytest
import torch

from evaluation import CaseMetrics, get_preset

SPACING = (1.0, 1.0, 1.0)


def _case(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(8, 8, 6) cases: slab (TP 9, FP 0, FN 9), shift (9, 9, 9), no_target (0, 9, 0),
    empty (0, 0, 0), no_pred (0, 0, 18)."""
    pred, target = torch.zeros(8, 8, 6, dtype=torch.bool), torch.zeros(8, 8, 6, dtype=torch.bool)
    if kind in ("slab", "shift", "no_target"):
        pred[2:5, 2:5, 1] = True
    if kind in ("slab", "shift", "no_pred"):
        target[2:5, 2:5, 1:3] = True
    if kind == "shift":
        pred[2:5, 2:5, 1:3] = True
        pred = torch.roll(pred, 1, dims=2)
    return pred, target


CASES = {7: "slab", 3: "shift", 11: "no_target", 5: "empty", 2: "no_pred"}


def _fill(metric: CaseMetrics, case_ids) -> CaseMetrics:
    for case_id in case_ids:
        metric.update(*_case(CASES[case_id]), SPACING, case_id)
    return metric


def test_atlas_dunet_summary_hand_computed() -> None:
    summary = _fill(CaseMetrics("atlas_dunet"), CASES).compute()
    assert list(summary) == [
        "dice",
        "dice_std",
        "recall",
        "recall_std",
        "precision",
        "precision_std",
        "global_dice",
        "num_cases",
    ]  # tp/fp/fn are pooled, not averaged
    dice = np.array([2 / 3, 1 / 2, 0, 1, 0])  # slab, shift, no_target, empty, no_pred
    recall = np.array([1 / 2, 1 / 2, 0, 1, 0])
    precision = np.array([1, 1 / 2, 0, 1, 0])
    for name, values in (("dice", dice), ("recall", recall), ("precision", precision)):
        assert summary[name].item() == pytest.approx(values.mean(), rel=1e-12)
        assert summary[f"{name}_std"].item() == pytest.approx(values.std(), rel=1e-12)  # ddof 0
    # ΣTP = 9 + 9 = 18 (slab, shift), ΣFP = 9 + 9 = 18 (shift, no_target),
    # ΣFN = 9 + 9 + 18 = 36 (slab, shift, no_pred): 36 / (36 + 18 + 36) = 2/5.
    assert summary["global_dice"].item() == pytest.approx(2 / 5, rel=1e-12)
    assert summary["global_dice"].dtype == torch.float64
    assert summary["num_cases"].item() == 5


def test_table_keeps_the_voxel_counts() -> None:
    rows = _fill(CaseMetrics("atlas_dunet"), [7, 2]).table()
    assert [(r["case_id"], r["tp"], r["fp"], r["fn"]) for r in rows] == [
        (2, 0, 0, 18),
        (7, 9, 0, 9),
    ]


def test_global_dice_differs_from_mean_dice_and_weights_large_lesions() -> None:
    # One big well-segmented case and one tiny missed case: mean dice 1/2, global close to 1.
    big_pred = torch.zeros(8, 8, 6, dtype=torch.bool)
    big_pred[:, :, :4] = True
    tiny_target = torch.zeros(8, 8, 6, dtype=torch.bool)
    tiny_target[0, 0, 0] = True
    metric = CaseMetrics("atlas_dunet")
    metric.update(big_pred, big_pred, SPACING, 1)
    metric.update(torch.zeros_like(tiny_target), tiny_target, SPACING, 2)
    summary = metric.compute()
    assert summary["dice"].item() == pytest.approx(0.5)
    assert summary["global_dice"].item() == pytest.approx(2 * 256 / (2 * 256 + 1))


def test_global_dice_is_one_when_every_mask_is_empty() -> None:
    metric = _fill(CaseMetrics("atlas_dunet"), [5])
    assert metric.compute()["global_dice"].item() == 1.0
    assert metric.compute()["dice_std"].item() == 0.0  # one case: population sd 0, not NaN


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
@pytest.mark.parametrize(
    "preset", ["isles2018", "atlas_dunet", "atlas_vcanet", "atlas2_challenge", "isles2022"]
)
def test_no_cases_gives_nan_summaries(preset: str) -> None:
    summary = CaseMetrics(preset).compute()
    assert math.isnan(summary["dice"].item())
    assert math.isnan(summary["dice_std"].item())
    assert summary["num_cases"].item() == 0
    if preset == "atlas_dunet":
        assert math.isnan(summary["global_dice"].item())
    else:
        assert "global_dice" not in summary


@pytest.mark.parametrize("preset", ["isles2018", "atlas_vcanet", "atlas2_challenge", "isles2022"])
def test_every_preset_reports_mean_and_sd_of_dice_and_its_own_keys(preset: str) -> None:
    metric = _fill(CaseMetrics(preset), CASES)
    summary = metric.compute()
    rows = metric.table()
    dice = np.array([row["dice"] for row in rows])
    assert summary["dice_std"].item() == pytest.approx(dice.std(), rel=1e-12)
    expected_rows = [
        {
            "case_id": case_id,
            **get_preset(preset)(*(m.numpy() for m in _case(CASES[case_id])), SPACING),
        }
        for case_id in sorted(CASES)
    ]
    assert rows == expected_rows
    for name in metric.metric_names:
        values = np.array([row[name] for row in rows])
        finite = values[np.isfinite(values)]
        assert summary[name].item() == pytest.approx(finite.mean(), rel=1e-12)
    if preset == "atlas_vcanet":
        assert summary["hd_inf"].item() == 2  # no_target and no_pred


def test_atlas2_challenge_summary_hand_computed() -> None:
    summary = _fill(CaseMetrics("atlas2_challenge"), CASES).compute()
    # Volume difference: slab 9, shift 0, no_target 9, empty 0, no_pred 18 -> mean 36/5.
    assert summary["volume_difference"].item() == pytest.approx(36 / 5)
    # Lesion F1: slab 1, shift 1, no_target 0, empty 1, no_pred 0 -> 3/5.
    assert summary["lesion_f1"].item() == pytest.approx(3 / 5)
    # Count difference: 0, 0, 1, 0, 1 -> 2/5.
    assert summary["lesion_count_difference"].item() == pytest.approx(2 / 5)


@pytest.mark.parametrize("preset", ["atlas_dunet", "atlas_vcanet", "atlas2_challenge"])
def test_two_simulated_ranks_merge_to_the_single_process_result(preset: str) -> None:
    single = _fill(CaseMetrics(preset), CASES)
    rank0 = _fill(CaseMetrics(preset), [7, 11, 2])
    rank1 = _fill(CaseMetrics(preset), [3, 5])
    rank0.merge_state(rank1)
    merged, reference = rank0.compute(), single.compute()
    assert merged.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(merged[key], reference[key], equal_nan=True)
    assert rank0.table() == single.table()
