"""``lightning-cv export``: an experiment reduced to a model folder one can hand to someone else.

    lightning-cv export runs/pspnet_focal --to models/pspnet_focal

The folder holds, for each fold, the run's resolved configuration and the best checkpoint's
weights as a plain state dict with the data signature (``fold<k>/weights.pt``, loaded with
``weights_only=True``: nothing is unpickled), the recipe, the cross-validation summary beside
the paper (when the report was written), a model card, and a manifest of every file's SHA-256
(:mod:`core.model_folder`). ``lightning-cv segment`` and ``lightning-cv predict`` take the folder
like an experiment folder, without the training data or the ``runs/`` tree; a changed or
incomplete folder is refused naming the file. The folder is built beside its destination and
renamed into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from cli.launchers import read_config
from core.errors import ConfigurationError, OutputExistsError
from core.io import write_text
from core.run_layout import ExperimentLayout, ModelFolderLayout, RunLayout, training_folder_error

_MARKER = "SYNTHETIC_TWIN.json"


def _signature(state: dict[str, Any]) -> dict[str, Any]:
    for value in state.values():
        if isinstance(value, dict) and "signature" in value:
            return dict(value["signature"])
    return {}


def _summary_lines(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return ["No cross-validation report was written for this experiment "
                "(`lightning-cv report` writes one)."]  # fmt: skip
    lines = [f"Cross-validation: {summary.get('num_folds')} folds, preset `{summary.get('preset')}`"
             + ("" if summary.get("complete") else " (incomplete)") + "."]  # fmt: skip
    for metric, stats in (summary.get("summary") or {}).items():
        mean, sd = stats.get("fold_mean"), stats.get("fold_sd")
        if isinstance(mean, float):
            lines.append(f"- {metric}: {mean:.3f} ± {sd if sd is not None else float('nan'):.3f} "
                         "(mean ± sd over folds)")  # fmt: skip
    chosen = (summary.get("postprocessing") or {}).get("choice")
    if chosen:
        lines.append(f"- post-processing chosen by the cross-validation: `{chosen}` (applied by "
                     "segment, predict and the challenge entry points)")  # fmt: skip
    for row in summary.get("comparison") or []:
        lines.append(f"- published ({summary.get('paper')}): {json.dumps(row)}")
    return lines


def _model_card(name: str, configs: dict[int, dict[str, Any]], epochs: dict[int, Any],
                summary: dict[str, Any] | None) -> str:  # fmt: skip
    config = next(iter(configs.values()))
    model = (config.get("model") or {}).get("class_path", "?")
    net = (((config.get("model") or {}).get("init_args") or {}).get("net") or {}).get("class_path")
    data = config.get("data") or {}
    data_args = data.get("init_args") or {}
    data_dir = Path(str(data_args.get("data_dir", "")))
    synthetic = (data_dir / _MARKER).is_file()
    lines = [
        f"# Model card: {name}",
        "",
        f"Exported by strokeseg-repro on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.",
        "",
        "## What it is",
        f"- Module `{model}`" + (f", network `{net}`" if net else "") + ".",
        f"- Data module `{data.get('class_path', '?')}`; images "
        f"{', '.join(map(str, data_args.get('channels') or [])) or 'see recipe.yaml'}.",
        f"- {len(configs)} fold model(s) (best validation checkpoint of each: epochs "
        + ", ".join(f"fold {k}: {epochs[k]}" for k in sorted(epochs))
        + "); `lightning-cv segment` "
        "and `lightning-cv predict` average their probabilities.",
        "",
        "## What it was trained on",
        f"- `{data_dir}`"
        + (
            " — a **synthetic twin** (SYNTHETIC_TWIN.json): this model has never seen a patient"
            if synthetic
            else ""
        )
        + ".",
        "",
        "## How it scored",
        *_summary_lines(summary),
        "",
        "## What it must not be used for",
        "- Clinical decisions: this is a research reproduction, not a medical device, validated "
        "only by the cross-validation above.",
        "- Images unlike its training data (other modalities, sequences, field strengths or "
        "preprocessing): the scores above say nothing about them.",
        "",
    ]
    return "\n".join(lines)


def _finished_folds(
    experiment: Path, folds: dict[int, RunLayout], allow_incomplete: bool
) -> tuple[dict[int, RunLayout], list[int], list[int]]:
    """The folds to export: the finished ones (``fit_done.json``); the unfinished ones are
    refused unless ``allow_incomplete`` leaves them out. Folds of the split that were never
    run (one ``lightning fit`` of fold 0) are no error: the model card names them.

    Returns:
        The folds to export, the unfinished folds left out, the folds never run.

    Raises:
        ConfigurationError: Naming the unfinished folds (without ``allow_incomplete``), or
            when no fold has finished.
    """
    config = read_config(next(iter(folds.values())).config)
    num_folds = int(((config.get("data") or {}).get("init_args") or {}).get("num_folds", 0))
    unfinished = [k for k, run in folds.items() if not run.fit_done.is_file()]
    never_run = [k for k in range(num_folds) if k not in folds]
    finished = {k: run for k, run in folds.items() if k not in unfinished}
    if unfinished and (not allow_incomplete or not finished):
        raise ConfigurationError(
            f"{experiment} is not finished: fold(s) {', '.join(map(str, unfinished))} still "
            "training or interrupted (no fit_done.json), so its best checkpoint is not the "
            "fold's result. Finish it (lightning-cv fit with the same --config), or "
            + (
                "pass --allow-incomplete to export only the finished folds."
                if finished
                else "train at least one fold to the end."
            )
        )
    return finished, unfinished, never_run


def export_experiment(
    experiment: Path, destination: Path, overwrite: bool = False, allow_incomplete: bool = False
) -> Path:
    """Write the model folder of ``experiment`` at ``destination`` (see the module docstring).

    Args:
        allow_incomplete: Export the finished folds of an experiment some of whose folds are
            unfinished (the model card says which are left out).

    Raises:
        ConfigurationError: For a folder without folds, or with unfinished folds (unless
            ``allow_incomplete``; then when none has finished).
        OutputExistsError: If ``destination`` exists (and ``overwrite`` is not set, or it is not
            a model folder).
    """
    other_folder = training_folder_error(experiment)
    if other_folder is not None:
        raise ConfigurationError(other_folder)
    layout = ExperimentLayout(experiment)
    folds = layout.folds()
    if not folds:
        what = (
            "holds no fold folder with a config.yaml" if experiment.is_dir() else "does not exist"
        )
        raise ConfigurationError(
            f"{experiment} {what}: give an experiment folder written by lightning-cv fit "
            "(runs/<experiment>)."
        )
    folds, left_out, never_run = _finished_folds(experiment, folds, allow_incomplete)
    if destination.exists():
        if not (overwrite and ModelFolderLayout(destination).manifest.is_file()):
            raise OutputExistsError(
                f"{destination} exists. Choose another --to, or --overwrite to replace a model "
                "folder exported before (other folders are never replaced)."
            )
    import torch

    from core.checkpoints import best_checkpoint, read_checkpoint
    from core.model_folder import manifest_of

    build = destination.with_name(f".{destination.name}.export-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    folder = ModelFolderLayout(build)
    configs: dict[int, dict[str, Any]] = {}
    epochs: dict[int, Any] = {}
    try:
        for number, run in folds.items():
            best = best_checkpoint(run)
            if best is None:
                raise ConfigurationError(
                    f"{run.root} has no best checkpoint in {run.checkpoints}: finish the fold "
                    "(lightning-cv fit) before exporting."
                )
            state = read_checkpoint(best, mmap=False)
            target = folder.fold(number)
            target.root.mkdir(parents=True)
            tmp = target.weights.with_suffix(".tmp")
            torch.save({"state_dict": state["state_dict"], "signature": _signature(state)}, tmp)
            tmp.replace(target.weights)
            shutil.copyfile(run.config, target.config)
            configs[number] = yaml.safe_load(run.config.read_text(encoding="utf-8"))
            epochs[number] = state.get("epoch")
        recipe = (
            layout.cv_config if layout.cv_config.is_file() else next(iter(folds.values())).config
        )
        shutil.copyfile(recipe, folder.recipe)
        summary = None
        if layout.report.summary.is_file():
            shutil.copyfile(layout.report.summary, folder.summary)
            summary = json.loads(folder.summary.read_text(encoding="utf-8"))
        card = _model_card(layout.name, configs, epochs, summary)
        if left_out:
            card += (
                f"\n**Incomplete**: fold(s) {', '.join(map(str, left_out))} had not finished "
                "training and are not part of this model (exported with --allow-incomplete).\n"
            )
        if never_run:
            card += (
                f"\nFold(s) {', '.join(map(str, never_run))} of the cross-validation were never "
                "run; this model holds the others.\n"
            )
        write_text(folder.model_card, card)
        files = [p for p in build.rglob("*") if p.is_file()]
        write_text(folder.manifest, manifest_of(build, files, experiment=layout.name))
        if destination.exists():
            shutil.rmtree(destination)
        build.replace(destination)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return destination


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise ConfigurationError(f"export takes no option {extra[0]!r}.")
    out = export_experiment(
        Path(args.experiment),
        Path(args.to),
        overwrite=args.overwrite,
        allow_incomplete=args.allow_incomplete,
    )
    print(f"exported {args.experiment} to {out} ({ModelFolderLayout(out).model_card.name} inside)")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="an experiment as a self-contained model folder (weights, recipe, scores, card)",
        description="Export an experiment's folds as a self-contained model folder.",
    )
    export.add_argument("experiment", help="runs/<experiment>, written by lightning-cv fit")
    export.add_argument("--to", required=True, help="the model folder to write")
    export.add_argument(
        "--overwrite", action="store_true", help="replace a model folder exported before"
    )
    export.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="export only the finished folds of an experiment whose other folds are still "
        "training or were interrupted (the model card names them)",
    )
