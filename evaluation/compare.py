"""Paired comparison of two experiments on the same cases (seed 003: focal loss against CE).

Each experiment is given as its out-of-fold per-case table (:func:`evaluation.report.
read_case_table`): every training case scored once, by the fold model that did not train on
it. Pairing the two tables by case removes the case-to-case spread that dominates a Dice
mean, so a Wilcoxon signed-rank test on the per-case differences says whether one experiment
beats the other more often and by more than chance would.

Several experiments are compared by :mod:`evaluation.compare_many`, which builds on the
signed-rank test and the table reading here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from core.errors import ConfigurationError
from core.io import write_text
from core.run_layout import ComparisonLayout
from evaluation.plots import pyplot, save_figure
from evaluation.report import write_case_table

log = logging.getLogger(__name__)

# With 5 non-zero differences the smallest two-sided exact p of the signed-rank test is
# 2/2^5 = 0.0625, so it cannot reach 0.05 whatever the data; from 6 on (2/2^6 = 0.031) it can.
MIN_NONZERO_PAIRS = 6
# The classic Wilcoxon treatment: a zero difference (both experiments score a case the same,
# typically Dice 0 on a missed small lesion) says nothing about which is better and is dropped
# before ranking. The number of ties is reported beside the test so the drop is visible.
ZERO_METHOD = "wilcox"
_SHOWN = 5  # case names listed in an error before "..."


@dataclass(frozen=True)
class Comparison:
    """Per-case differences of one metric between experiments ``a`` and ``b``.

    Attributes:
        metric: The compared column, e.g. ``"dice"``.
        names: Display names of experiments ``a`` and ``b``.
        cases: The paired cases with a finite value on both sides, in ``a``'s row order.
        a: ``a``'s value per case of ``cases``.
        b: ``b``'s value per case of ``cases``.
        mean_a: Mean of ``a`` over ``cases``.
        sd_a: Sample standard deviation (ddof = 1) of ``a``; NaN for fewer than 2 cases.
        mean_b: Mean of ``b``.
        sd_b: Sample standard deviation of ``b``.
        mean_difference: Mean of ``b - a``.
        sd_difference: Sample standard deviation of ``b - a``.
        median_difference: Median of ``b - a``.
        b_greater: Cases where ``b``'s value is higher (better for Dice, worse for HD).
        a_greater: Cases where ``a``'s value is higher.
        ties: Cases with equal values; the signed-rank test drops them.
        statistic: Wilcoxon signed-rank statistic (the smaller rank sum), or NaN.
        p_value: Two-sided p-value of the test, or NaN when it was not run.
        p_reason: Why ``p_value`` is NaN; ``None`` when the test ran.
        nonfinite: Shared cases left out because either side is not finite (``inf`` HD when
            exactly one mask is empty, NaN).
        only_a: Cases scored only in ``a``, dropped (``allow_subset=True``).
        only_b: Cases scored only in ``b``, dropped.
    """

    metric: str
    names: tuple[str, str]
    cases: tuple[str, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    mean_a: float
    sd_a: float
    mean_b: float
    sd_b: float
    mean_difference: float
    sd_difference: float
    median_difference: float
    b_greater: int
    a_greater: int
    ties: int
    statistic: float
    p_value: float
    p_reason: str | None
    nonfinite: tuple[str, ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of paired cases with finite values on both sides."""
        return len(self.cases)

    @property
    def differences(self) -> tuple[float, ...]:
        """``b - a`` per case of ``cases``."""
        return tuple(b - a for a, b in zip(self.a, self.b))


def listed_cases(cases: Sequence[str]) -> str:
    """Case names for a message: the first five, then how many there are in all."""
    shown = ", ".join(cases[:_SHOWN])
    return shown + (f", ... ({len(cases)} in all)" if len(cases) > _SHOWN else "")


def case_values(rows: Sequence[Mapping[str, Any]], metric: str, name: str) -> dict[str, float]:
    """``case -> value`` of one column of experiment ``name``'s per-case rows.

    Raises:
        ConfigurationError: For a row without ``case`` or ``metric``, a case twice, or a value
            that is not a number.
    """
    values: dict[str, float] = {}
    for index, row in enumerate(rows):
        if "case" not in row or metric not in row:
            raise ConfigurationError(
                f"Row {index} of experiment {name!r} has no 'case' or no {metric!r} column "
                f"(columns: {sorted(row)}); pass an out-of-fold table written by the fold "
                "workflow, or choose metric= among its columns."
            )
        case, value = str(row["case"]), row[metric]
        if case in values:
            raise ConfigurationError(
                f"Case {case!r} appears twice in experiment {name!r}; an out-of-fold table "
                "scores each case once. Pool the folds' tables without overlap."
            )
        try:
            values[case] = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"Case {case!r} of experiment {name!r} has a non-numeric {metric} {value!r}; "
                "expected a number (inf allowed for distances)."
            ) from None
    return values


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size >= 2 else math.nan


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else math.nan


def signed_rank_test(differences: np.ndarray) -> tuple[float, float, str | None]:
    """``(statistic, p, reason)`` of the two-sided Wilcoxon signed-rank test of paired
    differences (``zero_method`` :data:`ZERO_METHOD`), or NaNs and why it was not run (fewer
    than :data:`MIN_NONZERO_PAIRS` non-zero differences)."""
    nonzero = int(np.count_nonzero(differences))
    if nonzero < MIN_NONZERO_PAIRS:
        reason = (
            f"only {nonzero} non-zero paired difference(s); the signed-rank test needs at least "
            f"{MIN_NONZERO_PAIRS} to be able to reach p < 0.05"
        )
        return math.nan, math.nan, reason
    result = stats.wilcoxon(differences, zero_method=ZERO_METHOD, alternative="two-sided")
    return float(result.statistic), float(result.pvalue), None


def compare_experiments(
    a_rows: Sequence[Mapping[str, Any]],
    b_rows: Sequence[Mapping[str, Any]],
    *,
    metric: str = "dice",
    names: tuple[str, str] = ("a", "b"),
    allow_subset: bool = False,
) -> Comparison:
    """Pair two experiments' per-case scores by case and test their difference.

    Abulnaga & Rubin (arXiv:1811.01085, Table 1) compare focal loss with cross-entropy by
    their fold means; this pairs the same out-of-fold cases instead. Differences are
    ``b - a``. The test is ``scipy.stats.wilcoxon`` on the differences, two-sided, with
    ``zero_method="wilcox"`` (ties dropped before ranking, the classic test and scipy's
    default) and scipy's default method (exact for small samples without ties, the normal
    approximation otherwise). A case whose value is not finite on either side is left out of
    every figure and counted in ``nonfinite``.

    Args:
        a_rows: Experiment ``a``'s rows ``{"case": name, "fold": k, <metric>: value, ...}``.
        b_rows: Experiment ``b``'s rows, same shape.
        metric: The column to compare.
        names: Display names of ``a`` and ``b`` (e.g. ``("ce", "focal")``).
        allow_subset: Compare the cases both tables score and drop the rest (reported in
            ``only_a``/``only_b`` and logged) instead of refusing different case sets.

    Returns:
        The comparison. With fewer than :data:`MIN_NONZERO_PAIRS` non-zero differences the
        statistic and p-value are NaN and ``p_reason`` says why.

    Raises:
        ConfigurationError: If a row lacks ``case`` or ``metric``, a case appears twice, a
            value is not a number, the two tables score different cases (without
            ``allow_subset``), or they share no case.
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ConfigurationError(
            f"The two experiments need different display names to be told apart in the "
            f"report; got {names!r}. Pass names=(a, b) with two different names."
        )
    a_values = case_values(a_rows, metric, names[0])
    b_values = case_values(b_rows, metric, names[1])
    only_a = [case for case in a_values if case not in b_values]
    only_b = [case for case in b_values if case not in a_values]
    shared = [case for case in a_values if case in b_values]
    if (only_a or only_b) and not allow_subset:
        raise ConfigurationError(
            f"Experiments {names[0]!r} and {names[1]!r} scored different cases: "
            f"{len(only_a)} only in {names[0]!r} ({listed_cases(only_a) or 'none'}), "
            f"{len(only_b)} only in {names[1]!r} ({listed_cases(only_b) or 'none'}). Compare "
            f"experiments run on the same folds, or compare only the {len(shared)} shared cases "
            "(lightning-cv compare --shared-cases; allow_subset=True in Python)."
        )
    if not shared:
        raise ConfigurationError(
            f"Experiments {names[0]!r} and {names[1]!r} share no case; nothing to compare. "
            "Check that both experiments were run on the same dataset (data.init_args.data_dir "
            "in their fold<k>/config.yaml)."
        )
    if only_a or only_b:
        log.warning(
            "Comparing %d shared cases; dropped %d only in %r and %d only in %r.",
            len(shared),
            len(only_a),
            names[0],
            len(only_b),
            names[1],
        )
    finite = [c for c in shared if math.isfinite(a_values[c]) and math.isfinite(b_values[c])]
    nonfinite = [
        c for c in shared if not (math.isfinite(a_values[c]) and math.isfinite(b_values[c]))
    ]
    a = np.array([a_values[c] for c in finite], dtype=np.float64)
    b = np.array([b_values[c] for c in finite], dtype=np.float64)
    differences = b - a
    statistic, p_value, p_reason = signed_rank_test(differences)
    return Comparison(
        metric=metric,
        names=(names[0], names[1]),
        cases=tuple(finite),
        a=tuple(a.tolist()),
        b=tuple(b.tolist()),
        mean_a=_mean(a),
        sd_a=_sd(a),
        mean_b=_mean(b),
        sd_b=_sd(b),
        mean_difference=_mean(differences),
        sd_difference=_sd(differences),
        median_difference=float(np.median(differences)) if differences.size else math.nan,
        b_greater=int(np.sum(differences > 0)),
        a_greater=int(np.sum(differences < 0)),
        ties=int(np.sum(differences == 0)),
        statistic=statistic,
        p_value=p_value,
        p_reason=p_reason,
        nonfinite=tuple(nonfinite),
        only_a=tuple(only_a),
        only_b=tuple(only_b),
    )


def _p_text(comparison: Comparison) -> str:
    if math.isnan(comparison.p_value):
        return "p = n/a"
    return f"p = {comparison.p_value:.3g}"


def format_comparison(comparison: Comparison) -> str:
    """The comparison as a short Markdown report."""
    c, (a_name, b_name) = comparison, comparison.names
    test = f"W = {c.statistic:g}, {_p_text(c)}" if c.p_reason is None else f"not run: {c.p_reason}"
    lines = [
        f"# {c.metric}: {b_name} vs {a_name}",
        "",
        f"Paired by case; difference = {b_name} − {a_name}; sd: the sample standard deviation "
        "over the cases (ddof = 1); the test drops ties before ranking.",
        "",
        "| | value |",
        "|---|---:|",
        f"| paired cases (n) | {c.n} |",
        f"| {a_name}: mean ± sd | {c.mean_a:.4f} ± {c.sd_a:.4f} |",
        f"| {b_name}: mean ± sd | {c.mean_b:.4f} ± {c.sd_b:.4f} |",
        f"| mean difference ± sd | {c.mean_difference:+.4f} ± {c.sd_difference:.4f} |",
        f"| median difference | {c.median_difference:+.4f} |",
        f"| {b_name} higher / {a_name} higher / ties | {c.b_greater} / {c.a_greater} / {c.ties} |",
        f"| Wilcoxon signed-rank (two-sided, zero_method={ZERO_METHOD}) | {test} |",
    ]
    notes = []
    if c.nonfinite:
        notes.append(
            f"- {len(c.nonfinite)} case(s) left out for a non-finite {c.metric}: "
            f"{listed_cases(list(c.nonfinite))}."
        )
    for name, dropped in ((a_name, c.only_a), (b_name, c.only_b)):
        if dropped:
            notes.append(
                f"- {len(dropped)} case(s) only in {name}, dropped: {listed_cases(list(dropped))}."
            )
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _plot(comparison: Comparison, path: Path) -> Path:
    """Paired scatter (left) and sorted per-case differences (right) into a PNG."""
    plt = pyplot()
    c, (a_name, b_name) = comparison, comparison.names
    figure, (scatter, bars) = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True)
    scatter.scatter(c.a, c.b, s=14, alpha=0.7)
    values = [*c.a, *c.b]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    scatter.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    scatter.set(
        xlabel=f"{a_name} {c.metric}",
        ylabel=f"{b_name} {c.metric}",
        title=f"{c.metric} per case (n = {c.n}; {b_name} higher in {c.b_greater})",
    )
    scatter.set_aspect("equal", adjustable="datalim")
    differences = sorted(c.differences)
    colors = ["tab:green" if d > 0 else "tab:red" if d < 0 else "grey" for d in differences]
    bars.bar(range(len(differences)), differences, color=colors, width=1.0)
    bars.axhline(0.0, color="black", linewidth=0.8)
    bars.set(
        xlabel="cases, sorted by difference",
        ylabel=f"{b_name} − {a_name}",
        title=f"median {c.median_difference:+.3f}; Wilcoxon {_p_text(c)}",
    )
    return save_figure(figure, path)


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write a two-experiment comparison: its per-case table, Markdown and figure
    (:class:`core.run_layout.ComparisonLayout`'s ``paired``, ``markdown`` and ``paired_plot``).

    The CSV holds one row per paired case (``case, a, b, difference``; the names of ``a``
    and ``b`` are in the Markdown). Every file is written under a temporary name and renamed,
    so a reader never sees half a file.

    Args:
        comparison: The result of :func:`compare_experiments`.
        out_dir: Folder to write into (created if missing).

    Returns:
        ``{"csv": path, "md": path, "png": path}``.
    """
    layout = ComparisonLayout(Path(out_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    return {
        "csv": _write_paired_table(comparison, layout.paired),
        "md": write_text(layout.markdown, format_comparison(comparison)),
        "png": _plot(comparison, layout.paired_plot),
    }


def _write_paired_table(comparison: Comparison, path: Path) -> Path:
    rows = [
        {"case": case, "a": a, "b": b, "difference": b - a}
        for case, a, b in zip(comparison.cases, comparison.a, comparison.b)
    ]
    if write_case_table(path, rows) is None:
        write_text(path, "case,a,b,difference\n")
    return path
