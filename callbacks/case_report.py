"""The per-case reports of a run: validation and test tables, learning curves, W&B media."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from callbacks.wandb_media import log_fold_media
from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, MonitorMode
from core.protocols import CaseTableSource, PostprocessingTableSource, Row
from core.run_layout import RunLayout
from evaluation.plots import plot_learning_curves
from evaluation.report import format_case_table, read_case_table, write_case_table

log = logging.getLogger(__name__)


class CaseReport(pl.Callback):
    """Writes the per-case tables of validation (last and best epoch) and test, and the curves.

    Files in the run directory (``trainer.log_dir``): ``val_cases_last.csv`` (latest
    validation), ``val_cases_best.csv`` (the epoch with the best ``monitor``, i.e. the best
    checkpoint), beside each ``val_postprocessing_{last,best}.csv`` (the post-processing
    candidates' Dice and lesion F1 per case, from which the cross-validation report chooses),
    ``test_cases.csv`` and ``curves.png`` (losses and validation metrics per epoch,
    drawn at the end of ``fit`` from the CSV logger's ``metrics.csv``). The best value and
    epoch are part of checkpoints, so a resumed run keeps its best table. The rows come from
    the module's ``case_table`` (case names included), never from the DataModule. With a
    ``WandbLogger``, the end of ``fit`` also logs the best table (``val/cases_best``) and the
    curves (``val/curves``) to the W&B run, and ``best/<monitor>`` and ``best/epoch`` to its
    summary.

    Args:
        monitor: Metric that defines "best" (the ``lightning`` command links the model's).
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self, monitor: str = DEFAULT_MONITOR, mode: MonitorMode = DEFAULT_MONITOR_MODE
    ) -> None:
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")

    @staticmethod
    def _rows(pl_module: pl.LightningModule) -> list[Row]:
        """The module's per-case rows of its last evaluation epoch (none for other modules)."""
        return pl_module.case_table if isinstance(pl_module, CaseTableSource) else []

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run before the module's hook, which is where
        # the per-case table of this epoch is computed.
        if trainer.sanity_checking:
            return
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is None or not trainer.is_global_zero:
            return
        run, rows = RunLayout(Path(log_dir)), self._rows(pl_module)
        candidates = (
            pl_module.postprocessing_table
            if isinstance(pl_module, PostprocessingTableSource)
            else []
        )
        write_case_table(run.val_cases_last, rows)
        write_case_table(run.val_postprocessing_last, candidates)
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and self._improved(float(value)):
            self.best, self.best_epoch = float(value), trainer.current_epoch
            write_case_table(run.val_cases_best, rows)
            write_case_table(run.val_postprocessing_best, candidates)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is None or not trainer.is_global_zero:
            return
        rows = self._rows(pl_module)
        write_case_table(RunLayout(Path(log_dir)).test_cases, rows)
        log.info("%s", format_case_table(rows, title="Per-case test metrics"))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is not None and trainer.is_global_zero:
            self._report(trainer, RunLayout(Path(log_dir)))

    def _report(self, trainer: pl.Trainer, run: RunLayout) -> None:
        best_rows = read_case_table(run.val_cases_best) if run.val_cases_best.is_file() else []
        if best_rows and self.best is not None:
            title = (
                f"Per-case validation metrics, best epoch {self.best_epoch} "
                f"({self.monitor} = {self.best:.4f})"
            )
            log.info("%s", format_case_table(best_rows, title=title))
        checkpoint = trainer.checkpoint_callback
        best_path = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        curves = self._plot(trainer, run)
        self._log_to_wandb(trainer, best_rows, curves)
        log.info(
            "Run directory: %s\n  best checkpoint: %s\n  metrics: %s\n  curves: %s\n  split: %s",
            run.root,
            best_path or "-",
            run.metrics,
            curves or "-",
            run.split,
        )

    def _log_to_wandb(self, trainer: pl.Trainer, best_rows: list[Row], curves: Path | None) -> None:
        summary: dict[str, float] = {}
        if self.best is not None and self.best_epoch is not None:
            summary = {f"best/{self.monitor}": self.best, "best/epoch": self.best_epoch}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_fold_media(logger.experiment, best_rows, curves, summary)

    def _plot(self, trainer: pl.Trainer, run: RunLayout) -> Path | None:
        # The CSV logger flushes only every 100 rows until it is finalized, after on_fit_end.
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
        if not run.metrics.is_file():
            return None
        return plot_learning_curves(run.metrics, run.curves, self.monitor, self.mode)
