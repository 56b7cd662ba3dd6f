"""Ranks and tests across experiments: Holm's correction, the challenge's mean rank and the
per-case rank by hand, the Friedman test's limits, the declared directions."""

from __future__ import annotations

import math

import pytest

from core.errors import ConfigurationError
from evaluation.metrics import METRIC_DIRECTIONS, PRESET_METRICS, VOXEL_COUNT_METRICS
from evaluation.ranking import case_mean_rank, friedman, holm, mean_rank


def test_holm_matches_a_hand_computation():
    # Sorted: 0.005 × 4 = 0.02, 0.01 × 3 = 0.03, 0.03 × 2 = 0.06, 0.04 × 1 = 0.04 → kept at 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # A test that was not run stays NaN and does not count: m = 2.
    adjusted = holm([0.02, math.nan, 0.5])
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.5)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, still non-decreasing
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_mean_rank_ranks_each_metric_in_its_direction_with_ties_averaged():
    scores = {
        "a": {"dice": 0.6, "hd": 10.0},
        "b": {"dice": 0.7, "hd": 12.0},
        "c": {"dice": 0.6, "hd": 8.0},
    }
    ranking = mean_rank(scores)
    # dice (higher is better): b 1, a and c tied on 2 and 3 → 2.5 each. hd (lower): c, a, b.
    assert ranking.ranks == {
        "a": {"dice": 2.5, "hd": 2.0},
        "b": {"dice": 1.0, "hd": 3.0},
        "c": {"dice": 2.5, "hd": 1.0},
    }
    assert ranking.mean_rank == {"a": 2.25, "b": 2.0, "c": 1.75}
    assert ranking.order == ("c", "b", "a")
    assert mean_rank(scores, metrics=["hd"]).order == ("c", "a", "b")


def test_mean_rank_puts_a_missing_value_last_and_refuses_an_undeclared_direction():
    ranking = mean_rank({"a": {"dice": math.nan}, "b": {"dice": 0.1}, "c": {}}, ["dice"])
    assert ranking.ranks["b"]["dice"] == 1.0
    assert ranking.ranks["a"]["dice"] == ranking.ranks["c"]["dice"] == 2.5
    assert ranking.order == ("b", "a", "c")  # a tie keeps the order given
    with pytest.raises(ConfigurationError, match=r"'tp' has no declared better direction"):
        mean_rank({"a": {"tp": 1.0}, "b": {"tp": 2.0}})


def test_case_mean_rank_averages_per_case_ranks_and_ranks_inf_distances_last():
    values = {
        "a": {"dice": [0.5, 0.2], "hd": [3.0, math.inf]},
        "b": {"dice": [0.4, 0.2], "hd": [4.0, 2.0]},
        "c": {"dice": [0.6, 0.1], "hd": [5.0, 1.0]},
    }
    # dice: case 1 c, a, b; case 2 a and b tied (1.5), c 3 → a 1.75, b 2.25, c 2.
    # hd: case 1 a, b, c; case 2 c, b, a (inf last) → a 2, b 2, c 2.
    ranks = case_mean_rank(values)
    assert ranks == pytest.approx({"a": 1.875, "b": 2.125, "c": 2.0})
    assert case_mean_rank({"a": {"dice": []}, "b": {"dice": []}}) == {
        "a": pytest.approx(math.nan, nan_ok=True),
        "b": pytest.approx(math.nan, nan_ok=True),
    }


def test_every_score_of_every_preset_declares_its_direction():
    scores = {m for metrics in PRESET_METRICS.values() for m in metrics} - VOXEL_COUNT_METRICS
    assert scores <= set(METRIC_DIRECTIONS)
    assert set(METRIC_DIRECTIONS.values()) == {"higher", "lower"}


def test_friedman_is_not_run_on_too_few_cases():
    statistic, p, reason = friedman([[0.1, 0.2], [0.2, 0.3], [0.3, 0.4]])
    assert math.isnan(statistic) and math.isnan(p)
    assert reason is not None and "cannot reach p < 0.05" in reason  # chi2(2) of 4: p = 0.135
    assert friedman([[0.1, 0.2, 0.3], [0.2, 0.3, 0.4], [0.3, 0.4, 0.5]])[2] is None
