"""Grouped K-fold splits: the unit of a split is the patient (or subject), never the slice.

A patient's cases (the two slabs of an ISLES 2018 patient, the sessions of an ATLAS subject)
always land in the same fold, so no patient is seen in training and validation at once.
"""

from __future__ import annotations

import numpy as np


def _check_folds(num_folds: int, fold: int, units: int, unit_name: str) -> None:
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(
            f"fold must be in [0, {num_folds - 1}] for num_folds={num_folds}, got {fold}"
        )
    if units < num_folds:
        raise ValueError(
            f"Cannot make {num_folds} folds from {units} {unit_name}; lower num_folds or add cases."
        )


def grouped_kfold(
    groups: np.ndarray, num_folds: int, fold: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split items into train/validation by group, K-fold style.

    The unique groups are shuffled with ``seed`` and dealt into ``num_folds`` folds of nearly
    equal group count (``np.array_split``); fold ``fold`` is the validation set.

    Args:
        groups: ``(N,)`` group id (patient) of each item (case).
        num_folds: Number of folds K (≥ 2).
        fold: Validation fold, ``0 ≤ fold < K``.
        seed: Shuffle seed; the same seed gives the same folds on every machine.

    Returns:
        ``(train_items, val_items)``: sorted item indices.

    Raises:
        ValueError: If K < 2, the fold is out of range, or there are fewer groups than folds.
    """
    groups = np.asarray(groups)
    unique = np.unique(groups)
    _check_folds(num_folds, fold, len(unique), "patients")
    shuffled = np.random.default_rng(seed).permutation(unique)
    val_groups = np.array_split(shuffled, num_folds)[fold]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def slice_kfold(
    rows: np.ndarray, num_folds: int, fold: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split individual slices into train/validation, K-fold style, **ignoring the subject**.

    This reproduces VCA-Net's ``random_split`` of all slices (docs/papers.md §1): neighbouring slices
    of one subject land on both sides, so validation scores are optimistic. Use it only to
    reproduce that paper's numbers; :func:`grouped_kfold` is the honest split.

    Args:
        rows: ``(S,)`` slice rows to split.
        num_folds: Number of folds K (VCA-Net's 9:1 split is K = 10).
        fold: Validation fold, ``0 ≤ fold < K``.
        seed: Shuffle seed.

    Returns:
        ``(train_rows, val_rows)``, each sorted.

    Raises:
        ValueError: If K < 2, the fold is out of range, or there are fewer slices than folds.
    """
    rows = np.asarray(rows, dtype=np.int64)
    _check_folds(num_folds, fold, len(rows), "slices")
    folds = np.array_split(np.random.default_rng(seed).permutation(rows), num_folds)
    val_rows = np.sort(folds[fold])
    return np.setdiff1d(rows, val_rows), val_rows
