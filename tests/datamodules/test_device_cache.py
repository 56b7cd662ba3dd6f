"""The device cache gives the loader's batches, in the loader's order, assembled on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigurationError
from datamodules import ATLASDataModule, ISLES2018DataModule
from datamodules.device_cache import DeviceCache, cache_dtype
from datamodules.transforms import Augmentation


def _module(twin: Path, tmp_path: Path, **settings) -> ISLES2018DataModule | ATLASDataModule:
    arguments = dict(data_dir=str(twin), cache_dir=str(tmp_path / "cache"), num_folds=3,
                     batch_size=4, num_workers=0, augmentation=None)  # fmt: skip
    if "context" in settings:  # D-UNet's stacks: the tiny ATLAS twin (47 × 40 slices)
        arguments.update(crop=(4, 36, 4, 36), image_size=None)
        dm: ISLES2018DataModule | ATLASDataModule = ATLASDataModule(**{**arguments, **settings})
    else:
        dm = ISLES2018DataModule(**{**arguments, **settings})
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(autouse=True)
def _run_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths draw from the run's seed, as under ``seed_everything``."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")


def _batches(dm: ISLES2018DataModule, count: int) -> list[dict[str, torch.Tensor]]:
    """The first training batches as the training step receives them."""
    device = torch.device("cpu")
    out = []
    for batch, _ in zip(dm.train_dataloader(), range(count)):
        moved = dm.transfer_batch_to_device(batch, device, 0)
        out.append(dm.on_after_batch_transfer(moved, 0))
    return out


@pytest.mark.parametrize(
    "settings",
    [
        {"context": (-2, -1, 0, 1), "foreground_fraction": 0.5},  # context cut at case ends
        {"image_size": 16, "foreground_fraction": 0.5},  # single slices, lesions oversampled
        {"spatial_dims": 3, "depth": 3, "image_size": 16},  # volumes: windows of deeper cases
        {"spatial_dims": 3, "depth": None, "batch_size": 2},  # each case's depth, padded
    ],
    ids=["stacks", "slices", "volumes", "native-depth"],
)
def test_the_device_cache_gives_the_loaders_batches_in_its_order(
    settings, tiny_twin, tiny_atlas, tmp_path
):
    twin = tiny_atlas if "context" in settings else tiny_twin
    loader = _batches(_module(twin, tmp_path, **settings), 3)
    device = _batches(_module(twin, tmp_path, **settings, cache_on_device=True), 3)
    for expected, got in zip(loader, device):
        assert set(got) == set(expected) == {"image", "label"}
        assert torch.equal(got["image"], expected["image"])
        assert torch.equal(got["label"], expected["label"]) and got["label"].dtype == torch.uint8


def test_augmented_batches_equal_the_batched_path_of_the_loader(tiny_twin, tmp_path):
    augmentation = Augmentation()
    loader = _batches(
        _module(tiny_twin, tmp_path, augmentation=augmentation, augment_on_device=True), 2
    )
    device = _batches(
        _module(tiny_twin, tmp_path, augmentation=augmentation, cache_on_device=True), 2
    )
    for expected, got in zip(loader, device):
        assert torch.equal(got["image"], expected["image"])
        assert torch.equal(got["label"], expected["label"])
    assert not torch.equal(
        device[0]["image"], _batches(_module(tiny_twin, tmp_path), 1)[0]["image"]
    )


@pytest.mark.parametrize("augmentation", [None, Augmentation()], ids=["plain", "augmented"])
def test_the_gans_targets_are_split_off_after_assembly(augmentation, tiny_twin, tmp_path):
    settings = dict(targets=["DWI"], channels=["MTT", "Tmax", "CBV", "CBF"], image_size=16,
                    augmentation=augmentation, augment_on_device=augmentation is not None)  # fmt: skip
    (loader,) = _batches(_module(tiny_twin, tmp_path, **settings), 1)
    (device,) = _batches(_module(tiny_twin, tmp_path, **settings, cache_on_device=True), 1)
    for batch in (loader, device):  # channels split, not the batch
        assert set(batch) == {"image", "label", "target"}
        assert batch["image"].shape == (4, 4, 16, 16) and batch["target"].shape == (4, 1, 16, 16)
    assert torch.equal(device["target"], loader["target"])
    assert torch.equal(device["image"], loader["image"])


def test_a_cache_that_does_not_fit_is_refused_saying_how_much(tiny_twin, tmp_path, monkeypatch):
    dm = _module(tiny_twin, tmp_path)
    monkeypatch.setattr("datamodules.device_cache.free_bytes", lambda device: 1000)
    with pytest.raises(ConfigurationError, match=r"need \d+ KB, and 1 KB are free"):
        DeviceCache(
            dm.caches["TRAINING"], dm.train_cases, dm.geometry, torch.device("cpu"), torch.float16
        )


def test_the_cache_dtype_follows_the_precision():
    assert cache_dtype("bf16-mixed", None) == torch.bfloat16
    assert cache_dtype("16-mixed", None) == torch.float16
    assert cache_dtype("32-true", None) == torch.float32
    assert cache_dtype("32-true", "float16") == torch.float16
    assert np.dtype("float16").itemsize == 2
