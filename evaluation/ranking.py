"""Ranks and tests across several experiments: the challenge's mean rank, per-case ranks, the
Friedman test and Holm's correction of pairwise tests.

The ISLES 2022 challenge ranks teams the way :func:`mean_rank` does: each metric ranks the
teams by their mean over the test cases, in the metric's better direction, and the final
place is the mean of the per-metric ranks. :func:`case_mean_rank` ranks the experiments on
every case instead and averages over cases, which a few outlying cases move less. The better
direction of a metric is declared once, in :data:`evaluation.metrics.METRIC_DIRECTIONS`.

Ranks run from 1 (best) to the number of experiments; ties share the average of the ranks
they span (``scipy.stats.rankdata(method="average")``). A missing value (NaN: an experiment
without the metric, a case it did not score) ranks last; an infinite distance ranks where it
is, after every finite one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from core.errors import ConfigurationError
from evaluation.metrics import METRIC_DIRECTIONS, Direction


@dataclass(frozen=True)
class Ranking:
    """Experiments ranked on each metric and on the mean over metrics.

    Attributes:
        metrics: The ranked metrics, in the order given.
        ranks: ``experiment -> metric -> rank`` (1 = best; ties averaged).
        mean_rank: ``experiment -> mean of its ranks over metrics``.
        order: The experiments by mean rank, best first (ties in the order given).
    """

    metrics: tuple[str, ...]
    ranks: dict[str, dict[str, float]]
    mean_rank: dict[str, float]
    order: tuple[str, ...]


def direction_of(metric: str, directions: Mapping[str, Direction] = METRIC_DIRECTIONS) -> Direction:
    """Which way ``metric`` is better.

    Raises:
        ConfigurationError: For a metric without a declared direction (a voxel count, a column
            of another table), listing the metrics that have one.
    """
    if metric not in directions:
        raise ConfigurationError(
            f"Metric {metric!r} has no declared better direction, so experiments cannot be "
            f"ranked on it; rank on metrics among {sorted(directions)} (a new score declares "
            "its direction in evaluation.metrics.METRIC_DIRECTIONS)."
        )
    return directions[metric]


def rank_values(values: Sequence[float], direction: Direction) -> np.ndarray:
    """Ranks of ``values`` (1 = best in ``direction``; ties averaged; NaN last)."""
    losses = np.asarray(values, dtype=np.float64)
    if direction == "higher":
        losses = -losses
    return stats.rankdata(np.where(np.isnan(losses), np.inf, losses), method="average")


def mean_rank(
    scores: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] | None = None,
    directions: Mapping[str, Direction] = METRIC_DIRECTIONS,
) -> Ranking:
    """Rank experiments on each metric by one score each, then on their mean rank (ISLES 2022).

    Args:
        scores: ``experiment -> metric -> score``, e.g. the out-of-fold mean of each metric.
            The experiments' order breaks ties of the mean rank.
        metrics: The metrics to rank on (default: those of the first experiment). An
            experiment without one of them ranks last on it.
        directions: ``metric -> "higher" | "lower"`` (default: the suite's declarations).

    Returns:
        The ranking; with no metric, every mean rank is NaN and the order is the one given.

    Raises:
        ConfigurationError: For a metric without a declared direction.
    """
    names = list(scores)
    chosen = tuple(metrics if metrics is not None else next(iter(scores.values()), {}))
    ranks: dict[str, dict[str, float]] = {name: {} for name in names}
    for metric in chosen:
        values = [scores[name].get(metric, math.nan) for name in names]
        for name, rank in zip(names, rank_values(values, direction_of(metric, directions))):
            ranks[name][metric] = float(rank)
    means = {
        name: float(np.mean(list(ranks[name].values()))) if chosen else math.nan for name in names
    }
    order = sorted(names, key=lambda name: (np.nan_to_num(means[name]), names.index(name)))
    return Ranking(metrics=chosen, ranks=ranks, mean_rank=means, order=tuple(order))


def case_mean_rank(
    values: Mapping[str, Mapping[str, Sequence[float]]],
    directions: Mapping[str, Direction] = METRIC_DIRECTIONS,
) -> dict[str, float]:
    """Each experiment's rank on every case, averaged over cases, then over metrics.

    Args:
        values: ``experiment -> metric -> per-case values``, the cases in the same order for
            every experiment and metric.
        directions: ``metric -> "higher" | "lower"``.

    Returns:
        ``experiment -> mean rank``; NaN when there is no case or no metric.

    Raises:
        ConfigurationError: For a metric without a declared direction, or per-case columns
            of different lengths.
    """
    names = list(values)
    metrics = list(next(iter(values.values()), {}))
    per_metric: list[np.ndarray] = []
    for metric in metrics:
        columns = [np.asarray(values[name][metric], dtype=np.float64) for name in names]
        if len({column.size for column in columns}) != 1:
            raise ConfigurationError(
                f"The per-case {metric} values of {names} differ in length "
                f"({[column.size for column in columns]}); pass the same cases, in one order, "
                "for every experiment."
            )
        if columns[0].size == 0:
            continue
        table = np.stack(columns, axis=1)  # (cases, experiments)
        direction = direction_of(metric, directions)
        ranks = np.stack([rank_values(row, direction) for row in table])
        per_metric.append(ranks.mean(axis=0))
    if not per_metric:
        return {name: math.nan for name in names}
    mean = np.mean(per_metric, axis=0)
    return {name: float(rank) for name, rank in zip(names, mean)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    With the ``m`` p-values sorted ascending, ``p_(1) ≤ … ≤ p_(m)``, the adjusted value of the
    ``i``-th is ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``: the smallest is multiplied by
    ``m`` (Bonferroni), the next by ``m − 1``, and so on, kept non-decreasing. Rejecting where
    the adjusted value is below α controls the family-wise error rate at α under any
    dependence between the tests. A NaN (a test that was not run) stays NaN and does not count
    in ``m``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    running = 0.0
    for step, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (tested.size - step) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def friedman(columns: Sequence[Sequence[float]]) -> tuple[float, float, str | None]:
    """The Friedman test of ``k ≥ 3`` experiments over the same cases.

    ``scipy.stats.friedmanchisquare`` on the columns (one per experiment, the cases in one
    order), with its tie correction and chi-square approximation. It is not run, and the
    reason is returned, when every case scores all experiments the same (the statistic is
    0/0), or when even the largest statistic the cases allow, ``n (k − 1)`` (every case ranks
    the experiments alike), would not reach p < 0.05.

    Returns:
        ``(statistic, p, reason)``; the first two NaN and ``reason`` set when not run.

    Raises:
        ValueError: For fewer than 3 columns or columns of different lengths (a caller's bug).
    """
    table = np.asarray(columns, dtype=np.float64)  # (experiments, cases)
    if table.ndim != 2 or table.shape[0] < 3:
        raise ValueError(f"friedman needs 3 or more columns of equal length; got {table.shape}.")
    k, n = table.shape
    if n == 0 or np.all(table == table[0]):
        return math.nan, math.nan, "every case scores all experiments the same"
    if stats.chi2.sf(n * (k - 1), k - 1) >= 0.05:
        reason = (
            f"with {n} case(s) and {k} experiments the test cannot reach p < 0.05 (its largest "
            f"statistic, {n * (k - 1)}, has p = {stats.chi2.sf(n * (k - 1), k - 1):.3g})"
        )
        return math.nan, math.nan, reason
    result = stats.friedmanchisquare(*table)
    return float(result.statistic), float(result.pvalue), None
