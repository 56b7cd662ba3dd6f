"""Seed 002's GAN stages through the ``lightning`` and ``lightning-cv`` commands, on the tiny
synthetic twin (resized to 128², the discriminator's minimum being 125). Each stage's one step
is in ``tests/test_recipes.py``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import RECIPES, configs, isles_args, run_cli, run_in_process


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _stage4(twin: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    recipe = RECIPES["liu_stage4"]
    return [*configs(*recipe.configs), *isles_args(twin, tmp, cache=cache), *recipe.tiny]


@pytest.mark.slow
def test_stage4_under_bf16(tiny_twin, shared_cache, tmp_path):
    args = _stage4(tiny_twin, tmp_path, shared_cache)
    run_in_process("lightning", "fit", *args, "--trainer.precision", "bf16-mixed", cwd=tmp_path)
    rows = _rows(tmp_path / "runs" / "liu_stage4" / "fold0" / "metrics.csv")
    assert [r for r in rows if r.get("train/loss_epoch")]
    assert [r for r in rows if r.get("val/dice")]


@pytest.mark.slow
def test_stage4_two_process_ddp_validates_like_one(tiny_twin, shared_cache, tmp_path):
    # Two processes need real ones (DDP spawns the second rank as a copy of the command).
    args = _stage4(tiny_twin, tmp_path, shared_cache)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    run_cli("lightning", "fit", *args, *ddp, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "liu_stage4" / "fold0"
    # The fit's one epoch ends in a two-process validation of the weights last.ckpt holds
    # (`lightning validate` under DDP has its own test in test_lightning.py).
    two = _rows(run_dir / "val_cases_last.csv")
    run_in_process("lightning", "validate", *args, "--ckpt_path", "last", cwd=tmp_path)
    one = _rows(run_dir / "validate" / "val_cases_last.csv")
    assert one == two and len(one) == len({row["case"] for row in one})


@pytest.mark.slow
def test_the_fold_workflow_runs_the_gan_unchanged(tiny_twin, shared_cache, tmp_path):
    # lightning-cv composes here; each fold is a lightning process of its own.
    args = _stage4(tiny_twin, tmp_path, shared_cache) + ["--data.init_args.num_folds", "2"]
    run_in_process("lightning-cv", "fit", *args, cwd=tmp_path)
    report = tmp_path / "runs" / "liu_stage4" / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert len(summary["folds"]) == 2
    (dice,) = [row for row in summary["comparison"] if row["metric"] == "dice"]
    assert dice["paper"] == 0.6065  # Table 1, stage 4


@pytest.mark.slow
def test_the_dwi_sample_reaches_wandb(tiny_twin, shared_cache, tmp_path):
    args = _stage4(tiny_twin, tmp_path, shared_cache) + configs("wandb.yaml")
    run_in_process("lightning", "fit", *args, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "liu_stage4" / "fold0"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    images = list(offline.glob("files/media/images/val/dwi_sample*.png"))
    assert images and images[0].read_bytes()[:4] == b"\x89PNG"
