"""Two-stage fine-tuning (seed 003 §4.3): new layers only at 1e-2, then everything at 1e-4."""

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BackboneFinetuning
from torch.utils.data import DataLoader

from callbacks import TwoStageFinetuning
from lightning_modules import SegmentationModule
from losses import FocalLoss
from networks import PSPNet


class _Recorder(pl.Callback):
    def __init__(self):
        self.snapshots = []

    def on_train_epoch_end(self, trainer, pl_module):
        net = pl_module.net
        self.snapshots.append(
            {
                "lrs": sorted({g["lr"] for g in trainer.optimizers[0].param_groups}),
                "stem": net.layer0[0].weight.detach().clone(),
                "stem_bn_mean": net.layer0[1].running_mean.clone(),
                "cls": net.cls[-1].weight.detach().clone(),
                "init": net.init[1].weight.detach().clone(),
            }
        )


def _loader():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 5, 32, 32, generator=generator)
    labels = (images[:, 1:2] > 0.5).float()
    return DataLoader([{"image": x, "label": y} for x, y in zip(images, labels)], batch_size=4)


def test_stage_one_trains_only_new_layers_then_stage_two_trains_all(tmp_path):
    torch.manual_seed(0)
    net = PSPNet(backbone_depth=18)
    module = SegmentationModule(net, FocalLoss(), optimizer=partial(torch.optim.RMSprop, lr=1e-2))
    before = {
        "stem": net.layer0[0].weight.detach().clone(),
        "cls": net.cls[-1].weight.detach().clone(),
        "stem_bn_mean": net.layer0[1].running_mean.clone(),
        "init": net.init[1].weight.detach().clone(),
    }
    recorder = _Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[TwoStageFinetuning(unfreeze_at_epoch=1, stage2_lr=1e-4), recorder],
    )
    trainer.fit(module, train_dataloaders=_loader())
    stage1, stage2 = recorder.snapshots
    assert stage1["lrs"] == [1e-2]
    assert torch.equal(stage1["stem"], before["stem"])  # pretrained weights frozen
    assert torch.equal(stage1["stem_bn_mean"], before["stem_bn_mean"])  # BN statistics too
    assert not torch.equal(stage1["cls"], before["cls"]) and not torch.equal(
        stage1["init"], before["init"]
    )
    assert stage2["lrs"] == [1e-4]  # every group, new layers included
    assert not torch.equal(stage2["stem"], stage1["stem"])


def _fit(root, epochs, callbacks, ckpt_path=None, finetuning=TwoStageFinetuning, **trainer_args):
    """Seed 0's PSPNet-18 through ``TwoStageFinetuning(unfreeze_at_epoch=1)``, 1 step an epoch
    (2 on one device)."""
    torch.manual_seed(0)
    net = PSPNet(backbone_depth=18)
    module = SegmentationModule(net, FocalLoss(), optimizer=partial(torch.optim.RMSprop, lr=1e-2))
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=[finetuning(unfreeze_at_epoch=1, stage2_lr=1e-4), *callbacks],
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        **{"accelerator": "cpu", **trainer_args},
    )
    trainer.fit(module, train_dataloaders=_loader(), ckpt_path=ckpt_path, weights_only=False)
    return module


@pytest.mark.parametrize("stopped_after", [1, 2], ids=["in_stage_one", "in_stage_two"])
def test_a_resumed_run_trains_the_backbone_in_its_next_epoch(tmp_path, stopped_after):
    """Resuming (or a SLURM requeue) before the switch, or after it: the next epoch trains the
    backbone at stage 2's learning rate. Before 0.13.0 a run resumed after the switch had its
    backbone frozen again for the rest of training."""
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = _fit(tmp_path, stopped_after, [checkpoints])
    stem = first.net.layer0[0].weight.detach().clone()
    recorder = _Recorder()
    _fit(tmp_path, stopped_after + 1, [recorder], ckpt_path=tmp_path / "last.ckpt")
    (resumed,) = recorder.snapshots
    assert resumed["lrs"] == [1e-4] and not torch.equal(resumed["stem"], stem)


class _TwoStageFinetuning012(BackboneFinetuning):
    """0.12.0's callback, for its checkpoints: the backbone frozen in ``setup`` (so the
    optimiser holds the new layers only), added as a second parameter group at the switch."""

    state_key = "TwoStageFinetuning"

    def __init__(self, unfreeze_at_epoch, stage2_lr):
        super().__init__(unfreeze_backbone_at_epoch=unfreeze_at_epoch)
        self.stage2_lr = stage2_lr

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module, epoch, optimizer):
        if epoch == self.unfreeze_backbone_at_epoch:
            for group in optimizer.param_groups:
                group["lr"] = self.stage2_lr
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, self.stage2_lr)


def test_a_stage_one_checkpoint_of_0_12_0_trains_the_backbone_in_stage_two(tmp_path):
    """Its optimiser held the new layers only: resumed, stage 2 unfroze the backbone but never
    stepped it (it kept its pretrained weights to the end of training)."""
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = _fit(tmp_path, 1, [checkpoints], finetuning=_TwoStageFinetuning012)
    stem = first.net.layer0[0].weight.detach().clone()
    recorder = _Recorder()
    _fit(tmp_path, 2, [recorder], ckpt_path=tmp_path / "last.ckpt")
    (resumed,) = recorder.snapshots
    assert resumed["lrs"] == [1e-4] and not torch.equal(resumed["stem"], stem)


class _SaveWeights(pl.Callback):
    """Each process's parameters after each epoch, to ``<root>/rank<r>_epoch<e>.pt`` (not the
    BatchNorm statistics: each process updates its own, DDP broadcasts rank 0's before each
    forward pass)."""

    def __init__(self, root):
        self.root = root

    def on_train_epoch_end(self, trainer, pl_module):
        weights = {k: v.detach().clone() for k, v in pl_module.net.named_parameters()}
        torch.save(
            weights, self.root / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt"
        )


def test_under_ddp_every_process_trains_the_same_backbone(tmp_path):
    """Two gloo processes: stage 1 leaves the backbone as loaded, stage 2 trains it, and both
    processes hold the same parameters to the bit after each stage. Before 0.13.0 the backbone,
    frozen when DDP wrapped the model, was left out of DDP's averaging: the processes'
    backbones drifted apart (sums 5481.98 and 5205.96 after stage 2)."""
    from pytorch_lightning.strategies import DDPStrategy

    torch.manual_seed(0)
    initial = PSPNet(backbone_depth=18).state_dict()
    strategy = DDPStrategy(start_method="fork", find_unused_parameters=True)
    _fit(tmp_path, 2, [_SaveWeights(tmp_path)], devices=2, strategy=strategy)
    for epoch in (0, 1):
        rank0, rank1 = (torch.load(tmp_path / f"rank{r}_epoch{epoch}.pt") for r in (0, 1))
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), f"epoch {epoch}"
    stage1, stage2 = (torch.load(tmp_path / f"rank0_epoch{e}.pt") for e in (0, 1))
    stem = "layer0.0.weight"
    assert torch.equal(stage1[stem], initial[stem]) and not torch.equal(stage2[stem], stage1[stem])
    assert not torch.equal(stage1["cls.4.weight"], initial["cls.4.weight"])


def test_ddp_that_does_not_look_for_unused_parameters_is_refused(tmp_path):
    from pytorch_lightning.strategies import DDPStrategy

    with pytest.raises(Exception, match="ddp_find_unused_parameters_true"):
        _fit(tmp_path, 1, [], devices=2, strategy=DDPStrategy(start_method="fork"))


def test_a_checkpoint_of_0_12_0_tells_its_stage_by_its_parameter_groups():
    """0.12.0 kept no stage: stage 2 had added the backbone as a second parameter group."""
    group = {"lr": 1e-4, "params": ["net.cls.4.weight"]}
    before = {"internal_optimizer_metadata": {0: [group]}, "previous_backbone_lr": None}
    after = {"internal_optimizer_metadata": {0: [group, group]}, "previous_backbone_lr": 1e-4}
    for state, in_stage2 in ((before, False), (after, True)):
        callback = TwoStageFinetuning()
        callback.load_state_dict(state)
        assert callback.in_stage2 is in_stage2
