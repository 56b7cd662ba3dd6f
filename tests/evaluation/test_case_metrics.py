"""CaseMetrics: summaries, per-case table, rank merging (simulated and real gloo DDP), guards."""

import math

import numpy as np
import pytest
import torch

from evaluation import CaseMetrics, isles2018
from tests.conftest import run_gloo

SPACING = (0.8, 0.8, 12.0)


def _case(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Small (8, 8, 6) cases with known isles2018 values (see test_metrics.py)."""
    pred, target = torch.zeros(8, 8, 6, dtype=torch.bool), torch.zeros(8, 8, 6, dtype=torch.bool)
    if kind in ("slab", "shift", "no_target"):
        pred[2:5, 2:5, 1] = True
    if kind in ("slab", "shift", "no_pred"):
        target[2:5, 2:5, 1:3] = True
    if kind == "shift":
        pred = torch.roll(pred, 2, dims=2)
    return pred, target


# case id -> kind; "empty" means both masks are empty.
CASES = {7: "slab", 3: "shift", 11: "no_target", 5: "empty", 2: "no_pred"}


def _fill(metric: CaseMetrics, case_ids) -> CaseMetrics:
    for case_id in case_ids:
        metric.update(*_case(CASES[case_id]), SPACING, case_id)
    return metric


def _expected_rows() -> list[dict]:
    rows = []
    for case_id in sorted(CASES):
        pred, target = _case(CASES[case_id])
        rows.append({"case_id": case_id, **isles2018(pred.numpy(), target.numpy(), SPACING)})
    return rows


def test_compute_and_table_single_process() -> None:
    metric = _fill(CaseMetrics(), CASES)
    summary = metric.compute()
    rows = _expected_rows()
    assert metric.table() == rows
    for name in ("dice", "hd", "assd", "precision", "recall", "avd"):
        values = np.array([row[name] for row in rows])
        expected = values[np.isfinite(values)].mean()
        assert summary[name].dtype == torch.float64
        assert summary[name].item() == pytest.approx(expected, rel=1e-12)
    # Two cases have exactly one empty mask -> infinite distances, counted not averaged.
    assert summary["hd_inf"].item() == 2
    assert summary["assd_inf"].item() == 2
    assert summary["num_cases"].item() == 5
    # dice over slab 2/3, shift 0 (no overlap), no_target 0, empty 1, no_pred 0
    assert summary["dice"].item() == pytest.approx((2 / 3 + 0 + 0 + 1 + 0) / 5)
    # hd over the finite cases: slab 12, shift 24 (target z=1 to pred z=3), empty 0
    assert summary["hd"].item() == pytest.approx(12.0)


def test_table_rows_are_sorted_by_case_id() -> None:
    table = _fill(CaseMetrics(), [11, 2, 7]).table()
    assert [row["case_id"] for row in table] == [2, 7, 11]
    assert all(isinstance(row["case_id"], int) for row in table)


def test_two_simulated_ranks_merge_to_the_single_process_result() -> None:
    single = _fill(CaseMetrics(), CASES)
    rank0 = _fill(CaseMetrics(), [7, 11, 2])
    rank1 = _fill(CaseMetrics(), [3, 5])
    rank0.merge_state(rank1)
    merged, reference = rank0.compute(), single.compute()
    assert merged.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(merged[key], reference[key], equal_nan=True)
    assert rank0.table() == single.table()


def test_duplicate_case_id_raises() -> None:
    rank0 = _fill(CaseMetrics(), [7, 3])
    rank1 = _fill(CaseMetrics(), [3])  # a padded sampler hands case 3 to both ranks
    rank0.merge_state(rank1)
    with pytest.raises(ValueError, match=r"Case id\(s\) \[3\] were evaluated more than once"):
        rank0.compute()
    with pytest.raises(ValueError, match=r"UnrepeatedDistributedSamplerWrapper"):
        rank0.table()


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
def test_compute_with_no_updates() -> None:
    metric = CaseMetrics()
    summary = metric.compute()
    assert summary["num_cases"].item() == 0
    assert summary["hd_inf"].item() == 0
    assert all(math.isnan(summary[name].item()) for name in metric.metric_names)
    assert metric.table() == []


def test_reset_clears_rows() -> None:
    metric = _fill(CaseMetrics(), [7, 3])
    metric.reset()
    _fill(metric, [7])
    assert metric.compute()["num_cases"].item() == 1


def test_accepts_tensor_spacing_case_id_and_0_1_masks() -> None:
    pred, target = _case("slab")
    metric = CaseMetrics()
    spacing = torch.tensor(SPACING, dtype=torch.float64)  # float32 would round 0.8 mm
    metric.update(pred.float(), target.to(torch.uint8), spacing, torch.tensor([7]))
    (row,) = metric.table()
    assert row == {"case_id": 7, **isles2018(pred.numpy(), target.numpy(), SPACING)}


def test_input_errors() -> None:
    pred, target = _case("slab")
    metric = CaseMetrics()
    with pytest.raises(ValueError, match="case_id must be one integer"):
        metric.update(pred, target, SPACING, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="case_id must be an integer"):
        metric.update(pred, target, SPACING, 1.5)
    with pytest.raises(ValueError, match="binary mask"):
        metric.update(pred.float() * 0.7, target, SPACING, 1)
    with pytest.raises(ValueError, match="Unknown metric preset 'isles22'"):
        CaseMetrics("isles22")


def test_metric_flags() -> None:
    assert CaseMetrics.full_state_update is False
    assert CaseMetrics.is_differentiable is False
    assert CaseMetrics.higher_is_better is None


# --- real two-process DDP (gloo, CPU) -------------------------------------------------------


def _ddp_worker(rank: int, shards: list[list[int]]) -> tuple:
    metric = _fill(CaseMetrics(), shards[rank])
    summary = {key: value.item() for key, value in metric.compute().items()}
    return summary, metric.table(), len(metric.case_ids)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_ddp_matches_single_process_with_uneven_and_idle_ranks() -> None:
    single = _fill(CaseMetrics(), CASES)
    reference = {key: value.item() for key, value in single.compute().items()}
    shards = [[7, 11, 2], [3, 5], []]  # uneven, and rank 2 sees no case at all
    outcomes = run_gloo(_ddp_worker, 3, shards)
    assert all(kind == "returned" for kind, _ in outcomes.values()), outcomes
    results = {rank: value for rank, (_, value) in outcomes.items()}
    assert sorted(results) == [0, 1, 2]
    for rank, (summary, table, local_rows) in results.items():
        assert summary.keys() == reference.keys()
        for key, value in summary.items():  # to the last digit
            assert value == reference[key] or math.isnan(value) and math.isnan(reference[key]), key
        assert table == single.table()
        assert local_rows == len(shards[rank])  # local states were restored after the sync
