"""Callbacks: two-stage fine-tuning, per-case reports, and NIfTI prediction writing."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BackboneFinetuning, BasePredictionWriter
from pytorch_lightning.loggers import CSVLogger
from torch.optim import Optimizer

from evaluation.plots import plot_learning_curves

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
    """

    def __init__(self, unfreeze_at_epoch: int = 10, stage2_lr: float = 1e-4, train_bn: bool = False,
                 verbose: bool = False) -> None:  # fmt: skip
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
        self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, self.stage2_lr,
                                          train_bn=True)  # fmt: skip
        log.info("Fine-tuning stage 2 from epoch %d: all layers at lr %g", epoch, self.stage2_lr)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


class CaseReport(pl.Callback):
    """Writes the per-case tables of validation (every epoch and the best one) and of test.

    Files in the run directory: ``val_cases_last.csv`` (latest validation),
    ``val_cases_best.csv`` (the epoch with the best ``monitor``, i.e. the best checkpoint),
    ``test_cases.csv`` and ``curves.png`` (losses and validation metrics per epoch, drawn at the
    end of ``fit`` from the CSV logger's ``metrics.csv``). At the end of ``fit`` the best table is
    logged with its summary and the run's location; ``test`` logs its table too.

    Args:
        monitor: Metric that defines "best".
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(self, monitor: str = "val/dice", mode: str = "max") -> None:
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def _case_names(self, trainer: pl.Trainer) -> list[str] | None:
        cache = getattr(trainer.datamodule, "train_cache", None)
        return cache.case_names if cache is not None else None

    def _rows(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[dict[str, Any]]:
        names = self._case_names(trainer)
        rows = []
        for row in pl_module.case_table:
            row = dict(row)
            index = int(row.pop("case_id"))
            rows.append({"case": names[index] if names else index, **row})
        return rows

    @staticmethod
    def _write(path: Path, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run before the module's hook, which is where
        # the per-case table of this epoch is computed.
        if trainer.sanity_checking:
            return
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is not None and trainer.is_global_zero:
            self._save(trainer, pl_module, Path(log_dir))

    def _save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, run_dir: Path) -> None:
        rows = self._rows(trainer, pl_module)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._write(run_dir / "val_cases_last.csv", rows)
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and self._improved(float(value)):
            self.best, self.best_epoch = float(value), trainer.current_epoch
            self._write(run_dir / "val_cases_best.csv", rows)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is None or not trainer.is_global_zero:
            return
        rows = self._rows(trainer, pl_module)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self._write(Path(log_dir) / "test_cases.csv", rows)
        log.info("%s", format_case_table(rows, title="Per-case test metrics"))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: asked on every rank
        if log_dir is not None and trainer.is_global_zero:
            self._report(trainer, Path(log_dir))

    def _report(self, trainer: pl.Trainer, run_dir: Path) -> None:
        if not (run_dir / "val_cases_best.csv").is_file():
            return
        with (run_dir / "val_cases_best.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        log.info("%s", format_case_table(rows, title=f"Per-case validation metrics, best epoch "
                                                     f"{self.best_epoch} ({self.monitor} = {self.best:.4f})"))  # fmt: skip
        checkpoint = trainer.checkpoint_callback
        best_path = getattr(checkpoint, "best_model_path", "") if checkpoint else ""
        curves = self._plot(trainer, run_dir)
        log.info("Run directory: %s\n  best checkpoint: %s\n  metrics: %s\n  curves: %s\n  split: %s",
                 run_dir, best_path or "-", run_dir / "metrics.csv", curves or "-",
                 run_dir / "split.json")  # fmt: skip

    def _plot(self, trainer: pl.Trainer, run_dir: Path) -> Path | None:
        # The CSV logger flushes only every 100 rows until it is finalized, after on_fit_end.
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()
        if not (run_dir / "metrics.csv").is_file():
            return None
        return plot_learning_curves(run_dir / "metrics.csv", run_dir / "curves.png",
                                    self.monitor, self.mode)  # fmt: skip


def format_case_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """Fixed-width text table of per-case metric rows, with a mean row (finite values only)."""
    if not rows:
        return f"{title}\n(no cases)"
    columns = list(rows[0])
    cells = [[_format(_number(row[c])) for c in columns] for row in rows]
    means = ["mean"]
    for c in columns[1:]:
        values = [_number(row[c]) for row in rows]
        finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
        infinite = sum(isinstance(v, float) and math.isinf(v) for v in values)
        means.append(_format(float(np.mean(finite))) + (f" ({infinite}×inf)" if infinite else "")
                     if finite else "-")  # fmt: skip
    widths = [max(len(c), *(len(r[i]) for r in cells + [means])) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    footer = "  ".join(v.rjust(w) for v, w in zip(means, widths))
    rule = "-" * len(line)
    return "\n".join([title, line, rule, *body, rule, footer]).strip("\n")


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class NiftiPredictionWriter(BasePredictionWriter):
    """Writes each predicted case as ``<output_dir>/<case>_pred.nii.gz`` (uint8 {0, 1}).

    The source CT's header is reused, so spacing, qform and sform match the input exactly
    (including the identity sform quirk of ISLES 2018).

    Args:
        output_dir: Folder for the masks; relative paths are inside the run directory.
        save_probability: Also write the lesion probability as float32.
    """

    def __init__(self, output_dir: str = "predictions", save_probability: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.save_probability = save_probability
        self._out: Path | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = Path(self.output_dir)
        if not out.is_absolute():
            # Resolved once on every rank: trainer.log_dir is a collective under DDP, and
            # ranks may predict different numbers of cases.
            out = Path(trainer.log_dir or ".") / out
        out.mkdir(parents=True, exist_ok=True)
        self._out = out

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        datamodule = trainer.datamodule
        split = datamodule.hparams.predict_split
        index = int(prediction["case_index"])
        source = datamodule.case_source(split, index)
        name = datamodule.caches[split].case_names[index].replace("/", "_")
        out = self._out
        reference = nib.load(str(source))
        volumes = {"pred": (prediction["mask"].numpy(), np.uint8)}
        if self.save_probability:
            volumes["prob"] = (prediction["probability"].numpy(), np.float32)
        for suffix, (volume, dtype) in volumes.items():
            data = np.moveaxis(volume, 0, -1).astype(
                dtype
            )  # (D, H, W) -> (H, W, D) = NIfTI (X, Y, Z)
            header = reference.header.copy()
            header.set_data_dtype(dtype)
            image = nib.Nifti1Image(data, None, header)
            image.set_qform(reference.get_qform(), int(reference.header["qform_code"]))
            image.set_sform(reference.get_sform(), int(reference.header["sform_code"]))
            nib.save(image, str(out / f"{name}_{suffix}.nii.gz"))
