"""No hook of a training step synchronises the host with the device, under CUDA's sync debug
mode (``torch.cuda.set_sync_debug_mode("error")``): each module family through the ``lightning
fit`` command, and the step's parts alone (the batched augmentation, each training loss) so that
a failure names its cause. The CPU companion, which runs everywhere, is
tests/lightning_modules/test_no_host_sync.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datamodules.batched_augmentation import BatchedAffine
from datamodules.transforms import Augmentation
from losses import (
    CEGeneralizedDiceLoss,
    CrossEntropyLoss,
    EMLWithBCE,
    EnhancedMixingLoss,
    FocalLoss,
    SoftJaccardLoss,
)
from tests.conftest import run_in_process
from tests.cuda.conftest import on_device
from tests.cuda.step_guard import StepGuard, SyncDebugGuard, cuda_sync_errors

pytestmark = pytest.mark.cuda

STEPS = 3  # the first a warm-up, two guarded


@pytest.fixture(autouse=True)
def _no_earlier_guards() -> None:
    StepGuard.runs.clear()


@pytest.mark.parametrize(
    ("family", "data"),
    [
        ("2d", ()),
        ("2d", ("--data.init_args.cache_on_device", "true")),  # batches gathered on the device
        ("2d-eml", ()),
        ("3d", ()),
        ("gan", ()),
    ],
    ids=["2d", "2d-device-cache", "2d-eml", "3d", "gan"],
)
def test_a_training_step_never_waits_for_the_device(
    cuda_device, family, data, family_args, tmp_path
):
    guard = ["--trainer.callbacks+=tests.cuda.step_guard.SyncDebugGuard"]
    steps = ["--trainer.limit_train_batches", str(STEPS)]
    try:
        run_in_process("lightning", "fit", *family_args(family), *data, *steps, *guard,
                       *on_device(cuda_device), cwd=tmp_path)  # fmt: skip
    finally:
        assert torch.cuda.get_sync_debug_mode() == 0  # "default" again, even after a failure
    (run,) = StepGuard.runs
    assert isinstance(run, SyncDebugGuard)
    assert run.guarded["training_step"] == STEPS - 1
    assert run.guarded["on_after_batch_transfer"] == STEPS - 1
    assert run.guarded["on_train_batch_start"] and run.guarded["on_train_batch_end"]


def test_the_batched_augmentation_never_waits_for_the_device(cuda_device):
    image = torch.randn(4, 5, 32, 32, device=cuda_device)
    label = (image[:, :1] > 1).to(torch.uint8)
    augment = BatchedAffine(Augmentation())
    augment(image, label, [1, 2, 3, 4])  # warm-up: the kernels are loaded
    torch.cuda.synchronize()
    with cuda_sync_errors():
        augment(image, label, [5, 6, 7, 8])


@pytest.mark.parametrize(
    "loss",
    [FocalLoss(), CrossEntropyLoss(0.9), EnhancedMixingLoss(), EMLWithBCE(), SoftJaccardLoss(),
     CEGeneralizedDiceLoss(10.0)],
    ids=lambda loss: type(loss).__name__,
)  # fmt: skip
def test_a_training_loss_never_waits_for_the_device(cuda_device, loss: nn.Module):
    logits = torch.randn(2, 2, 16, 16, device=cuda_device)
    target = (torch.rand(2, 1, 16, 16, device=cuda_device) > 0.8).to(torch.uint8).float()
    loss(logits, target)  # warm-up
    torch.cuda.synchronize()
    with cuda_sync_errors():
        loss(logits, target)
