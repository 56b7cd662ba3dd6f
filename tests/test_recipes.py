"""Every recipe of ``experiments/`` trains and validates a step through the ``lightning`` command.

The recipes are those of :data:`tests.conftest.RECIPES`, each with a narrow network on a tiny
twin (nothing writes a full-size checkpoint); the ensemble recipe, which predicts with trained
members, runs in ``tests/cli/test_crossval.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import EXPERIMENTS, RECIPES, run_in_process

FIT_RECIPES = sorted(name for name, recipe in RECIPES.items() if recipe.stage == "fit")
# Recipes whose training loss carries seed 001's kernel L2 term (1e-3); its classic has none.
L2_RECIPES = {"unet3d_omarov", "unet3d_classic_omarov_modloss", "isles22_unet3d_omarov"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_every_yaml_of_experiments_is_a_recipe_of_the_table():
    covered = {name for recipe in RECIPES.values() for name in recipe.configs}
    assert {p.relative_to(EXPERIMENTS).as_posix() for p in EXPERIMENTS.rglob("*.yaml")} == covered


@pytest.mark.slow
@pytest.mark.parametrize("name", FIT_RECIPES)
def test_recipe_trains_and_validates_one_step(name, recipe_args, tmp_path):
    run_in_process("lightning", "fit", *recipe_args(name), cwd=tmp_path)
    (experiment,) = (tmp_path / "runs").iterdir()  # one folder per experiment, nothing else
    (run_dir,) = experiment.iterdir()  # one folder per fold, whatever the loggers
    assert run_dir.name == "fold0"
    assert {"config.yaml", "split.json", "val_cases_last.csv", "metrics.csv", "curves.png"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    rows = _rows(run_dir / "metrics.csv")
    dice = [float(row["val/dice"]) for row in rows if row.get("val/dice")]
    assert dice and 0.0 <= dice[-1] <= 1.0
    table = _rows(run_dir / "val_cases_last.csv")
    split = json.loads((run_dir / "split.json").read_text())
    assert {row["case"] for row in table} <= set(split["val_cases"])
    logged = {column for row in rows for column, value in row.items() if value}
    if name == "wandb":
        assert list((run_dir / "wandb").glob("offline-run-*")), "W&B offline run was not written"
    l2 = [float(r["train/l2"]) for r in rows if r.get("train/l2")]
    if name in L2_RECIPES:  # the kernel L2 term is part of the training loss, and logged
        assert l2 and l2[0] > 0
    elif "omarov" in name:  # seed 001's classic network: no L2 term (§4.1, a modification)
        assert not l2
    if name in ("liu_stage3", "liu_stage4", "demo_gan"):
        assert {"train/d_loss_epoch", "train/g_mse_epoch", "train/g_adv_epoch",
                "train/seg_loss_epoch", "val/psnr", "val/ssim"} <= logged  # fmt: skip
        assert (run_dir / "dwi_samples" / "epoch000.png").read_bytes()[:4] == b"\x89PNG"
