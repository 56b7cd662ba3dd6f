"""The run, experiment and comparison layouts, the recipe comparison and the atomic folder
replacement."""

from __future__ import annotations

from pathlib import Path

from core.io import replace_folder, write_text
from core.recipe import recipe_differences, recipe_of
from core.run_layout import ComparisonLayout, ExperimentLayout, RunLayout, fold_name, fold_number


def test_a_stage_of_a_run_uses_the_same_names_in_its_own_folder(tmp_path):
    run = RunLayout(tmp_path / "fold3")
    assert run.stage("fit") == run
    assert (
        run.stage("predict").val_cases_best
        == tmp_path / "fold3" / "predict" / run.val_cases_best.name
    )
    assert run.checkpoint("/elsewhere/checkpoints/best.ckpt") == run.checkpoints / "best.ckpt"


def test_a_checkpoint_belongs_to_the_run_beside_whose_configuration_it_lies(tmp_path):
    run = RunLayout(tmp_path / "fold0")
    write_text(run.config, "x: 1\n")
    assert RunLayout.of_checkpoint(run.checkpoints / "last.ckpt") == run
    assert RunLayout.of_checkpoint(tmp_path / "loose.ckpt") is None


def test_an_experiment_lists_its_folds_by_number(tmp_path):
    experiment = ExperimentLayout(tmp_path / "exp")
    for k in (2, 0, 10):
        write_text(experiment.fold(k).config, "x: 1\n")
    (experiment.root / "fold7").mkdir()  # no configuration: no run
    (experiment.root / "foldx").mkdir()
    assert list(experiment.folds()) == [0, 2, 10]
    assert fold_number(fold_name(12)) == 12 and fold_number("report") is None


def test_the_recipe_leaves_out_what_differs_between_runs_of_one_experiment():
    fold0 = {"data": {"init_args": {"fold": 0, "batch_size": 8}}, "ckpt_path": None,
             "trainer": {"logger": [{"version": "fold0"}], "max_epochs": 5}}  # fmt: skip
    fold1 = {"data": {"init_args": {"fold": 1, "batch_size": 8}}, "ckpt_path": "last",
             "trainer": {"logger": [{"version": "fold1"}], "max_epochs": 5}}  # fmt: skip
    assert recipe_of(fold0) == recipe_of(fold1) and fold0["data"]["init_args"]["fold"] == 0
    fold1["trainer"]["max_epochs"] = 6
    assert recipe_differences(recipe_of(fold0), recipe_of(fold1)) == ["trainer.max_epochs"]


def test_whether_ddp_looks_for_unused_parameters_is_not_part_of_the_recipe():
    """The ``lightning`` command turns ``ddp`` into ``ddp_find_unused_parameters_true`` for the
    GAN and the two-stage fine-tuning: the folds' saved configurations then said another recipe
    than the experiment's, and ``lightning-cv fit`` refused to resume them."""
    recipes = [
        recipe_of({"trainer": {"strategy": strategy, "devices": 2}})
        for strategy in (
            "ddp",
            "ddp_find_unused_parameters_true",
            "ddp_find_unused_parameters_false",
        )
    ]
    assert recipes[0] == recipes[1] == recipes[2] == {"trainer": {"strategy": "ddp", "devices": 2}}
    spawn = recipe_of(
        {"trainer": {"strategy": "ddp_spawn_find_unused_parameters_true", "devices": 2}}
    )
    assert recipe_differences(recipes[0], spawn) == ["trainer.strategy"]
    assert recipe_of({"trainer": {"strategy": {"class_path": "x"}}})["trainer"]["strategy"] == {
        "class_path": "x"
    }


def test_a_folder_is_replaced_whole(tmp_path: Path):
    target, staging = tmp_path / "predictions", tmp_path / ".predictions.partial"
    write_text(target / "old.nii", "old")
    write_text(staging / "new.nii", "new")
    replace_folder(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.nii"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]


def test_a_comparison_folder_is_named_for_its_first_two_experiments(tmp_path):
    runs = tmp_path / "runs"
    two = ComparisonLayout.beside([runs / "ce", runs / "focal"])
    assert two.root == runs / "compare_ce_vs_focal"
    three = ComparisonLayout.beside([runs / "ce", runs / "focal", runs / "dice"])
    other = ComparisonLayout.beside([runs / "ce", runs / "focal", runs / "unet"])
    assert three.root.parent == runs and three.root.name.startswith(
        "compare_ce_vs_focal_and_1_more_"
    )
    assert three.root != other.root, "another third experiment, another folder"
    assert three == ComparisonLayout.beside([runs / "ce", runs / "focal", runs / "dice"])
