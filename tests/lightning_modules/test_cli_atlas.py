"""Every ATLAS experiment (seed 004 D-UNet family, seed 000 VCA-Net) through the real CLI."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import REPO, run_cli

EXPERIMENTS = REPO / "experiments"
ATLAS_RECIPES = {
    "dunet": ["dunet.yaml"],
    "dunet_adam": ["dunet.yaml", "dunet_adam.yaml"],
    "dunet_demo": ["dunet.yaml", "dunet_demo.yaml"],
    **{f"dunet_{v}": ["dunet.yaml", f"dunet_{v}.yaml"]
       for v in ("add1", "add12", "add23", "add123", "seadd12", "seadd123")},
    "unet2d_original": ["dunet.yaml", "unet2d_original.yaml"],
    "unet2d_transform": ["dunet.yaml", "unet2d_transform.yaml"],
    "unet3d_transform": ["dunet.yaml", "unet3d_transform.yaml"],
    "segnet_atlas": ["dunet.yaml", "segnet_atlas.yaml"],
    "deeplabv3plus_atlas": ["dunet.yaml", "deeplabv3plus_atlas.yaml"],
    "pspnet_atlas": ["dunet.yaml", "pspnet_atlas.yaml"],
    "vcanet": ["vcanet.yaml"],
}  # fmt: skip


def _configs(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--config", str(EXPERIMENTS / name))]


def _tiny_args(configs: list[str], tiny_atlas, tmp_path) -> list[str]:
    return _configs(configs) + [
        "--data.init_args.data_dir", str(tiny_atlas), "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--data.init_args.release", "R1.1",  # the tiny twin's layout (dunet_demo.yaml says R2.0)
        # The tiny twin's slices are 47x40: a 32x32 window replaces the papers' crops.
        "--data.init_args.crop", "[0, 32, 0, 32]", "--data.init_args.image_size", "32",
        "--data.init_args.num_workers", "0", "--data.init_args.num_folds", "4",
        "--data.init_args.batch_size", "2", "--runs_dir", str(tmp_path / "runs"),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


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
    result = run_cli("lightning", "fit", *args, cwd=tmp_path, timeout=600,
                     env={"PYTHONWARNINGS": "default"})  # fmt: skip
    assert "neighbouring slices of one subject are in training and validation" in result.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    split = json.loads((run_dir / "split.json").read_text())
    assert split["unit"] == "slice" and split["val_slices"]
    with (run_dir / "val_cases_last.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3


@pytest.mark.slow
def test_dunet_demo_with_foreground_sampling_under_two_process_ddp(tiny_atlas, tmp_path):
    args = _tiny_args(["dunet.yaml", "dunet_demo.yaml"], tiny_atlas, tmp_path)
    args += ["--trainer.strategy", "ddp", "--trainer.devices", "2",
             "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "null"]  # fmt: skip
    run_cli("lightning", "fit", *args, cwd=tmp_path, timeout=600)
    (run_dir,) = (tmp_path / "runs").glob("*/fold0")
    split = json.loads((run_dir / "split.json").read_text())
    with (run_dir / "val_cases_last.csv").open() as handle:
        cases = [row["case"] for row in csv.DictReader(handle)]
    assert sorted(cases) == sorted(split["val_cases"])  # every case once across the 2 ranks
    assert (run_dir / "curves.png").is_file()


def test_every_atlas_yaml_is_covered():
    from tests.lightning_modules.test_cli import RECIPES

    covered = {c for cs in ATLAS_RECIPES.values() for c in cs}
    covered |= {c for cs, _ in RECIPES.values() for c in cs}
    assert {p.name for p in EXPERIMENTS.glob("*.yaml")} == covered
