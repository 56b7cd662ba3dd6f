"""Cache, datasets and the ISLES 2018 DataModule on a tiny twin."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DistributedSampler

from datamodules import ISLES2018DataModule
from datamodules.errors import DataValidationError
from datamodules.isles2018_reader import read_case, scan_isles2018
from datamodules.normalization import normalize_channels


def _datamodule(root: Path, tmp_path: Path, **kwargs) -> ISLES2018DataModule:
    defaults = dict(data_dir=str(root), cache_dir=str(tmp_path / "cache"), num_folds=3,
                    batch_size=4, num_workers=0)  # fmt: skip
    return ISLES2018DataModule(**{**defaults, **kwargs})


def test_cache_holds_exactly_the_decoded_normalised_case(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    cache = dm.caches["TRAINING"]
    case = scan_isles2018(tiny_twin)[3]
    index = cache.case_names.index(case.name)
    image, label, spacing = read_case(case, ["CT", "Tmax", "CBF", "CBV", "MTT"])
    expected = normalize_channels(
        image, (image[1:] > 0).any(axis=0), "zscore", [True] + [False] * 4
    )
    rows = slice(cache.case_offsets[index], cache.case_offsets[index + 1])
    assert np.array_equal(cache.images[rows], np.moveaxis(expected, -1, 0))
    assert np.array_equal(cache.labels[rows], np.moveaxis(label, -1, 0))
    assert cache.spacing[index] == pytest.approx((spacing[2], spacing[0], spacing[1]))


def test_cache_is_reused_and_keyed_by_settings(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path)
    dm.prepare_data()
    first = dm.cache_path("TRAINING")
    stamp = (first / "images.npy").stat().st_mtime_ns
    dm.prepare_data()
    assert (first / "images.npy").stat().st_mtime_ns == stamp
    other = _datamodule(tiny_twin, tmp_path, normalization="minmax")
    assert other.cache_path("TRAINING") != first


def test_failed_build_leaves_nothing_in_the_cache(twin_copy, tmp_path):
    case = scan_isles2018(twin_copy)[-1]
    case.files["CBV"].write_bytes(case.files["CBV"].read_bytes()[:400])
    dm = _datamodule(twin_copy, tmp_path)
    with pytest.raises(DataValidationError, match=str(case.files["CBV"])):
        dm.prepare_data()
    assert not any((tmp_path / "cache").iterdir())


def test_split_is_per_patient_and_written_to_the_run_dir(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path)
    dm.prepare_data()
    dm.trainer = type(
        "T", (), {"log_dir": str(tmp_path / "run"), "state": type("S", (), {"fn": "fit"})()}
    )()
    dm.setup("fit")
    cache = dm.caches["TRAINING"]
    assert set(cache.patient[dm.train_cases]).isdisjoint(cache.patient[dm.val_cases])
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["unit"] == "patient" and split["fold"] == 0
    assert sorted(split["train_cases"] + split["val_cases"]) == sorted(cache.case_names)


def test_training_batches_and_whole_case_items(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path, image_size=24)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 5, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, 24, 24)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}
    case = next(iter(dm.val_dataloader()))
    depth = case["label"].shape[0]
    assert case["image"].shape == (depth, 5, 24, 24)
    assert case["label"].shape == (depth, 32, 32)  # labels stay on the native grid
    assert case["spacing"].shape == (3,)


def test_distributed_case_sampler_neither_pads_nor_drops(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    dataset = dm.val_dataloader().dataset
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(
            dataset, even_divisible=False, shuffle=False, num_replicas=2, rank=rank
        )
        seen += [dataset[i]["case_index"] for i in sampler]
    assert sorted(seen) == sorted(dm.val_cases.tolist())


def test_fold_out_of_range_is_rejected(tiny_twin, tmp_path):
    with pytest.raises(ValueError, match=r"fold must be in \[0, 2\]"):
        _datamodule(tiny_twin, tmp_path, fold=3)


def test_augmentation_geometry():
    from datamodules.transforms import slice_augmentation

    image = torch.randn(5, 16, 12)
    sample = {"image": image, "label": (image[:1] > 0.5).float()}
    identity = slice_augmentation(0.0, 0.0, (1.0, 1.0), ())(sample)
    assert torch.allclose(identity["image"], image, atol=1e-5)
    flips = slice_augmentation(0.0, 0.0, (1.0, 1.0), (0,))
    outcomes = set()
    for seed in range(8):
        flips.set_random_state(seed)
        out = flips(sample)["image"]
        flipped = torch.allclose(out, image.flip(1), atol=1e-5)
        assert flipped or torch.allclose(out, image, atol=1e-5)
        outcomes.add(flipped)
    assert outcomes == {True, False}
    augment = slice_augmentation()
    augment.set_random_state(0)
    out = augment(sample)
    assert out["image"].shape == image.shape
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    assert not torch.allclose(out["image"], image)
