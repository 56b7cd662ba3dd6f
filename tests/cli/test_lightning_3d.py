"""The 3D recipes (seed 001's U-Nets, seed 003's 3D baselines) through the ``lightning`` and
``lightning-cv`` commands, on the tiny synthetic ISLES 2018 twin (32×32 slices). Each recipe's
one step (with the L2 term of seed 001's loss) is in ``tests/test_recipes.py``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from tests.conftest import RECIPES, configs, isles_args, run_cli, run_in_process


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _recipe(name: str, twin: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    """A recipe of the table, narrow, on the tiny twin's 32×32 slices."""
    recipe = RECIPES[name]
    grid = ["--data.init_args.image_size", "32"]
    return [*configs(*recipe.configs), *isles_args(twin, tmp, cache=cache), *recipe.tiny, *grid]


def _omarov(twin: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    return _recipe("unet3d_omarov", twin, tmp, cache)


@pytest.fixture(scope="module")
def omarov_runs(tiny_twin, shared_cache, tmp_path_factory) -> Path:
    """One epoch of seed 001's network (narrow) on fold 0: the ``runs/`` folder holding it
    (read-only: a test that writes into it copies it first)."""
    tmp = tmp_path_factory.mktemp("omarov-fold")
    run_in_process("lightning", "fit", *_omarov(tiny_twin, tmp, shared_cache), cwd=tmp)
    return tmp / "runs"


def _resolved(names: tuple[str, ...] | list[str], tmp: Path) -> dict:
    result = run_in_process("lightning", "fit", *configs(*names), "--print_config", cwd=tmp)
    return yaml.safe_load(result.stdout)


@pytest.mark.slow
def test_seed001_classic_and_its_modloss_switch_compose_as_documented(tmp_path):
    proposed = _resolved(["unet3d_omarov.yaml"], tmp_path)
    assert proposed["data"]["init_args"]["augmentation"]["flip_axes"] == [0]
    assert proposed["model"]["init_args"]["loss"]["class_path"] == "losses.SoftJaccardLoss"
    classic = _resolved(["unet3d_omarov.yaml", "unet3d_classic_omarov.yaml"], tmp_path)
    model = classic["model"]["init_args"]
    assert model["loss"]["class_path"] == "losses.CrossEntropyLoss"
    assert model["loss"]["init_args"]["lesion_weight"] is None
    assert model["kernel_l2"] == 0.0
    assert model["optimizer"]["class_path"] == "torch.optim.SGD"
    assert classic["data"]["init_args"]["augmentation"] is None
    assert classic["trainer"]["max_epochs"] == 200
    modloss = _resolved(RECIPES["unet3d_classic_omarov_modloss"].configs, tmp_path)
    # Exactly the classic recipe with the proposed model's loss, L2 term and optimiser.
    for key in ("loss", "kernel_l2", "optimizer"):
        assert modloss["model"]["init_args"][key] == proposed["model"]["init_args"][key]
    assert modloss["model"]["init_args"]["net"] == model["net"]
    assert modloss["data"] == classic["data"] and modloss["trainer"] == classic["trainer"]
    assert modloss["experiment"] == "unet3d_classic_omarov_modloss"


@pytest.mark.slow
def test_seed003_3d_baselines_flip_sagittally_and_coronally(tmp_path):
    for name in ("unet3d_isles", "vnet_isles"):
        data = _resolved(RECIPES[name].configs, tmp_path)["data"]["init_args"]
        augmentation = data["augmentation"]
        assert augmentation["flip_axes"] == [0, 1]  # rows (NIfTI x) and columns (NIfTI y)


@pytest.mark.slow
def test_2d_and_3d_runs_of_a_fold_hold_out_the_same_patients(
    tiny_twin, shared_cache, omarov_runs, tmp_path
):
    # The 2D U-Net on the 3D recipe's channels, grid and cache folder.
    flat = _recipe("unet2d_isles", tiny_twin, tmp_path, shared_cache)
    same_channels = ["--data.init_args.channels", "[CT, CBF, CBV, MTT, Tmax]"]
    run_in_process("lightning", "fit", *flat, *same_channels, cwd=tmp_path)
    volume = json.loads((omarov_runs / "unet3d_omarov/fold0/split.json").read_text())
    slices = json.loads((tmp_path / "runs/unet2d_isles/fold0/split.json").read_text())
    for key in ("train_cases", "val_cases", "train_patients", "val_patients"):
        assert volume[key] == slices[key]
    # With the same channels and grid, one cache serves both: the depth policy applies when a volume
    # is read.
    assert volume["cache"] == slices["cache"]


@pytest.mark.slow
def test_bf16_mixed_precision_3d_fit(tiny_twin, shared_cache, tmp_path):
    args = _omarov(tiny_twin, tmp_path, shared_cache)
    run_in_process("lightning", "fit", *args, "--trainer.precision", "bf16-mixed", cwd=tmp_path)
    rows = _rows(tmp_path / "runs" / "unet3d_omarov" / "fold0" / "metrics.csv")
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert losses and np.isfinite(losses).all()
    assert [float(r["val/dice"]) for r in rows if r.get("val/dice")]


@pytest.mark.slow
def test_ddp_two_processes_3d_fit_and_validate_like_one(tiny_twin, shared_cache, tmp_path):
    # Two processes need real ones (DDP spawns the second rank as a copy of the command). Each
    # rank trains from its own device cache (the 2D DDP test keeps the loader's workers).
    args = _omarov(tiny_twin, tmp_path, shared_cache)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    ddp += ["--data.init_args.cache_on_device", "true"]
    run_cli("lightning", "fit", *args, *ddp, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "unet3d_omarov" / "fold0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # The fit's one epoch ends in a two-process validation of the weights last.ckpt holds
    # (`lightning validate` under DDP has its own test in test_lightning.py).
    two = _rows(run_dir / "val_cases_last.csv")
    run_in_process("lightning", "validate", *args, "--ckpt_path", "last", cwd=tmp_path)
    one = _rows(run_dir / "validate" / "val_cases_last.csv")
    assert one == two
    assert len(one) == len({row["case"] for row in one})


@pytest.mark.slow
def test_3d_predictions_are_written_on_each_testing_cases_ct_grid(
    tiny_twin, shared_cache, omarov_runs, tmp_path
):
    args = _omarov(tiny_twin, tmp_path, shared_cache)
    shutil.copytree(omarov_runs, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "unet3d_omarov" / "fold0"
    run_in_process("lightning", "predict", *args, "--ckpt_path", "last", cwd=tmp_path)
    masks = sorted((run_dir / "predict" / "predictions").glob("SMIR.strokeseg.*.nii"))
    assert len(masks) == len(list((tiny_twin / "TESTING").iterdir()))
    for mask in masks:
        mtt_id = mask.name.split(".")[2]
        (case,) = [
            c
            for c in (tiny_twin / "TESTING").glob("case_*")
            if list(c.glob(f"SMIR.Brain.XX.O.CT_MTT.{mtt_id}"))
        ]
        source = nib.load(next(case.glob("SMIR.Brain.XX.O.CT.*/*.nii")))
        written = nib.load(mask)
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
        assert written.get_data_dtype() == np.uint8


@pytest.mark.slow
def test_a_2d_module_on_3d_data_is_one_line_naming_the_setting(tiny_twin, shared_cache, tmp_path):
    args = _recipe("unet2d_isles", tiny_twin, tmp_path, shared_cache)
    result = run_in_process("lightning", "fit", *args, "--data.init_args.spatial_dims", "3",
                            cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    first = result.stderr.strip().splitlines()[0]
    assert "serves 3D ones" in first and "data.init_args.spatial_dims: 2" in first
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_fold_workflow_runs_a_3d_recipe_unchanged(tiny_twin, shared_cache, tmp_path):
    # lightning-cv composes here; each fold is a lightning process of its own.
    args = _omarov(tiny_twin, tmp_path, shared_cache) + ["--data.init_args.num_folds", "2"]
    run_in_process("lightning-cv", "fit", *args, cwd=tmp_path)
    experiment = tmp_path / "runs" / "unet3d_omarov"
    assert {p.name for p in experiment.glob("fold*")} == {"fold0", "fold1"}
    summary = json.loads((experiment / "report" / "summary.json").read_text())
    assert len(summary["folds"]) == 2
    # Seed 001's published test values (package data) beside ours, Jaccard included.
    paper = {row["metric"]: row["paper"] for row in summary["comparison"]}
    assert paper["dice"] == 0.58 and paper["jaccard"] == 0.66
    out_of_fold = _rows(experiment / "report" / "cases_oof.csv")
    training = sorted(f"TRAINING/{p.name}" for p in (tiny_twin / "TRAINING").glob("case_*"))
    assert sorted(row["case"] for row in out_of_fold) == training
