"""Seed 003's two-stage transfer learning as a Lightning fine-tuning callback."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BackboneFinetuning
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from core.errors import ConfigurationErrorOnEveryRank

log = logging.getLogger(__name__)


class TwoStageFinetuning(BackboneFinetuning):
    """Seed 003's transfer learning (arXiv:1811.01085 §4.3) on top of ``BackboneFinetuning``.

    Stage 1 (epochs ``< unfreeze_at_epoch``): the pretrained modules (``module.backbone``,
    i.e. ``net.pretrained_modules()``) are frozen, BatchNorm included, and only the new layers
    train at the optimiser's learning rate (the paper: 1e-2). Stage 2: everything is unfrozen
    and *every* parameter group is set to ``stage2_lr`` (the paper: 1e-4). Unlike the parent
    class there is no per-epoch backbone learning-rate ramp; a plateau scheduler takes over.

    Unlike the parent class, the optimiser holds every parameter from the start: the backbone
    is frozen only once the model is built, wrapped and given its optimiser (``on_fit_start``),
    and stage 2 unfreezes it in place rather than adding a parameter group. A frozen parameter
    has no gradient, so the optimiser leaves it alone (no step, no weight decay, no state).
    This is what makes the callback work

    - under DDP: DDP averages the gradients of the parameters that required them when it
      wrapped the model, so the backbone must not be frozen yet at that point (the parent
      class freezes it before, and each process's backbone then drifted apart in stage 2).
      Stage 1 leaves those parameters without gradients, which DDP accepts only when it looks
      for unused parameters (:meth:`ddp_finds_unused_parameters`: the ``lightning`` command
      turns ``--trainer.strategy ddp`` into ``ddp_find_unused_parameters_true``; a trainer
      built otherwise with a DDP that does not look is refused, with that advice);
    - on resuming: whether stage 2 has begun is part of the callback's checkpoint state, so a
      run resumed (or requeued by SLURM) after the switch keeps training the backbone.

    A ``ModelSummary`` callback counts trainable parameters in its own ``on_fit_start``: listed
    *after* this callback in ``trainer.callbacks`` it counts stage 1's (Lightning's default
    summary is added after the user's callbacks), listed before it counts every parameter.

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
        self.in_stage2 = False

    @classmethod
    def ddp_finds_unused_parameters(cls) -> bool:
        """The frozen backbone has no gradients in stage 1 (:class:`core.protocols.PartialBackward`)."""
        return True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the strategy; nothing is frozen yet (see the class docstring).

        Raises:
            ConfigurationError: A strategy other than one device or DDP (a sharded model's
                parameters are not the module's own).
        """
        strategy = trainer.strategy
        if stage == "fit" and (
            not isinstance(strategy, SingleDeviceStrategy | DDPStrategy)
            or isinstance(strategy, DeepSpeedStrategy)  # a DDPStrategy that shards the model
        ):
            raise ConfigurationErrorOnEveryRank(
                f"TwoStageFinetuning supports one device or DDP, not the "
                f"{type(strategy).__name__} strategy: choose --trainer.strategy "
                "ddp_find_unused_parameters_true (several devices) or auto (one device)."
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Freeze the backbone for stage 1, after DDP has wrapped the model.

        Raises:
            ConfigurationError: DDP that does not look for unused parameters.
        """
        model = trainer.strategy.model
        if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
            raise ConfigurationErrorOnEveryRank(
                f"TwoStageFinetuning under DDP ({trainer.world_size} processes) needs DDP to look "
                "for unused parameters, because the frozen backbone has no gradients in stage 1: "
                "give --trainer.strategy ddp (the lightning command then makes DDP look for "
                "them) or ddp_find_unused_parameters_true."
            )
        super().on_fit_start(trainer, pl_module)  # a resumed run's parameter groups
        if not self.in_stage2:
            self.freeze(pl_module.backbone, train_bn=self.stage1_train_bn)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        """Not used: :meth:`on_fit_start` freezes, once the optimiser holds every parameter."""

    def finetune_function(
        self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if self.in_stage2 or epoch < self.unfreeze_backbone_at_epoch:
            return
        for group in optimizer.param_groups:
            group["lr"] = self.stage2_lr
        self.make_trainable(pl_module.backbone)
        # A run resumed from a stage-1 checkpoint of 0.12.0 or earlier: its optimiser held the
        # new layers only (on_fit_start put those groups back), so the backbone joins it here as
        # a group of its own, as 0.12.0 added it; otherwise it had gradients and never a step.
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [p for p in self.filter_params(pl_module.backbone) if id(p) not in held]
        if missing:
            optimizer.add_param_group({"params": missing, "lr": self.stage2_lr})
        self.in_stage2 = True
        log.info("Fine-tuning stage 2 from epoch %d: all layers at lr %g", epoch, self.stage2_lr)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "in_stage2": self.in_stage2}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # Checkpoints of 0.12.0 and earlier: stage 2 had added the backbone as a second group.
        groups = self._internal_optimizer_metadata.get(0, [])
        self.in_stage2 = bool(state_dict.get("in_stage2", len(groups) > 1))
