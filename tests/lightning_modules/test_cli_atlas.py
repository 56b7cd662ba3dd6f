"""Every ATLAS experiment (seed 004 D-UNet family, seed 000 VCA-Net) through the real CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import BIN, REPO, run_cli

EXPERIMENTS = REPO / "experiments"
ATLAS_RECIPES = {
    "dunet": ["dunet.yaml"],
    "dunet_adam": ["dunet.yaml", "dunet_adam.yaml"],
    "dunet_demo": ["dunet.yaml", "dunet_demo.yaml"],
    **{
        f"dunet_{v}": ["dunet.yaml", f"dunet_{v}.yaml"]
        for v in ("add1", "add12", "add23", "add123", "seadd12", "seadd123")
    },
    "unet2d_original": ["dunet.yaml", "unet2d_original.yaml"],
    "unet2d_transform": ["dunet.yaml", "unet2d_transform.yaml"],
    "unet3d_transform": ["dunet.yaml", "unet3d_transform.yaml"],
    "segnet_atlas": ["dunet.yaml", "segnet_atlas.yaml"],
    "deeplabv3plus_atlas": ["dunet.yaml", "deeplabv3plus_atlas.yaml"],
    "pspnet_atlas": ["dunet.yaml", "pspnet_atlas.yaml"],
    "vcanet": ["vcanet.yaml"],
    "vcanet_demo": ["vcanet.yaml", "vcanet_demo.yaml"],
}


def _configs(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--config", str(EXPERIMENTS / name))]


def _tiny_args(configs: list[str], tiny_atlas, tmp_path) -> list[str]:
    return _configs(configs) + [
        "--data.init_args.data_dir",
        str(tiny_atlas),
        "--data.init_args.cache_dir",
        str(tmp_path / "cache"),
        "--data.init_args.release",
        "R1.1",  # the tiny twin's layout (dunet_demo.yaml and vcanet_demo.yaml say R2.0)
        # The tiny twin's slices are 47x40: a 32x32 window replaces the papers' crops.
        "--data.init_args.crop",
        "[0, 32, 0, 32]",
        "--data.init_args.image_size",
        "32",
        "--data.init_args.num_workers",
        "0",
        "--data.init_args.num_folds",
        "4",
        "--data.init_args.batch_size",
        "2",
        "--runs_dir",
        str(tmp_path / "runs"),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(ATLAS_RECIPES))
def test_atlas_experiment_trains_and_validates_one_step(recipe, tiny_atlas, tmp_path):
    args = _tiny_args(ATLAS_RECIPES[recipe], tiny_atlas, tmp_path)
    run_cli("lightning", "fit", *args, cwd=tmp_path, timeout=600)
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    dice = [float(r["val/dice"]) for r in rows if r.get("val/dice")]
    assert dice and 0.0 <= dice[-1] <= 1.0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_vcanet_slice_level_split_runs_and_records_the_held_out_slices(tiny_atlas, tmp_path):
    args = _tiny_args(["vcanet.yaml"], tiny_atlas, tmp_path)
    args += ["--data.init_args.split_unit", "slice", "--trainer.limit_val_batches", "3"]
    result = run_cli(
        "lightning", "fit", *args, cwd=tmp_path, timeout=600, env={"PYTHONWARNINGS": "default"}
    )
    assert "neighbouring slices of one subject are in training and validation" in result.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    split = json.loads((run_dir / "split.json").read_text())
    assert split["unit"] == "slice" and split["val_slices"]
    with (run_dir / "val_cases_last.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3


@pytest.mark.slow
def test_dunet_demo_with_foreground_sampling_under_two_process_ddp(tiny_atlas, tmp_path):
    args = _tiny_args(["dunet.yaml", "dunet_demo.yaml"], tiny_atlas, tmp_path)
    args += [
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "null",
    ]
    run_cli("lightning", "fit", *args, cwd=tmp_path, timeout=600)
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    split = json.loads((run_dir / "split.json").read_text())
    with (run_dir / "val_cases_last.csv").open() as handle:
        cases = [row["case"] for row in csv.DictReader(handle)]
    assert sorted(cases) == sorted(split["val_cases"])  # every case once across the 2 ranks
    assert (run_dir / "curves.png").is_file()


def test_every_atlas_yaml_is_covered():
    from tests.lightning_modules.test_cli import RECIPES
    from tests.lightning_modules.test_cli_3d import RECIPES_3D
    from tests.lightning_modules.test_cli_gan import RECIPES_GAN
    from tests.lightning_modules.test_crossval import PREDICT_RECIPES

    covered = {c for cs in ATLAS_RECIPES.values() for c in cs}
    covered |= {c for cs, _ in RECIPES.values() for c in cs}
    covered |= {c for cs, _ in RECIPES_3D.values() for c in cs}
    covered |= {c for cs, _ in RECIPES_GAN.values() for c in cs}
    covered |= {c for cs in PREDICT_RECIPES.values() for c in cs}
    assert {p.name for p in EXPERIMENTS.glob("*.yaml")} == covered


@pytest.fixture(scope="module")
def tiny_r20(tmp_path_factory):
    """A tiny R2.0 twin with Testing subjects: 40×47×38 voxels, a non-square grid."""
    from datamodules.synth.atlas import write_atlas_twin

    root = tmp_path_factory.mktemp("r20") / "atlas"
    return write_atlas_twin(root, "R2.0", subjects=8, testing_subjects=2, seed=0, size="tiny")


@pytest.mark.slow
def test_atlas_predictions_are_bids_derivatives_on_the_t1_grid(tiny_r20, tmp_path):
    args = _tiny_args(["dunet.yaml", "dunet_demo.yaml"], tiny_r20, tmp_path)
    args[args.index("R1.1")] = "R2.0"
    run_cli("lightning", "fit", *args, cwd=tmp_path, timeout=600)
    run_dir = tmp_path / "runs" / "dunet_demo" / "fold0"
    # A threshold of ~0: the mask is 1 exactly where the network sees the slice (the 32×32 window of
    # rows = y 0:32, cols = x 0:32), so its place in the written file shows the orientation.
    run_cli(
        "lightning",
        "predict",
        "--config",
        str(run_dir / "config.yaml"),
        "--ckpt_path",
        "last",
        "--model.init_args.threshold",
        "1e-12",
        "--trainer.callbacks+=lightning_modules.NiftiPredictionWriter",
        cwd=tmp_path,
    )
    out = run_dir / "predict" / "predictions"
    masks = sorted(
        out.glob(
            "derivatives/atlas2_prediction/sub-*/ses-1/anat/*_label-L_desc-T1lesion_mask.nii.gz"
        )
    )
    assert len(masks) == 2
    description = json.loads(
        (out / "derivatives/atlas2_prediction/dataset_description.json").read_text()
    )
    assert description["DatasetType"] == "derivative" and description["Name"] == "atlas2_prediction"
    assert (out / "dataset_description.json").is_file()
    for mask in masks:
        subject = mask.name.split("_")[0]
        name = f"{subject}_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"
        (t1,) = (tiny_r20 / "ATLAS_2" / "Testing").glob(f"R*/{subject}/ses-1/anat/{name}")
        written, source = nib.load(mask), nib.load(t1)
        assert written.shape == source.shape == (40, 47, 38)
        np.testing.assert_allclose(written.affine, source.affine)
        expected = np.zeros(source.shape, dtype=np.uint8)
        expected[0:32, 0:32, :] = 1  # x = cols 0:32, y = rows 0:32
        assert np.array_equal(np.asarray(written.dataobj), expected)


@pytest.mark.slow
def test_the_papers_crop_on_a_smaller_grid_exits_2_naming_the_case(tiny_atlas, tmp_path):
    args = _tiny_args(["dunet.yaml"], tiny_atlas, tmp_path)
    args = [a for a in args]
    args[args.index("[0, 32, 0, 32]")] = "[40, 220, 10, 190]"  # D-UNet's window
    result = run_cli("lightning", "fit", *args, cwd=tmp_path, check=False, timeout=600)
    assert result.returncode == 2
    head = result.stderr.strip().splitlines()[0]
    assert head.startswith("error: R1.1/Site")
    assert "rows 40:220, cols 10:190 does not fit its 47×40 slices" in head
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_kill_9_during_the_cache_build_leaves_nothing_after_the_next_run(tmp_path):
    from datamodules.synth.atlas import write_atlas_twin

    twin = write_atlas_twin(tmp_path / "atlas", "R2.0", subjects=3, seed=0, size="full")
    args = _configs(["dunet.yaml", "dunet_demo.yaml"]) + [
        "--data.init_args.data_dir",
        str(twin),
        "--data.init_args.cache_dir",
        str(tmp_path / "cache"),
        "--data.init_args.num_folds",
        "3",
        "--data.init_args.num_workers",
        "0",
        "--runs_dir",
        str(tmp_path / "runs"),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.image_size",
        "32",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [str(BIN / "lightning"), "fit", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache").glob("*.tmp-*")):
        assert process.poll() is None and time.monotonic() < deadline, "no cache build seen"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert list((tmp_path / "cache").glob("*.tmp-*")), "killed during the build"
    run_cli("lightning", "fit", *args, "--overwrite", "true", cwd=tmp_path, timeout=600)
    assert not list((tmp_path / "cache").glob("*.tmp-*"))
    (cache,) = (tmp_path / "cache").iterdir()
    assert (cache / "meta.json").is_file()


@pytest.mark.slow
def test_a_mask_stored_flipped_is_reoriented_and_said_so(tiny_atlas, tmp_path):
    import shutil

    from datamodules.atlas_reader import scan_atlas

    copy = Path(shutil.copytree(tiny_atlas, tmp_path / "atlas"))
    scan = scan_atlas(copy)[0]
    image = nib.load(scan.masks[0])
    data = np.asarray(image.dataobj)
    flip = np.diag([1.0, -1.0, 1.0, 1.0])  # the same lesion, y axis stored reversed
    flip[1, 3] = data.shape[1] - 1
    flipped = nib.Nifti1Image(data[:, ::-1].copy(), image.affine @ flip)
    flipped.set_qform(image.affine @ flip, 1)
    flipped.set_sform(image.affine @ flip, 1)
    nib.save(flipped, scan.masks[0])
    result = run_cli("lightning", "fit", *_tiny_args(["dunet.yaml"], copy, tmp_path), cwd=tmp_path)
    assert f"{scan.masks[0]}: reoriented onto the grid of {scan.t1}" in result.stdout
