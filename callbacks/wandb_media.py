"""Weights & Biases media of a run: per-case tables, figures and best values.

Two producers: :class:`~callbacks.case_report.CaseReport` logs each fold's best-epoch
case table and learning curves into the fold's own run (:func:`log_fold_media`), and the
cross-validation report logs the pooled tables and figures into one extra run per experiment
(:func:`log_cv_summary`, fed by :func:`cv_summary_payload`), in the experiment's group beside
its folds, with the W&B settings of the folds' logger (:func:`wandb_settings_of`). ``wandb`` is
imported inside the functions, so importing this module costs nothing for runs that do not use
W&B.
"""

from __future__ import annotations

import inspect
import logging
import pydoc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytorch_lightning.loggers import WandbLogger

from evaluation.report import read_case_table

if TYPE_CHECKING:
    import wandb

    from evaluation.cv_report import CVReport

log = logging.getLogger(__name__)

Row = Mapping[str, Any]


def _table(rows: Sequence[Row]) -> wandb.Table:
    """A ``wandb.Table`` of rows; columns in first-seen order, a cell absent from a row is None."""
    import wandb

    columns = list(dict.fromkeys(key for row in rows for key in row))
    data = [[row.get(column) for column in columns] for row in rows]
    # Mixed types: a report table may hold "-" where the paper gives no value.
    return wandb.Table(columns=list[str | int](columns), data=data, allow_mixed_types=True)


def _log_media(
    run: wandb.Run, tables: Mapping[str, Sequence[Row]], images: Mapping[str, Path | None]
) -> None:
    """Log the non-empty tables and the images that are not None in one step of ``run``."""
    import wandb

    payload: dict[str, Any] = {key: _table(rows) for key, rows in tables.items() if rows}
    payload.update({key: wandb.Image(str(path)) for key, path in images.items() if path})
    if payload:
        run.log(payload)


def log_fold_media(
    run: wandb.Run,
    table_rows: Sequence[Row],
    curves_path: Path | None,
    summary: Mapping[str, float],
    *,
    table_key: str = "val/cases_best",
    curves_key: str = "val/curves",
) -> None:
    """Log a fold's best-epoch case table and learning curves, and put its best into the summary.

    Args:
        run: The fold's W&B run (``WandbLogger.experiment`` on global rank 0).
        table_rows: Per-case rows ``{"case": name, <metric>: value, ...}``; nothing is logged
            for no rows.
        curves_path: The fold's ``curves.png``, or None if it was not drawn.
        summary: Values for the run summary, e.g. ``{"best/val/dice": 0.61, "best/epoch": 7}``.
        table_key: Key of the table.
        curves_key: Key of the image.
    """
    _log_media(run, {table_key: table_rows}, {curves_key: curves_path})
    run.summary.update(dict(summary))


@contextmanager
def _process_offline() -> Iterator[None]:
    """W&B offline for the whole process while the block runs; the previous mode after it.

    ``wandb.init(mode="offline")`` makes only the *run* offline. W&B 0.31 builds its own usage
    telemetry (``wandb.analytics``, an OpenTelemetry exporter to ``<base_url>/sdk/otel/v1/``)
    from the *process-wide* settings, which are online unless ``WANDB_MODE`` says otherwise:
    the run's first ``run.log()`` starts that exporter, and at its first export (at the latest
    when the process exits) it looks up the server's host name and POSTs to it. With the
    process-wide mode offline, W&B builds no exporter. (Lightning's ``WandbLogger(offline=True)``
    sets ``WANDB_MODE`` itself before its ``wandb.init``, so the folds' runs were not affected.)
    """
    import wandb

    previous = wandb.setup().settings.mode
    wandb.setup(settings=wandb.Settings(mode="offline"))
    try:
        yield
    finally:
        if previous != "offline":
            wandb.setup(settings=wandb.Settings(mode=previous))


def log_cv_summary(
    report_dir: Path,
    experiment: str,
    *,
    project: str,
    entity: str | None = None,
    offline: bool = True,
    run_id: str | None = None,
    tables: Mapping[str, Sequence[Row]],
    images: Mapping[str, Path],
    summary: Mapping[str, float],
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Log an experiment's cross-validation report as one W&B run in the experiment's group.

    The run is named ``<experiment>-cv`` with job type ``cv-report``, so it sits beside the
    fold runs (``fold0`` ...) of the same group. Everything is logged in one step, then the
    run is finished. Given the ``run_id`` of an earlier report, the same W&B run is resumed:
    its summary then holds the new values and its history one more step.

    Args:
        report_dir: Folder of the report; W&B writes its files to ``<report_dir>/wandb/``.
        experiment: Experiment name, the W&B group of its folds.
        project: W&B project (the folds' project, for the group to be shared).
        entity: W&B entity, or None for the default one.
        offline: Write the run locally only (``wandb sync <run folder>`` uploads it later),
            whatever ``WANDB_MODE`` says, and make no network connection at all.
        run_id: The W&B run id (kept by the caller, e.g. in the report's folder), or None for
            a new run.
        tables: Tables by key (e.g. ``"folds"``, ``"paper_vs_ours"``, ``"cases_oof"``), each a
            list of row dicts whose keys are the columns; an empty table is skipped.
        images: Image files by key (e.g. ``"dice_boxplot"``, ``"curves_all"``).
        summary: Values for the run summary (e.g. ``{"dice_mean": 0.58}``).
        config: The run's config, what W&B filters runs by (:func:`cv_summary_config`).

    Returns:
        The run folder, ``<report_dir>/wandb/offline-run-<time>-<id>`` when offline. Its media
        files are complete; its ``run-<id>.wandb`` log is closed by W&B's service process a
        moment after the run finishes (at the latest at ``wandb.teardown()`` or process exit).

    Raises:
        FileNotFoundError: An image file does not exist (checked before the run is created).
    """
    import wandb

    missing = {key: str(path) for key, path in images.items() if not Path(path).is_file()}
    if missing:
        raise FileNotFoundError(
            f"Cannot log the cross-validation report of {experiment!r} to W&B: image file(s) "
            f"not found: {missing}. Draw the figures before logging the report."
        )
    for key, rows in tables.items():
        if not rows:
            log.warning("W&B report of %s: table %r has no rows; not logged", experiment, key)
    report_dir.mkdir(parents=True, exist_ok=True)
    with _process_offline() if offline else nullcontext():
        run = wandb.init(
            project=project,
            entity=entity,
            group=experiment,
            name=f"{experiment}-cv",
            job_type="cv-report",
            config=dict(config or {}),
            id=run_id,
            resume="allow" if run_id else None,
            dir=report_dir,
            mode="offline" if offline else None,
            # Never finish or reuse a run that the calling process may have open.
            reinit="create_new",
        )
        run_dir = Path(run.sync_dir)
        try:
            _log_media(run, tables, dict(images))
            run.summary.update(dict(summary))
        finally:
            run.finish()
    return run_dir


def wandb_settings_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``init_args`` of the ``WandbLogger`` in a run's configuration (``{}`` without one)."""
    logger = (config.get("trainer") or {}).get("logger") or []
    for entry in logger if isinstance(logger, list) else [logger]:
        if not isinstance(entry, Mapping):
            continue
        found = pydoc.locate(str(entry.get("class_path", "")))
        if inspect.isclass(found) and issubclass(found, WandbLogger):
            return dict(entry.get("init_args") or {})
    return {}


def cv_summary_payload(
    report: CVReport, files: Mapping[str, Path]
) -> tuple[dict[str, Sequence[Row]], dict[str, Path], dict[str, float]]:
    """The tables, figures and summary values of a cross-validation report for
    :func:`log_cv_summary`, from the report and the files it wrote."""
    tables: dict[str, Sequence[Row]] = {"folds": read_case_table(files["folds"])}
    if "cases_oof" in files:
        tables["cases_oof"] = read_case_table(files["cases_oof"])
    if report.comparison:
        columns = ("metric", "paper", "paper_sd", "ours", "ours_sd", "difference", "how")
        tables["paper_vs_ours"] = [{k: row[k] for k in columns} for row in report.comparison]
    summary = {f"cv/{m}_mean": v["fold_mean"] for m, v in report.summary.items()}
    summary |= {f"cv/{m}_sd": v["fold_sd"] for m, v in report.summary.items()}
    images = {k: files[k] for k in ("dice_boxplot", "curves_all") if k in files}
    return tables, images, summary


def cv_summary_config(report: CVReport, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The config of a report's W&B run: the experiment's identity (name, paper, seed, metrics
    preset, monitored metric, folds), so that report runs can be filtered in W&B, and the
    recipe's settings under the keys the folds' runs log them with (the model's and the data
    module's arguments, e.g. ``optimizer``, ``image_size``), plus ``net``, ``loss``, the
    classes and the trainer's epochs and precision.

    Args:
        report: The cross-validation report.
        recipe: The experiment's recipe (``cv_config.yaml``, or a fold's ``config.yaml``
            without its per-run keys, :func:`core.recipe.recipe_of`).
    """
    model = recipe.get("model") or {}
    data = recipe.get("data") or {}
    trainer = recipe.get("trainer") or {}
    return {
        **(data.get("init_args") or {}),
        **(model.get("init_args") or {}),
        "model": model.get("class_path"),
        "data": data.get("class_path"),
        "max_epochs": trainer.get("max_epochs"),
        "precision": trainer.get("precision"),
        "experiment": report.experiment,
        "paper": report.paper,
        "seed": recipe.get("seed_everything"),
        "metrics": report.preset,
        "monitor": report.monitor,
        "num_folds": report.num_folds,
        "folds": [fold.fold for fold in report.folds],
        "complete": report.complete,
    }
