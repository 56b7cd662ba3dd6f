"""No training step reads a tensor's value on the host, checked on the CPU.

On a GPU a ``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()`` or the truth value of a tensor
waits for the device; tests/cuda/test_no_host_sync.py catches every such synchronisation under
CUDA's sync debug mode, on a GPU machine. This companion runs everywhere: the same steps through
the ``lightning fit`` command, with those reads refused inside ``training_step``
(:class:`tests.cuda.step_guard.HostReadGuard`), so a read added to a step fails here too.
"""

from __future__ import annotations

import pytest
import torch

from lightning_modules import SegmentationModule
from tests.conftest import run_in_process
from tests.cuda.step_guard import (
    HOST_READS,
    HostReadGuard,
    HostSync,
    StepGuard,
    no_host_reads,
)

GUARD = ["--trainer.callbacks+=tests.cuda.step_guard.HostReadGuard"]


@pytest.fixture(autouse=True)
def _no_earlier_guards() -> None:
    StepGuard.runs.clear()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["demo", "liu_stage4"], ids=["segmentation", "gan"])
def test_training_steps_read_no_tensor_on_the_host(recipe, recipe_args, tmp_path):
    run_in_process("lightning", "fit", *recipe_args(recipe), *GUARD, cwd=tmp_path)
    (guard,) = StepGuard.runs
    assert isinstance(guard, HostReadGuard)
    assert guard.guarded["training_step"] == 2  # both steps of the run, guarded


@pytest.mark.slow
def test_an_item_added_to_a_training_step_fails(recipe_args, tmp_path, monkeypatch):
    # The check above must be able to fail: a step that reads its loss on the host.
    step = SegmentationModule.training_step

    def reads_the_loss(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        loss.item()
        return loss

    monkeypatch.setattr(SegmentationModule, "training_step", reads_the_loss)
    with pytest.raises(HostSync, match=r"training_step in training step 0: Tensor\.item\(\)"):
        run_in_process("lightning", "fit", *recipe_args("demo"), *GUARD, cwd=tmp_path)


@pytest.mark.parametrize("read", [
    lambda t: t.item(), lambda t: t.tolist(), lambda t: t.cpu(), lambda t: t.numpy(),
    lambda t: bool(t), lambda t: float(t), lambda t: int(t), lambda t: 1 if t > 0 else 0,
], ids=["item", "tolist", "cpu", "numpy", "bool", "float", "int", "if"])  # fmt: skip
def test_each_host_read_is_refused_inside_and_allowed_after(read):
    value = torch.ones(())
    with no_host_reads(), pytest.raises(HostSync, match="waits for the device"):
        read(value)
    read(value)  # the tensor class is as it was
    assert not set(HOST_READS) & set(vars(torch.Tensor))


def test_a_library_reading_a_tensor_it_made_on_the_host_is_left_to_cuda():
    # MONAI's GeneralizedDiceLoss reads torch.arange(...).tolist(): a host tensor, no wait.
    value = torch.ones(())
    with no_host_reads():
        assert eval("value.item()", {"__name__": "monai.losses.dice", "value": value}) == 1.0
