"""The folds of an experiment as a comparison reads them: its out-of-fold per-case rows and
each fold's validation cases, and the check that experiments were run on the same folds.

Experiments are compared case by case only when each case was held out by the same fold in
every experiment (the same ``split.json`` validation cases): otherwise the folds' means and
the per-case differences mix the methods with the splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigurationError
from core.protocols import Row
from core.run_layout import RunLayout
from evaluation.cv_report import build_report, read_split


@dataclass(frozen=True)
class FoldSplits:
    """The validation cases of each fold of an experiment, as its folds' ``split.json`` say.

    Attributes:
        num_folds: The number of folds of the split (``data.init_args.num_folds``).
        split_seed: The shuffle's seed (``data.init_args.split_seed``); ``None`` when the
            folds did not record it.
        unit: What was split: ``"patient"`` or ``"slice"`` (``None``: not recorded).
        val_cases: ``fold -> its validation cases``.
        val_slices: ``fold -> case -> held-out slice indices`` (slice splits only).
    """

    num_folds: int
    split_seed: int | None
    unit: str | None
    val_cases: dict[int, tuple[str, ...]]
    val_slices: dict[int, dict[str, tuple[int, ...]]]


def read_experiment(experiment_dir: str | Path) -> tuple[list[Row], FoldSplits]:
    """An experiment's out-of-fold per-case rows and its folds' splits.

    The rows are read from the folds themselves (:func:`evaluation.cv_report.build_report`,
    each fold's best per-case table), so the experiment's report need not have been written.

    Raises:
        ConfigurationError: For a folder without folds, or folds that do not form one split.
    """
    report = build_report(Path(experiment_dir))
    rows = [row for fold in report.folds for row in fold.cases]
    val_cases: dict[int, tuple[str, ...]] = {}
    val_slices: dict[int, dict[str, tuple[int, ...]]] = {}
    num_folds, seed, unit = report.num_folds, None, None
    for fold in report.folds:
        split = read_split(RunLayout(fold.run_dir))
        if split is None:  # stopped before its split was written: it scored no case
            continue
        val_cases[fold.fold] = tuple(str(case) for case in split.get("val_cases", ()))
        slices = split.get("val_slices") or {}
        val_slices[fold.fold] = {str(c): tuple(int(i) for i in v) for c, v in slices.items()}
        num_folds = int(split.get("num_folds", num_folds))
        seed = split.get("split_seed", seed)
        unit = split.get("unit", unit)
    splits = FoldSplits(
        num_folds=num_folds,
        split_seed=None if seed is None else int(seed),
        unit=unit,
        val_cases=val_cases,
        val_slices=val_slices,
    )
    return rows, splits


def _fold_difference(a: str, b: str, first: FoldSplits, other: FoldSplits) -> str | None:
    """How ``other``'s folds differ from ``first``'s, in words; ``None`` when they do not."""
    if first.num_folds != other.num_folds:
        return f"{a!r} has {first.num_folds} folds and {b!r} {other.num_folds}"
    if first.unit and other.unit and first.unit != other.unit:
        return f"{a!r} splits by {first.unit} and {b!r} by {other.unit}"
    for fold in sorted(set(first.val_cases) & set(other.val_cases)):
        mine, theirs = first.val_cases[fold], other.val_cases[fold]
        for case in mine:
            if case not in theirs:
                return f"fold {fold} holds out {case} in {a!r} but not in {b!r}"
        for case in theirs:
            if case not in mine:
                return f"fold {fold} holds out {case} in {b!r} but not in {a!r}"
        for case, slices in first.val_slices.get(fold, {}).items():
            if other.val_slices.get(fold, {}).get(case, slices) != slices:
                return f"fold {fold} holds out other slices of {case} in {a!r} than in {b!r}"
    return None


def _seed_text(splits: FoldSplits) -> str:
    return "not recorded" if splits.split_seed is None else str(splits.split_seed)


def check_same_folds(splits: Mapping[str, FoldSplits]) -> None:
    """Refuse experiments whose folds are not the same partition of the cases.

    Every experiment is checked against the first: the same number of folds, the same unit
    of the split, and in every fold both ran, the same validation cases (and slices). A fold
    that only one experiment ran is left to the case check of :func:`evaluation.compare_many.compare_many`.

    Args:
        splits: ``display name -> the experiment's folds`` (:func:`read_experiment`).

    Raises:
        ConfigurationError: Naming the two experiments, the first fold and case that differ,
            and the settings to re-run with.
    """
    (a, first), *others = splits.items()
    for b, other in others:
        difference = _fold_difference(a, b, first, other)
        if difference is None:
            continue
        raise ConfigurationError(
            f"Experiments {a!r} and {b!r} were not run on the same folds: {difference} "
            f"({a!r}: {first.num_folds} folds, split_seed {_seed_text(first)}; {b!r}: "
            f"{other.num_folds} folds, split_seed {_seed_text(other)}). Their fold means and "
            "per-case differences would mix the methods with the splits. Compare experiments "
            f"run on the same folds: re-run {b!r} on the folds of {a!r} (lightning-cv fit --config "
            f"… --data.init_args.num_folds {first.num_folds} --data.init_args.split_seed "
            f"{_seed_text(first)} --overwrite)."
        )
