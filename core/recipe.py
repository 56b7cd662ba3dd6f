"""What makes two runs "the same recipe": their configuration without the keys that differ
from run to run of one experiment (the fold, folders, loggers, the checkpoint to resume from,
loader processes: nothing that changes a number of the result).

The fold workflow refuses to run folds of one experiment with different recipes, and the
cross-validation report refuses to average folds whose recipes differ.
"""

from __future__ import annotations

import copy
from typing import Any

#: Dotted keys of a run's configuration that may differ between runs of one experiment.
PER_RUN_KEYS: tuple[str, ...] = (
    "config",
    "ckpt_path",
    "overwrite",
    "print_config",
    "runs_dir",
    "data.init_args.fold",
    "data.init_args.cache_dir",
    "data.init_args.num_workers",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.enable_progress_bar",
    "checkpoint.dirpath",
    "last_checkpoint.dirpath",
)


#: Suffixes of Lightning's DDP strategy names that say only whether DDP looks for parameters
#: without gradients: a run works or fails by them, its numbers do not change. The ``lightning``
#: command adds ``_find_unused_parameters_true`` where the module or a callback needs it, so a
#: fold's saved configuration says ``ddp_find_unused_parameters_true`` where the experiment's
#: says ``ddp``: one recipe.
_UNUSED_PARAMETER_SUFFIXES = ("_find_unused_parameters_true", "_find_unused_parameters_false")


#: The keys of :data:`PER_RUN_KEYS` that every fold of one ``lightning-cv fit`` takes from the
#: configuration it composed (the others are each fold's own: its number, folders, checkpoint).
SHARED_RUN_KEYS: tuple[str, ...] = (
    "runs_dir",
    "data.init_args.cache_dir",
    "data.init_args.num_workers",
    "trainer.logger",
    "trainer.enable_progress_bar",
)


def _parent(config: Any, dotted: str) -> tuple[dict[str, Any] | None, list[str], str]:
    """The mapping holding a dotted key's leaf (``None`` if the path is absent), the keys of
    the path to it, and the leaf's key."""
    *parents, leaf = dotted.split(".")
    node: Any = config
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), parents, leaf


def run_settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SHARED_RUN_KEYS` of ``config`` that it holds, nested as in ``config``."""
    settings: dict[str, Any] = {}
    for dotted in SHARED_RUN_KEYS:
        node, parents, leaf = _parent(config, dotted)
        if node is not None and leaf in node:
            target = settings
            for key in parents:
                target = target.setdefault(key, {})
            target[leaf] = copy.deepcopy(node[leaf])
    return settings


def recipe_of(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` without :data:`PER_RUN_KEYS`, its DDP strategy named without
    :data:`_UNUSED_PARAMETER_SUFFIXES`."""
    recipe = copy.deepcopy(config)
    for dotted in PER_RUN_KEYS:
        node, _, leaf = _parent(recipe, dotted)
        if node is not None:
            node.pop(leaf, None)
    trainer = recipe.get("trainer")
    if isinstance(trainer, dict) and isinstance(trainer.get("strategy"), str):
        for suffix in _UNUSED_PARAMETER_SUFFIXES:
            trainer["strategy"] = trainer["strategy"].removesuffix(suffix)
    return recipe


def recipe_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two recipes, sorted."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in recipe_differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
