"""Run folders and recipes written by the release before the command line and the callbacks left
``lightning_modules/`` still work, with a warning that names the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from tests.conftest import configs, isles_args, run_in_process


def _legacy(config: dict) -> dict:
    """A configuration as the release before wrote it (the class paths before the move)."""
    text = yaml.safe_dump(config)
    text = text.replace("cli.runs.RunCSVLogger", "lightning_modules.runs.RunCSVLogger")
    text = text.replace("callbacks.TwoStageFinetuning", "lightning_modules.TwoStageFinetuning")
    return yaml.safe_load(text)


@pytest.mark.slow
def test_an_old_runs_config_still_validates_and_predicts(tiny_twin, tmp_path):
    args = [*configs("pspnet_focal.yaml", "demo.yaml"), *isles_args(tiny_twin, tmp_path),
            "--data.init_args.image_size", "32"]  # fmt: skip
    run_in_process("lightning", "fit", *args, cwd=tmp_path)
    fold = tmp_path / "runs" / "pspnet_focal_demo" / "fold0"
    config = yaml.safe_load((fold / "config.yaml").read_text())
    old = _legacy(config)
    assert old != config, "the run's configuration holds class paths that moved"
    (fold / "config.yaml").write_text(yaml.safe_dump(old))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for stage in ("validate", "predict"):
            run_in_process("lightning", stage, "--config", str(fold / "config.yaml"),
                           "--ckpt_path", "best", cwd=tmp_path)  # fmt: skip
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert any(str(fold / "config.yaml") in m and "earlier release" in m for m in messages)
    assert (fold / "validate" / "val_cases_last.csv").is_file()
    assert list((fold / "predict" / "predictions").glob("*.nii"))


def test_an_old_gan_recipe_composes_to_injected_optimisers(tmp_path: Path):
    recipe = yaml.safe_load((Path(configs("liu_stage3.yaml")[1])).read_text())
    arguments = recipe["model"]["init_args"]
    for key in ("optimizer_d", "optimizer_gs", "scheduler_d", "scheduler_gs"):
        arguments.pop(key)
    arguments.update(lr=2e-4, rmsprop_alpha=0.9, milestones=[100, 300, 500], gamma=0.5)
    recipe["model"]["class_path"] = "lightning_modules.gan.CTPToDWIGAN"
    old = tmp_path / "liu_stage3_old.yaml"
    old.write_text(yaml.safe_dump(recipe))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        done = run_in_process("lightning", "fit", "--config", str(old), "--print_config",
                              cwd=tmp_path)  # fmt: skip
    model = yaml.safe_load(done.stdout)["model"]["init_args"]
    assert model["optimizer_gs"]["class_path"] == "torch.optim.RMSprop"
    assert model["optimizer_gs"]["init_args"]["lr"] == 2e-4
    assert model["scheduler_d"]["init_args"]["milestones"] == [100, 300, 500]
