"""The 3D recipes (seed 001's U-Nets, seed 003's 3D baselines) through the real ``lightning`` and
``lightning-cv`` console scripts, on the tiny synthetic ISLES 2018 twin (32×32 slices)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from tests.cli.test_lightning import _common, _configs
from tests.conftest import REPO, run_cli

EXPERIMENTS = REPO / "experiments"
# Narrow networks on the tiny grid: the recipes' wiring is under test, not their size.
OMAROV_SMALL = ["--model.init_args.net.init_args.base_width", "2", "--data.init_args.depth", "8"]
# (configs composed in order, extra overrides); every 3D YAML of experiments/ appears here.
RECIPES_3D = {
    "unet3d_omarov": (["unet3d_omarov.yaml"], OMAROV_SMALL),
    "unet3d_classic_omarov": (["unet3d_omarov.yaml", "unet3d_classic_omarov.yaml"], OMAROV_SMALL),
    # The classic network with the proposed model's IoU loss, L2 term and Adam (a third delta).
    "unet3d_classic_omarov_modloss": (
        ["unet3d_omarov.yaml", "unet3d_classic_omarov.yaml", "unet3d_classic_omarov_modloss.yaml"],
        OMAROV_SMALL,
    ),
    # Seed 003's in-plane augmentation, here on the training device (the CPU).
    "unet3d_isles": (["unet3d_isles.yaml"], ["--data.init_args.augment_on_device", "true"]),
    "vnet_isles": (["unet3d_isles.yaml", "vnet_isles.yaml"], []),
    "demo_3d": (["unet3d_omarov.yaml", "demo_3d.yaml"], ["--data.init_args.image_size", "16"]),
}
# Recipes whose training loss carries seed 001's kernel L2 term (§1: 1e-3); the classic has none.
L2_RECIPES = {"unet3d_omarov", "unet3d_classic_omarov_modloss"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _omarov(twin: Path, tmp: Path, epochs: int = 1) -> list[str]:
    return _configs(["unet3d_omarov.yaml"]) + _common(twin, tmp, epochs) + OMAROV_SMALL


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES_3D))
def test_3d_recipe_trains_and_validates_one_step(recipe, tiny_twin, tmp_path):
    configs, extra = RECIPES_3D[recipe]
    run_cli("lightning", "fit", *_configs(configs), *_common(tiny_twin, tmp_path), *extra,
            cwd=tmp_path)  # fmt: skip
    (experiment,) = (tmp_path / "runs").iterdir()
    run_dir = experiment / "fold0"
    dice = [float(r["val/dice"]) for r in _rows(run_dir / "metrics.csv") if r.get("val/dice")]
    assert dice and 0.0 <= dice[-1] <= 1.0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    table = _rows(run_dir / "val_cases_last.csv")
    split = json.loads((run_dir / "split.json").read_text())
    assert sorted(row["case"] for row in table) == sorted(split["val_cases"])
    assert {"dice", "precision", "recall", "jaccard"} <= set(table[0])
    l2 = [float(r["train/l2"]) for r in _rows(run_dir / "metrics.csv") if r.get("train/l2")]
    if recipe in L2_RECIPES:  # the kernel L2 term is part of the training loss and logged
        assert l2 and l2[0] > 0
    elif "omarov" in recipe:  # seed 001's classic network: no L2 term (§4.1, a modification)
        assert not l2


def _resolved(configs: list[str], tmp: Path) -> dict:
    result = run_cli("lightning", "fit", *_configs(configs), "--print_config", cwd=tmp)
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
    modloss = _resolved(RECIPES_3D["unet3d_classic_omarov_modloss"][0], tmp_path)
    # Exactly the classic recipe with the proposed model's loss, L2 term and optimiser.
    for key in ("loss", "kernel_l2", "optimizer"):
        assert modloss["model"]["init_args"][key] == proposed["model"]["init_args"][key]
    assert modloss["model"]["init_args"]["net"] == model["net"]
    assert modloss["data"] == classic["data"] and modloss["trainer"] == classic["trainer"]
    assert modloss["experiment"] == "unet3d_classic_omarov_modloss"


@pytest.mark.slow
def test_seed003_3d_baselines_flip_sagittally_and_coronally(tmp_path):
    for configs in (RECIPES_3D["unet3d_isles"][0], RECIPES_3D["vnet_isles"][0]):
        augmentation = _resolved(configs, tmp_path)["data"]["init_args"]["augmentation"]
        assert augmentation["flip_axes"] == [0, 1]  # rows (NIfTI x) and columns (NIfTI y)


@pytest.mark.slow
def test_2d_and_3d_runs_of_a_fold_hold_out_the_same_patients(tiny_twin, tmp_path):
    grid = ["--data.init_args.image_size", "32"]
    run_cli("lightning", "fit", *_omarov(tiny_twin, tmp_path), *grid, cwd=tmp_path)
    flat = _configs(["unet2d_isles.yaml"]) + _common(tiny_twin, tmp_path) + grid
    same_channels = ["--data.init_args.channels", "[CT, CBF, CBV, MTT, Tmax]"]
    run_cli("lightning", "fit", *flat, *same_channels, cwd=tmp_path)
    volume = json.loads((tmp_path / "runs/unet3d_omarov/fold0/split.json").read_text())
    slices = json.loads((tmp_path / "runs/unet2d_isles/fold0/split.json").read_text())
    for key in ("train_cases", "val_cases", "train_patients", "val_patients"):
        assert volume[key] == slices[key]
    # With the same channels and grid, one cache serves both: the depth policy applies when a volume
    # is read.
    assert volume["cache"] == slices["cache"]


@pytest.mark.slow
def test_bf16_mixed_precision_3d_fit(tiny_twin, tmp_path):
    run_cli("lightning", "fit", *_omarov(tiny_twin, tmp_path), "--trainer.precision",
            "bf16-mixed", cwd=tmp_path)  # fmt: skip
    rows = _rows(tmp_path / "runs" / "unet3d_omarov" / "fold0" / "metrics.csv")
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert losses and np.isfinite(losses).all()
    assert [float(r["val/dice"]) for r in rows if r.get("val/dice")]


@pytest.mark.slow
def test_ddp_two_processes_3d_fit_and_validate_like_one(tiny_twin, tmp_path):
    args = _omarov(tiny_twin, tmp_path)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    run_cli("lightning", "fit", *args, *ddp, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "unet3d_omarov" / "fold0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    run_cli("lightning", "validate", *args, "--ckpt_path", "last", cwd=tmp_path)
    one = _rows(run_dir / "validate" / "val_cases_last.csv")
    run_cli("lightning", "validate", *args, *ddp, "--ckpt_path", "last", cwd=tmp_path)
    two = _rows(run_dir / "validate" / "val_cases_last.csv")
    assert one == two
    assert len(one) == len({row["case"] for row in one})


@pytest.mark.slow
def test_3d_predictions_are_written_on_each_testing_cases_ct_grid(tiny_twin, tmp_path):
    args = _omarov(tiny_twin, tmp_path)
    run_cli("lightning", "fit", *args, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "unet3d_omarov" / "fold0"
    run_cli("lightning", "predict", *args, "--ckpt_path", "last", cwd=tmp_path)
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
def test_a_2d_module_on_3d_data_is_one_line_naming_the_setting(tiny_twin, tmp_path):
    args = _configs(["unet2d_isles.yaml"]) + _common(tiny_twin, tmp_path)
    result = run_cli("lightning", "fit", *args, "--data.init_args.spatial_dims", "3",
                     cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    first = result.stderr.strip().splitlines()[0]
    assert "serves 3D ones" in first and "data.init_args.spatial_dims: 2" in first
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_fold_workflow_runs_a_3d_recipe_unchanged(tiny_twin, tmp_path):
    common = _omarov(tiny_twin, tmp_path)
    common[common.index("3")] = "2"  # two folds
    run_cli("lightning-cv", "fit", *common, cwd=tmp_path, timeout=600)
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
