"""Configurations of earlier releases are read as today's, and say what changed."""

from __future__ import annotations

from core.legacy import MOVED_CLASSES, upgrade_config


def test_moved_class_paths_are_rewritten_wherever_they_appear():
    old = {
        "trainer": {
            "callbacks": [{"class_path": "lightning_modules.TwoStageFinetuning", "init_args": {}}],
            "logger": [{"class_path": "lightning_modules.runs.RunCSVLogger"}],
        },
        "model": {"class_path": "lightning_modules.SegmentationModule"},
    }
    new, changes = upgrade_config(old)
    assert new["trainer"]["callbacks"][0]["class_path"] == "callbacks.TwoStageFinetuning"
    assert new["trainer"]["logger"][0]["class_path"] == "cli.runs.RunCSVLogger"
    assert new["model"]["class_path"] == "lightning_modules.SegmentationModule"  # did not move
    assert len(changes) == 2 and old["trainer"]["logger"][0]["class_path"].startswith("lightning_")


def test_every_new_class_path_exists():
    import pydoc

    for new in set(MOVED_CLASSES.values()):
        assert pydoc.locate(new) is not None, new


def test_the_gans_old_optimiser_settings_become_injected_optimisers():
    old = {
        "model": {
            "class_path": "lightning_modules.CTPToDWIGAN",
            "init_args": {
                "lr": 1e-3,
                "rmsprop_alpha": 0.9,
                "milestones": [],
                "gamma": 0.5,
                "mse_weight": 1.0,
            },  # fmt: skip
        }
    }
    new, changes = upgrade_config(old)
    arguments = new["model"]["init_args"]
    assert arguments["optimizer_d"] == {
        "class_path": "torch.optim.RMSprop",
        "init_args": {"lr": 1e-3, "alpha": 0.9},
    }
    assert arguments["scheduler_gs"]["init_args"] == {"milestones": [], "gamma": 0.5}
    assert arguments["mse_weight"] == 1.0 and "lr" not in arguments and len(changes) == 1


def test_a_current_configuration_is_returned_unchanged():
    config = {"model": {"class_path": "lightning_modules.CTPToDWIGAN", "init_args": {}}}
    assert upgrade_config(config) == (config, [])


def test_a_wandb_run_id_saved_as_a_number_is_dropped():
    """The id ``0070e115`` was saved in a fold's config.yaml as ``7.0e+116``, which WandbLogger
    refuses; the ``lightning`` command sets a fit's id from the run folder and other stages'
    itself."""
    import yaml

    wandb = "pytorch_lightning.loggers.WandbLogger"
    saved = f"trainer:\n  logger:\n  - class_path: {wandb}\n    init_args:\n"
    old = yaml.safe_load(saved + "      id: 7.0e+116\n      name: fold1\n")
    new, changes = upgrade_config(old)
    assert new["trainer"]["logger"][0]["init_args"] == {"name": "fold1"}
    assert changes == ["the W&B run id saved as the number 7e+116 dropped"]
    kept = {"trainer": {"logger": {"class_path": wandb, "init_args": {"id": "a070e115"}}}}
    assert upgrade_config(kept) == (kept, [])
