"""Configurations written by earlier releases, read as today's.

Run folders keep the configuration they ran with (``fold<k>/config.yaml``, ``cv_config.yaml``),
and users keep their own recipes. When a class moves or a module's arguments change, those
files must still load for one release: :func:`upgrade_config` rewrites what moved, and the
callers say so (a deprecation warning naming the file), so that old runs can still be
validated, tested, predicted, ensembled and reported.

Moves recorded here (release 0.7, the command line and the callbacks out of
``lightning_modules``; seed 002's optimisers injected):

* ``lightning_modules.runs.RunCSVLogger`` → ``cli.runs.RunCSVLogger``;
* ``lightning_modules[.callbacks].TwoStageFinetuning`` / ``CaseReport``,
  ``lightning_modules[.writer].NiftiPredictionWriter``, ``lightning_modules.seeding.StepSeed``
  → ``callbacks.…``;
* ``CTPToDWIGAN``'s ``lr``, ``rmsprop_alpha``, ``milestones`` and ``gamma`` → its injected
  ``optimizer_d``/``optimizer_gs`` (RMSprop) and ``scheduler_d``/``scheduler_gs``
  (MultiStepLR).

And one repair (before 0.13.0): a W&B run id of hex digits such as ``0070e115`` was saved in
``fold<k>/config.yaml`` as a number (``7.0e+116``), which the logger refuses. The id is
dropped: the ``lightning`` command takes a fit's id from the run folder's ``wandb_run_id``
file, and gives the other stages runs of their own.
"""

from __future__ import annotations

import copy
from typing import Any

#: Class paths of earlier releases → today's.
MOVED_CLASSES: dict[str, str] = {
    "lightning_modules.runs.RunCSVLogger": "cli.runs.RunCSVLogger",
    "lightning_modules.TwoStageFinetuning": "callbacks.TwoStageFinetuning",
    "lightning_modules.callbacks.TwoStageFinetuning": "callbacks.TwoStageFinetuning",
    "lightning_modules.CaseReport": "callbacks.CaseReport",
    "lightning_modules.callbacks.CaseReport": "callbacks.CaseReport",
    "lightning_modules.NiftiPredictionWriter": "callbacks.NiftiPredictionWriter",
    "lightning_modules.writer.NiftiPredictionWriter": "callbacks.NiftiPredictionWriter",
    "lightning_modules.seeding.StepSeed": "callbacks.StepSeed",
}

_GAN_CLASSES = ("lightning_modules.CTPToDWIGAN", "lightning_modules.gan.CTPToDWIGAN")
_GAN_OLD_ARGUMENTS = ("lr", "rmsprop_alpha", "milestones", "gamma")


def _move_classes(node: Any, changes: list[str]) -> None:
    if isinstance(node, dict):
        old = node.get("class_path")
        if isinstance(old, str) and old in MOVED_CLASSES:
            node["class_path"] = MOVED_CLASSES[old]
            changes.append(f"{old} → {MOVED_CLASSES[old]}")
        for value in node.values():
            _move_classes(value, changes)
    elif isinstance(node, list):
        for value in node:
            _move_classes(value, changes)


def _inject_gan_optimizers(config: dict[str, Any], changes: list[str]) -> None:
    model = config.get("model")
    if not isinstance(model, dict) or model.get("class_path") not in _GAN_CLASSES:
        return
    arguments = model.get("init_args") or {}
    if not any(key in arguments for key in _GAN_OLD_ARGUMENTS):
        return
    lr = arguments.pop("lr", 1e-4)
    alpha = arguments.pop("rmsprop_alpha", 0.9)
    milestones = list(arguments.pop("milestones", (100, 300, 500)))
    gamma = arguments.pop("gamma", 0.5)
    for name in ("d", "gs"):
        arguments[f"optimizer_{name}"] = {
            "class_path": "torch.optim.RMSprop",
            "init_args": {"lr": lr, "alpha": alpha},
        }
        arguments[f"scheduler_{name}"] = {
            "class_path": "torch.optim.lr_scheduler.MultiStepLR",
            "init_args": {"milestones": milestones, "gamma": gamma},
        }
    model["init_args"] = arguments
    changes.append(
        "CTPToDWIGAN lr/rmsprop_alpha/milestones/gamma → optimizer_d, optimizer_gs (RMSprop), "
        "scheduler_d, scheduler_gs (MultiStepLR)"
    )


def _drop_numeric_wandb_ids(config: dict[str, Any], changes: list[str]) -> None:
    trainer = config.get("trainer")
    loggers = trainer.get("logger") if isinstance(trainer, dict) else None
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, dict) or "WandbLogger" not in str(logger.get("class_path")):
            continue
        arguments = logger.get("init_args")
        if not isinstance(arguments, dict):
            continue
        run_id = arguments.get("id")
        if isinstance(run_id, int | float) and not isinstance(run_id, bool):
            del arguments["id"]
            changes.append(f"the W&B run id saved as the number {run_id} dropped")


def upgrade_config(config: Any) -> tuple[Any, list[str]]:
    """Today's reading of a configuration written by an earlier release.

    Args:
        config: A parsed YAML configuration (a run's ``config.yaml``, a recipe).

    Returns:
        An upgraded copy (``config`` itself when nothing changed) and what was changed, one
        entry per change; an empty list means the configuration is current.
    """
    if not isinstance(config, dict):
        return config, []
    upgraded = copy.deepcopy(config)
    changes: list[str] = []
    _move_classes(upgraded, changes)
    _inject_gan_optimizers(upgraded, changes)
    _drop_numeric_wandb_ids(upgraded, changes)
    return (upgraded, changes) if changes else (config, [])
