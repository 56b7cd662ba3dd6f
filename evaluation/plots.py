"""Learning curves of a run, drawn from the ``metrics.csv`` that Lightning's CSVLogger writes."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path


def _epoch_series(rows: list[dict[str, str]], column: str) -> tuple[list[int], list[float]]:
    """``(epochs, values)`` of the rows where ``column`` is set (one value per epoch, the last)."""
    by_epoch: dict[int, float] = {}
    for row in rows:
        value, epoch = row.get(column, ""), row.get("epoch", "")
        if value not in ("", None) and epoch not in ("", None):
            by_epoch[int(float(epoch))] = float(value)
    epochs = sorted(by_epoch)
    return epochs, [by_epoch[e] for e in epochs]


def plot_learning_curves(
    metrics_csv: str | Path, output: str | Path, monitor: str = "val/dice", mode: str = "max"
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
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with Path(metrics_csv).open() as handle:
        rows = list(csv.DictReader(handle))
    epochs, values = _epoch_series(rows, monitor)
    finite = [(e, v) for e, v in zip(epochs, values) if math.isfinite(v)]
    if not finite:
        return None
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for column, label in (("train/loss_epoch", "train loss"), ("val/loss", "val loss")):
        x, y = _epoch_series(rows, column)
        if x:
            losses.plot(x, y, marker="o", markersize=3, label=label)
    losses.set(xlabel="epoch", ylabel="loss", title="Loss")
    if losses.lines:
        losses.legend()
    scores.plot(epochs, values, marker="o", markersize=3, label=monitor)
    x_std, std = _epoch_series(rows, f"{monitor}_std")
    if x_std == epochs:
        low = [v - s for v, s in zip(values, std)]
        high = [v + s for v, s in zip(values, std)]
        scores.fill_between(epochs, low, high, alpha=0.2, label=f"{monitor} ± sd over cases")
    x_global, global_dice = _epoch_series(rows, "val/global_dice")
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
    output = Path(output)
    tmp = output.with_name(f".{output.stem}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(output)
    return output
