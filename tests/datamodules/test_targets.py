"""Image targets beside the inputs (seed 002's real DWI): cached, transformed with the inputs,
split off in samples and case items, and mapped back to raw intensities."""

from pathlib import Path

import numpy as np
import torch

from datamodules import ISLES2018DataModule
from datamodules.isles2018_reader import read_case, scan_isles2018
from datamodules.transforms import Augmentation

CHANNELS = ("MTT", "Tmax", "CBV", "CBF", "PWI_max")


def _datamodule(root: Path, tmp_path: Path, stage: str = "fit", **kwargs) -> ISLES2018DataModule:
    settings = dict(
        data_dir=str(root),
        cache_dir=str(tmp_path / "cache"),
        channels=CHANNELS,
        targets=("DWI",),
        clip_channels=(),
        num_folds=3,
        batch_size=2,
        num_workers=0,
        augmentation=None,
    )
    dm = ISLES2018DataModule(**{**settings, **kwargs})
    if stage == "predict":
        dm.trainer = type("T", (), {"state": type("S", (), {"fn": "predict"})()})()
    dm.prepare_data()
    dm.setup(stage)
    return dm


def test_the_dwi_is_served_beside_the_inputs_and_maps_back_to_raw(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path)
    assert dm.caches["TRAINING"].channels == [*CHANNELS, "DWI"]
    assert dm.signature()["targets"] == ["DWI"]
    sample = dm.train_dataset()[0]
    assert sample["image"].shape == (5, 32, 32) and sample["target"].shape == (1, 32, 32)
    case = next(iter(dm.val_dataloader()))
    depth = case["native_shape"][0]
    assert case["image"].shape == (depth, 5, 32, 32)
    assert case["target"].shape == (depth, 1, 32, 32)
    # The way back: raw DWI = value · scale + offset (native grid here: no resize).
    (isles_case,) = [c for c in scan_isles2018(tiny_twin) if c.name == case["case"]]
    raw, _, _ = read_case(isles_case, ["DWI"])  # (1, X, Y, Z)
    offset, scale = case["intensity"][5].tolist()
    restored = case["target"][:, 0].numpy() * scale + offset  # (Z, X, Y)
    np.testing.assert_allclose(restored, np.moveaxis(raw[0], -1, 0), rtol=1e-4, atol=1e-2)


def test_inputs_target_and_label_move_together(tiny_twin, tmp_path):
    flips = Augmentation(0.0, 0.0, (1.0, 1.0), (0,))
    plain = _datamodule(tiny_twin, tmp_path).train_dataset()
    moved = _datamodule(tiny_twin, tmp_path, augmentation=flips).train_dataset()
    outcomes = set()
    for seed in range(6):
        before, after = plain[(0, seed)], moved[(0, seed)]
        flipped = [
            torch.allclose(after[key].float(), before[key].float().flip(-2), atol=1e-5)
            for key in ("image", "target", "label")
        ]
        kept = [
            torch.allclose(after[key].float(), before[key].float(), atol=1e-5)
            for key in ("image", "target", "label")
        ]
        assert all(flipped) or all(kept)
        outcomes.add(all(flipped))
    assert outcomes == {True, False}


def test_testing_cases_have_no_target(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path, stage="predict")
    assert dm.split_channels("TESTING") == list(CHANNELS)
    case = next(iter(dm.predict_dataloader()))
    assert case["target"] is None and case["image"].shape[1] == 5


def test_without_targets_the_signature_is_unchanged(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path, targets=())
    assert "targets" not in dm.signature()
    assert "target" not in dm.train_dataset()[0]
