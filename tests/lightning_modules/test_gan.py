"""CTPToDWIGAN: which step moves which network, the losses by hand, resume of both optimizers."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_modules import CTPToDWIGAN
from losses import CEGeneralizedDiceLoss
from networks import LiuUNet, LSGANDiscriminator
from tests.conftest import run_gloo


class Slices(Dataset):
    """Random CTP slices with a DWI target and a lesion mask (batches of the training loader)."""

    def __init__(self, count: int = 4, size: int = 128) -> None:
        generator = torch.Generator().manual_seed(0)
        self.image = torch.randn(count, 5, size, size, generator=generator)
        self.target = self.image[:, :1] * 0.5 + 0.1 * torch.randn(count, 1, size, size)
        self.label = (self.target > 0.6).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.image[index],
            "target": self.target[index],
            "label": self.label[index],
        }


def _module(
    lr: float = 1e-4, milestones: tuple[int, ...] = (100, 300, 500), **kwargs
) -> CTPToDWIGAN:
    """The paper's optimisers (§3.1: RMSprop, "γ = 0.9", rates halved at the milestones), as
    liu_stage3.yaml injects them, around narrow networks."""
    torch.manual_seed(0)
    rmsprop = partial(torch.optim.RMSprop, lr=lr, alpha=0.9)
    halving = partial(torch.optim.lr_scheduler.MultiStepLR, milestones=list(milestones), gamma=0.5)
    return CTPToDWIGAN(
        LiuUNet(5, 1, widths=(16, 32)),
        LiuUNet(1, head="maxout", widths=(16, 32)),
        LSGANDiscriminator(widths=(16, 16, 16, 16, 16)),
        CEGeneralizedDiceLoss(),
        optimizer_d=rmsprop,
        optimizer_gs=rmsprop,
        scheduler_d=halving,
        scheduler_gs=halving,
        **kwargs,
    )


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    settings = dict(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    return pl.Trainer(**{**settings, **kwargs})


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[n], p) for n, p in module.named_parameters())


def test_each_step_moves_only_its_networks_and_the_losses_are_the_formulas(tmp_path):
    module = _module()
    data = Slices(2)
    batch = {key: torch.stack([data[i][key] for i in range(2)]) for key in data[0]}
    snapshots: list[dict[str, torch.nn.Module]] = []
    d_grads: list[list[torch.Tensor]] = []
    untoggle = module.untoggle_optimizer

    def record(optimizer) -> None:
        untoggle(optimizer)
        snapshots.append({name: copy.deepcopy(getattr(module, name)) for name in
                          ("generator", "segmentator", "discriminator")})  # fmt: skip
        d_grads.append([p.grad.clone() for p in module.discriminator.parameters()])

    module.untoggle_optimizer = record  # type: ignore[method-assign]
    start = {name: copy.deepcopy(getattr(module, name)) for name in
             ("generator", "segmentator", "discriminator")}  # fmt: skip
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(module, DataLoader(data, batch_size=2))  # the one batch above
    after_d, after_gs = snapshots
    # 1. The D step moved D only.
    assert _changed(_params(start["discriminator"]), after_d["discriminator"])
    for name in ("generator", "segmentator"):
        assert not _changed(_params(start[name]), after_d[name]), name
    # 2. The G + S step moved G and S, not D.
    for name in ("generator", "segmentator"):
        assert _changed(_params(after_d[name]), after_gs[name]), name
    assert not _changed(_params(after_d["discriminator"]), after_gs["discriminator"])
    # ... nor did its backward pass reach D's gradients (toggle_optimizer froze them).
    assert all(torch.equal(a, b) for a, b in zip(*d_grads))

    # The logged losses are the paper's formulas, computed here from copies of the networks
    # as they were when each loss was taken (GroupNorm everywhere: no batch statistics).
    with torch.no_grad():
        x, dwi, y = batch["image"], batch["target"], batch["label"].float()
        fake = start["generator"](x)
        d_loss = (start["discriminator"](fake) ** 2).mean() + (
            (start["discriminator"](dwi) - 1) ** 2
        ).mean()
        g_mse = F.mse_loss(fake, dwi)
        g_adv = ((after_d["discriminator"](fake) - 1) ** 2).mean()
        seg = CEGeneralizedDiceLoss()(start["segmentator"](fake), y)
        total = 0.002 * g_mse + 0.5 * g_adv + 1.0 * seg
    logged = trainer.callback_metrics
    for name, value in {"d_loss": d_loss, "g_mse": g_mse, "g_adv": g_adv, "seg_loss": seg,
                        "loss": total}.items():  # fmt: skip
        for key in (f"train/{name}_step", f"train/{name}_epoch"):  # one step: its own mean
            assert float(logged[key]) == pytest.approx(float(value), rel=1e-4), key


def test_both_learning_rates_halve_at_the_milestones(tmp_path):
    module = _module(milestones=(1, 2), lr=1e-3)
    trainer = _trainer(tmp_path, max_epochs=3, limit_val_batches=0)
    rates = []

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            rates.append([o.param_groups[0]["lr"] for o in trainer.optimizers])

    trainer.callbacks.append(Record())
    trainer.fit(module, DataLoader(Slices(2), batch_size=2))
    assert rates == [[1e-3, 1e-3], [5e-4, 5e-4], [2.5e-4, 2.5e-4]]


def test_resume_restores_both_optimizers_and_schedulers(tmp_path):
    module = _module(milestones=(1,))
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    trainer.fit(module, DataLoader(Slices(2), batch_size=2))
    path = tmp_path / "one.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert len(saved["optimizer_states"]) == 2 and len(saved["lr_schedulers"]) == 2
    assert all(state["state"] for state in saved["optimizer_states"])  # RMSprop's square averages
    restored = []

    class Check(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            restored.append([copy.deepcopy(o.state_dict()) for o in trainer.optimizers])
            restored.append([dict(s.scheduler.state_dict()) for s in trainer.lr_scheduler_configs])

    resumed = _trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[Check()])
    loader = DataLoader(Slices(2), batch_size=2)
    # weights_only=False: the hyperparameters hold the optimiser factories (functools.partial
    # here; the lightning command stores their configuration instead).
    resumed.fit(_module(milestones=(1,)), loader, ckpt_path=path, weights_only=False)
    optimizers, schedulers = restored[0], restored[1]
    for now, then in zip(optimizers, saved["optimizer_states"]):
        for key, value in then["state"].items():
            for name, tensor in value.items():
                assert torch.equal(
                    torch.as_tensor(now["state"][key][name]), torch.as_tensor(tensor)
                )
    assert [s["last_epoch"] for s in schedulers] == [1, 1]
    assert [o.param_groups[0]["lr"] for o in resumed.optimizers] == [5e-5, 5e-5]


def test_missing_dwi_target_is_a_configuration_error(tmp_path):
    module = _module()
    batch = {k: v for k, v in Slices(2)[0].items() if k != "target"}
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    with pytest.raises(Exception, match="targets: \\[DWI\\]"):
        trainer.fit(module, DataLoader([batch, batch], batch_size=2))


def test_a_constant_real_dwi_is_left_out_of_psnr_and_ssim(caplog):
    # A blank DWI has no range to score against: without the guard its PSNR is NaN, and an
    # epoch of such cases logs val/psnr = NaN.
    module = _module()
    fake = torch.rand(3, 1, 32, 32)
    with caplog.at_level("WARNING"):
        module.score_synthesis(fake, torch.zeros(3, 1, 32, 32), "case_1")
    assert module.val_psnr.update_count == 0 and "case_1: its real DWI is constant" in caplog.text
    module.score_synthesis(fake, fake * 0.9 + 0.05, "case_2")
    assert module.val_psnr.update_count == 1
    assert torch.isfinite(module.val_psnr.compute()) and torch.isfinite(module.val_ssim.compute())


def _case_means(rank: int, shards: list[list[float]]) -> dict[str, float]:
    module = _module()
    means = {
        "val/loss": module.case_losses["val"],
        "val/psnr": module.val_psnr,
        "val/ssim": module.val_ssim,
    }
    for metric in means.values():
        for value in shards[rank]:
            metric.update(torch.tensor(value))
    return {key: metric.compute().item() for key, metric in means.items()}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_case_means_are_those_of_one_process_to_the_last_digit():
    """The whole-case loss (every module's), the PSNR and the SSIM of 3 cases validated by 2
    gloo processes, rank 0 holding cases 0 and 2 (DistributedSampler). MeanMetric's float32
    sums added them in another order than one process: each mean was 0.46666669845581055 on
    two processes and 0.46666666865348816 on one."""
    values = [0.6, 0.7, 0.1]
    (one,) = (value for _, value in run_gloo(_case_means, 1, [values]).values())
    two = {
        rank: value for rank, (_, value) in run_gloo(_case_means, 2, [[0.6, 0.1], [0.7]]).items()
    }
    assert two == {0: one, 1: one}
