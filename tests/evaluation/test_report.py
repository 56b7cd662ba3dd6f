"""Per-case tables as text: the mean row, infinite distances, and pooled voxel counts."""

from __future__ import annotations

import math

import numpy as np

from evaluation.metrics import atlas_dunet
from evaluation.report import format_case_table


def _dunet_rows() -> list[dict[str, float]]:
    """Two D-UNet cases: a large lesion found well, a small one missed (1 mm voxels)."""
    rows: list[dict[str, float]] = []
    for truth, found in ((1000, 900), (10, 0)):
        target = np.zeros((20, 20, 10), bool)
        target.reshape(-1)[:truth] = True
        pred = np.zeros_like(target)
        pred.reshape(-1)[:found] = True
        rows.append(atlas_dunet(pred, target, (1.0, 1.0, 1.0)))
    return rows


def test_voxel_counts_are_summed_and_pooled_into_the_global_dice_not_averaged() -> None:
    scores = _dunet_rows()
    rows = [{"case": name, **values} for name, values in zip(("big", "small"), scores)]
    text = format_case_table(rows, title="Per-case metrics")
    first, footer, pooled = (text.splitlines()[i] for i in (3, -2, -1))
    assert first.split()[-3:] == ["900", "0", "100"]  # counts as integers
    # The mean row: Dice averaged over cases, TP/FP/FN as sums (900 + 0, 0 + 0, 100 + 10).
    assert footer.split()[:2] == ["mean", f"{(scores[0]['dice'] + scores[1]['dice']) / 2:.4f}"]
    assert footer.split()[-6:] == ["Σ", "900", "Σ", "0", "Σ", "110"]
    pooled_dice = 2 * 900 / (2 * 900 + 0 + 110)  # the small missed lesion weighs little
    assert pooled == f"global_dice {pooled_dice:.4f} (2ΣTP / (2ΣTP + ΣFP + ΣFN) over 2 cases)"


def test_infinite_distances_are_counted_in_the_mean_row() -> None:
    rows = [{"case": "a", "dice": 0.5, "hd": 3.0}, {"case": "b", "dice": 0.0, "hd": math.inf}]
    footer = format_case_table(rows).splitlines()[-1]
    assert footer.split() == ["mean", "0.2500", "3.0000", "(1×inf)"]
    assert "global_dice" not in format_case_table(rows)
