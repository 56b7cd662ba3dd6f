"""Every experiment through the real ``lightning`` console script, on a tiny synthetic twin."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from networks import PSPNet
from tests.conftest import REPO, run_cli

EXPERIMENTS = REPO / "experiments"
# (configs composed in order, extra overrides); every YAML of experiments/ must appear here.
RECIPES = {
    "pspnet_focal": (["pspnet_focal.yaml"], []),
    "pspnet_ce": (["pspnet_focal.yaml", "pspnet_ce.yaml"], []),
    "pspnet_wce": (["pspnet_focal.yaml", "pspnet_wce.yaml"], []),
    "pspnet_scratch_focal": (["pspnet_focal.yaml", "pspnet_scratch_focal.yaml"], []),
    "unet2d_isles": (["unet2d_isles.yaml"], []),
    "demo": (["pspnet_focal.yaml", "demo.yaml"], []),
    "wandb": (["pspnet_focal.yaml", "demo.yaml", "wandb.yaml"], []),
}
PSPNET_SMALL = ["--model.init_args.net.init_args.backbone_depth", "18"]


@pytest.fixture(scope="module")
def voc_like_weights(tmp_path_factory) -> Path:
    """A stand-in for the converted VOC checkpoint: 3 input channels, 21 classes, ResNet-18."""
    path = tmp_path_factory.mktemp("weights") / "pspnet18_voc.pth"
    net = PSPNet(in_channels=3, num_classes=21, backbone_depth=18, init_layer=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def _common(twin: Path, tmp: Path, epochs: int = 1) -> list[str]:
    return [
        "--data.init_args.data_dir", str(twin), "--data.init_args.cache_dir", str(tmp / "cache"),
        "--data.init_args.num_workers", "0", "--data.init_args.num_folds", "3",
        "--data.init_args.batch_size", "4", "--runs_dir", str(tmp / "runs"),
        "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "2",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def _configs(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--config", str(EXPERIMENTS / name))]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    start = time.perf_counter()
    result = run_cli(
        "lightning", "fit", *_configs(["pspnet_focal.yaml"]), cwd=tmp_path, check=False
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 2
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert "Traceback" not in result.stderr
    assert "ISLES 2018 data not found" in result.stderr
    assert str(tmp_path / "data" / "isles2018") in result.stderr
    assert "TRAINING/case_<N>/SMIR.Brain.XX.O.<MOD>.<id>" in result.stderr
    assert "lightning-data synth isles2018 data/isles2018" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_experiment_trains_and_validates_one_step(recipe, tiny_twin, tmp_path, voc_like_weights):
    configs, extra = RECIPES[recipe]
    args = _configs(configs) + _common(tiny_twin, tmp_path) + extra
    if "pspnet" in configs[0]:
        args += PSPNET_SMALL
        if recipe not in ("pspnet_scratch_focal", "demo", "wandb"):
            args += ["--model.init_args.net.init_args.pretrained_weights", str(voc_like_weights)]
    run_cli("lightning", "fit", *args, cwd=tmp_path)
    runs = tmp_path / "runs"
    (run_dir,) = [p for p in runs.glob("*/fold0") if p.is_dir()] or [None]
    if recipe == "wandb":
        assert list((runs / "wandb").glob("offline-run-*")), "W&B offline run was not written"
        return
    assert run_dir is not None, list(runs.rglob("*"))
    assert {"config.yaml", "split.json", "val_cases_last.csv", "metrics.csv", "curves.png"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    dice = [float(row["val/dice"]) for row in _metrics(run_dir) if row.get("val/dice")]
    assert dice and 0.0 <= dice[-1] <= 1.0


@pytest.mark.slow
def test_print_config_resolves_the_composition(tmp_path):
    result = run_cli("lightning", "fit", *_configs(["pspnet_focal.yaml", "pspnet_ce.yaml"]),
                     "--print_config", cwd=tmp_path)  # fmt: skip
    assert "losses.CrossEntropyLoss" in result.stdout and "experiment: pspnet_ce" in result.stdout
    assert "backbone_depth: 101" in result.stdout


@pytest.mark.slow
def test_bf16_mixed_precision_fit(tiny_twin, tmp_path):
    args = _configs(["pspnet_focal.yaml", "demo.yaml"]) + _common(tiny_twin, tmp_path)
    run_cli("lightning", "fit", *args, "--trainer.precision", "bf16-mixed", cwd=tmp_path)
    rows = _metrics(tmp_path / "runs" / "pspnet_focal_demo" / "fold0")
    assert np.isfinite(
        [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    ).all()


def _val_table(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "val_cases_last.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_ddp_two_processes_fit_and_validate_like_one(tiny_twin, tmp_path):
    args = _configs(["pspnet_focal.yaml", "demo.yaml"]) + _common(tiny_twin, tmp_path)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    run_cli("lightning", "fit", *args, *ddp, cwd=tmp_path)
    checkpoint = tmp_path / "runs" / "pspnet_focal_demo" / "fold0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    run_cli("lightning", "validate", *args, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    run_cli("lightning", "validate", *args, *ddp, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    one, two = sorted((tmp_path / "runs" / "pspnet_focal_demo").glob("fold0-validate*"))
    assert _val_table(one) == _val_table(two)
    assert len(_val_table(one)) == len({row["case"] for row in _val_table(one)})


@pytest.mark.slow
def test_test_and_predict_from_checkpoint(tiny_twin, tmp_path):
    args = _configs(["pspnet_focal.yaml", "demo.yaml"]) + _common(tiny_twin, tmp_path)
    run_cli("lightning", "fit", *args, cwd=tmp_path)
    checkpoint = tmp_path / "runs" / "pspnet_focal_demo" / "fold0" / "checkpoints" / "last.ckpt"
    run_cli("lightning", "test", *args, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    (test_dir,) = (tmp_path / "runs" / "pspnet_focal_demo").glob("fold0-test*")
    assert any(r.get("test/dice") for r in _metrics(test_dir))
    with (test_dir / "test_cases.csv").open() as handle:
        assert {row["case"] for row in csv.DictReader(handle)}
    callback = ["--trainer.callbacks+=lightning_modules.NiftiPredictionWriter"]
    run_cli("lightning", "predict", *args, *callback, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    (predict_dir,) = (tmp_path / "runs" / "pspnet_focal_demo").glob("fold0-predict*")
    masks = sorted((predict_dir / "predictions").glob("TESTING_case_*_pred.nii.gz"))
    assert len(masks) == len(list((tiny_twin / "TESTING").iterdir()))
    name = masks[0].name.removeprefix("TESTING_").removesuffix("_pred.nii.gz")
    source = next((tiny_twin / "TESTING" / name).glob("SMIR.Brain.XX.O.CT.*/*.nii"))
    written, original = nib.load(masks[0]), nib.load(source)
    assert written.shape == original.shape
    assert written.header.get_zooms() == pytest.approx(original.header.get_zooms())
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}


def test_wandb_runs_are_grouped_by_experiment_and_named_by_fold(tiny_twin, tmp_path, monkeypatch):
    from lightning_modules.cli import SuiteCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STROKESEG_RUN_VERSION", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = _configs(["pspnet_focal.yaml", "demo.yaml", "wandb.yaml"]) + [
        "--data.init_args.data_dir", str(tiny_twin), "--data.init_args.fold", "2",
    ]  # fmt: skip
    cli = SuiteCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True,
        subclass_mode_data=True, run=False, args=args,
    )  # fmt: skip
    settings = cli.trainer.logger._wandb_init
    assert settings["group"] == "pspnet_focal_demo"
    assert settings["name"] == "fold2"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "missing_folder", "non_binary_ot"])
def test_bad_input_gives_one_error_naming_the_file(damage, twin_copy, tmp_path):
    import shutil

    case_dir = sorted((twin_copy / "TRAINING").iterdir())[1]
    if damage == "truncated":
        (target,) = case_dir.glob("SMIR.Brain.XX.O.CT_CBF.*/*.nii")
        target.write_bytes(target.read_bytes()[:1000])
        expected = f"{target}: cannot be read as NIfTI"
    elif damage == "missing_folder":
        (folder,) = case_dir.glob("SMIR.Brain.XX.O.CT_MTT.*")
        shutil.rmtree(folder)
        expected = f"{case_dir}: no MTT folder"
    else:
        (target,) = case_dir.glob("SMIR.Brain.XX.O.OT.*/*.nii")
        image = nib.load(target)
        data = np.asarray(image.dataobj).copy()
        data[data == 1] = 255
        nib.save(nib.Nifti1Image(data, None, image.header), target)
        expected = f"{target}: the lesion mask must be binary"
    args = _configs(["pspnet_focal.yaml", "demo.yaml"]) + _common(twin_copy, tmp_path)
    result = run_cli("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir()), "a failed build left files behind"
