"""Paired comparison of two experiments: hand-computed figures, case matching, files."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from core.errors import ConfigurationError
from evaluation.compare import compare_experiments, write_comparison
from evaluation.report import read_case_table

# Out-of-fold Dice of 8 cases; b - a per case: +0.10, +0.05, -0.02, +0.20, 0, +0.15, +0.08, -0.04
A = [0.50, 0.40, 0.70, 0.10, 0.00, 0.60, 0.30, 0.80]
B = [0.60, 0.45, 0.68, 0.30, 0.00, 0.75, 0.38, 0.76]


def _rows(values, hd=None, cases=None):
    cases = cases or [f"case_{i + 1}" for i in range(len(values))]
    rows = []
    for index, (case, dice) in enumerate(zip(cases, values)):
        row = {"case": case, "fold": float(index % 4), "dice": dice}
        if hd is not None:
            row["hd"] = hd[index]
        rows.append(row)
    return rows


def test_wilcoxon_and_summaries_match_a_hand_computation():
    result = compare_experiments(_rows(A), _rows(B), names=("ce", "focal"))
    differences = np.array(B) - np.array(A)
    # Hand-computed: (0.10 + 0.05 - 0.02 + 0.20 + 0 + 0.15 + 0.08 - 0.04) / 8 = 0.065
    assert result.mean_difference == pytest.approx(0.065)
    assert result.median_difference == pytest.approx(0.065)  # (0.05 + 0.08) / 2
    assert result.mean_a == pytest.approx(0.425) and result.mean_b == pytest.approx(0.49)
    assert result.sd_a == pytest.approx(np.std(A, ddof=1))
    assert result.sd_difference == pytest.approx(np.std(differences, ddof=1))
    assert (result.b_greater, result.a_greater, result.ties) == (5, 2, 1)
    expected = stats.wilcoxon(B, A, zero_method="wilcox", alternative="two-sided")
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.statistic == pytest.approx(expected.statistic)
    # The zero difference is dropped: ranks of |d| over 7 pairs, negative ones 1 (0.02) and
    # 2 (0.04), so W = min(3, 25) = 3 and the exact two-sided p = 2 * 5 / 2^7.
    assert result.statistic == 3
    assert result.p_value == pytest.approx(10 / 128)
    assert result.p_reason is None
    assert result.differences == pytest.approx(tuple(differences))


def test_different_case_sets_are_refused_naming_the_cases():
    a = _rows(A)
    b = _rows(B[:6] + [0.5], cases=[f"case_{i + 1}" for i in range(6)] + ["case_99"])
    with pytest.raises(
        ConfigurationError,
        match=r"2 only in 'a' \(case_7, case_8\), 1 only in 'b' \(case_99\).*only the 6 shared "
        r"cases \(lightning-cv compare --shared-cases",
    ):
        compare_experiments(a, b)


def test_subset_mode_uses_the_intersection_and_reports_the_rest(caplog):
    a = _rows(A)
    b = _rows(B[:6] + [0.5], cases=[f"case_{i + 1}" for i in range(6)] + ["case_99"])
    with caplog.at_level("WARNING", logger="evaluation.compare"):
        result = compare_experiments(a, b, allow_subset=True)
    assert result.cases == tuple(f"case_{i + 1}" for i in range(6))
    assert result.only_a == ("case_7", "case_8") and result.only_b == ("case_99",)
    assert "dropped 2 only in 'a' and 1 only in 'b'" in caplog.text
    assert result.mean_difference == pytest.approx(np.mean(np.subtract(B[:6], A[:6])))


def test_disjoint_tables_are_refused_even_in_subset_mode():
    with pytest.raises(ConfigurationError, match="share no case"):
        compare_experiments(_rows([0.1]), _rows([0.2], cases=["other"]), allow_subset=True)


def test_non_finite_values_are_excluded_pairwise_and_counted():
    hd_a = [3.0, math.inf, 5.0, 2.0, 4.0, 6.0, 1.0, 2.5]
    hd_b = [2.0, 4.0, math.inf, 1.0, 3.0, 5.0, 0.5, 2.0]
    result = compare_experiments(_rows(A, hd_a), _rows(B, hd_b), metric="hd")
    assert result.nonfinite == ("case_2", "case_3")
    assert result.n == 6
    assert result.mean_a == pytest.approx(np.mean([3.0, 2.0, 4.0, 6.0, 1.0, 2.5]))
    assert result.mean_difference == pytest.approx(-5 / 6)  # (4 × -1 + 2 × -0.5) / 6
    assert (result.b_greater, result.a_greater, result.ties) == (0, 6, 0)
    assert result.p_value == pytest.approx(stats.wilcoxon([-1, -1, -1, -1, -0.5, -0.5]).pvalue)


def test_fewer_than_six_nonzero_pairs_give_nan_p_with_a_reason():
    a, b = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0], [0.6, 0.5, 0.2, 0.3, 0.2, 0.0]  # one tie
    result = compare_experiments(_rows(a), _rows(b))
    assert math.isnan(result.p_value) and math.isnan(result.statistic)
    assert result.p_reason is not None and "only 5 non-zero" in result.p_reason
    assert result.mean_difference == pytest.approx(0.05)


def test_missing_metric_and_duplicate_cases_are_refused():
    with pytest.raises(ConfigurationError, match=r"experiment 'a' has no 'case' or no 'assd'"):
        compare_experiments(_rows(A), _rows(B), metric="assd")
    with pytest.raises(ConfigurationError, match=r"'case_1' appears twice in experiment 'b'"):
        compare_experiments(_rows(A), _rows(B) + _rows([0.3]))


def test_files_are_written(tmp_path):
    result = compare_experiments(_rows(A), _rows(B), names=("ce", "focal"))
    paths = write_comparison(result, tmp_path / "report")
    assert set(paths) == {"csv", "md", "png"}
    rows = read_case_table(paths["csv"])
    assert [row["case"] for row in rows] == list(result.cases)
    assert list(rows[0]) == ["case", "a", "b", "difference"]
    assert rows[3]["difference"] == pytest.approx(0.2)
    text = paths["md"].read_text()
    assert "# dice: focal vs ce" in text
    assert "| focal higher / ce higher / ties | 5 / 2 / 1 |" in text
    assert f"p = {result.p_value:.3g}" in text
    image = matplotlib.image.imread(paths["png"])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list((tmp_path / "report").glob(".*tmp*"))


def test_files_are_written_without_a_test(tmp_path):
    result = compare_experiments(_rows([0.2, 0.3]), _rows([0.25, math.inf]))
    paths = write_comparison(result, tmp_path)
    assert paths["csv"].read_text().splitlines()[0] == "case,a,b,difference"
    text = paths["md"].read_text()
    assert "not run: only 1 non-zero" in text
    assert "1 case(s) left out for a non-finite dice: case_2" in text
    assert matplotlib.image.imread(paths["png"]).ndim == 3
