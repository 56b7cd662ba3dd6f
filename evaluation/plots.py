"""Plots of runs: learning curves from the ``metrics.csv`` that Lightning's CSVLogger writes,
the cross-validation figures (Dice per fold, the curves of all folds) and the comparison's
(cases per experiment, experiments on a rank axis)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE


def read_metrics_rows(metrics_csv: str | Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv``."""
    with Path(metrics_csv).open() as handle:
        return list(csv.DictReader(handle))


def save_figure(figure: Any, output: Path) -> Path:
    """Save a figure next to a temporary name, then rename (never half-written)."""
    import matplotlib.pyplot as plt

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(output)
    return output


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def epoch_series(rows: list[dict[str, str]], column: str) -> tuple[list[int], list[float]]:
    """``(epochs, values)`` of the rows where ``column`` is set (one value per epoch, the last)."""
    by_epoch: dict[int, float] = {}
    for row in rows:
        value, epoch = row.get(column, ""), row.get("epoch", "")
        if value not in ("", None) and epoch not in ("", None):
            by_epoch[int(float(epoch))] = float(value)
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def plot_learning_curves(
    metrics_csv: str | Path,
    output: str | Path,
    monitor: str = DEFAULT_MONITOR,
    mode: str = DEFAULT_MONITOR_MODE,
) -> Path | None:
    """Draw losses (left) and validation metrics (right) per epoch into a PNG.

    The right panel shows ``monitor`` with its per-case standard deviation as a band (when the
    preset logs ``<monitor>_std``), ``val/global_dice`` when present, and marks the best epoch.
    The file is written next to a temporary name and renamed, so it is never half-written.

    Args:
        metrics_csv: The run's ``metrics.csv``.
        output: PNG path to write.
        monitor: The metric that defines the best epoch.
        mode: ``"max"`` or ``"min"``.

    Returns:
        ``output``, or ``None`` if the CSV holds no epoch of ``monitor`` yet.
    """
    plt = pyplot()
    rows = read_metrics_rows(metrics_csv)
    epochs, values = epoch_series(rows, monitor)
    finite = [(e, v) for e, v in zip(epochs, values) if math.isfinite(v)]
    if not finite:
        return None
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for column, label in (("train/loss_epoch", "train loss"), ("val/loss", "val loss")):
        x, y = epoch_series(rows, column)
        if x:
            losses.plot(x, y, marker="o", markersize=3, label=label)
    losses.set(xlabel="epoch", ylabel="loss", title="Loss")
    if losses.lines:
        losses.legend()
    scores.plot(epochs, values, marker="o", markersize=3, label=monitor)
    x_std, std = epoch_series(rows, f"{monitor}_std")
    if x_std == epochs:
        low = [v - s for v, s in zip(values, std)]
        high = [v + s for v, s in zip(values, std)]
        scores.fill_between(epochs, low, high, alpha=0.2, label=f"{monitor} ± sd over cases")
    x_global, global_dice = epoch_series(rows, "val/global_dice")
    if x_global and monitor != "val/global_dice":
        scores.plot(x_global, global_dice, marker="s", markersize=3, label="val/global_dice")
    best_epoch, best = (max if mode == "max" else min)(finite, key=lambda item: item[1])
    scores.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
    right_half = best_epoch > (epochs[0] + epochs[-1]) / 2  # keep the label inside the axes
    scores.annotate(
        f"best {best:.3f} (epoch {best_epoch})",
        (best_epoch, best),
        textcoords="offset points",
        xytext=(-4 if right_half else 4, 6),
        ha="right" if right_half else "left",
        fontsize=8,
    )
    scores.set(xlabel="epoch", ylabel="score", title="Validation")
    scores.legend(fontsize=8)
    return save_figure(figure, Path(output))


def plot_fold_boxplots(
    dice_by_fold: dict[int, list[Any]], output: str | Path, metric: str = "Dice"
) -> Path | None:
    """Box plots of a per-case metric, one box per fold and one for all cases (out of fold),
    each case drawn as a point over its box. ``None`` when no fold has a case."""
    plt = pyplot()
    folds = {
        k: [float(v) for v in values if isinstance(v, float) and math.isfinite(v)]
        for k, values in dice_by_fold.items()
    }
    folds = {k: v for k, v in folds.items() if v}
    if not folds:
        return None
    data = [*folds.values(), [v for values in folds.values() for v in values]]
    labels = [f"fold {k}\n(n={len(v)})" for k, v in folds.items()] + [f"all\n(n={len(data[-1])})"]
    figure, axes = plt.subplots(figsize=(1.4 * len(data) + 2, 4), constrained_layout=True)
    axes.boxplot(data, showmeans=True)
    axes.set_xticks(range(1, len(data) + 1), labels)
    for position, values in enumerate(data, start=1):
        jitter = np.random.default_rng(position).uniform(-0.12, 0.12, len(values))
        axes.scatter(position + jitter, values, s=10, alpha=0.5, color="black", zorder=3)
    axes.set(ylabel=metric, title=f"{metric} over validation cases, per fold (triangle: mean)")
    axes.set_ylim(-0.02, 1.02)
    return save_figure(figure, Path(output))


def plot_fold_curves(
    metrics_by_fold: dict[int, Path], monitor: str, output: str | Path
) -> Path | None:
    """The training loss and ``monitor`` per epoch of every fold, in one figure."""
    plt = pyplot()
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    drawn = False
    for fold, path in sorted(metrics_by_fold.items()):
        if not Path(path).is_file():
            continue
        rows = read_metrics_rows(path)
        epochs, values = epoch_series(rows, monitor)
        if not epochs:
            continue
        drawn = True
        (line,) = scores.plot(epochs, values, marker="o", markersize=2, label=f"fold {fold}")
        x, y = epoch_series(rows, "train/loss_epoch")
        if x:
            losses.plot(x, y, color=line.get_color(), label=f"fold {fold}")
    if not drawn:
        plt.close(figure)
        return None
    losses.set(xlabel="epoch", ylabel="loss", title="Training loss")
    scores.set(xlabel="epoch", ylabel=monitor, title=f"Validation {monitor}")
    for axes in (losses, scores):
        if axes.lines:
            axes.legend(fontsize=8)
    return save_figure(figure, Path(output))


def plot_case_strips(
    values: Mapping[str, Sequence[float]], output: str | Path, ylabel: str, title: str
) -> Path | None:
    """One box per group (e.g. an experiment) with its cases jittered over it and its mean
    marked (triangle); non-finite values are left out. ``None`` when no group has a value."""
    plt = pyplot()
    groups = {
        name: [float(v) for v in column if math.isfinite(float(v))]
        for name, column in values.items()
    }
    if not any(groups.values()):
        return None
    figure, axes = plt.subplots(figsize=(1.6 * len(groups) + 2, 4.5), constrained_layout=True)
    axes.boxplot(list(groups.values()), showmeans=True, showfliers=False)
    labels = [f"{name}\n(n={len(column)})" for name, column in groups.items()]
    axes.set_xticks(range(1, len(groups) + 1), labels, rotation=15 if len(groups) > 3 else 0)
    for position, column in enumerate(groups.values(), start=1):
        jitter = np.random.default_rng(position).uniform(-0.15, 0.15, len(column))
        axes.scatter(position + jitter, column, s=10, alpha=0.5, color="black", zorder=3)
    axes.set(ylabel=ylabel, title=title)
    return save_figure(figure, Path(output))


def plot_rank_axis(
    rows: Mapping[str, Mapping[str, float]],
    output: str | Path,
    title: str,
    groups: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> Path:
    """Experiments on a rank axis (1 = best, on the left), one labelled row per ranking.

    Args:
        rows: ``row label -> experiment -> mean rank``.
        output: PNG path to write.
        title: The figure's title.
        groups: ``row label -> groups of experiments`` joined under that row by a bar (e.g.
            those no test tells apart), as in a critical-difference diagram.
    """
    plt = pyplot()
    names = {name for ranks in rows.values() for name in ranks}
    figure, axes = plt.subplots(figsize=(9, 1.0 + 1.3 * len(rows)), constrained_layout=True)
    for level, (label, ranks) in enumerate(rows.items()):
        y = -float(level)
        finite = {n: r for n, r in ranks.items() if math.isfinite(r)}
        axes.axhline(y, color="lightgrey", linewidth=1, zorder=1)
        axes.scatter(list(finite.values()), [y] * len(finite), s=30, zorder=3)
        for index, (name, rank) in enumerate(sorted(finite.items(), key=lambda item: item[1])):
            above = index % 2 == 0  # alternate sides so that close ranks stay readable
            axes.annotate(
                f"{name} ({rank:.2f})",
                (rank, y),
                textcoords="offset points",
                xytext=(0, 7 if above else -12),
                ha="center",
                fontsize=8,
            )
        axes.text(0.55, y + 0.3, label, fontsize=8, color="dimgrey", ha="left")
        for offset, group in enumerate((groups or {}).get(label, ())):
            spanned = [finite[n] for n in group if n in finite]
            if len(spanned) > 1:
                height = y - 0.28 - 0.06 * offset
                axes.plot([min(spanned), max(spanned)], [height] * 2, color="black", linewidth=3)
    axes.set_xlim(0.5, max(len(names), 2) + 0.5)
    axes.set_ylim(-len(rows) + 0.4, 0.6)
    axes.set_yticks([])
    axes.set(xlabel="mean rank (1 = best)", title=title)
    return save_figure(figure, Path(output))
