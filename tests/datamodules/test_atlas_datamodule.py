"""ATLASDataModule on a tiny R1.1 twin: network-grid cache, 2.5D stacks, splits and sampling."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.errors import ConfigurationError
from datamodules import ATLASDataModule
from datamodules.atlas_reader import read_scan, scan_atlas

# The tiny twin's slices are 47 rows × 40 columns: a 32×32 window replaces the papers' crops.
WINDOW = (4, 36, 4, 36)


def _datamodule(root: Path, tmp_path: Path, run_dir: Path | None = None, **kwargs):
    defaults = dict(
        data_dir=str(root),
        cache_dir=str(tmp_path / "cache"),
        num_folds=4,
        crop=WINDOW,
        image_size=None,
        context=(0,),
        batch_size=4,
        num_workers=0,
    )
    dm = ATLASDataModule(**{**defaults, **kwargs})
    dm.prepare_data()
    if run_dir is not None:
        dm.trainer = type(
            "T", (), {"log_dir": str(run_dir), "state": type("S", (), {"fn": "fit"})()}
        )()
    dm.setup("fit")
    return dm


@pytest.fixture
def dm(tiny_atlas, tmp_path) -> ATLASDataModule:
    return _datamodule(tiny_atlas, tmp_path)


def test_cache_holds_the_windowed_min_max_t1_and_or_mask_as_y_x_slices(dm, tiny_atlas):
    cache = dm.train_cache
    scan = scan_atlas(tiny_atlas)[2]
    index = cache.case_names.index(scan.name)
    t1, mask, _ = read_scan(scan)
    rows = slice(cache.case_offsets[index], cache.case_offsets[index + 1])
    expected = (t1 - t1.min()) / (t1.max() - t1.min())  # (X, Y, Z), whole-volume min-max
    h0, h1, w0, w1 = WINDOW
    yx = np.transpose(expected, (2, 1, 0))  # (Z, Y, X): 233 × 197 slices on the real grid
    np.testing.assert_allclose(cache.images[rows, 0], yx[:, h0:h1, w0:w1], atol=1e-6)
    label = np.transpose(mask, (2, 1, 0))
    assert np.array_equal(cache.labels[rows], label[:, h0:h1, w0:w1])
    assert np.array_equal(cache.native_label(index), label)  # the whole native grid is kept
    assert np.array_equal(dm.geometry.to_source(cache.native_label(index)), mask)
    assert np.array_equal(cache.label_voxels[rows], label[:, h0:h1, w0:w1].sum(axis=(1, 2)))


def test_four_slice_stack_is_i_minus_2_to_i_plus_1_zero_padded_at_the_ends(tiny_atlas, tmp_path):
    dm = _datamodule(tiny_atlas, tmp_path, context=(-2, -1, 0, 1), augmentation=None)
    cache = dm.train_cache
    case = int(dm.val_cases[0])
    first, last = cache.case_offsets[case], cache.case_offsets[case + 1]
    item = dm.val_dataloader().dataset[0]
    assert item["image"].shape == (last - first, 4, 32, 32)
    window = torch.from_numpy(np.array(cache.images[first:last, 0]))
    for i in (0, 1, 5, last - first - 1):
        for channel, offset in enumerate((-2, -1, 0, 1)):
            j = i + offset
            expected = window[j] if 0 <= j < last - first else torch.zeros(32, 32)
            assert torch.equal(item["image"][i, channel], expected), (i, offset)
    assert item["geometry"].window((47, 40)) == WINDOW
    assert item["label"].shape == item["native_shape"] == (last - first, 47, 40)
    # A training sample stacks the same neighbours: slice 1 of a training case.
    train = dm.train_dataloader().dataset
    start = int(cache.case_offsets[dm.train_cases[0]])
    sample = train[int(np.flatnonzero(train.rows == start + 1)[0])]
    assert torch.equal(sample["image"][0], torch.zeros(32, 32))  # i-2 lies before the case
    for channel, row in zip((1, 2, 3), (start, start + 1, start + 2)):
        assert torch.equal(
            sample["image"][channel], torch.from_numpy(np.array(cache.images[row, 0]))
        )
    assert torch.equal(sample["label"][0], torch.from_numpy(np.array(cache.labels[start + 1])))
    inner = train[int(np.flatnonzero(train.rows == start + 5)[0])]  # one contiguous read
    expected_rows = torch.from_numpy(np.array(cache.images[start + 3 : start + 7, 0]))
    assert torch.equal(inner["image"], expected_rows)


def test_subject_split_keeps_sessions_together_and_is_written(tiny_atlas, tmp_path):
    dm = _datamodule(tiny_atlas, tmp_path, run_dir=tmp_path / "run")
    cache = dm.train_cache
    assert set(cache.patient[dm.train_cases]).isdisjoint(cache.patient[dm.val_cases])
    assert len(np.unique(cache.patient)) < len(cache)  # the twin has a two-session subject
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["unit"] == "patient" and "val_slices" not in split
    assert np.array_equal(dm.train_rows, cache.slice_rows(dm.train_cases))


def test_slice_split_warns_holds_out_slices_and_scores_only_those(tiny_atlas, tmp_path):
    with pytest.warns(UserWarning, match="optimistic"):
        dm = _datamodule(
            tiny_atlas, tmp_path, run_dir=tmp_path / "run", split_unit="slice", num_folds=10
        )
    cache = dm.train_cache
    all_rows = cache.slice_rows(np.flatnonzero(cache.has_label))
    assert np.intersect1d(dm.train_rows, dm.val_rows).size == 0
    assert np.array_equal(np.union1d(dm.train_rows, dm.val_rows), all_rows)
    assert len(dm.val_rows) == pytest.approx(len(all_rows) / 10, abs=1)
    # Subjects leak: most validation subjects also have training slices.
    assert np.intersect1d(dm.train_cases, dm.val_cases).size > 0
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["unit"] == "slice"
    assert sum(len(s) for s in split["val_slices"].values()) == len(dm.val_rows)
    items = list(dm.val_dataloader())
    assert sum(item["image"].shape[0] for item in items) == len(dm.val_rows)
    for item in items:
        slices = split["val_slices"][item["case"]]
        assert np.array_equal(item["label"].numpy(), cache.native_label(item["case_index"])[slices])


def test_settings_are_checked(tiny_atlas, tmp_path):
    with pytest.raises(ConfigurationError, match="split_unit"):
        ATLASDataModule(data_dir=str(tiny_atlas), split_unit="voxel")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="foreground_fraction"):
        ATLASDataModule(data_dir=str(tiny_atlas), foreground_fraction=1.5)
    with pytest.raises(ConfigurationError, match=r"fold must be in \[0, 4\].*data.init_args.fold"):
        ATLASDataModule(data_dir=str(tiny_atlas), fold=7)


def test_foreground_fraction_draws_that_share_of_lesion_slices(tiny_atlas, tmp_path):
    torch.manual_seed(0)
    uniform = _datamodule(tiny_atlas, tmp_path).train_dataloader()
    assert uniform.sampler.weights is None  # a permutation: every slice once per epoch
    positions = [p for p, _ in uniform.sampler]
    assert sorted(positions) == list(range(len(uniform.dataset)))
    dm = _datamodule(tiny_atlas, tmp_path, foreground_fraction=0.5)
    loader = dm.train_dataloader()
    lesion = dm.train_cache.label_voxels[dm.train_rows] > 0
    assert 0.05 < lesion.mean() < 0.4  # lesion slices are a minority of the tiny twin
    drawn = []
    for epoch in range(20):
        loader.sampler.set_epoch(epoch)
        drawn += [position for position, _ in loader.sampler]
    assert len(drawn) == 20 * len(dm.train_rows)
    assert lesion[drawn].mean() == pytest.approx(0.5, abs=0.03)


def test_the_papers_crop_on_a_smaller_grid_is_refused_before_decoding(tiny_atlas, tmp_path):
    # D-UNet's default window (rows 40:220, cols 10:190) does not fit 47×40 slices: clipping
    # it would paste every prediction back at the wrong place.
    dm = ATLASDataModule(data_dir=str(tiny_atlas), cache_dir=str(tmp_path / "cache"), num_workers=0)
    with pytest.raises(
        ConfigurationError, match=r"rows 40:220, cols 10:190 does not fit its 47×40"
    ):
        dm.prepare_data()
    assert not any((tmp_path / "cache").iterdir())


def test_a_mask_saved_with_flipped_axes_gives_the_same_cache(tiny_atlas, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_atlas, tmp_path / "atlas"))
    scan = scan_atlas(copy)[1]
    image = nib.load(scan.masks[0])
    data = np.asarray(image.dataobj)
    # The same lesion in world space, stored with the x axis reversed.
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flipped = nib.Nifti1Image(data[::-1].copy(), image.affine @ flip, image.header)
    flipped.set_qform(image.affine @ flip, 1)
    flipped.set_sform(image.affine @ flip, 1)
    nib.save(flipped, scan.masks[0])
    reference = _datamodule(tiny_atlas, tmp_path / "a")
    reoriented = _datamodule(copy, tmp_path / "b")
    name = scan.name
    one, two = reference.train_cache, reoriented.train_cache
    i, j = one.case_names.index(name), two.case_names.index(name)
    assert np.array_equal(one.native_label(i), two.native_label(j))
    assert one.native_label(i).any()


def test_a_t1_saved_with_a_trailing_axis_of_one_gives_the_same_cache(tiny_atlas, tmp_path):
    import shutil

    copy = Path(shutil.copytree(tiny_atlas, tmp_path / "atlas"))
    scan = scan_atlas(copy)[1]
    image = nib.load(scan.t1)
    # (X, Y, Z, 1), as some tools write a 3D volume; the same grid.
    four_d = nib.Nifti1Image(np.asarray(image.dataobj)[..., None], image.affine, image.header)
    nib.save(four_d, scan.t1)
    assert nib.load(scan.t1).shape[3:] == (1,)
    reference = _datamodule(tiny_atlas, tmp_path / "a")
    trailing = _datamodule(copy, tmp_path / "b")
    one, two = reference.train_cache, trailing.train_cache
    i, j = one.case_names.index(scan.name), two.case_names.index(scan.name)
    assert tuple(two.native_shape[j]) == tuple(one.native_shape[i])
    assert np.array_equal(one.native_label(i), two.native_label(j))
