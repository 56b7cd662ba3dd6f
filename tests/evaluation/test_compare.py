"""Comparison of experiments: the paired test of two (hand-computed figures, case matching,
files), and of several (the fold and out-of-fold figures, the Friedman and Holm-adjusted
Wilcoxon wiring, the fold check, the report's files)."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from core.errors import ConfigurationError
from evaluation.compare import compare_experiments, write_comparison
from evaluation.compare_many import compare_many
from evaluation.compare_report import write_multi_comparison
from evaluation.experiment_folds import FoldSplits, check_same_folds
from evaluation.ranking import holm
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


# -- several experiments -----------------------------------------------------------------------
def _three(n: int = 20, gain: float = 0.15, seed: int = 0) -> dict[str, list[dict]]:
    """Three experiments on ``n`` cases: a and b alike, c better by ``gain`` on every case."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.7, n)
    values = {
        "a": base + rng.normal(0, 0.02, n),
        "b": base + rng.normal(0, 0.02, n),
        "c": base + gain + rng.normal(0, 0.02, n),
    }
    return {name: _rows(list(column)) for name, column in values.items()}


_PAIRS_OF_3 = [(0, 1), (0, 2), (1, 2)]


def test_friedman_finds_a_clearly_better_experiment_and_holm_tells_which():
    tables = _three()
    result = compare_many(tables)
    columns = [[row["dice"] for row in tables[name]] for name in "abc"]
    expected = stats.friedmanchisquare(*columns)
    assert result.friedman_reason is None
    assert result.friedman_p == pytest.approx(expected.pvalue) and result.friedman_p < 0.05
    assert result.friedman_statistic == pytest.approx(expected.statistic)
    pairs = {(t.a, t.b): t for t in result.pairs}
    assert list(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [stats.wilcoxon(np.subtract(columns[j], columns[i])).pvalue for i, j in _PAIRS_OF_3]
    assert [t.p_value for t in result.pairs] == pytest.approx(raw)
    assert [t.p_holm for t in result.pairs] == pytest.approx(holm(raw))
    assert pairs["a", "c"].p_holm < 0.05 and pairs["b", "c"].p_holm < 0.05
    assert pairs["a", "c"].b_greater == 20 and pairs["a", "c"].mean_difference > 0.1
    assert result.ranking.order[0] == "c" and result.tested_rank["c"] == 1.0
    # a and b are not told apart: they share the bar of the rank figure.
    assert pairs["a", "b"].p_holm >= 0.05
    assert [set(group) for group in result.indistinct_groups()] == [{"a", "b"}]


def test_identical_experiments_give_no_test_and_a_report_that_says_why(tmp_path):
    rows = _rows(A)
    result = compare_many({"a": rows, "b": rows, "c": rows})
    assert math.isnan(result.friedman_p) and math.isnan(result.friedman_statistic)
    assert result.friedman_reason == "every case scores all experiments the same"
    assert all(math.isnan(t.p_value) and math.isnan(t.p_holm) for t in result.pairs)
    assert all(t.ties == 8 for t in result.pairs)
    assert result.ranking.mean_rank == {"a": 2.0, "b": 2.0, "c": 2.0}
    assert result.indistinct_groups() == [("a", "b", "c")]
    files = write_multi_comparison(result, tmp_path)
    text = files["markdown"].read_text()
    assert "not run: every case scores all experiments the same" in text
    assert "| a | b | 8 | +0.0000 | +0.0000 | 0 / 0 / 8 | – | n/a | n/a |" in text


def test_fold_and_out_of_fold_figures_match_a_hand_computation():
    # Fold 0 holds three cases, fold 1 one: the mean over folds and over cases differ.
    a = [{"case": c, "fold": f, "dice": d, "hd": h} for c, f, d, h in (
        ("c1", 0, 0.2, 4.0), ("c2", 0, 0.4, math.inf), ("c3", 0, 0.6, 2.0), ("c4", 1, 1.0, 1.0),
    )]  # fmt: skip
    b = [{**row, "dice": row["dice"] + 0.1, "hd": 3.0} for row in a]
    result = compare_many({"a": a, "b": b}, metrics=["dice", "hd"])
    dice = result.summaries["dice"]["a"]
    assert dice.fold_means == pytest.approx({0: 0.4, 1: 1.0})
    assert dice.fold_mean == pytest.approx(0.7)
    assert dice.fold_sd == pytest.approx(np.std([0.4, 1.0], ddof=1))
    assert dice.mean == pytest.approx(0.55) and (dice.cases, dice.nonfinite) == (4, 0)
    hd = result.summaries["hd"]["a"]
    assert hd.fold_means == pytest.approx({0: 3.0, 1: 1.0}) and hd.nonfinite == 1
    assert hd.mean == pytest.approx(7 / 3)
    # Two experiments: the pair's test is the paired comparison's, Holm leaves one p alone.
    (pair,) = result.pairs
    assert result.paired is not None and pair.n == result.paired.n == 4
    assert math.isnan(pair.p_value) and pair.p_reason == result.paired.p_reason
    assert result.friedman_reason is not None and "two experiments" in result.friedman_reason


def test_two_experiments_get_the_paired_test_unchanged():
    result = compare_many({"ce": _rows(A), "focal": _rows(B)})
    paired = compare_experiments(_rows(A), _rows(B), names=("ce", "focal"))
    assert result.paired == paired
    (pair,) = result.pairs
    assert pair.p_value == pytest.approx(10 / 128) and pair.p_holm == pair.p_value
    assert (pair.b_greater, pair.a_greater, pair.ties) == (5, 2, 1)


def test_several_experiments_with_different_cases_are_refused_or_compared_on_the_shared():
    tables = _three(8)
    tables["b"] = tables["b"][:6]
    with pytest.raises(
        ConfigurationError,
        match=r"scored different cases: missing from 'b': 2 \(case_7, case_8\)\. .*only the 6 "
        r"cases every experiment scored \(lightning-cv compare --shared-cases",
    ):
        compare_many(tables)
    result = compare_many(tables, allow_subset=True)
    assert len(result.cases) == 6 and result.only["a"] == ("case_7", "case_8")
    with pytest.raises(ConfigurationError, match=r"'assd' is not a column of every"):
        compare_many(tables, metrics=["assd"], allow_subset=True)
    with pytest.raises(ConfigurationError, match="two experiments or more"):
        compare_many({"a": tables["a"]})


def _splits(val_cases: dict[int, list[str]], seed: int = 0, folds: int = 2) -> FoldSplits:
    cases = {k: tuple(v) for k, v in val_cases.items()}
    return FoldSplits(folds, seed, "patient", cases, {k: {} for k in cases})


def test_experiments_on_other_folds_are_refused_naming_the_fold_and_case():
    same = _splits({0: ["c1", "c2"], 1: ["c3", "c4"]})
    check_same_folds({"a": same, "b": same, "c": same})
    other = _splits({0: ["c1", "c2"], 1: ["c3", "c5"]}, seed=7)
    with pytest.raises(
        ConfigurationError,
        match=r"'a' and 'c' were not run on the same folds: fold 1 holds out c4 in 'a' but not "
        r"in 'c' \('a': 2 folds, split_seed 0; 'c': 2 folds, split_seed 7\).*re-run 'c' on the "
        r"folds of 'a' \(.*--data.init_args.num_folds 2 --data.init_args.split_seed 0",
    ):
        check_same_folds({"a": same, "b": same, "c": other})
    fewer = _splits({0: ["c1", "c2", "c3"]}, folds=3)
    with pytest.raises(ConfigurationError, match=r"'a' has 2 folds and 'b' 3"):
        check_same_folds({"a": same, "b": fewer})


def test_the_report_of_three_experiments(tmp_path):
    result = compare_many(_three())
    files = write_multi_comparison(result, tmp_path / "cmp")
    assert set(files) == {"markdown", "summary", "metrics", "cases", "cases_plot", "ranks_plot"}
    text = files["markdown"].read_text()
    assert text.startswith("# dice: 3 experiments")
    for heading in (
        "## Per metric",
        "### dice (higher is better)",
        "## Ranking",
        "## Tests on dice",
    ):
        assert heading in text
    assert f"χ² = {result.friedman_statistic:.3g}, p = {result.friedman_p:.3g}" in text
    assert "![dice per case](comparison_cases.png)" in text
    summary = json.loads(files["summary"].read_text())
    assert summary["ranking"]["order"][0] == "c"
    assert summary["tests"]["pairs"][1]["p_holm"] == pytest.approx(result.pairs[1].p_holm)
    assert summary["tests"]["not_told_apart"] == [list(result.indistinct_groups()[0])]
    rows = read_case_table(files["metrics"])
    assert [(r["metric"], r["experiment"]) for r in rows[:3]] == [("dice", n) for n in "abc"]
    assert rows[2]["rank"] == 1.0 and {rows[0]["rank"], rows[1]["rank"]} == {2.0, 3.0}
    assert list(read_case_table(files["cases"])[0]) == ["case", "fold", "a", "b", "c"]
    for key in ("cases_plot", "ranks_plot"):
        assert matplotlib.image.imread(files[key]).ndim == 3
    assert not list((tmp_path / "cmp").glob(".*tmp*"))


def test_the_report_of_two_experiments_keeps_the_paired_files(tmp_path):
    files = write_multi_comparison(compare_many({"ce": _rows(A), "focal": _rows(B)}), tmp_path)
    assert {"paired", "paired_plot"} <= set(files)
    assert list(read_case_table(files["paired"])[0]) == ["case", "a", "b", "difference"]
    text = files["markdown"].read_text()
    assert text.startswith("# dice: focal vs ce")
    assert "| focal higher / ce higher / ties | 5 / 2 / 1 |" in text
    assert "## Ranking" in text and "## Tests on" not in text


@pytest.mark.parametrize("experiments", [2, 3])
def test_a_tested_metric_the_tables_lack_is_refused_naming_those_they_carry(experiments):
    tables = {name: _rows([0.5, 0.6, 0.7]) for name in "abc"[:experiments]}
    with pytest.raises(
        ConfigurationError,
        match=r"^--metric 'hd95' is not a column of every experiment's per-case table; the "
        r"scores they all carry: dice \(e\.g\. lightning-cv compare --metric dice\)",
    ):
        compare_many(tables, metric="hd95")
