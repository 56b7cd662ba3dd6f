"""The device cache gives the loader's batches, in the loader's order, assembled on the device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigurationError
from datamodules import ISLES2018DataModule
from datamodules.device_cache import DeviceCache, cache_dtype
from datamodules.transforms import Augmentation


def _module(twin: Path, tmp_path: Path, **settings) -> ISLES2018DataModule:
    arguments = dict(data_dir=str(twin), cache_dir=str(tmp_path / "cache"), num_folds=3,
                     batch_size=4, num_workers=0, augmentation=None)  # fmt: skip
    dm = ISLES2018DataModule(**{**arguments, **settings})
    dm.prepare_data()
    dm.setup("fit")
    return dm


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
        {"context": [-1, 0, 1], "image_size": 16},  # 2.5D stacks: context at the case ends
        {"spatial_dims": 3, "depth": 3, "image_size": 16},  # volumes: windows of deeper cases
        {"spatial_dims": 3, "depth": None, "batch_size": 2},  # each case's depth, padded
    ],
    ids=["slices", "volumes", "native-depth"],
)
def test_the_device_cache_gives_the_loaders_batches_in_its_order(settings, tiny_twin, tmp_path):
    loader = _batches(_module(tiny_twin, tmp_path, **settings, foreground_fraction=0.5), 3)
    device = _batches(
        _module(tiny_twin, tmp_path, **settings, foreground_fraction=0.5, cache_on_device=True), 3
    )
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
    assert not torch.equal(device[0]["image"], _batches(_module(tiny_twin, tmp_path), 1)[0]["image"])


def test_the_gans_targets_are_split_off_after_assembly(tiny_twin, tmp_path):
    settings = dict(targets=["DWI"], channels=["MTT", "Tmax", "CBV", "CBF"], image_size=16)
    (loader,) = _batches(_module(tiny_twin, tmp_path, **settings), 1)
    (device,) = _batches(_module(tiny_twin, tmp_path, **settings, cache_on_device=True), 1)
    assert set(device) == {"image", "label", "target"} and device["image"].shape[1] == 4
    assert torch.equal(device["target"], loader["target"])


def test_a_cache_that_does_not_fit_is_refused_saying_how_much(tiny_twin, tmp_path, monkeypatch):
    dm = _module(tiny_twin, tmp_path)
    monkeypatch.setattr("datamodules.device_cache.free_bytes", lambda device: 1000)
    with pytest.raises(ConfigurationError, match=r"need \d+\.\d+ GB, and 0\.00 GB are free"):
        DeviceCache(
            dm.caches["TRAINING"], dm.train_cases, dm.geometry, torch.device("cpu"), torch.float16
        )


def test_the_cache_dtype_follows_the_precision():
    assert cache_dtype("bf16-mixed", None) == torch.bfloat16
    assert cache_dtype("16-mixed", None) == torch.float16
    assert cache_dtype("32-true", None) == torch.float32
    assert cache_dtype("32-true", "float16") == torch.float16
    assert np.dtype("float16").itemsize == 2
