"""Seed 002's four stages through the real ``lightning`` command, on the tiny synthetic twin
(resized to 128², the discriminator's minimum being 125)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_lightning import _common, _configs
from tests.cli.test_lightning_3d import _rows
from tests.conftest import run_cli

NARROW = [
    "--data.init_args.image_size", "128",
    "--model.init_args.net.init_args.widths", "[16, 32]",
]  # fmt: skip
GAN_NARROW = [
    "--data.init_args.image_size", "128",
    "--model.init_args.generator.init_args.widths", "[16, 32]",
    "--model.init_args.segmentator.init_args.widths", "[16, 32]",
    "--model.init_args.discriminator.init_args.widths", "[16, 16, 16, 16, 16]",
]  # fmt: skip
# (configs composed in order, extra overrides); every seed-002 YAML of experiments/ appears here.
RECIPES_GAN = {
    "liu_stage1": (["liu_stage1.yaml"], NARROW),
    "liu_stage2": (["liu_stage1.yaml", "liu_stage2.yaml"], NARROW),
    "liu_stage3": (["liu_stage3.yaml"], GAN_NARROW),
    "liu_stage4": (["liu_stage3.yaml", "liu_stage4.yaml"], GAN_NARROW),
    "demo_gan": (["liu_stage3.yaml", "liu_stage4.yaml", "demo_gan.yaml"], GAN_NARROW),
}


def _stage4(twin: Path, tmp: Path) -> list[str]:
    return _configs(RECIPES_GAN["liu_stage4"][0]) + _common(twin, tmp) + GAN_NARROW


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES_GAN))
def test_stage_trains_and_validates_one_step(recipe, tiny_twin, tmp_path):
    configs, extra = RECIPES_GAN[recipe]
    run_cli("lightning", "fit", *_configs(configs), *_common(tiny_twin, tmp_path), *extra,
            cwd=tmp_path)  # fmt: skip
    (experiment,) = (tmp_path / "runs").iterdir()
    run_dir = experiment / "fold0"
    rows = _rows(run_dir / "metrics.csv")
    dice = [float(r["val/dice"]) for r in rows if r.get("val/dice")]
    assert dice and 0.0 <= dice[-1] <= 1.0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    if recipe in ("liu_stage3", "liu_stage4", "demo_gan"):
        logged = set().union(*(k for r in rows for k in [{c for c, v in r.items() if v}]))
        assert {"train/d_loss_epoch", "train/g_mse_epoch", "train/g_adv_epoch",
                "train/seg_loss_epoch", "val/psnr", "val/ssim"} <= logged  # fmt: skip
        assert (run_dir / "dwi_samples" / "epoch000.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_stage4_under_bf16(tiny_twin, tmp_path):
    run_cli("lightning", "fit", *_stage4(tiny_twin, tmp_path), "--trainer.precision",
            "bf16-mixed", cwd=tmp_path)  # fmt: skip
    rows = _rows(tmp_path / "runs" / "liu_stage4" / "fold0" / "metrics.csv")
    assert [r for r in rows if r.get("train/loss_epoch")]
    assert [r for r in rows if r.get("val/dice")]


@pytest.mark.slow
def test_stage4_two_process_ddp_validates_like_one(tiny_twin, tmp_path):
    args = _stage4(tiny_twin, tmp_path)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    run_cli("lightning", "fit", *args, *ddp, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "liu_stage4" / "fold0"
    run_cli("lightning", "validate", *args, "--ckpt_path", "last", cwd=tmp_path)
    one = _rows(run_dir / "validate" / "val_cases_last.csv")
    run_cli("lightning", "validate", *args, *ddp, "--ckpt_path", "last", cwd=tmp_path)
    two = _rows(run_dir / "validate" / "val_cases_last.csv")
    assert one == two and len(one) == len({row["case"] for row in one})


@pytest.mark.slow
def test_the_fold_workflow_runs_the_gan_unchanged(tiny_twin, tmp_path):
    args = _stage4(tiny_twin, tmp_path)
    args[args.index("3")] = "2"  # two folds
    run_cli("lightning-cv", "fit", *args, cwd=tmp_path, timeout=600)
    report = tmp_path / "runs" / "liu_stage4" / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert len(summary["folds"]) == 2
    (dice,) = [row for row in summary["comparison"] if row["metric"] == "dice"]
    assert dice["paper"] == 0.6065  # Table 1, stage 4


@pytest.mark.slow
def test_the_dwi_sample_reaches_wandb(tiny_twin, tmp_path):
    args = _stage4(tiny_twin, tmp_path) + _configs(["wandb.yaml"])
    run_cli("lightning", "fit", *args, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "liu_stage4" / "fold0"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    images = list(offline.glob("files/media/images/val/dwi_sample*.png"))
    assert images and images[0].read_bytes()[:4] == b"\x89PNG"
