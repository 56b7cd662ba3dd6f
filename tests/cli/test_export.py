"""``lightning-cv export`` on hand-made experiment folders: which folds a model folder holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cli.export import export_experiment
from core.errors import ConfigurationError
from core.model_folder import verify_model_folder
from core.run_layout import ExperimentLayout, ModelFolderLayout


def _experiment(root: Path, finished: tuple[int, ...], started: tuple[int, ...]) -> Path:
    """An experiment of 3 folds: ``started`` have a run with a best checkpoint, ``finished``
    of them also their ``fit_done.json``."""
    experiment = root / "exp"
    config = {"model": {"class_path": "x"}, "data": {"init_args": {"num_folds": 3}}}
    for k in started:
        run = ExperimentLayout(experiment).fold(k)
        run.checkpoints.mkdir(parents=True)
        run.config.write_text(yaml.safe_dump(config))
        best = run.checkpoint("best-epoch001.ckpt")
        torch.save({"state_dict": {"w": torch.full((2,), float(k))}, "epoch": 1}, best)
        record = {"ModelCheckpoint{'monitor': 'val/dice'}": {"best_model_path": str(best)}}
        torch.save({"callbacks": record, "epoch": 2}, run.last_checkpoint)
        if k in finished:
            run.fit_done.write_text("{}")
    return experiment


def test_an_unfinished_fold_is_refused_naming_it(tmp_path):
    # Fold 1 is still training (or was interrupted): its best checkpoint is no result yet.
    experiment = _experiment(tmp_path, finished=(0,), started=(0, 1))
    with pytest.raises(ConfigurationError, match=r"^\S+exp is not finished: fold\(s\) 1 still "
                       r"training or interrupted \(no fit_done\.json\)"):  # fmt: skip
        export_experiment(experiment, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_allow_incomplete_exports_the_finished_folds_and_the_card_says_so(tmp_path):
    experiment = _experiment(tmp_path, finished=(0,), started=(0, 1))
    model = ModelFolderLayout(export_experiment(experiment, tmp_path / "m", allow_incomplete=True))
    assert sorted(p.name for p in model.root.glob("fold*")) == ["fold0"]
    card = model.model_card.read_text()
    assert "**Incomplete**: fold(s) 1 had not finished" in card
    assert "Fold(s) 2 of the cross-validation were never run" in card  # one fit of a fold: fine
    verify_model_folder(model)
    nothing = _experiment(tmp_path / "b", finished=(), started=(0,))
    with pytest.raises(ConfigurationError, match="train at least one fold to the end"):
        export_experiment(nothing, tmp_path / "n", allow_incomplete=True)


def test_a_model_folder_or_a_fold_folder_given_for_the_experiment_is_named(tmp_path):
    experiment = _experiment(tmp_path, finished=(0, 1, 2), started=(0, 1, 2))
    model = export_experiment(experiment, tmp_path / "model")
    # Its folds have a config.yaml but no fit_done.json: it was taken for an unfinished one.
    with pytest.raises(
        ConfigurationError, match=r"model is a model folder \(lightning-cv export\)"
    ):
        export_experiment(model, tmp_path / "again")
    with pytest.raises(
        ConfigurationError, match=r"fold1 is one fold's folder: give its experiment"
    ):
        export_experiment(experiment / "fold1", tmp_path / "again")
    assert not (tmp_path / "again").exists()
