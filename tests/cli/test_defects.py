"""Defects a new user hit, each through the commands as the user ran them.

Every test here failed on the code before its fix: a replaced fold lost before the data was
checked, a cross-validation that mixed recipes, advice the command then rejected, stale
predictions in a submission folder, a late crash of the GAN on a small grid, tracebacks for
damaged files, a comparison that could not tell two folders apart, errors of a nested
``lightning`` run in terms the user never gave.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import configs, isles_args, run_cli, run_in_process

_DEMO = configs("pspnet_focal.yaml", "demo.yaml")


def _tiny(twin: Path, tmp: Path) -> list[str]:
    return [*isles_args(twin, tmp), "--data.init_args.num_folds", "2",
            "--data.init_args.image_size", "32"]  # fmt: skip


@pytest.fixture(scope="module")
def experiment(tiny_twin, tmp_path_factory) -> Path:
    """Two finished folds of the PSPNet demo recipe (a tiny network, one epoch each)."""
    root = tmp_path_factory.mktemp("experiment")
    run_in_process("lightning-cv", "fit", *_DEMO, *_tiny(tiny_twin, root), cwd=root)
    return root / "runs" / "pspnet_focal_demo"


def _copy(experiment: Path, tmp_path: Path, name: str | None = None) -> Path:
    """A private copy of the experiment's folder (``runs/<name>``) and its cache."""
    target = tmp_path / "runs" / (name or experiment.name)
    shutil.copytree(experiment, target)
    if (experiment.parent.parent / "cache").is_dir():
        shutil.copytree(experiment.parent.parent / "cache", tmp_path / "cache")
    return target


def _first_line(result) -> str:
    """The error paragraph (a progress bar of the cache build may come before it)."""
    lines = result.stderr.strip().splitlines()
    return next((line for line in lines if line.startswith("error:")), lines[0] if lines else "")


# -- 1: --overwrite deleted the finished fold before the data was checked -------------------------
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing_modality", "truncated_file"])
def test_overwrite_keeps_the_finished_fold_when_the_data_fails_its_checks(
    damage, experiment, twin_copy, tmp_path
):
    fold = _copy(experiment, tmp_path) / "fold0"
    before = sorted(p.name for p in (fold / "checkpoints").iterdir())
    case = sorted((twin_copy / "TRAINING").iterdir())[3]
    if damage == "missing_modality":  # found by the case scan, before the trainer exists
        shutil.rmtree(next(case.glob("SMIR.Brain.XX.O.CT_Tmax.*")))
    else:  # found only while decoding every case into the cache, inside trainer.fit
        (target,) = case.glob("SMIR.Brain.XX.O.CT_CBF.*/*.nii")
        target.write_bytes(target.read_bytes()[:1000])
    args = [*_DEMO, *_tiny(twin_copy, tmp_path), "--data.init_args.fold", "0", "--overwrite"]
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2 and str(case) in _first_line(result)
    assert sorted(p.name for p in (fold / "checkpoints").iterdir()) == before
    assert (fold / "fit_done.json").is_file() and (fold / "val_cases_best.csv").is_file()
    assert [p.name for p in fold.parent.iterdir() if p.name.startswith(".")] == []


# -- 2: --folds 2 --overwrite with a changed setting mixed recipes in one report -----------------
@pytest.mark.slow
def test_a_changed_recipe_on_some_folds_is_refused_and_a_report_never_mixes_recipes(
    experiment, tiny_twin, tmp_path
):
    folder = _copy(experiment, tmp_path)
    saved = (folder / "cv_config.yaml").read_text()
    changed = [*_DEMO, *_tiny(tiny_twin, tmp_path), "--model.init_args.loss.init_args.gamma", "2"]
    result = run_in_process(
        "lightning-cv", "fit", *changed, "--folds", "1", "--overwrite", cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    assert "Fold(s) 0 of" in _first_line(result) and "would mix recipes" in _first_line(result)
    assert (folder / "cv_config.yaml").read_text() == saved
    # A fold trained with another recipe by hand: the report names it and refuses to average.
    fold1 = folder / "fold1" / "config.yaml"
    config = yaml.safe_load(fold1.read_text())
    config["model"]["init_args"]["loss"]["init_args"]["gamma"] = 2.0
    fold1.write_text(yaml.safe_dump(config))
    report = run_in_process("lightning-cv", "report", str(folder), cwd=tmp_path, check=False)
    assert report.returncode == 2
    assert "different recipes: fold 1 differs from fold 0 in model.init_args.loss" in (
        _first_line(report)
    )
    # Without --overwrite the stale fold is refused too, instead of being skipped as finished.
    again = run_in_process("lightning-cv", "fit", *_DEMO, *_tiny(tiny_twin, tmp_path),
                           cwd=tmp_path, check=False)  # fmt: skip
    assert again.returncode == 2 and "Fold(s) 1 of" in _first_line(again)


# -- 3: the refusal advised "--overwrite true", which lightning-cv rejected ----------------------
@pytest.mark.slow
def test_the_advice_of_a_refusal_is_accepted_by_both_commands(experiment, tiny_twin, tmp_path):
    folder = _copy(experiment, tmp_path)
    changed = [*_DEMO, *_tiny(tiny_twin, tmp_path), "--model.init_args.loss.init_args.gamma", "2"]
    refused = run_in_process("lightning-cv", "fit", *changed, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "--overwrite to start every fold over" in refused.stderr
    from cli.crossval import _parser

    for spelling in (["--overwrite"], ["--overwrite", "true"], ["--overwrite=true"]):
        parsed, passed_on = _parser().parse_known_args(["fit", "--config", "x.yaml", *spelling])
        assert parsed.overwrite is True and passed_on == []  # nothing left for lightning fit
    # The fold-level refusal gives the same spelling, and lightning accepts it as given.
    fold = [*_DEMO, *_tiny(tiny_twin, tmp_path), "--data.init_args.fold", "0"]
    refused = run_in_process("lightning", "fit", *fold, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "start it over with --overwrite " in refused.stderr
    print_config = run_in_process("lightning", "fit", *fold, "--overwrite", "--print_config",
                                  cwd=tmp_path)  # fmt: skip
    assert "overwrite: true" in print_config.stdout
    assert (folder / "fold0" / "fit_done.json").is_file()


# -- 4: predict/predictions/ kept the masks of earlier predict runs ------------------------------
@pytest.mark.slow
def test_a_predict_run_owns_its_output_folder(experiment, tiny_twin, tmp_path):
    fold = _copy(experiment, tmp_path) / "fold0"
    predict = ["predict", "--config", str(fold / "config.yaml"), "--ckpt_path", "best",
               "--data.init_args.data_dir", str(tiny_twin)]  # fmt: skip
    training = sorted((tiny_twin / "TRAINING").iterdir())
    run_in_process("lightning", *predict, "--data.init_args.predict_split", "TRAINING",
                   "--prediction_writer.save_probability", "true", cwd=tmp_path)  # fmt: skip
    out = fold / "predict" / "predictions"
    assert len(list(out.glob("*.nii"))) == len(training)
    run_in_process("lightning", *predict, "--data.init_args.predict_split", "TESTING",
                   cwd=tmp_path)  # fmt: skip
    testing = sorted((tiny_twin / "TESTING").iterdir())
    assert len(list(out.glob("*.nii"))) == len(testing)  # nothing left of the TRAINING run
    assert not (fold / "predict" / "probabilities").exists()  # they belonged to the old masks
    assert not (fold / "predict" / "predict_cases.csv").exists()  # TESTING has no labels
    assert [p.name for p in (fold / "predict").iterdir() if p.name.startswith(".")] == []
    # A folder outside the run that already holds files is not written into.
    foreign = tmp_path / "submission"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = run_in_process("lightning", *predict, "--prediction_writer.output_dir",
                             str(foreign), cwd=tmp_path, check=False)  # fmt: skip
    assert refused.returncode == 2 and f"{foreign} is not empty" in refused.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


# -- 5: the GAN below 125 pixels built the whole cache, then died in the discriminator ------------
def test_the_gan_refuses_a_grid_too_small_for_its_discriminator_before_any_data_work(
    tiny_twin, tmp_path
):
    args = [*configs("liu_stage3.yaml", "liu_stage4.yaml", "demo_gan.yaml"),
            *isles_args(tiny_twin, tmp_path), "--data.init_args.image_size", "96"]  # fmt: skip
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "network grid is 96×96" in _first_line(result) and "at least 125×125" in result.stderr
    assert not (tmp_path / "cache").exists(), "no case was decoded"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


# -- 6: damaged files ended in tracebacks ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_checkpoint_is_one_paragraph_naming_the_file(
    damage, experiment, tiny_twin, tmp_path
):
    fold = _copy(experiment, tmp_path) / "fold0"
    broken = tmp_path / "model.ckpt"
    original = fold / "checkpoints" / "last.ckpt"
    broken.write_bytes(b"" if damage == "empty" else original.read_bytes()[:5000])
    result = run_cli("lightning", "predict", "--config", str(fold / "config.yaml"),
                     "--ckpt_path", str(broken), "--data.init_args.data_dir", str(tiny_twin),
                     cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"error: {broken}")
    assert ("is empty" if damage == "empty" else "is not a readable checkpoint") in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("cut", ["mid_row", "empty"])
def test_a_cut_off_case_table_is_one_paragraph_naming_the_file(cut, experiment, tmp_path):
    folder = _copy(experiment, tmp_path)
    table = folder / "fold1" / "val_cases_best.csv"
    text = table.read_text()
    table.write_text("" if cut == "empty" else text[: text.rindex(",")])
    result = run_in_process("lightning-cv", "report", str(folder), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert _first_line(result).startswith(f"error: {table}")


# -- 7: compare A A, folders with one name, an option the CLI did not have -----------------------
@pytest.mark.slow
def test_compare_tells_folders_apart_and_offers_only_options_it_has(experiment, tmp_path):
    first = _copy(experiment, tmp_path / "a")
    second = _copy(experiment, tmp_path / "b")  # the same experiment name in another runs/
    same = run_in_process("lightning-cv", "compare", str(first), str(first), cwd=tmp_path,
                          check=False)  # fmt: skip
    assert same.returncode == 2 and "two different experiment folders" in _first_line(same)
    done = run_in_process("lightning-cv", "compare", str(first), str(second),
                          "--out", str(tmp_path / "cmp"), cwd=tmp_path)  # fmt: skip
    assert "a/runs/pspnet_focal_demo" in done.stdout and "b/runs/pspnet_focal_demo" in done.stdout
    # Drop one case of b: the refusal suggests --shared-cases, which the command then accepts.
    table = second / "fold1" / "val_cases_best.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:-1]) + "\n")
    differ = run_in_process("lightning-cv", "compare", str(first), str(second),
                            "--out", str(tmp_path / "cmp"), cwd=tmp_path, check=False)  # fmt: skip
    assert differ.returncode == 2 and "lightning-cv compare --shared-cases" in differ.stderr
    shared = run_in_process("lightning-cv", "compare", str(first), str(second), "--shared-cases",
                            "--out", str(tmp_path / "cmp"), cwd=tmp_path)  # fmt: skip
    assert "only in" in shared.stdout
    assert (tmp_path / "cmp" / "comparison.md").is_file()


# -- 8: the messages of a nested `lightning` run, in the terms of the command the user ran -------
def _isles22_experiment(root: Path) -> Path:
    """A finished fold of an ISLES 2022 model, as far as the checks made before anything is
    loaded read it: its config.yaml and its best checkpoint, as ModelCheckpoint records it."""
    import torch

    checkpoints = root / "fold0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    data = {"class_path": "datamodules.ISLES2022DataModule", "init_args": {"predict_split": "all"}}
    (root / "fold0" / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    best = checkpoints / "best-epoch001-dice0.5000.ckpt"
    torch.save({"epoch": 1}, best)
    record = {"ModelCheckpoint{'monitor': 'val/dice'}": {"best_model_path": str(best)}}
    torch.save({"epoch": 1, "callbacks": record}, checkpoints / "last.ckpt")
    return root


def test_a_split_the_models_dataset_lacks_is_named_as_the_user_gave_it(tmp_path):
    experiment = _isles22_experiment(tmp_path / "runs" / "isles22")
    result = run_in_process("lightning-cv", "predict", "runs/isles22", "--split", "TESTING",
                            cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert _first_line(result).startswith(
        "error: --split TESTING: the models were trained on isles2022 data (ISLES2022DataModule), "
        "whose splits are training, all"
    ), result.stderr
    assert "predict_split" not in result.stderr and "--help" not in result.stderr
    assert not (experiment / "ensemble").exists()  # refused before the ensemble's run


def test_a_member_that_does_not_exist_is_named_as_the_user_gave_it(tmp_path):
    result = run_in_process("lightning-cv", "predict", "runs/doesnotexist", cwd=tmp_path,
                            check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert _first_line(result).startswith(
        "error: lightning-cv predict runs/doesnotexist: no such file or folder"
    ), result.stderr
    assert "model.init_args" not in result.stderr


def test_a_model_of_another_dataset_than_the_challenges_is_named_with_both(tmp_path):
    _isles22_experiment(tmp_path / "models" / "isles22")
    (tmp_path / "input").mkdir()
    result = run_in_process(
        "lightning-cv", "challenge", "atlas2", "--model", "models/isles22",
        "--input", "input", "--output", "output", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    head = _first_line(result)
    assert head.startswith(
        "error: --model models/isles22: the model was trained on isles2022 data"
    ), result.stderr
    assert "ATLAS R2.0" in head and "lightning-cv challenge isles2022" in head
    assert not (tmp_path / "output").exists()
