"""3D data: the depth policy of VolumeGeometry, volume training samples and in-plane augmentation."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigurationError
from datamodules import ISLES2018DataModule
from datamodules.geometry import SliceGeometry, VolumeGeometry
from datamodules.transforms import Augmentation
from networks.blocks import pad_to_multiples


def _datamodule(root: Path, tmp_path: Path, **kwargs) -> ISLES2018DataModule:
    defaults = dict(
        data_dir=str(root),
        cache_dir=str(tmp_path / "cache"),
        num_folds=3,
        batch_size=2,
        num_workers=0,
        spatial_dims=3,
        depth=8,
        augmentation=None,
    )
    dm = ISLES2018DataModule(**{**defaults, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("depth", [1, 2, 5, 7, 8, 11])
def test_depth_padding_is_centred_and_cropped_back_exactly(depth):
    geometry = VolumeGeometry.create_volume((2, 0, 1), size=16, depth=8)
    volume = torch.rand(3, depth, 4, 5) + 1  # no zeros of its own
    padded = geometry.pad_depth(volume)
    assert padded.shape == (3, max(depth, 8), 4, 5)
    before, after = geometry.depth_padding(depth)
    assert (
        (before, after) == ((8 - depth) // 2, 8 - depth - (8 - depth) // 2)
        if depth <= 8
        else (
            0,
            0,
        )
    )
    assert torch.equal(geometry.crop_depth(padded, depth), volume)
    # Zero slices exactly where the padding went, the case's slices untouched in between.
    assert torch.count_nonzero(padded[:, :before]) == 0
    assert torch.count_nonzero(padded[:, padded.shape[1] - after :]) == 0
    # The same convention as the networks' own padding (VolumeNet): one model of "centred".
    if depth <= 8:
        _, crop = pad_to_multiples(volume[None], (8, 1, 1))
        assert crop[0] == slice(before, before + depth)


def test_a_volume_geometry_shares_the_cache_of_its_slices_but_not_the_signature():
    flat = SliceGeometry.create((2, 0, 1), (1, 30, 2, 31), 16)
    volume = VolumeGeometry.create_volume((2, 0, 1), (1, 30, 2, 31), 16, depth=32)
    assert volume.settings() == flat.settings()
    assert volume.network_settings() == {"context": [0], "spatial_dims": 3, "depth": 32}
    assert flat.network_settings() == {"context": [0]}
    assert (flat.spatial_dims, volume.spatial_dims) == (2, 3)


def test_malformed_depth_settings_are_refused():
    with pytest.raises(ConfigurationError, match="depth must be a positive"):
        VolumeGeometry.create_volume((2, 0, 1), depth=0)
    with pytest.raises(ConfigurationError, match="context must be"):
        VolumeGeometry((2, 0, 1), None, None, (-1, 0), 8)
    with pytest.raises(ConfigurationError, match="depth is for spatial_dims 3"):
        ISLES2018DataModule(data_dir="nowhere", spatial_dims=2, depth=32)


def test_volume_batches_are_the_cases_padded_in_depth(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path)
    cache = dm.caches["TRAINING"]
    dataset = dm.train_dataset()
    assert len(dataset) == len(dm.train_cases)
    for position, case in enumerate(dataset.cases):
        first, last = cache.case_offsets[case], cache.case_offsets[case + 1]
        sample = dataset[position]
        assert sample["image"].shape == (5, max(8, last - first), 32, 32)
        assert sample["label"].shape == (1, max(8, last - first), 32, 32)
        assert sample["label"].dtype == torch.uint8
        if last - first <= 8:
            before, _ = dm.geometry.depth_padding(int(last - first))
            inside = slice(before, before + int(last - first))
            expected = np.moveaxis(np.asarray(cache.images[first:last]), 0, 1)
            assert np.array_equal(sample["image"][:, inside].numpy(), expected)
            assert np.array_equal(sample["label"][0, inside].numpy(), cache.labels[first:last])
            assert int(sample["label"].sum()) == int(cache.label_voxels[first:last].sum())
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[:3] == (2, 5, 8)
    assert batch["label"].shape[:3] == (2, 1, 8)
    assert dataset.has_lesion().tolist() == [
        bool(cache.label_voxels[cache.case_offsets[c] : cache.case_offsets[c + 1]].sum())
        for c in dataset.cases
    ]


def test_a_case_deeper_than_the_depth_gives_a_seeded_window(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path, depth=2)
    cache, dataset = dm.caches["TRAINING"], dm.train_dataset()
    depths = np.diff(cache.case_offsets)[dataset.cases]
    position = int(np.argmax(depths))
    case = int(dataset.cases[position])
    assert depths[position] > 2
    first = int(cache.case_offsets[case])
    volume = np.moveaxis(np.asarray(cache.images[first : first + depths[position]]), 0, 1)
    starts = set()
    for seed in range(12):
        sample = dataset[(position, seed)]
        assert sample["image"].shape[1] == 2
        start = next(
            s
            for s in range(depths[position] - 1)
            if np.array_equal(volume[:, s : s + 2], sample["image"])
        )
        assert torch.equal(dataset[(position, seed)]["image"], sample["image"])  # same seed
        starts.add(start)
    assert len(starts) > 1


def test_native_depth_batches_are_padded_to_their_deepest_case(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path, depth=None, batch_size=3)
    dataset = dm.train_dataset()
    depths = [dataset[i]["image"].shape[1] for i in range(len(dataset))]
    shallow, deep = int(np.argmin(depths)), int(np.argmax(depths))
    assert depths[shallow] < depths[deep]
    collate = dm.train_dataloader().collate_fn
    batch = collate([dataset[shallow], dataset[deep]])
    assert batch["image"].shape == (2, 5, depths[deep], 32, 32)
    assert batch["label"].dtype == torch.uint8
    before, _ = dm.geometry.depth_padding(depths[shallow], depths[deep])
    inside = slice(before, before + depths[shallow])
    assert torch.equal(batch["image"][0, :, inside], dataset[shallow]["image"])
    assert torch.count_nonzero(batch["image"][0, :, :before]) == 0
    assert torch.equal(batch["image"][1], dataset[deep]["image"])
    assert next(iter(dm.train_dataloader()))["image"].shape[0] == 3


def test_volume_augmentation_moves_every_slice_alike():
    slice_ = torch.randn(2, 16, 12)
    image = torch.stack([slice_, slice_ * 2, slice_ * 3], dim=1)  # (C, D, H, W), related slices
    sample = {"image": image, "label": (image[:1] > 0.5).to(torch.uint8)}
    augment = Augmentation().transform()
    for seed in range(4):
        augment.set_random_state(seed)
        out = augment(sample)
        assert out["image"].shape == image.shape and out["label"].shape == (1, 3, 16, 12)
        assert not torch.allclose(out["image"], image)
        # One in-plane transform for all slices: slice k is still (k + 1) × the first one.
        for k in (1, 2):
            assert torch.allclose(out["image"][:, k], out["image"][:, 0] * (k + 1), atol=1e-4)


@pytest.mark.parametrize("spatial_dims, depth", [(2, None), (3, 8)])
def test_augmenting_on_the_device_gives_the_workers_batches(
    spatial_dims, depth, tiny_twin, tmp_path
):
    settings = dict(spatial_dims=spatial_dims, depth=depth, augmentation=Augmentation())
    workers = _datamodule(tiny_twin, tmp_path, **settings)
    device = _datamodule(tiny_twin, tmp_path, **settings, augment_on_device=True)
    keys = [(0, 11), (1, 12)]
    collate = workers.train_dataloader().collate_fn
    expected = collate([workers.train_dataset()[k] for k in keys])
    deferred = collate([device.train_dataset()[k] for k in keys])
    assert deferred["seed"].tolist() == [11, 12]
    assert not torch.equal(deferred["image"], expected["image"])  # not yet augmented
    batch = device.on_after_batch_transfer(deferred, 0)
    assert set(batch) == {"image", "label"}
    # One batched resampling instead of one per sample: equal up to interpolation rounding.
    torch.testing.assert_close(batch["image"], expected["image"], atol=1e-4, rtol=1e-4)
    assert (batch["label"] != expected["label"]).sum() <= 2
    # Case items (validation) pass through untouched.
    case = {"image": torch.zeros(1), "label": None}
    assert device.on_after_batch_transfer(case, 0) is case
