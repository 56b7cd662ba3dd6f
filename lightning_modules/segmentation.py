"""Supervised segmentation: a network, a loss, an optimiser; trains on slices, evaluates cases."""

from __future__ import annotations

import logging
from typing import Any

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, DEFAULT_PRESET, MonitorMode
from core.errors import ConfigurationError
from core.protocols import HasPretrainedModules
from evaluation.metrics import PresetName
from lightning_modules.case_evaluation import CaseEvaluationModule, CasePrediction
from lightning_modules.tta import flip_average
from losses.regularization import kernel_l2
from networks.blocks import guard_cpu_bf16_conv3d

log = logging.getLogger(__name__)


class SegmentationModule(CaseEvaluationModule):
    """Train a 2D segmentation network on slices; validate, test and predict whole cases.

    A case arrives as its slices on the network grid with the
    :class:`~datamodules.geometry.SliceGeometry` that produced them. :meth:`predict_case`
    runs the network over the slices (in chunks of ``slice_batch``) and lets the geometry map
    the lesion probability back to the case's native grid; the ``metrics`` preset is then
    computed per case with the header voxel spacing (``evaluation.metrics``). Per-case rows
    are gathered across processes without duplicates, so ``val/dice`` is the same on one
    process and under DDP.

    Args:
        net: Network mapping ``(B, C, H, W)`` to logits ``(B, K, H, W)`` (K = 2: softmax, lesion
            = channel 1; K = 1: sigmoid). It may return ``(logits, aux_logits)`` in training.
        loss: Loss on ``(logits, target (B, 1, H, W) float)``.
        optimizer: Optimiser factory; receives only the parameters that require gradients, so a
            fine-tuning callback can freeze part of the network before the optimiser is built.
        scheduler: Optional scheduler factory; ``ReduceLROnPlateau`` is stepped on ``monitor``.
        metrics: Metrics preset (``evaluation.metrics.METRIC_PRESETS``).
        monitor: Metric that schedulers, checkpoints, early stopping and reports follow (the
            ``lightning`` command links it to its callbacks).
        monitor_mode: Whether ``monitor`` is better when ``"max"`` or ``"min"``.
        threshold: Lesion-probability threshold for the binary prediction.
        aux_loss_weight: Weight of an auxiliary head's loss (PSPNet uses 0.4).
        slice_batch: Slices per forward pass when predicting a whole case.
        kernel_l2: λ of an L2 penalty ``λ·Σw²`` on the convolution kernels added to the training
            loss, as Keras's ``kernel_regularizer=l2(λ)`` (seed 001: 1e-3; see
            :func:`losses.regularization.kernel_l2`); 0 for none. Logged as ``train/l2``.
        tta: Mirroring test-time augmentation (4 flips of each slice chunk, averaged on the
            network grid); see :class:`~lightning_modules.case_evaluation.CaseEvaluationModule`.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerCallable = torch.optim.RMSprop,
        scheduler: LRSchedulerCallable | None = None,
        metrics: PresetName = DEFAULT_PRESET,
        monitor: str = DEFAULT_MONITOR,
        monitor_mode: MonitorMode = DEFAULT_MONITOR_MODE,
        threshold: float = 0.5,
        aux_loss_weight: float = 0.4,
        slice_batch: int = 16,
        kernel_l2: float = 0.0,
        tta: bool = False,
    ) -> None:
        super().__init__(
            metrics=metrics,
            monitor=monitor,
            monitor_mode=monitor_mode,
            threshold=threshold,
            tta=tta,
        )
        self.save_hyperparameters(ignore=["net", "loss"])
        # PyTorch's CPU bf16 3D convolution corrupts the weight gradient of depth-2 inputs
        # (networks.blocks.CPUBf16SafeConv3d): those run in float32 there. The 3D U-Nets and
        # D-UNet's slice branch (4 slices pooled to 2) have such convolutions.
        self.net = guard_cpu_bf16_conv3d(net)
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.aux_loss_weight = aux_loss_weight
        self.slice_batch = slice_batch
        if kernel_l2 < 0:
            raise ConfigurationError(f"kernel_l2 must be ≥ 0 (0 for none), got {kernel_l2}.")
        self.kernel_l2 = kernel_l2

    @property
    def backbone(self) -> nn.Module:
        """Pretrained part of the network, for Lightning's fine-tuning callbacks."""
        if not isinstance(self.net, HasPretrainedModules):
            raise ConfigurationError(
                f"{type(self.net).__name__} has no pretrained part (pretrained_modules()), so it "
                "cannot be fine-tuned in stages; remove the fine-tuning callback from "
                "trainer.callbacks."
            )
        return self.net.pretrained_modules()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for images ``(B, C, H, W)`` (main head only)."""
        logits = self.net(image)
        return logits[0] if isinstance(logits, tuple) else logits

    # -- training -------------------------------------------------------------------------
    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The training loss of a batch (``"loss"``: main + weighted auxiliary head + kernel
        L2) and, with ``kernel_l2``, the penalty alone (``"l2"``)."""
        output = self.net(batch["image"])
        target = batch["label"].float()  # uint8 in the loader: 4× fewer bytes to move
        if isinstance(output, tuple):
            logits, aux_logits = output
            loss = self.loss(logits, target)
            loss = loss + self.aux_loss_weight * self.loss(aux_logits, target)
        else:
            loss = self.loss(output, target)
        values = {}
        if self.kernel_l2 > 0:
            values["l2"] = penalty = kernel_l2(self.net, self.kernel_l2)
            loss = loss + penalty
        values["loss"] = loss
        return values

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        values = self.training_losses(batch)
        self.log_training(values, batch["image"].shape[0], prog_bar=("loss",), epoch_only=("l2",))
        return values["loss"]

    # -- whole cases ----------------------------------------------------------------------
    def lesion_probability(self, image: torch.Tensor) -> torch.Tensor:
        """Lesion probability ``(B, h, w)`` of network-grid slices ``(B, C, h, w)``."""
        logits = self(image).float()  # (B, K, h, w)
        if logits.shape[1] == 1:
            return torch.sigmoid(logits)[:, 0]
        return torch.softmax(logits, dim=1)[:, 1]

    def predict_case(self, case: dict[str, Any]) -> CasePrediction:
        """Lesion probability ``(N, H, W)`` of one case on its native grid (averaged over
        :attr:`tta_flips` on the network grid, before the geometry maps it back).

        The network runs over the case in chunks of :attr:`slice_batch`, then the whole case's
        network-grid probability (small: 189 × 64² floats for an ATLAS scan) is mapped to the
        native grid at once: the forward passes run back to back, not each after 3 MB of
        output writes that evict their weights and activations from the caches (10–20 µs a
        slice on these CPUs, docs/performance.md, P6).

        Args:
            case: A case item (see :class:`datamodules.datasets.CaseDataset`): ``image``
                ``(N, C, h, w)``, ``native_shape`` ``(N, H, W)`` and the ``geometry`` that maps
                the network grid back to the native one.
        """
        image, geometry = case["image"], case["geometry"]
        depth, height, width = case["native_shape"]
        probability = torch.cat(
            [
                flip_average(
                    self.lesion_probability, image[start : start + self.slice_batch], self.tta_flips
                )
                for start in range(0, depth, self.slice_batch)
            ]
        )  # (N, h, w)
        out = self.case_output(image, (depth, height, width))
        geometry.to_native(
            probability, (height, width), out=out, native_spacing=case["spacing"][1:]
        )
        return CasePrediction(out)  # (N, H, W)

    def case_loss(self, probability: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The training loss on the whole case, from its native-grid probability."""
        logit = torch.logit(probability.clamp(1e-6, 1 - 1e-6))[:, None]
        return self.loss(logit, label.float()[:, None])

    # -- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(parameters)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"},
        }
