"""The cross-validation report of an experiment: its folds, out of fold, beside the paper.

It reads only what the folds wrote into ``runs/<experiment>/fold<k>/`` (``config.yaml``,
``split.json``, ``metrics.csv``, ``val_cases_best.csv``, ``fit_done.json``; the names are
:class:`core.run_layout.RunLayout`'s), so it works for any module that validates whole cases.
It refuses folds trained with different recipes (:mod:`core.recipe`): a mean over folds of two
configurations is no result of either. It writes ``runs/<experiment>/report/``
(:class:`core.run_layout.ReportLayout`):

``folds.csv``         one row per fold: the best epoch and the mean of every metric over the
                      fold's validation cases (pooled ``global_dice`` where the preset has it)
``cases_oof.csv``     out of fold: every training case once, scored by the model of the fold
                      that held it out, with every metric of the preset
``summary.json``      all of it as numbers: fold values, mean ± sd over folds, pooled values,
                      the paper comparison and the chosen post-processing (``postprocessing``)
``report.md``         the tables as a researcher reads them, ours beside the paper's
``dice_boxplot.png``  per-fold box plots of Dice over cases
``curves_all.png``    the validation curves of all folds in one figure

Conventions: the spread over folds is the sample standard deviation (``ddof = 1``), the one
seed 003's Table 1 uses (0.54 ± 0.09 from its five folds; ``ddof = 0`` would give 0.08); the
spread over cases is the population standard deviation, as the per-run reports give it.
Non-finite per-case values are left out of means; the infinite ones (a Hausdorff distance
with one empty mask) are counted.

Post-processing is chosen here, from the folds' ``val_postprocessing_best.csv`` (each
candidate's Dice and lesion F1 per validation case, scored at the best epoch): the means over
the out-of-fold cases go to :func:`evaluation.postprocessing.select`. Folds written before
those tables existed give ``none``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, DEFAULT_PRESET
from core.errors import ConfigurationError, DataValidationError
from core.io import write_text
from core.legacy import upgrade_config
from core.protocols import Row
from core.recipe import recipe_differences, recipe_of
from core.run_layout import (
    ExperimentLayout,
    ReportLayout,
    RunLayout,
    fold_number,
    training_folder_error,
)
from evaluation.metrics import PRESET_METRICS, VOXEL_COUNT_METRICS
from evaluation.plots import epoch_series, read_metrics_rows
from evaluation.postprocessing import CANDIDATE_METRICS, NONE, select
from evaluation.published import PublishedResult, get_published
from evaluation.report import global_dice, read_case_table, write_case_table

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """What one fold contributes to the report."""

    fold: int
    run_dir: Path
    finished: bool
    best_epoch: int | None
    monitor_value: float | None
    cases: list[Row] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    candidates: list[Row] = field(default_factory=list)


@dataclass
class CVReport:
    """The numbers of an experiment's cross-validation."""

    experiment: str
    experiment_dir: Path
    num_folds: int
    preset: str
    monitor: str
    paper: str | None
    folds: list[FoldResult]
    missing: list[int]
    metrics: list[str]
    summary: dict[str, dict[str, float]]
    pooled: dict[str, float]
    comparison: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    postprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing and all(f.finished for f in self.folds)


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, float) and math.isfinite(v)]


def case_summary(rows: Sequence[Row], metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over the cases' finite values, the number of infinite ones
    (``<metric>_inf``: a distance with exactly one empty mask), and ``global_dice`` when the
    rows carry voxel counts. A metric a table lacks (written before its preset had it) or
    leaves empty has no mean (NaN) and is no infinite value."""
    values: dict[str, float] = {}
    for metric in metrics:
        if metric in VOXEL_COUNT_METRICS:
            continue
        column = [r.get(metric) for r in rows]
        finite = _finite(column)
        values[metric] = float(np.mean(finite)) if finite else math.nan
        infinite = sum(isinstance(v, float) and math.isinf(v) for v in column)
        if infinite:
            values[f"{metric}_inf"] = float(infinite)
    if rows and all(k in rows[0] for k in VOXEL_COUNT_METRICS):
        values["global_dice"] = global_dice(rows)
    return values


def _load_config(run: RunLayout) -> dict[str, Any]:
    """A fold's configuration as today's release reads it."""
    try:
        config = yaml.safe_load(run.config.read_text()) or {}
    except yaml.YAMLError as error:
        raise DataValidationError(
            f"{run.config} is not readable YAML ({str(error).splitlines()[0]}): the fold's "
            "configuration was cut off or edited. Restore it from the fold's checkpoint or re-run "
            "the fold."
        ) from error
    return upgrade_config(config)[0]


def _check_one_recipe(configs: dict[int, dict[str, Any]], experiment_dir: Path) -> None:
    """Refuse folds trained with different recipes.

    Raises:
        ConfigurationError: Naming the folds and the keys that differ.
    """
    (first, reference), *others = configs.items()
    recipe = recipe_of(reference)
    for fold, config in others:
        changed = recipe_differences(recipe, recipe_of(config))
        if changed:
            keys = ", ".join(changed[:6]) + (" …" if len(changed) > 6 else "")
            raise ConfigurationError(
                f"The folds of {experiment_dir} were trained with different recipes: fold "
                f"{fold} differs from fold {first} in {keys}. A mean over them would be no "
                "result of either. Re-run the odd folds with the experiment's configuration "
                "(lightning-cv fit --config … --overwrite), or report them as two experiments."
            )


def _best_from_metrics(run: RunLayout, monitor: str, mode: str) -> tuple[int | None, float | None]:
    path = run.metrics
    if not path.is_file():
        return None, None
    epochs, values = epoch_series(read_metrics_rows(path), monitor)
    finite = [(e, v) for e, v in zip(epochs, values) if math.isfinite(v)]
    if not finite:
        return None, None
    return (max if mode == "max" else min)(finite, key=lambda item: item[1])


def _read_fold(
    fold: int, run: RunLayout, metrics: Sequence[str], monitor: str, mode: str
) -> FoldResult:
    best_epoch, value = _best_from_metrics(run, monitor, mode)
    if best_epoch is None and run.fit_done.is_file():
        log.warning(
            "%s: no %s value in it (cut off or deleted?): fold %d's best epoch is unknown; its "
            "numbers come from %s",
            run.metrics,
            monitor,
            fold,
            run.val_cases_best.name,
        )
    table = run.val_cases_best
    rows = read_case_table(table) if table.is_file() else []
    candidates = run.val_postprocessing_best
    return FoldResult(
        fold=fold,
        run_dir=run.root,
        finished=run.fit_done.is_file(),
        best_epoch=best_epoch,
        monitor_value=value,
        cases=[
            {"case": r["case"], "fold": fold, **{k: v for k, v in r.items() if k != "case"}}
            for r in rows
        ],
        values=case_summary(rows, metrics),
        candidates=read_case_table(candidates) if candidates.is_file() else [],
    )


def read_split(run: RunLayout) -> dict[str, Any] | None:
    """A fold's ``split.json`` (its ``val_cases`` at least); ``None`` when the fold has none
    (its fit stopped before the DataModule's setup wrote it).

    Raises:
        DataValidationError: For a file that is not a split (cut off, edited), naming it.
    """
    path = run.split
    if not path.is_file():
        return None
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(split, dict) or not isinstance(split.get("val_cases"), list):
            raise ValueError("no list of val_cases")
    except (OSError, ValueError) as error:
        raise DataValidationError(
            f"{path} is not a fold's split ({error}): it was cut off or edited. Copy the fold "
            "folder again, or re-run the fold (lightning-cv fit --config … --folds "
            f"{fold_number(run.root.name)} --overwrite)."
        ) from error
    return split


def _check_out_of_fold(folds: Sequence[FoldResult]) -> list[str]:
    """Every scored case belongs to its fold's validation cases (``split.json``) and to no
    other fold's; returns notes on validation cases a fold did not score.

    Raises:
        ConfigurationError: For a table that is not from its fold's split, or a case that two
            folds hold out (folds made with different seeds or fold counts).
    """
    notes: list[str] = []
    seen: dict[str, int] = {}
    for fold in folds:
        run = RunLayout(fold.run_dir)
        split = read_split(run)
        if split is None:
            if not fold.cases:
                continue  # a fold stopped before its first validation: nothing to check
            raise DataValidationError(
                f"{run.split} is missing, but {run.val_cases_best.name} beside it scores "
                f"{len(fold.cases)} case(s): without the split, the report cannot tell that they "
                "are this fold's validation cases. Copy the fold folder again with its "
                f"split.json, or re-run the fold (lightning-cv fit --config … --folds {fold.fold} "
                "--overwrite)."
            )
        expected = set(split["val_cases"])
        got = [str(r["case"]) for r in fold.cases]
        foreign = sorted(set(got) - expected)
        if foreign:
            raise ConfigurationError(
                f"{run.val_cases_best} scores case(s) that are not validation "
                f"cases of the fold's split.json ({', '.join(foreign[:3])}): the table is not from "
                "this split. Re-run the fold's validation (lightning validate --ckpt_path best)."
            )
        if fold.cases and len(set(got)) < len(expected):
            notes.append(
                f"fold {fold.fold} scored {len(set(got))} of its {len(expected)} validation cases "
                "(trainer.limit_val_batches?): the out-of-fold table is incomplete."
            )
        for case in got:
            if case in seen and split.get("unit") != "slice":
                raise ConfigurationError(
                    f"Case {case} is a validation case of fold {seen[case]} and fold {fold.fold}: "
                    f"the folds of {fold.run_dir.parent} were not made with one split seed and "
                    "fold count. Re-run them with the same configuration."
                )
            seen[case] = fold.fold
    return notes


def choose_postprocessing(folds: Sequence[FoldResult]) -> dict[str, Any]:
    """The post-processing chosen from the folds' candidate tables, out of fold.

    Returns:
        ``{"choice", "reason", "cases", "candidates": {choice: {"dice", "lesion_f1"}},
        "before": none's means, "after": the choice's means}``; ``choice`` is ``none`` with the
        reason when a fold that scored cases has no candidate table (an older run).
    """
    scored = [f for f in folds if f.cases]
    without = [f.fold for f in scored if not f.candidates]
    if not scored or without:
        reason = (
            "no fold scored validation cases"
            if not scored
            else f"fold(s) {', '.join(map(str, without))} have no val_postprocessing_best.csv "
            "(trained before the suite scored post-processing); kept none"
        )
        return {"choice": NONE, "reason": reason, "cases": 0, "candidates": {}}
    columns: dict[str, dict[str, list[float]]] = {}
    cases = set()
    for fold in scored:
        for row in fold.candidates:
            cases.add((fold.fold, str(row["case"])))
            entry = columns.setdefault(str(row["postprocessing"]), {})
            for metric in CANDIDATE_METRICS:
                entry.setdefault(metric, []).append(row.get(metric, math.nan))
    means = {
        choice: {metric: _spread(values, ddof=0)[0] for metric, values in entry.items()}
        for choice, entry in columns.items()
    }
    choice, reason = select(means)
    return {
        "choice": choice,
        "reason": reason,
        "cases": len(cases),
        "candidates": means,
        "before": means.get(NONE, {}),
        "after": means.get(choice, {}),
    }


def _spread(values: Sequence[Any], ddof: int) -> tuple[float, float]:
    finite = _finite(list(values))
    if not finite:
        return math.nan, math.nan
    sd = float(np.std(finite, ddof=ddof)) if len(finite) > ddof else math.nan
    return float(np.mean(finite)), sd


def _compare(
    published: PublishedResult,
    folds: Sequence[FoldResult],
    summary: dict[str, dict[str, float]],
    pooled: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per metric the paper reports: its value, ours measured the same way, the gap."""
    rows = []
    cross_validated = "cross-validation" in published.protocol.lower()
    for metric, value in published.metrics.items():
        if metric in published.pooled:
            ours, ours_sd, how = pooled.get(metric, math.nan), None, "pooled over cases"
        elif cross_validated or value.folds:
            stats = summary.get(metric, {})
            ours, ours_sd = stats.get("fold_mean", math.nan), stats.get("fold_sd", math.nan)
            how = "mean ± sd over folds"
        else:
            stats = summary.get(metric, {})
            ours, ours_sd = stats.get("case_mean", math.nan), stats.get("case_sd", math.nan)
            how = "mean ± sd over cases (out of fold)"
        ours_folds = [f.values.get(metric, math.nan) for f in folds] if value.folds else None
        rows.append(
            {
                "metric": metric,
                "paper": value.mean,
                "paper_sd": value.sd,
                "paper_folds": value.folds,
                "ours": ours,
                "ours_sd": ours_sd,
                "ours_folds": ours_folds,
                "difference": ours - value.mean if math.isfinite(ours) else math.nan,
                "how": how,
            }
        )
    return rows


def build_report(experiment_dir: Path) -> CVReport:
    """Read the folds of ``runs/<experiment>`` and compute the report's numbers.

    Raises:
        ConfigurationError: For a folder without folds (a model or fold folder among them), or
            folds that do not form one split.
    """
    experiment_dir = Path(experiment_dir)
    other_folder = training_folder_error(experiment_dir)
    if other_folder is not None:
        raise ConfigurationError(other_folder)
    fold_runs = ExperimentLayout(experiment_dir).folds()
    if not fold_runs:
        what = (
            "holds no fold folder (fold<k>/config.yaml)"
            if experiment_dir.is_dir()
            else "does not exist"
        )
        raise ConfigurationError(
            f"{experiment_dir} {what}: run the folds first (lightning-cv fit --config "
            "experiments/<recipe>.yaml), or pass runs/<experiment>."
        )
    configs = {fold: _load_config(run) for fold, run in fold_runs.items()}
    _check_one_recipe(configs, experiment_dir)
    config = next(iter(configs.values()))
    data_args = (config.get("data") or {}).get("init_args") or {}
    model_args = (config.get("model") or {}).get("init_args") or {}
    num_folds = int(data_args.get("num_folds", len(fold_runs)))
    preset = str(model_args.get("metrics", DEFAULT_PRESET))
    monitor = str(model_args.get("monitor", DEFAULT_MONITOR))
    mode = str(model_args.get("monitor_mode", DEFAULT_MONITOR_MODE))
    paper = config.get("paper")
    metrics = [m for m in PRESET_METRICS.get(preset, ("dice",))]
    folds = [_read_fold(k, run, metrics, monitor, mode) for k, run in fold_runs.items()]
    notes = _check_out_of_fold(folds)
    missing = [k for k in range(num_folds) if k not in fold_runs]
    names = [m for m in metrics if m not in VOXEL_COUNT_METRICS]
    all_cases = [row for fold in folds for row in fold.cases]
    pooled = case_summary(all_cases, metrics)
    if "global_dice" in pooled:
        names.append("global_dice")
    summary: dict[str, dict[str, float]] = {}
    for metric in names:
        fold_mean, fold_sd = _spread([f.values.get(metric, math.nan) for f in folds], ddof=1)
        entry = {"fold_mean": fold_mean, "fold_sd": fold_sd}
        if metric != "global_dice":
            entry["case_mean"], entry["case_sd"] = _spread(
                [r.get(metric) for r in all_cases], ddof=0
            )
        summary[metric] = entry
    comparison = _compare(get_published(paper), folds, summary, pooled) if paper else []
    return CVReport(
        experiment=experiment_dir.name,
        experiment_dir=experiment_dir,
        num_folds=num_folds,
        preset=preset,
        monitor=monitor,
        paper=paper,
        folds=folds,
        missing=missing,
        metrics=names,
        summary=summary,
        pooled=pooled,
        comparison=comparison,
        notes=notes,
        postprocessing=choose_postprocessing(folds),
    )


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–" if math.isnan(value) else "inf"
    return f"{value:.{digits}f}"


def _pm(mean: float | None, sd: float | None) -> str:
    return _number(mean) + ("" if sd is None or not math.isfinite(sd) else f" ± {_number(sd)}")


def format_report(report: CVReport) -> str:
    """The report as Markdown (also what the command prints)."""
    lines = [f"# Cross-validation report: {report.experiment}", ""]
    state = "complete" if report.complete else "INCOMPLETE"
    lines.append(
        f"{len(report.folds)} of {report.num_folds} folds ({state}); metrics preset "
        f"`{report.preset}`; each fold scored at its best epoch by `{report.monitor}`."
    )
    if report.missing:
        lines.append(f"Missing folds: {', '.join(map(str, report.missing))}.")
    lines += report.notes
    unfinished = [f.fold for f in report.folds if not f.finished]
    if unfinished:
        lines.append(f"Folds still training or interrupted: {', '.join(map(str, unfinished))}.")
    lines += ["", "## Folds", ""]
    header = ["fold", "cases", "best epoch", *report.metrics]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for fold in report.folds:
        epoch = "?" if fold.best_epoch is None else str(fold.best_epoch)
        cells = [str(fold.fold), str(len(fold.cases)), epoch]
        cells += [_number(fold.values.get(m)) for m in report.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    means = ["mean ± sd", "", ""] + [
        _pm(report.summary[m]["fold_mean"], report.summary[m]["fold_sd"]) for m in report.metrics
    ]
    lines.append("| " + " | ".join(means) + " |")
    pooled = ["out of fold", str(sum(len(f.cases) for f in report.folds)), ""] + [
        _pm(
            report.summary[m].get("case_mean", report.pooled.get(m)),
            report.summary[m].get("case_sd"),
        )
        for m in report.metrics
    ]
    lines.append("| " + " | ".join(pooled) + " |")
    infinite = {m: report.pooled[f"{m}_inf"] for m in report.metrics if f"{m}_inf" in report.pooled}
    if infinite:
        lines.append("")
        lines.append(
            "Cases with exactly one empty mask (distance = inf, left out of the means): "
            + ", ".join(f"{m} {int(n)}" for m, n in infinite.items())
        )
    lines += ["", "## Beside the paper", ""]
    if not report.paper:
        lines.append("No published result is named (set `paper:` in the experiment YAML).")
    else:
        published = get_published(report.paper)
        lines.append(
            f"`{report.paper}`: {published.paper.citation}, {published.paper.title} "
            f"({published.paper.venue}), {published.source}; {published.dataset}, "
            f"{published.protocol}."
        )
        if published.note:
            lines.append(f"Note: {published.note}")
        lines.append("")
        if not report.comparison:
            lines.append("The paper gives no number for this variant.")
        else:
            lines.append("| metric | paper | ours | ours − paper | ours measured as |")
            lines.append("|---|---|---|---|---|")
            for row in report.comparison:
                lines.append(
                    f"| {row['metric']} | {_pm(row['paper'], row['paper_sd'])} | "
                    f"{_pm(row['ours'], row['ours_sd'])} | {_number(row['difference'])} | {row['how']} |"
                )
            with_folds = [r for r in report.comparison if r["paper_folds"]]
            for row in with_folds:
                lines += ["", f"Fold-wise {row['metric']}:", ""]
                k = max(len(row["paper_folds"]), len(row["ours_folds"] or []))
                lines.append("| | " + " | ".join(f"fold {i}" for i in range(k)) + " |")
                lines.append("|---|" + "---|" * k)
                lines.append(
                    "| paper | " + " | ".join(_number(v, 2) for v in row["paper_folds"]) + " |"
                )
                lines.append("| ours | " + " | ".join(_number(v) for v in row["ours_folds"]) + " |")
                lines.append("")
                lines.append(
                    "Paper folds are in the paper's order; their patients are not ours, so compare "
                    "the mean ± sd, not fold against fold."
                )
    lines += _format_postprocessing(report.postprocessing)
    figures = ExperimentLayout(report.experiment_dir).report
    lines += [
        "",
        f"![Dice over cases per fold]({figures.dice_boxplot.name})",
        "",
        f"![Validation curves of all folds]({figures.curves_all.name})",
        "",
    ]
    return "\n".join(lines)


def _format_postprocessing(chosen: dict[str, Any]) -> list[str]:
    """The report's post-processing section: the choice, why, and each candidate's means."""
    if not chosen:
        return []
    lines = ["", "## Post-processing", ""]
    lines.append(f"Chosen: `{chosen['choice']}` ({chosen['reason']}).")
    candidates = chosen.get("candidates") or {}
    if candidates:
        lines += [
            f"Means over {chosen['cases']} out-of-fold cases at each fold's best epoch "
            "(`lightning-cv predict` applies the choice to the masks it writes):",
            "",
            "| post-processing | dice | lesion_f1 |",
            "|---|---|---|",
        ]
        for choice, values in candidates.items():
            name = f"**{choice}**" if choice == chosen["choice"] else choice
            cells = [_number(values.get(m)) for m in CANDIDATE_METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(report: CVReport, out_dir: Path | None = None) -> dict[str, Path]:
    """Write the report's files (each atomically); return them by name."""
    from evaluation.plots import plot_fold_boxplots, plot_fold_curves

    layout = (
        ReportLayout(Path(out_dir))
        if out_dir is not None
        else ExperimentLayout(report.experiment_dir).report
    )
    out = layout.root
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    fold_rows = [
        {
            "fold": f.fold,
            "cases": len(f.cases),
            "best_epoch": f.best_epoch,
            "finished": f.finished,
            **f.values,
        }
        for f in report.folds
    ]
    files["folds"] = write_case_table(layout.folds, fold_rows) or layout.folds
    oof = sorted((r for f in report.folds for r in f.cases), key=lambda r: str(r["case"]))
    if oof:
        files["cases_oof"] = write_case_table(layout.cases_oof, oof) or layout.cases_oof
    summary = {
        "experiment": report.experiment,
        "complete": report.complete,
        "num_folds": report.num_folds,
        "missing_folds": report.missing,
        "preset": report.preset,
        "monitor": report.monitor,
        "paper": report.paper,
        "folds": [
            {k: v for k, v in asdict(f).items() if k not in ("cases", "run_dir", "candidates")}
            for f in report.folds
        ],
        "summary": report.summary,
        "pooled": report.pooled,
        "comparison": report.comparison,
        "notes": report.notes,
        "postprocessing": report.postprocessing,
    }
    files["summary"] = write_text(layout.summary, json.dumps(_json_safe(summary), indent=1))
    box = plot_fold_boxplots(
        {f.fold: [r.get("dice") for r in f.cases] for f in report.folds}, layout.dice_boxplot
    )
    curves = plot_fold_curves(
        {f.fold: RunLayout(f.run_dir).metrics for f in report.folds},
        report.monitor,
        layout.curves_all,
    )
    files.update(
        {k: v for k, v in (("dice_boxplot", box), ("curves_all", curves)) if v is not None}
    )
    files["report"] = write_text(layout.markdown, format_report(report))
    return files
