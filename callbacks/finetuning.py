"""Seed 003's two-stage transfer learning as a Lightning fine-tuning callback."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BackboneFinetuning
from torch.optim import Optimizer

from core.errors import ConfigurationError

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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse several processes before anything is frozen.

        Raises:
            ConfigurationError: Under DDP (more than one process).
        """
        if stage == "fit" and trainer.world_size > 1:
            raise ConfigurationError(
                f"TwoStageFinetuning does not work with {trainer.world_size} processes yet: "
                "DDP leaves out the parameters frozen when it wraps the model, so once stage 2 "
                "unfreezes the backbone its gradients are never averaged and each process's "
                "weights drift apart (the checkpoint keeps one of them). Train this recipe on "
                "one device (--trainer.devices 1), or without the two stages (remove the "
                "callback from trainer.callbacks in a copy of the recipe)."
            )
        super().setup(trainer, pl_module, stage)

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
