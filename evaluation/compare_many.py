"""Two or more experiments on the same cases, compared as a challenge ranks its teams and a
methods paper tests them.

Per metric, each experiment's mean ± sd over folds and its out-of-fold mean; the challenge's
mean rank over the metrics (:mod:`evaluation.ranking`); and on one metric, the Friedman test
over the cases, then the Wilcoxon signed-rank test of every pair with Holm's correction. The
experiments' folds are checked beforehand (:func:`evaluation.experiment_folds.check_same_folds`);
the report is written by :mod:`evaluation.compare_report`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core.errors import ConfigurationError
from evaluation.compare import (
    Comparison,
    case_values,
    compare_experiments,
    listed_cases,
    signed_rank_test,
)
from evaluation.metrics import METRIC_DIRECTIONS
from evaluation.ranking import Ranking, case_mean_rank, direction_of, friedman, holm, mean_rank

log = logging.getLogger(__name__)

# The family-wise level at which experiments that no Holm-adjusted pairwise test tells apart
# are grouped (the bars of the rank figure).
ALPHA = 0.05


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else math.nan


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size >= 2 else math.nan


@dataclass(frozen=True)
class MetricSummary:
    """One experiment's figures on one metric, over the compared cases' finite values.

    Attributes:
        fold_means: ``fold -> mean over the fold's cases``.
        fold_mean: Mean of ``fold_means``.
        fold_sd: Sample standard deviation (ddof = 1) of ``fold_means``; NaN for one fold.
        mean: Out-of-fold mean: over all the compared cases at once.
        cases: Cases with a finite value.
        nonfinite: Compared cases left out for a non-finite value (``inf`` distance).
    """

    fold_means: dict[int, float]
    fold_mean: float
    fold_sd: float
    mean: float
    cases: int
    nonfinite: int


@dataclass(frozen=True)
class PairTest:
    """The Wilcoxon signed-rank test of one pair of experiments on the tested metric.

    Attributes:
        a: The first experiment of the pair (in the order given).
        b: The second; differences are ``b − a``.
        n: Cases compared (finite for every experiment).
        mean_difference: Mean of ``b − a``.
        median_difference: Median of ``b − a``.
        b_greater: Cases where ``b``'s value is higher.
        a_greater: Cases where ``a``'s value is higher.
        ties: Cases with equal values (dropped by the test).
        statistic: The smaller signed-rank sum, or NaN.
        p_value: Two-sided p-value, or NaN when not run.
        p_holm: ``p_value`` adjusted with Holm's step-down over all pairs.
        p_reason: Why the test was not run; ``None`` when it was.
    """

    a: str
    b: str
    n: int
    mean_difference: float
    median_difference: float
    b_greater: int
    a_greater: int
    ties: int
    statistic: float
    p_value: float
    p_holm: float
    p_reason: str | None


@dataclass(frozen=True)
class MultiComparison:
    """Two or more experiments on the same cases: per-metric table, ranking, tests.

    Attributes:
        names: The experiments' display names, in the order given.
        metric: The tested (and plotted) metric.
        metrics: The tabled and ranked metrics.
        cases: The compared cases: scored by every experiment, in the first's row order.
        folds: ``case -> fold`` of the compared cases (the first experiment's; ``None``
            without a ``fold`` column).
        summaries: ``metric -> experiment -> figures``.
        ranking: The challenge's ranking: each metric ranks the out-of-fold means, the
            final place is the mean rank (:func:`evaluation.ranking.mean_rank`).
        case_rank: ``experiment -> rank on every case, averaged over cases and metrics``.
        tested_cases: The compared cases whose tested metric is finite for every experiment.
        values: ``experiment -> its tested metric per case of tested_cases``.
        tested_rank: ``experiment -> its rank on each case of tested_cases, averaged``; NaN
            when ``metric`` has no declared direction.
        friedman_statistic: Friedman's chi-square over ``tested_cases``; NaN when not run.
        friedman_p: Its p-value; NaN when not run.
        friedman_reason: Why it was not run (always for two experiments); ``None`` when run.
        pairs: Every pair's Wilcoxon test, Holm-adjusted, in the order given.
        nonfinite: Compared cases left out of the tests for a non-finite tested metric.
        only: ``experiment -> its cases not scored by every experiment``, dropped
            (``allow_subset=True``).
        paired: For two experiments, the paired comparison of :func:`compare_experiments`.
    """

    names: tuple[str, ...]
    metric: str
    metrics: tuple[str, ...]
    cases: tuple[str, ...]
    folds: dict[str, int | None]
    summaries: dict[str, dict[str, MetricSummary]]
    ranking: Ranking
    case_rank: dict[str, float]
    tested_cases: tuple[str, ...]
    values: dict[str, tuple[float, ...]]
    tested_rank: dict[str, float]
    friedman_statistic: float
    friedman_p: float
    friedman_reason: str | None
    pairs: tuple[PairTest, ...]
    nonfinite: tuple[str, ...]
    only: dict[str, tuple[str, ...]]
    paired: Comparison | None

    def indistinct_groups(self, alpha: float = ALPHA) -> list[tuple[str, ...]]:
        """Maximal runs of experiments, in the order of ``tested_rank``, no two of which a
        Holm-adjusted pairwise test tells apart at ``alpha`` (an untested pair counts as not
        told apart): the bars of a critical-difference diagram."""
        apart = {
            frozenset((t.a, t.b))
            for t in self.pairs
            if math.isfinite(t.p_holm) and t.p_holm < alpha
        }
        order = sorted(self.names, key=lambda n: np.nan_to_num(self.tested_rank[n]))
        groups: list[tuple[str, ...]] = []
        reached = 0
        for start in range(len(order)):
            end = start
            while end + 1 < len(order) and all(
                frozenset((order[i], order[end + 1])) not in apart for i in range(start, end + 1)
            ):
                end += 1
            if end > start and end > reached:
                groups.append(tuple(order[start : end + 1]))
                reached = end
        return groups


def _folds_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, int | None]:
    folds: dict[str, int | None] = {}
    for row in rows:
        value = row.get("fold")
        try:
            folds[str(row.get("case"))] = int(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            folds[str(row.get("case"))] = None
    return folds


def _shared_cases(
    values: Mapping[str, Mapping[str, float]], allow_subset: bool, log_drop: bool
) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The cases every experiment scored (the first's order) and each one's other cases.

    Raises:
        ConfigurationError: For different case sets without ``allow_subset``, or none shared.
    """
    names = list(values)
    shared = [c for c in values[names[0]] if all(c in values[n] for n in names)]
    kept = set(shared)
    only = {n: tuple(c for c in values[n] if c not in kept) for n in names}
    if any(only.values()) and not allow_subset:
        others = list(dict.fromkeys(c for n in names for c in only[n]))
        missing = {n: [c for c in others if c not in values[n]] for n in names}
        listed = "; ".join(
            f"missing from {n!r}: {len(m)} ({listed_cases(m)})" for n, m in missing.items() if m
        )
        raise ConfigurationError(
            f"Experiments {', '.join(map(repr, names))} scored different cases: {listed}. "
            f"Compare experiments run on the same folds, or compare only the {len(shared)} "
            "cases every experiment scored (lightning-cv compare --shared-cases; "
            "allow_subset=True in Python)."
        )
    if not shared:
        raise ConfigurationError(
            f"Experiments {', '.join(map(repr, names))} share no case; nothing to compare. "
            "Check that all were run on the same dataset (data.init_args.data_dir in their "
            "fold<k>/config.yaml)."
        )
    if log_drop and any(only.values()):
        log.warning(
            "Comparing %d shared cases; dropped %s.",
            len(shared),
            ", ".join(f"{len(c)} only in {n!r}" for n, c in only.items() if c),
        )
    return shared, only


def _common_columns(tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The columns every row of every table carries, in the first row's order."""
    rows = [row for table in tables.values() for row in table]
    return [c for c in rows[0] if all(c in row for row in rows)] if rows else []


def _check_tested_metric(tables: Mapping[str, Sequence[Mapping[str, Any]]], metric: str) -> None:
    """Refuse a tested metric that some experiment's table lacks, naming the ones all carry."""
    columns = _common_columns(tables)
    if columns and metric not in columns:
        scores = [c for c in columns if c in METRIC_DIRECTIONS]
        raise ConfigurationError(
            f"--metric {metric!r} is not a column of every experiment's per-case table; the "
            f"scores they all carry: {', '.join(scores) or 'none'} (e.g. lightning-cv compare "
            f"--metric {scores[0] if scores else 'dice'})."
        )


def _ranked_metrics(
    tables: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str] | None
) -> tuple[str, ...]:
    """The metrics to table and rank: those asked for, or every score all tables carry."""
    columns = _common_columns(tables)
    scores = [c for c in columns if c in METRIC_DIRECTIONS]
    if metrics is None:
        return tuple(scores)
    absent = [m for m in metrics if m not in columns]
    if absent:
        raise ConfigurationError(
            f"{', '.join(map(repr, absent))} is not a column of every experiment's per-case "
            f"table; the scores they all carry: {', '.join(scores) or 'none'} "
            f"(lightning-cv compare --metrics {','.join(scores) or 'dice'})."
        )
    for metric in metrics:
        direction_of(metric)
    return tuple(dict.fromkeys(metrics))


def _summary(
    values: Mapping[str, float], cases: Sequence[str], folds: Mapping[str, int | None]
) -> MetricSummary:
    finite = [c for c in cases if math.isfinite(values[c])]
    by_fold: dict[int, list[float]] = {}
    for case in finite:
        fold = folds.get(case)
        if fold is not None:
            by_fold.setdefault(fold, []).append(values[case])
    fold_means = {k: float(np.mean(v)) for k, v in sorted(by_fold.items())}
    means = np.array(list(fold_means.values()), dtype=np.float64)
    return MetricSummary(
        fold_means=fold_means,
        fold_mean=_mean(means),
        fold_sd=_sd(means),
        mean=_mean(np.array([values[c] for c in finite], dtype=np.float64)),
        cases=len(finite),
        nonfinite=len(cases) - len(finite),
    )


def _pairwise(names: Sequence[str], values: Mapping[str, Sequence[float]]) -> tuple[PairTest, ...]:
    """The Wilcoxon test of every pair (in the order given), Holm-adjusted together."""
    tests = []
    for a, b in itertools.combinations(names, 2):
        differences = np.asarray(values[b], np.float64) - np.asarray(values[a], np.float64)
        statistic, p_value, reason = signed_rank_test(differences)
        tests.append(
            PairTest(
                a=a,
                b=b,
                n=int(differences.size),
                mean_difference=_mean(differences),
                median_difference=float(np.median(differences)) if differences.size else math.nan,
                b_greater=int(np.sum(differences > 0)),
                a_greater=int(np.sum(differences < 0)),
                ties=int(np.sum(differences == 0)),
                statistic=statistic,
                p_value=p_value,
                p_holm=math.nan,
                p_reason=reason,
            )
        )
    adjusted = holm([t.p_value for t in tests])
    return tuple(replace(t, p_holm=p) for t, p in zip(tests, adjusted))


def compare_many(
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "dice",
    metrics: Sequence[str] | None = None,
    allow_subset: bool = False,
) -> MultiComparison:
    """Compare two or more experiments on the same cases: table, ranking and tests.

    Per metric of ``metrics``, each experiment's mean ± sd over folds (each fold the mean of
    its cases) and its out-of-fold mean (all cases at once), over the cases every experiment
    scored, non-finite values left out and counted. The ranking is the ISLES 2022
    challenge's: each metric ranks the out-of-fold means in its better direction
    (:data:`evaluation.metrics.METRIC_DIRECTIONS`), the final place is the mean rank; beside
    it, the rank on every case averaged over cases and metrics. On ``metric``, over the cases
    whose value is finite for every experiment: the Friedman test for three experiments or
    more, then the two-sided Wilcoxon signed-rank test of every pair (``zero_method="wilcox"``,
    as :func:`compare_experiments`), Holm-adjusted over the pairs.

    Args:
        tables: ``display name -> out-of-fold rows`` (``{"case", "fold", <metric>: value}``),
            in the order the report lists them.
        metric: The tested column.
        metrics: The tabled and ranked columns (default: every column all rows carry that
            has a declared direction).
        allow_subset: Compare the cases every table scores and drop the rest (listed in
            ``only``) instead of refusing different case sets.

    Returns:
        The comparison; for two experiments also the paired comparison of ``metric``.

    Raises:
        ConfigurationError: For fewer than two experiments, a row without ``case`` or a
            compared column, a duplicated case, a non-numeric value, different case sets
            (without ``allow_subset``), no shared case, or a ranked metric without a declared
            direction.
    """
    names = tuple(tables)
    if len(names) < 2:
        raise ConfigurationError(
            f"A comparison needs two experiments or more; got {len(names)} ({list(names)})."
        )
    _check_tested_metric(tables, metric)
    paired = None
    if len(names) == 2:  # the paired report, with its own checks and messages
        paired = compare_experiments(
            tables[names[0]],
            tables[names[1]],
            metric=metric,
            names=(names[0], names[1]),
            allow_subset=allow_subset,
        )
    tested = {name: case_values(tables[name], metric, name) for name in names}
    shared, only = _shared_cases(tested, allow_subset, log_drop=paired is None)
    ranked = _ranked_metrics(tables, metrics)
    values = {
        m: tested if m == metric else {n: case_values(tables[n], m, n) for n in names}
        for m in ranked
    }
    folds = {name: _folds_of(tables[name]) for name in names}
    summaries = {m: {n: _summary(values[m][n], shared, folds[n]) for n in names} for m in ranked}
    ranking = mean_rank({n: {m: summaries[m][n].mean for m in ranked} for n in names}, ranked)
    case_rank = case_mean_rank(
        {n: {m: [values[m][n][c] for c in shared] for m in ranked} for n in names}
    )
    complete = [c for c in shared if all(math.isfinite(tested[n][c]) for n in names)]
    kept = set(complete)
    columns = {n: tuple(tested[n][c] for c in complete) for n in names}
    if len(names) >= 3:
        statistic, p_value, reason = friedman([columns[n] for n in names])
    else:
        statistic, p_value = math.nan, math.nan
        reason = "two experiments: their Wilcoxon signed-rank test is the whole test"
    return MultiComparison(
        names=names,
        metric=metric,
        metrics=ranked,
        cases=tuple(shared),
        folds={c: folds[names[0]].get(c) for c in shared},
        summaries=summaries,
        ranking=ranking,
        case_rank=case_rank,
        tested_cases=tuple(complete),
        values=columns,
        tested_rank=(
            case_mean_rank({n: {metric: columns[n]} for n in names})
            if metric in METRIC_DIRECTIONS
            else dict.fromkeys(names, math.nan)
        ),
        friedman_statistic=statistic,
        friedman_p=p_value,
        friedman_reason=reason,
        pairs=_pairwise(names, columns),
        nonfinite=tuple(c for c in shared if c not in kept),
        only=only,
        paired=paired,
    )
