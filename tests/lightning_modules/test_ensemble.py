"""Ensemble members are resolved inside the folders given (run folders may be copied or moved)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from core.errors import ConfigurationError
from lightning_modules.ensemble import resolve_members


def _fold(root: Path) -> Path:
    """A fold folder whose last.ckpt records its best checkpoint by absolute path."""
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text("experiment: exp\n")
    best = root / "checkpoints" / "best-epoch001-dice0.5000.ckpt"
    torch.save({"epoch": 1}, best)
    record = {"ModelCheckpoint{'monitor': 'val/dice'}": {"best_model_path": str(best)}}
    torch.save({"epoch": 3, "callbacks": record}, root / "checkpoints" / "last.ckpt")
    return root


def test_a_copied_experiment_uses_its_own_weights_while_the_original_exists(tmp_path):
    original = _fold(tmp_path / "runs" / "exp" / "fold0")
    copy = Path(shutil.copytree(original.parent, tmp_path / "copies" / "exp"))
    (member,) = resolve_members([str(copy)])
    assert member == (copy / "fold0" / "checkpoints" / "best-epoch001-dice0.5000.ckpt").resolve()
    (member,) = resolve_members([str(copy / "fold0")])
    assert member.is_relative_to(copy.resolve())


def test_a_copy_without_its_best_checkpoint_is_refused_not_filled_from_the_original(tmp_path):
    original = _fold(tmp_path / "runs" / "exp" / "fold0")
    copy = Path(shutil.copytree(original, tmp_path / "copies" / "fold0"))
    next(copy.glob("checkpoints/best-*.ckpt")).unlink()
    with pytest.raises(ConfigurationError, match="has no best checkpoint"):
        resolve_members([str(copy)])


def test_a_member_that_does_not_exist_names_the_setting_it_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as raised:
        resolve_members(["runs/missing"])
    message = str(raised.value)
    assert message.startswith("Ensemble member 'runs/missing': no such file or folder")
    assert message.endswith("Fix model.init_args.members.")
    with pytest.raises(ConfigurationError, match=r"^lightning-cv predict runs/missing: no such"):
        resolve_members(["runs/missing"], command="lightning-cv predict")


def test_members_trained_on_other_data_settings_are_refused_with_an_ensembles_remedy(tiny_twin):
    # The ensemble's own error: the remedy is to ensemble experiments of one preprocessing, not
    # "run with the training run's own configuration" (an ensemble has several).
    from types import SimpleNamespace

    from datamodules import ISLES2018DataModule
    from lightning_modules.ensemble import EnsembleModule

    datamodule = ISLES2018DataModule(data_dir=str(tiny_twin), image_size=32)
    trained = {**datamodule.signature(), "image_size": [48, 48]}
    ensemble = SimpleNamespace(checkpoints=[Path("runs/b/fold0/best.ckpt")], signatures=[trained])
    with pytest.raises(ConfigurationError) as error:
        EnsembleModule.check_data(ensemble, datamodule)  # type: ignore[arg-type]
    message = str(error.value)
    assert "runs/b/fold0/best.ckpt was trained with" in message and "image_size" in message
    assert "ensemble only experiments trained with the same data settings" in message
