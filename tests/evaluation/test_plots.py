"""Learning-curve plots from a CSVLogger metrics file."""

from __future__ import annotations

import csv

import matplotlib.image
import pytest

from evaluation.plots import plot_learning_curves

COLUMNS = [
    "epoch",
    "step",
    "train/loss_epoch",
    "val/loss",
    "val/dice",
    "val/dice_std",
    "val/global_dice",
]


def _metrics(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_curves_are_written_as_a_png(tmp_path):
    rows = []
    for epoch, dice in enumerate([0.1, 0.5, 0.4]):
        rows.append({"epoch": epoch, "step": 10 * epoch, "train/loss_epoch": 1 - dice})
        rows.append(
            {
                "epoch": epoch,
                "step": 10 * epoch,
                "val/loss": 1.2 - dice,
                "val/dice": dice,
                "val/dice_std": 0.1,
                "val/global_dice": dice + 0.1,
            }
        )
    out = plot_learning_curves(_metrics(tmp_path / "metrics.csv", rows), tmp_path / "c.png")
    assert out == tmp_path / "c.png"
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (400, 1000)  # 10×4 inches at 100 dpi
    assert image.std() > 0  # something was drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "metrics.csv"]  # no temp file


def test_nothing_is_drawn_before_the_first_validation(tmp_path):
    rows = [{"epoch": 0, "step": 5, "train/loss_epoch": 0.9}]
    assert plot_learning_curves(_metrics(tmp_path / "m.csv", rows), tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("mode", ["max", "min"])
def test_nan_epochs_do_not_break_the_best_marker(tmp_path, mode):
    rows = [{"epoch": 0, "step": 1, "val/dice": "nan"}, {"epoch": 1, "step": 2, "val/dice": 0.3}]
    path = plot_learning_curves(_metrics(tmp_path / "m.csv", rows), tmp_path / "c.png", mode=mode)
    assert path is not None and path.stat().st_size > 0
