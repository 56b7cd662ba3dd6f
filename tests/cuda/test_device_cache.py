"""The device cache on the device: a fit through the ``lightning fit`` command, and batches equal
to the loader path's on the same device (tests/datamodules/test_device_cache.py: on the CPU)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from datamodules import ISLES2018DataModule
from datamodules.transforms import Augmentation
from tests.conftest import run_in_process
from tests.cuda.conftest import assert_finished_with_finite_dice, fold_run, on_device

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("family", ["2d", "3d", "gan"])
def test_a_family_fits_with_its_training_cache_on_the_device(family, family_args, device, tmp_path):
    args = [*family_args(family), "--data.init_args.cache_on_device", "true", *on_device(device)]
    run_in_process("lightning", "fit", *args, cwd=tmp_path)
    assert_finished_with_finite_dice(fold_run(tmp_path))


@pytest.fixture(autouse=True)
def _run_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths draw from the run's seed, as under ``seed_everything``."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")


def _batches(
    twin: Path, cache: Path, device: torch.device, precision: str, count: int, **settings
) -> list[dict[str, torch.Tensor]]:
    """The first training batches as the training step receives them on ``device``."""
    arguments = dict(data_dir=str(twin), cache_dir=str(cache), num_folds=3, batch_size=4,
                     num_workers=0, augmentation=None)  # fmt: skip
    dm = ISLES2018DataModule(**{**arguments, **settings})
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()  # before the trainer: its sampler draws epoch 0
    # What the DataModule asks of its trainer on the device path: where, and in what precision.
    strategy = SimpleNamespace(root_device=device)
    dm.trainer = SimpleNamespace(strategy=strategy, precision=precision)  # type: ignore[assignment]
    out = []
    for batch, _ in zip(loader, range(count)):
        moved = dm.transfer_batch_to_device(batch, device, 0)
        out.append(dm.on_after_batch_transfer(moved, 0))
    return out


@pytest.mark.parametrize(
    "settings",
    [
        {"image_size": 16, "foreground_fraction": 0.5, "augmentation": Augmentation()},
        {"spatial_dims": 3, "depth": 3, "image_size": 16, "augmentation": Augmentation()},
        {"targets": ["DWI"], "channels": ["MTT", "Tmax", "CBV", "CBF"], "image_size": 16,
         "augmentation": Augmentation()},
        {"spatial_dims": 3, "depth": None, "batch_size": 2},
    ],
    ids=["augmented-slices", "augmented-volumes", "gan-targets", "native-depth"],
)  # fmt: skip
def test_the_device_cache_gives_the_loaders_batches_on_the_device(
    settings, tiny_twin, device, tmp_path
):
    deferred = {"augment_on_device": True} if "augmentation" in settings else {}
    args = (tiny_twin, tmp_path / "cache", device, "32-true", 2)
    loader = _batches(*args, **settings, **deferred)
    cached = _batches(*args, **settings, cache_on_device=True)
    for expected, got in zip(loader, cached, strict=True):
        assert set(got) == set(expected) and {"image", "label"} <= set(got)
        for key, value in got.items():
            assert value.device.type == device.type, key
            assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key


def test_a_bf16_cache_gives_the_loaders_batches_rounded_to_bf16(tiny_twin, device, tmp_path):
    args = (tiny_twin, tmp_path / "cache", device)
    loader = _batches(*args, "32-true", 2, image_size=16)
    cached = _batches(*args, "bf16-mixed", 2, image_size=16, cache_on_device=True)
    for expected, got in zip(loader, cached, strict=True):
        assert got["image"].dtype == torch.float32  # held in bfloat16, served in float32
        assert torch.equal(got["image"], expected["image"].bfloat16().float())
        assert not torch.equal(got["image"], expected["image"])
        assert torch.equal(got["label"], expected["label"])
