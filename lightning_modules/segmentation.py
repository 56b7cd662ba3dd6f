"""Supervised segmentation: a network, a loss, an optimiser; trains on slices, evaluates cases."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from evaluation.case_metrics import CaseMetrics

log = logging.getLogger(__name__)


class SegmentationModule(pl.LightningModule):
    """Train a 2D segmentation network on slices; validate and test per case in 3D.

    Validation predicts every slice of a case (in chunks of ``slice_batch``), resizes the
    logits to the case's native grid, thresholds the lesion probability and computes the
    ``metrics`` preset per case with the header voxel spacing (``evaluation.metrics``). The
    per-case rows are gathered across processes without duplicates, so ``val/dice`` is the
    same on one process and under DDP.

    Args:
        net: Network mapping ``(B, C, H, W)`` to logits ``(B, K, H, W)`` (K = 2: softmax, lesion
            = channel 1; K = 1: sigmoid). It may return ``(logits, aux_logits)`` in training.
        loss: Loss on ``(logits, target (B, 1, H, W))``.
        optimizer: Optimiser factory; receives only the parameters that require gradients, so a
            fine-tuning callback can freeze part of the network before the optimiser is built.
        scheduler: Optional scheduler factory; ``ReduceLROnPlateau`` is stepped on ``monitor``.
        metrics: Metrics preset name (``evaluation.metrics.METRIC_PRESETS``).
        monitor: Metric that schedulers, checkpoints and early stopping follow.
        threshold: Lesion-probability threshold for the binary prediction.
        aux_loss_weight: Weight of an auxiliary head's loss (PSPNet uses 0.4).
        slice_batch: Slices per forward pass when predicting a whole case.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerCallable = torch.optim.RMSprop,
        scheduler: LRSchedulerCallable | None = None,
        metrics: str = "isles2018",
        monitor: str = "val/dice",
        threshold: float = 0.5,
        aux_loss_weight: float = 0.4,
        slice_batch: int = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss"])
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = CaseMetrics(metrics)
        self.test_metrics = CaseMetrics(metrics)
        self.case_table: list[dict[str, Any]] = []

    @property
    def backbone(self) -> nn.Module:
        """Pretrained part of the network, for Lightning's fine-tuning callbacks."""
        if not hasattr(self.net, "pretrained_modules"):
            raise AttributeError(f"{type(self.net).__name__} has no pretrained_modules()")
        return self.net.pretrained_modules()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for images ``(B, C, H, W)`` (main head only)."""
        logits = self.net(image)
        return logits[0] if isinstance(logits, tuple) else logits

    # -- training -------------------------------------------------------------------------
    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        output = self.net(batch["image"])
        if isinstance(output, tuple):
            logits, aux_logits = output
            loss = self.loss(logits, batch["label"])
            loss = loss + self.hparams.aux_loss_weight * self.loss(aux_logits, batch["label"])
        else:
            loss = self.loss(output, batch["label"])
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True,
                 batch_size=batch["image"].shape[0])  # fmt: skip
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    # -- whole-case evaluation ------------------------------------------------------------
    def predict_case(self, image: torch.Tensor, native_size: tuple[int, int],
                     crop_box: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Lesion probability ``(D, H, W)`` on the native grid for one case.

        Args:
            image: The case's slices as the network sees them, ``(D, C, h, w)``.
            native_size: ``(H, W)`` of the case's native slices.
            crop_box: ``(h0, h1, w0, w1)`` region of the native grid the slices were cut from;
                the probability is resized to it and is 0 outside (``None``: the whole slice).
        """
        h0, h1, w0, w1 = (0, native_size[0], 0, native_size[1]) if crop_box is None else (
            int(v) for v in crop_box)  # fmt: skip
        chunks = []
        for start in range(0, image.shape[0], self.hparams.slice_batch):
            logits = self(image[start : start + self.hparams.slice_batch]).float()  # (b, K, h, w)
            if logits.shape[-2:] != (h1 - h0, w1 - w0):
                logits = F.interpolate(logits, size=(h1 - h0, w1 - w0), mode="bilinear",
                                       align_corners=False)  # fmt: skip
            if logits.shape[1] == 1:
                chunks.append(torch.sigmoid(logits)[:, 0])
            else:
                chunks.append(torch.softmax(logits, dim=1)[:, 1])
        probability = torch.cat(chunks)  # (D, h1 - h0, w1 - w0)
        if (h0, h1, w0, w1) != (0, native_size[0], 0, native_size[1]):
            pad = (w0, native_size[1] - w1, h0, native_size[0] - h1)
            probability = F.pad(probability, pad)  # (D, H, W), 0 outside the crop
        return probability

    def _evaluate_case(self, batch: dict[str, Any], metrics: CaseMetrics, stage: str) -> None:
        label = batch["label"]
        probability = self.predict_case(batch["image"], tuple(label.shape[-2:]),
                                        batch.get("crop_box"))  # fmt: skip
        target = label.float()[:, None]  # (D, 1, H, W)
        logit = torch.logit(probability.clamp(1e-6, 1 - 1e-6))[:, None]
        self.log(f"{stage}/loss", self.loss(logit, target), on_epoch=True, batch_size=1,
                 sync_dist=True)  # fmt: skip
        metrics.update(probability >= self.hparams.threshold, label.bool(), batch["spacing"],
                       batch["case_index"])  # fmt: skip

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_case(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_case(batch, self.test_metrics, "test")

    def _log_case_metrics(self, metrics: CaseMetrics, stage: str) -> None:
        summary = metrics.compute()
        self.case_table = metrics.table()
        values = {f"{stage}/{name}": float(value) for name, value in summary.items()}
        # Already gathered across processes by CaseMetrics: identical on every rank.
        self.log(f"{stage}/dice", values.pop(f"{stage}/dice"), prog_bar=True)
        self.log_dict(values)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_case_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_case_metrics(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probability = self.predict_case(batch["image"], tuple(batch["label"].shape[-2:]),
                                        batch.get("crop_box"))  # fmt: skip
        return {"case_index": batch["case_index"], "probability": probability.cpu(),
                "mask": (probability >= self.hparams.threshold).to(torch.uint8).cpu()}  # fmt: skip

    # -- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(parameters)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor,
                                 "interval": "epoch"}}  # fmt: skip
