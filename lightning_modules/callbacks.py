"""Callbacks: two-stage fine-tuning and the per-case reports of a run."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BackboneFinetuning
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from torch.optim import Optimizer

from evaluation.plots import plot_learning_curves
from evaluation.report import Row, format_case_table, read_case_table, write_case_table
from lightning_modules.wandb_media import log_fold_media

log = logging.getLogger(__name__)


class TwoStageFinetuning(BackboneFinetuning):
    """Seed 003's transfer learning (arXiv:1811.01085 §4.3) on top of ``BackboneFinetuning``.

    Stage 1 (epochs ``< unfreeze_at_epoch``): the pretrained modules (``module.backbone``,
    i.e. ``net.pretrained_modules()``) are frozen, BatchNorm included, and only the new layers
    train at the optimiser's learning rate (the paper: 1e-2). Stage 2: everything is unfrozen
    and *every* parameter group is set to ``stage2_lr`` (the paper: 1e-4). Unlike the parent
    class there is no per-epoch backbone learning-rate ramp; a plateau scheduler takes over.

    Args:
        unfreeze_at_epoch: First epoch of stage 2 (the paper does not give it).
        stage2_lr: Learning rate of all parameters in stage 2.
        train_bn: Train the frozen modules' BatchNorm layers in stage 1 (the paper freezes
            all pretrained weights, so the default is False).
        verbose: Log the learning rates at each epoch (``BackboneFinetuning``'s option).
    """

    def __init__(
        self,
        unfreeze_at_epoch: int = 10,
        stage2_lr: float = 1e-4,
        train_bn: bool = False,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            unfreeze_backbone_at_epoch=unfreeze_at_epoch, train_bn=True, verbose=verbose
        )
        self.stage2_lr = stage2_lr
        self.stage1_train_bn = train_bn

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.stage1_train_bn)

    def finetune_function(
        self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if epoch != self.unfreeze_backbone_at_epoch:
            return
        for group in optimizer.param_groups:
            group["lr"] = self.stage2_lr
        self.unfreeze_and_add_param_group(
            pl_module.backbone, optimizer, self.stage2_lr, train_bn=True
        )
        log.info("Fine-tuning stage 2 from epoch %d: all layers at lr %g", epoch, self.stage2_lr)


class CaseReport(pl.Callback):
    """Writes the per-case tables of validation (last and best epoch) and test, and the curves.

    Files in the run directory (``trainer.log_dir``): ``val_cases_last.csv`` (latest
    validation), ``val_cases_best.csv`` (the epoch with the best ``monitor``, i.e. the best
    checkpoint), ``test_cases.csv`` and ``curves.png`` (losses and validation metrics per epoch,
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

    def __init__(self, monitor: str = "val/dice", mode: Literal["max", "min"] = "max") -> None:
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")

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
        rows = getattr(pl_module, "case_table", [])
        write_case_table(Path(log_dir) / "val_cases_last.csv", rows)
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and self._improved(float(value)):
            self.best, self.best_epoch = float(value), trainer.current_epoch
            write_case_table(Path(log_dir) / "val_cases_best.csv", rows)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is None or not trainer.is_global_zero:
            return
        rows = getattr(pl_module, "case_table", [])
        write_case_table(Path(log_dir) / "test_cases.csv", rows)
        log.info("%s", format_case_table(rows, title="Per-case test metrics"))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is not None and trainer.is_global_zero:
            self._report(trainer, Path(log_dir))

    def _report(self, trainer: pl.Trainer, run_dir: Path) -> None:
        best_table = run_dir / "val_cases_best.csv"
        best_rows = read_case_table(best_table) if best_table.is_file() else []
        if best_rows and self.best is not None:
            title = (
                f"Per-case validation metrics, best epoch {self.best_epoch} "
                f"({self.monitor} = {self.best:.4f})"
            )
            log.info("%s", format_case_table(best_rows, title=title))
        checkpoint = trainer.checkpoint_callback
        best_path = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
        curves = self._plot(trainer, run_dir)
        self._log_to_wandb(trainer, best_rows, curves)
        log.info(
            "Run directory: %s\n  best checkpoint: %s\n  metrics: %s\n  curves: %s\n  split: %s",
            run_dir,
            best_path or "-",
            run_dir / "metrics.csv",
            curves or "-",
            run_dir / "split.json",
        )

    def _log_to_wandb(self, trainer: pl.Trainer, best_rows: list[Row], curves: Path | None) -> None:
        summary: dict[str, float] = {}
        if self.best is not None and self.best_epoch is not None:
            summary = {f"best/{self.monitor}": self.best, "best/epoch": self.best_epoch}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_fold_media(logger.experiment, best_rows, curves, summary)

    def _plot(self, trainer: pl.Trainer, run_dir: Path) -> Path | None:
        # The CSV logger flushes only every 100 rows until it is finalized, after on_fit_end.
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
        if not (run_dir / "metrics.csv").is_file():
            return None
        return plot_learning_curves(
            run_dir / "metrics.csv", run_dir / "curves.png", self.monitor, self.mode
        )
