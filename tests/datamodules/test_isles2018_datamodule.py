"""Cache, datasets and the ISLES 2018 DataModule on a tiny twin."""

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DistributedSampler

from core.errors import ConfigurationError, DataValidationError
from datamodules import ISLES2018DataModule
from datamodules.isles2018_reader import read_case, scan_isles2018
from datamodules.nifti import write_like
from datamodules.normalization import normalize_channels
from datamodules.transforms import Augmentation
from tests.conftest import run_gloo


def _datamodule(root: Path, tmp_path: Path, **kwargs) -> ISLES2018DataModule:
    defaults = dict(
        data_dir=str(root),
        cache_dir=str(tmp_path / "cache"),
        num_folds=3,
        batch_size=4,
        num_workers=0,
    )
    return ISLES2018DataModule(**{**defaults, **kwargs})


def _fit_trainer(log_dir: Path):
    return type("T", (), {"log_dir": str(log_dir), "state": type("S", (), {"fn": "fit"})()})()


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
    assert np.array_equal(cache.native_label(index), np.moveaxis(label, -1, 0))
    assert cache.spacing[index] == pytest.approx((spacing[2], spacing[0], spacing[1]))


def test_cache_is_reused_and_keyed_by_settings_and_geometry(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path)
    dm.prepare_data()
    first = dm.cache_path("TRAINING")
    stamp = (first / "images.npy").stat().st_mtime_ns
    dm.prepare_data()
    assert (first / "images.npy").stat().st_mtime_ns == stamp
    other = _datamodule(tiny_twin, tmp_path, normalization="minmax")
    assert other.cache_path("TRAINING") != first
    resized = _datamodule(tiny_twin, tmp_path, image_size=24)
    assert resized.cache_path("TRAINING") != first  # the cache holds the network grid


def test_cache_key_needs_no_header(tiny_twin, tmp_path, monkeypatch):
    import nibabel

    def refuse(*args, **kwargs):
        raise AssertionError("a header was read to key the cache")

    dm = _datamodule(tiny_twin, tmp_path)
    monkeypatch.setattr(nibabel, "load", refuse)
    dm.cache_path("TRAINING")  # stat() of each source file is enough


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
    dm.trainer = _fit_trainer(tmp_path / "run")
    dm.setup("fit")
    cache = dm.caches["TRAINING"]
    assert set(cache.patient[dm.train_cases]).isdisjoint(cache.patient[dm.val_cases])
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["unit"] == "patient" and split["fold"] == 0
    assert sorted(split["train_cases"] + split["val_cases"]) == sorted(cache.case_names)


def test_training_batches_and_self_describing_case_items(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path, image_size=24)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 5, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, 24, 24) and batch["label"].dtype == torch.uint8
    assert set(torch.unique(batch["label"]).tolist()) <= {0, 1}
    case = next(iter(dm.val_dataloader()))
    depth = case["label"].shape[0]
    assert case["image"].shape == (depth, 5, 24, 24)
    assert case["label"].shape == case["native_shape"] == (depth, 32, 32)  # native grid
    assert case["spacing"].shape == (3,)
    source = Path(case["source"])
    assert source.parent.name.startswith("SMIR.Brain.XX.O.CT.") and source.is_file()
    assert case["case"].startswith("TRAINING/case_")
    mtt = next(source.parent.parent.glob("SMIR.Brain.XX.O.CT_MTT.*")).name.rsplit(".", 1)[1]
    assert case["prediction"].path == f"SMIR.strokeseg.{mtt}.nii"


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


def _setup_on_rank(rank: int, twin: Path, tmp_path: Path, runs: list[tuple]) -> list[str]:
    """Each ``(stage, fold, limit_val_batches)`` set up on this rank: ``"ok"`` or the error."""
    outcomes = []
    for stage, fold, limit in runs:
        dm = _datamodule(twin, tmp_path, fold=fold)
        state = SimpleNamespace(fn=stage)
        dm.trainer = SimpleNamespace(state=state, log_dir=None, limit_val_batches=limit)
        try:
            dm.setup(stage)
            outcomes.append("ok")
        except ConfigurationError as error:
            outcomes.append(str(error))
    return outcomes


@pytest.mark.slow
def test_fewer_cases_than_processes_is_refused_alike_on_every_rank(tiny_twin, tmp_path):
    """Each case is scored by one process, so a fold (or predict split) with fewer cases than
    processes was MONAI's "dataset length is less than the number of participating ranks"
    traceback. Every rank now refuses it at setup, alike, before any collective."""
    dm = _datamodule(tiny_twin, tmp_path)
    dm.prepare_data()
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="predict"))
    dm.prepare_data()
    # Three processes; the folds hold 6, 4 and 2 cases, the TESTING split 2.
    runs = [("validate", 0, 1.0), ("fit", 2, 1.0), ("test", 2, 1.0), ("fit", 2, 0)]
    runs.append(("predict", 0, 1.0))
    outcomes = run_gloo(_setup_on_rank, 3, tiny_twin, tmp_path, runs)
    assert {kind for kind, _ in outcomes.values()} == {"returned"}, outcomes
    validate, fit, test, fit_without_validation, predict = outcomes[0][1]
    assert all(outcome[1] == outcomes[0][1] for outcome in outcomes.values())
    assert validate == fit_without_validation == "ok"
    assert fit.startswith(
        f"lightning fit with 3 processes: validation fold 2 of 3 ({tiny_twin}) holds 2 cases"
    )
    assert "--trainer.devices 2), or make the folds larger (fewer data.init_args.num_folds" in fit
    assert test.startswith("lightning test with 3 processes: validation fold 2 of 3")
    assert predict.startswith(
        f"lightning predict with 3 processes: the TESTING split of {tiny_twin} holds 2 cases"
    )
    assert predict.endswith("Run it in at most 2 processes (--trainer.devices 2).")


def test_fold_out_of_range_is_rejected(tiny_twin, tmp_path):
    with pytest.raises(ConfigurationError, match=r"fold must be in \[0, 2\]"):
        _datamodule(tiny_twin, tmp_path, fold=3)


def test_more_folds_than_patients_is_a_configuration_error(tiny_twin, tmp_path):
    dm = _datamodule(tiny_twin, tmp_path, num_folds=40)
    dm.prepare_data()
    with pytest.raises(
        ConfigurationError,
        match=r"Cannot make 40 folds from the 8 patients.*num_folds to at most 8",
    ):
        dm.setup("fit")


@pytest.mark.parametrize("problem", ["file", "read-only"])
def test_an_unusable_cache_folder_is_refused_up_front(tiny_twin, tmp_path, problem):
    if problem == "file":
        (tmp_path / "blocker").write_text("")
        cache_dir = tmp_path / "blocker" / "cache"
        expected = "exists and is not a folder"
    else:
        if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
            pytest.skip("root can write anywhere")
        (tmp_path / "ro").mkdir(mode=0o500)
        cache_dir = tmp_path / "ro" / "cache"
        expected = "is not writable"
    with pytest.raises(ConfigurationError, match=f"{expected}.*data.init_args.cache_dir"):
        ISLES2018DataModule(data_dir=str(tiny_twin), cache_dir=str(cache_dir))


def test_case_folders_with_other_names_are_reported(twin_copy, tmp_path, caplog):
    first = sorted((twin_copy / "TRAINING").iterdir())[0]
    shutil.copytree(first, twin_copy / "TRAINING" / "case_5 copy")
    (twin_copy / "TRAINING" / "case_1-old").mkdir()
    with caplog.at_level(logging.WARNING, logger="datamodules"):
        items = _datamodule(twin_copy, tmp_path).items("TRAINING")
    assert len(items) == 12
    assert "ignoring 2 folder(s) not named case_<N>" in caplog.text
    assert "case_1-old, case_5 copy" in caplog.text


def test_an_ot_with_another_spacing_is_refused_naming_both_files(twin_copy, tmp_path):
    case = scan_isles2018(twin_copy)[2]
    image = nib.load(case.files["OT"])
    header = image.header.copy()
    zooms = header.get_zooms()
    header.set_zooms((zooms[0] * 1.5, zooms[1], zooms[2]))
    moved = nib.Nifti1Image(np.asarray(image.dataobj), None, header)
    qform = image.header.get_qform()
    qform[0, 0] *= 1.5
    moved.set_qform(qform, 2)
    moved.set_sform(image.header.get_sform(), 2)  # the identity sform of the real files
    nib.save(moved, case.files["OT"])
    dm = _datamodule(twin_copy, tmp_path)
    ot, ct = case.files["OT"], case.files["CT"]
    with pytest.raises(DataValidationError, match=rf"{ot}: its voxel grid does not match {ct}"):
        dm.prepare_data()


@pytest.mark.parametrize("shape", [(5, 16, 12), (5, 3, 16, 12)], ids=["slice", "volume"])
def test_augmentation_geometry(shape):
    image = torch.randn(shape)  # (C, H, W) or (C, D, H, W): in-plane either way
    sample = {"image": image, "label": (image[:1] > 0.5).to(torch.uint8)}
    still = Augmentation(0.0, 0.0, (1.0, 1.0), ()).transform()
    assert torch.allclose(still(sample)["image"], image, atol=1e-5)
    flips = Augmentation(0.0, 0.0, (1.0, 1.0), (0,)).transform()
    outcomes = set()
    for seed in range(8):
        flips.set_random_state(seed)
        out = flips(sample)["image"]
        flipped = torch.allclose(out, image.flip(-2), atol=1e-5)  # rows (NIfTI x), never depth
        assert flipped or torch.allclose(out, image, atol=1e-5)
        outcomes.add(flipped)
    assert outcomes == {True, False}
    augment = Augmentation().transform()
    augment.set_random_state(0)
    out = augment(sample)
    assert out["image"].shape == image.shape
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    assert not torch.allclose(out["image"], image)


def _resize_case(case_dir: Path, shape: tuple[int, int]) -> None:
    """Rewrite every volume of a case on a larger, non-square in-plane grid (zero-padded)."""
    for path in case_dir.glob("SMIR.*/*.nii"):
        image = nib.load(path)
        data = np.asarray(image.dataobj)
        padded = np.zeros((*shape, *data.shape[2:]), dtype=data.dtype)
        padded[: data.shape[0], : data.shape[1]] = data
        header = image.header.copy()
        header.set_data_shape(padded.shape)
        out = nib.Nifti1Image(padded, None, header)
        out.set_qform(image.header.get_qform(), int(image.header["qform_code"]))
        out.set_sform(image.header.get_sform(), int(image.header["sform_code"]))
        nib.save(out, path)


def test_cases_of_different_sizes_need_one_network_grid_and_keep_their_own(twin_copy, tmp_path):
    case = scan_isles2018(twin_copy)[4]
    _resize_case(case.directory, (40, 36))
    with pytest.raises(
        ConfigurationError, match=r"different sizes .*\(32, 32\).*\(40, 36\).*image_size"
    ):
        _datamodule(twin_copy, tmp_path).prepare_data()
    dm = _datamodule(twin_copy, tmp_path, image_size=24, num_folds=2)
    dm.prepare_data()
    dm.setup("fit")
    cache = dm.caches["TRAINING"]
    index = cache.case_names.index(case.name)
    assert cache.images.shape[-2:] == (24, 24)
    assert tuple(cache.native_shape[index][1:]) == (40, 36)  # metrics and masks on its own grid
    _, label, _ = read_case(case, ["CT"])
    assert np.array_equal(dm.geometry.to_source(cache.native_label(index)), label)


def test_a_ct_stored_with_a_trailing_axis_of_length_one_is_cached_and_predicted(
    twin_copy, tmp_path
):
    # Some tools write a 3D volume as (X, Y, Z, 1); the reader decodes it as 3D, and the cache
    # (which plans its grid from the header) and the written prediction must agree.
    case = scan_isles2018(twin_copy)[0]
    ct = case.files["CT"]
    image = nib.load(ct, mmap=False)
    data = np.asarray(image.dataobj)
    nib.save(nib.Nifti1Image(data[..., None], None, image.header), ct)
    dm = _datamodule(twin_copy, tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    cache = dm.caches["TRAINING"]
    index = cache.case_names.index(case.name)
    assert tuple(dm.geometry.to_source(cache.native_label(index)).shape) == data.shape
    written = write_like(
        dm.geometry.to_source(cache.native_label(index)), ct, tmp_path / "mask.nii", np.uint8
    )
    assert nib.load(written).shape == data.shape


def _store_reoriented(case_dir: Path, ornt: np.ndarray) -> None:
    """Rewrite every file of a case with its voxels stored in another axis order (``ornt``,
    nibabel's orientation array), the header following, so each file holds the same image in
    world space: as a scanner's LPS export or an axis-permuted copy would store it."""
    for path in case_dir.glob("SMIR.*/*.nii"):
        image = nib.load(path, mmap=False)
        data = np.asarray(image.dataobj)
        affine = image.header.get_qform() @ nib.orientations.inv_ornt_aff(ornt, data.shape[:3])
        stored = nib.orientations.apply_orientation(data, ornt)
        out = nib.Nifti1Image(np.ascontiguousarray(stored), affine)
        out.set_qform(affine, 2)
        out.set_sform(affine, 2)
        nib.save(out, path)


@pytest.mark.parametrize(
    "ornt",
    [
        np.array([[0, -1], [1, -1], [2, 1]]),  # LPS, as SimpleITK exports a DICOM series
        np.array([[1, 1], [0, -1], [2, -1]]),  # rows and columns swapped, two axes flipped
    ],
    ids=["LPS", "permuted"],
)
def test_a_case_stored_in_another_axis_order_is_cached_and_written_as_its_ras_copy(
    tiny_twin, twin_copy, tmp_path, ornt
):
    # The same images stored in another voxel order: the network must see the anatomy the same
    # way round (the cache holds exactly the RAS-stored original's arrays), and a prediction is
    # written back in the file's own order, on its grid.
    case = scan_isles2018(twin_copy)[3]
    _store_reoriented(case.directory, ornt)
    caches = {}
    for name, root in (("original", tiny_twin), ("reoriented", twin_copy)):
        dm = _datamodule(root, tmp_path / name)
        dm.prepare_data()
        dm.setup("fit")
        caches[name] = dm.caches["TRAINING"]
    original, reoriented = caches["original"], caches["reoriented"]
    index = reoriented.case_names.index(case.name)
    assert original.case_names.index(case.name) == index
    rows = slice(reoriented.case_offsets[index], reoriented.case_offsets[index + 1])
    # (the per-case normalisation sums the voxels in another order: equal up to float rounding)
    np.testing.assert_allclose(reoriented.images[rows], original.images[rows], atol=1e-5)
    assert np.array_equal(reoriented.labels[rows], original.labels[rows])
    assert np.array_equal(reoriented.native_label(index), original.native_label(index))
    np.testing.assert_allclose(reoriented.spacing[index], original.spacing[index], rtol=1e-6)

    ct, ot = case.files["CT"], case.files["OT"]
    written = write_like(
        dm.geometry.to_source(reoriented.native_label(index)), ct, tmp_path / "m.nii", np.uint8
    )
    assert np.array_equal(np.asarray(nib.load(written).dataobj), np.asarray(nib.load(ot).dataobj))
    np.testing.assert_allclose(nib.load(written).affine, nib.load(ct).affine, atol=1e-6)
