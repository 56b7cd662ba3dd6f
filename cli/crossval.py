"""``lightning-cv``: every fold of an experiment, its report beside the paper, ensembles.

Usage::

    lightning-cv fit --config experiments/pspnet_focal.yaml [--config ...] [--folds 0,1,2,3,4]
                     [--overwrite] [--launcher local|slurm|submitit-local] [slurm options]
                     [lightning options]
    lightning-cv report runs/pspnet_focal [--wandb]
    lightning-cv compare runs/pspnet_focal runs/pspnet_ce [runs/... ...] [--metric dice]
                         [--metrics dice,lesion_f1,...] [--shared-cases] [--out DIR]
    lightning-cv predict runs/pspnet_focal [runs/pspnet_ce ...] [--name NAME]
                         [--split TESTING] [--save-probability] [--tta] [lightning options]
    lightning-cv segment runs/<experiment>[/fold<k>] --image NAME=FILE [...] --output mask.nii.gz
                         [--probabilities FILE]
    lightning-cv export runs/<experiment> --to models/<name> [--overwrite]
    lightning-cv challenge isles2022|atlas2 --model models/<name> [--input /input] [--output /output]

``fit`` composes the configuration once (``lightning fit ... --print_config``), keeps it as
``runs/<experiment>/cv_config.yaml`` and runs ``lightning fit`` with it for each fold: a fold
that finished (``fold<k>/fit_done.json``) is skipped, one that was interrupted resumes from its
``last.ckpt`` in its own folder. An experiment never mixes recipes: folds that hold runs of
another configuration are refused unless every one of them is started over (``--overwrite``),
and the report refuses folds of different recipes. Locally the folds run one after another;
``--launcher slurm`` submits one SLURM job array through submitit (:mod:`cli.launchers`). When
every fold has finished, the report is written. Any option that is not one of this command's is
passed on to ``lightning fit`` (or ``lightning predict``), e.g.
``--data.init_args.data_dir data/isles2018``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cli import challenge, export, segment
from cli.console import CurrentStdout
from cli.errors import UserArgumentParser, exit_if_user_error
from cli.launchers import (
    FoldJob,
    lightning_command,
    read_config,
    run_lightning_here,
    run_local,
    run_stoppable,
    submit,
)
from cli.options import OVERWRITE
from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, DEFAULT_PRESET
from core.errors import ConfigurationError
from core.io import write_text
from core.recipe import recipe_differences, recipe_of, run_settings_of
from core.run_layout import (
    ComparisonLayout,
    ExperimentLayout,
    ReportLayout,
    RunLayout,
    first_fold_config,
)

# The subcommands import the evaluation modules they use: `--help` and argument errors answer
# without torch (tests/cli/test_startup.py).
if TYPE_CHECKING:
    from evaluation.cv_report import CVReport

log = logging.getLogger(__name__)


# -- composing the configuration ---------------------------------------------------------------
def compose_config(configs: list[str], extra: list[str]) -> dict[str, Any]:
    """The configuration ``lightning fit`` would run, composed by the ``lightning`` command
    itself (so defaults, overlays and overrides are resolved exactly as for one fold), whole:
    with the keys of one run (``runs_dir``, the cache folder; :data:`core.recipe.PER_RUN_KEYS`)
    that the experiment's ``cv_config.yaml`` leaves out (:func:`core.recipe.recipe_of`).

    Raises:
        ConfigurationError: With the ``lightning`` command's own one-line error.
    """
    from evaluation.published import get_published

    args = [a for c in configs for a in ("--config", c)]
    done = subprocess.run(
        lightning_command("fit", *args, *extra, "--print_config"), capture_output=True, text=True
    )
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        first = next((line for line in message if line.startswith("error:")), None)
        raise ConfigurationError(
            (first[len("error:") :].strip() if first else "\n".join(message[-5:]))
            + " (while composing the configuration of the folds)"
        )
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    if config.get("paper"):
        get_published(config["paper"])  # an unknown key fails before any fold starts
    return config


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (" …" if len(keys) > 6 else "")


def _check_recipes(
    config: dict[str, Any], experiment: ExperimentLayout, folds: list[int], overwrite: bool
) -> None:
    """Refuse to run folds that would leave the experiment with folds of different recipes.

    Raises:
        ConfigurationError: For a changed configuration without ``--overwrite``, or folds of
            another recipe that this run would not start over.
    """
    saved = experiment.cv_config
    if saved.is_file() and not overwrite:
        changed = recipe_differences(recipe_of(read_config(saved)), recipe_of(config))
        if changed:
            raise ConfigurationError(
                f"{experiment.root} holds folds of another configuration ({saved}); the new "
                f"one differs in {_listed(changed)}. Use another --experiment name, or "
                f"{OVERWRITE} to start every fold over."
            )
    stale = {
        fold: changes
        for fold, run in experiment.folds().items()
        if (changes := _changes_against(config, run))
    }
    left = sorted(set(stale) - set(folds)) if overwrite else sorted(stale)
    if left:
        raise ConfigurationError(
            f"Fold(s) {', '.join(map(str, left))} of {experiment.root} hold runs of another "
            f"recipe (fold {left[0]} differs in {_listed(stale[left[0]])}); the experiment would "
            f"mix recipes, and its report would average them. Start every fold over "
            f"({OVERWRITE} without --folds), or use another --experiment name."
        )


def _changes_against(config: dict[str, Any], run: RunLayout) -> list[str]:
    return recipe_differences(recipe_of(read_config(run.config)), recipe_of(config))


# -- commands ----------------------------------------------------------------------------------
def _parse_folds(text: str | None, num_folds: int) -> list[int]:
    if text is None:
        return list(range(num_folds))
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigurationError(f"--folds {text!r}: give fold numbers like 0,1,2.") from None
    wrong = [k for k in folds if not 0 <= k < num_folds]
    if wrong or not folds:
        raise ConfigurationError(
            f"--folds {text!r}: folds must be in 0..{num_folds - 1} (num_folds = {num_folds})."
        )
    return folds


def _fit_the_allocation(
    args: argparse.Namespace, trainer: dict[str, Any], started: dict[str, Any]
) -> None:
    """Make each fold's trainer use the processes a job-array task starts, in place: one per
    GPU (``--gpus-per-node``, at least one) on each of ``--nodes``. Lightning refuses a trainer
    whose ``devices`` or ``num_nodes`` differ from SLURM's tasks, but only inside the task,
    once it has started; ``auto`` (the recipes' default) becomes the allocation's numbers, and
    a DDP job's ``auto`` strategy ``ddp`` (the ``lightning`` command then adds what the module
    needs, see :class:`core.protocols.PartialBackward`). An experiment ``started`` with
    ``auto`` (its saved trainer settings; before 0.13.0 nothing was derived) keeps it, so its
    folds stay one recipe.

    Raises:
        ConfigurationError: ``trainer.devices`` or ``trainer.num_nodes`` set to other numbers.
    """
    tasks, nodes = max(args.gpus_per_node, 1), args.nodes
    devices = trainer.get("devices", "auto")
    count = len(devices) if isinstance(devices, list) else devices
    if str(count) == "auto":
        if started.get("devices") != "auto":
            trainer["devices"] = tasks
    elif str(count) != str(tasks):
        raise ConfigurationError(
            f"--gpus-per-node {args.gpus_per_node} starts {tasks} process(es) a node for each "
            f"fold, one per device, but trainer.devices is {devices}: give --trainer.devices "
            f"{tasks}, or --gpus-per-node {count}."
        )
    num_nodes = int(trainer.get("num_nodes") or 1)
    if num_nodes not in (1, nodes):
        raise ConfigurationError(
            f"--nodes {nodes} gives each fold {nodes} node(s), but trainer.num_nodes is "
            f"{num_nodes}: give --trainer.num_nodes {nodes}, or --nodes {num_nodes}."
        )
    trainer["num_nodes"] = nodes
    strategy = trainer.get("strategy", "auto")
    if tasks * nodes > 1 and strategy == "auto" and started.get("strategy") != "auto":
        trainer["strategy"] = "ddp"


def _check_slurm_here(args: argparse.Namespace) -> None:
    """``--launcher slurm`` submits with ``sbatch`` and needs ``srun``: refuse a machine without
    them before anything is composed or written (submitit raised a RuntimeError)."""
    if args.launcher != "slurm" or shutil.which("srun") is not None:
        return
    raise ConfigurationError(
        "--launcher slurm: this machine has no SLURM (no srun on PATH), so no job array can be "
        "submitted. Run the command on the cluster's login node, or run the folds here with "
        "--launcher local (one after another) or --launcher submitit-local."
    )


def cmd_fit(args: argparse.Namespace, extra: list[str]) -> int:
    _check_slurm_here(args)
    config = compose_config(args.config, extra)
    runs_dir = Path(str(config.get("runs_dir", "runs")))
    experiment = ExperimentLayout(
        (runs_dir / str(config.get("experiment", "experiment"))).absolute()
    )
    if args.launcher != "local":
        saved = read_config(experiment.cv_config) if experiment.cv_config.is_file() else {}
        started = saved.get("trainer") or {}
        _fit_the_allocation(args, config.setdefault("trainer", {}), started)
    num_folds = int(config["data"]["init_args"]["num_folds"])
    folds = _parse_folds(args.folds, num_folds)
    jobs = [
        FoldJob(
            str(experiment.cv_config),
            k,
            str(experiment.fold(k).root),
            ("--config", str(experiment.cv_run_config)),
            overwrite=args.overwrite,
        )
        for k in folds
    ]
    _check_recipes(config, experiment, folds, args.overwrite)
    write_text(experiment.cv_config, yaml.safe_dump(recipe_of(config), sort_keys=False))
    # The folds run those two files, not this command line again: given again, an append
    # (--trainer.callbacks+=X) was made twice, an option of a list's items reached another item.
    write_text(experiment.cv_run_config, yaml.safe_dump(run_settings_of(config), sort_keys=False))
    log.info(
        "%s: folds %s of %d → %s",
        experiment.name,
        ", ".join(map(str, folds)),
        num_folds,
        experiment.root,
    )
    if args.launcher == "local":
        run_local(jobs)
    else:
        submitted = submit(args, jobs, experiment)
        if args.launcher == "slurm" and not args.wait:
            log.info(
                "Submitted %d fold(s). When they have finished: lightning-cv report %s",
                len(submitted),
                experiment.root,
            )
            return 0
        for handle in submitted:
            handle.result()  # raises with the task's traceback if the fold failed
    return _report(experiment, wandb=args.wandb)


def _report(experiment: ExperimentLayout, wandb: bool = False) -> int:
    from evaluation.cv_report import build_report, format_report, write_report

    report = build_report(experiment.root)
    files = write_report(report)
    log.info("%s", format_report(report))
    log.info("Report files: %s", experiment.report.root)
    if wandb:
        _log_report_to_wandb(report, files)
    return 0 if report.complete else 1


def _log_report_to_wandb(report: CVReport, files: dict[str, Path]) -> None:
    from callbacks.wandb_media import (
        cv_summary_config,
        cv_summary_payload,
        log_cv_summary,
        wandb_settings_of,
    )
    from cli.runs import wandb_run_id

    config = read_config(RunLayout(report.folds[0].run_dir).config)
    settings = wandb_settings_of(config)
    tables, images, summary = cv_summary_payload(report, files)
    # The experiment's composed recipe; its folds' own (the same recipe, the report checked)
    # for folds that lightning fit ran by itself.
    cv_config = ExperimentLayout(report.experiment_dir).cv_config
    recipe = read_config(cv_config) if cv_config.is_file() else recipe_of(config)
    run = log_cv_summary(
        files["report"].parent,
        report.experiment,
        project=settings.get("project") or "strokeseg-repro",
        entity=settings.get("entity"),
        offline=bool(settings.get("offline", True)),
        # One summary run per experiment: a report written again updates it.
        run_id=wandb_run_id(ReportLayout(files["report"].parent).wandb_run_id),
        tables=tables,
        images=images,
        summary=summary,
        config=cv_summary_config(report, recipe),
    )
    log.info("W&B summary run: %s", run)


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise ConfigurationError(f"report takes no option {extra[0]!r}.")
    return _report(ExperimentLayout(Path(args.experiment_dir)), wandb=args.wandb)


def _display_names(paths: list[Path]) -> list[str]:
    """Names that tell experiment folders apart: their own names, or as much of their paths
    as needed (``runs_a/pspnet`` and ``runs_b/pspnet``)."""
    parts = [path.absolute().parts for path in paths]
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(path) for path in paths]


def _metric_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigurationError(f"--metrics {text!r}: give metric names like dice,lesion_f1.")
    return names


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from evaluation.experiment_folds import check_same_folds, read_experiment

    if extra:
        raise ConfigurationError(f"compare takes no option {extra[0]!r}.")
    folders = [Path(path) for path in args.experiments]
    if len(folders) < 2:
        raise ConfigurationError(
            f"compare needs two different experiment folders or more; got only {folders[0]}. "
            "Pass the folders of the experiments to compare, e.g. lightning-cv compare "
            "runs/pspnet_ce runs/pspnet_focal."
        )
    seen: dict[Path, Path] = {}
    for folder in folders:
        if folder.resolve() in seen:
            raise ConfigurationError(
                f"compare needs two different experiment folders or more; {folder.resolve()} is "
                f"given twice ({seen[folder.resolve()]} and {folder}). Pass each experiment's "
                "folder once, e.g. lightning-cv compare runs/pspnet_ce runs/pspnet_focal."
            )
        seen[folder.resolve()] = folder
    names = _display_names(folders)
    experiments = [read_experiment(folder) for folder in folders]
    check_same_folds({name: splits for name, (_, splits) in zip(names, experiments)})
    # Imported once the folders are read: the statistics and plots cost a second, a typo none.
    from evaluation.compare_many import compare_many
    from evaluation.compare_report import write_multi_comparison

    result = compare_many(
        {name: rows for name, (rows, _) in zip(names, experiments)},
        metric=args.metric,
        metrics=_metric_names(args.metrics),
        allow_subset=args.shared_cases,
    )
    out = ComparisonLayout(Path(args.out)) if args.out else ComparisonLayout.beside(folders)
    files = write_multi_comparison(result, out.root)
    log.info("%s", files["markdown"].read_text())
    log.info("Comparison files: %s", out.root)
    return 0


def cmd_predict(args: argparse.Namespace, extra: list[str], in_process: bool = False) -> int:
    """Predict with an ensemble of the members' best checkpoints (``lightning predict`` of a
    composed configuration); ``in_process`` runs it in this process (one start-up instead of
    two, for ``lightning-cv segment``) rather than as a child process."""
    from lightning_modules.ensemble import EnsembleModule, resolve_members

    # Fails now for a path that names no model, or a fold without a checkpoint.
    checkpoints = resolve_members(list(args.members), command="lightning-cv predict")
    first = Path(args.members[0]).absolute()
    fold_config = first_fold_config(first)
    config = read_config(fold_config)
    if args.split:
        _check_split(args.split, config, fold_config)
    name = args.name or (first.name if len(args.members) == 1 else None)
    if name is None:
        raise ConfigurationError(
            "An ensemble of several experiments needs a name: --name <experiment> (its "
            "predictions go to runs/<name>/ensemble/predict/)."
        )
    model_args = (config.get("model") or {}).get("init_args") or {}
    ensemble = {
        "experiment": name,
        "runs_dir": str(Path(args.runs_dir or first.parent).absolute()),
        "seed_everything": config.get("seed_everything"),
        "paper": None,
        "trainer": {
            "accelerator": config.get("trainer", {}).get("accelerator", "auto"),
            "devices": 1,
            "precision": config.get("trainer", {}).get("precision"),
            "logger": False,
        },
        "model": {
            "class_path": f"{EnsembleModule.__module__}.{EnsembleModule.__qualname__}",
            "init_args": {
                "members": [str(p) for p in checkpoints],
                "metrics": model_args.get("metrics", DEFAULT_PRESET),
                "monitor": model_args.get("monitor", DEFAULT_MONITOR),
                "monitor_mode": model_args.get("monitor_mode", DEFAULT_MONITOR_MODE),
                "threshold": model_args.get("threshold", 0.5),
                "tta": args.tta,
            },
        },
        "data": config["data"],
        "prediction_writer": {
            "save_probability": args.save_probability,
            "postprocessing": _postprocessing(args),
        },
    }
    if args.split:
        ensemble["data"]["init_args"]["predict_split"] = args.split
    home = ExperimentLayout(Path(ensemble["runs_dir"]) / name).run(EnsembleModule.run_folder())
    path = write_text(home.predict_config, yaml.safe_dump(ensemble, sort_keys=False))
    log.info("Ensemble of %d model(s) → %s", len(checkpoints), home.stage("predict").root)
    if in_process:
        return run_lightning_here("predict", "--config", str(path), *extra)
    # As a fold: Ctrl-C and SIGTERM stop it after the case it is writing, then this command
    # exits 128 + the signal. Its masks are published only once every case is written.
    predictions = home.stage("predict").predictions
    code, signum = run_stoppable(
        lightning_command("predict", "--config", str(path), *extra),
        f"the prediction after its current case ({predictions.parent})",
    )
    if signum is not None and code != 0:
        sys.stderr.write(
            f"lightning-cv predict: stopped (lightning predict exited with status {code}); "
            f"{predictions} is as it was before: run the same command again.\n"
        )
        raise SystemExit(128 + signum)
    return code


def _check_split(split: str, config: dict[str, Any], config_path: Path) -> None:
    """Refuse a ``--split`` that the members' dataset does not have, in the command's terms
    (the ``lightning`` run it starts would name ``data.predict_split`` and its type).

    Raises:
        ConfigurationError: Naming the split, the dataset and the splits it has.
    """
    from datamodules.base import SliceDataModule

    data_class = segment.data_class_of(config, config_path)
    if not issubclass(data_class, SliceDataModule):
        return
    splits = data_class.predict_splits
    if not splits or split in splits:
        return
    default = ((config.get("data") or {}).get("init_args") or {}).get("predict_split")
    raise ConfigurationError(
        f"--split {split}: the models were trained on {data_class.dataset_name} data "
        f"({data_class.__name__}), whose splits are {', '.join(splits)}; give one of them "
        f"(e.g. --split {splits[0]})"
        + (f", or leave --split out to predict {default}." if default else ".")
    )


def _postprocessing(args: argparse.Namespace) -> str:
    """The ensemble's post-processing: ``--postprocessing``, or the choice of the one
    experiment's cross-validation report (several experiments, or no report: ``none``)."""
    from evaluation.postprocessing import NONE, parse, report_choice

    if args.postprocessing != "auto":
        try:
            parse(args.postprocessing)
        except ValueError as error:
            raise ConfigurationError(f"--postprocessing: {error}") from None
        return str(args.postprocessing)
    if len(args.members) > 1:
        log.info("Post-processing none: the folds of several experiments chose no one rule.")
        return NONE
    first = Path(args.members[0]).absolute()
    experiment = first if ExperimentLayout(first).folds() else first.parent
    choice, summary = report_choice(experiment)
    log.info("Post-processing %s (%s)", choice, summary or "no cross-validation report: none")
    return choice


def _flag(text: str) -> bool:
    """``--overwrite`` alone, or with a value as ``lightning`` takes it (``--overwrite true``)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser() -> UserArgumentParser:
    parser = UserArgumentParser(
        prog="lightning-cv",
        description="Cross-validation of an experiment: all folds, the report, ensembles.",
        epilog="Options not listed are passed on to `lightning fit` / `lightning predict`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="run (or resume) every fold, then write the report")
    fit.add_argument("--config", action="append", required=True, help="experiment YAML(s)")
    fit.add_argument("--folds", help="comma-separated folds (default: all)")
    fit.add_argument(
        "--launcher",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="local: one fold after another here; slurm: a SLURM job array (submitit); "
        "submitit-local: the job-array path run on this machine",
    )
    fit.add_argument(
        OVERWRITE,
        nargs="?",
        const=True,
        default=False,
        type=_flag,
        help="start the folds over (as `lightning fit --overwrite`: a fold's old run is deleted "
        "once its new fit starts training)",
    )
    fit.add_argument("--wandb", action="store_true", help="log the report as a W&B summary run")
    slurm = fit.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--timeout-min", type=int, default=24 * 60, help="per array task")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes per fold (DDP)")
    slurm.add_argument("--gpus-per-node", type=int, default=0, help="GPUs (= tasks) per node")
    slurm.add_argument("--cpus-per-task", type=int, default=4)
    slurm.add_argument("--array-parallelism", type=int, default=5, help="folds at once")
    slurm.add_argument("--wait", action="store_true", help="wait for the array, then report")
    report = commands.add_parser("report", help="write the report of runs/<experiment>")
    report.add_argument("experiment_dir")
    report.add_argument("--wandb", action="store_true", help="also log a W&B summary run")
    compare = commands.add_parser(
        "compare",
        help="compare experiments of the same folds: per-metric table, mean rank, Friedman and "
        "Holm-adjusted Wilcoxon tests",
    )
    compare.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="2 or more folders")
    compare.add_argument("--metric", default="dice", help="the tested and plotted metric")
    compare.add_argument(
        "--metrics",
        help="comma-separated metrics of the table and the ranking (default: every score "
        "all the experiments' tables carry)",
    )
    compare.add_argument(
        "--shared-cases",
        action="store_true",
        help="compare the cases every experiment scored, dropping the others (listed)",
    )
    compare.add_argument(
        "--out",
        help="output folder (default: runs/compare_<a>_vs_<b>, with _and_<n>_more_<hash> for "
        "more than two)",
    )
    predict = commands.add_parser("predict", help="ensemble prediction of experiments' folds")
    predict.add_argument("members", nargs="+", help="experiment folders, fold folders or .ckpt")
    predict.add_argument("--name", help="experiment name of the ensemble's folder")
    predict.add_argument("--runs-dir", help="root of the ensemble's folder (default: the first's)")
    predict.add_argument("--split", help="the split to predict (default: the DataModule's)")
    predict.add_argument("--save-probability", action="store_true")
    predict.add_argument(
        "--postprocessing",
        default="auto",
        help="none, largest, min_size:<ml>, or auto: the experiment report's choice (default)",
    )
    predict.add_argument(
        "--tta", action="store_true", help="mirroring test-time augmentation for every member"
    )
    segment.add_parser(commands)
    export.add_parser(commands)
    challenge.add_parser(commands)
    return parser


_COMMANDS = {
    "fit": cmd_fit,
    "report": cmd_report,
    "compare": cmd_compare,
    "predict": cmd_predict,
    "segment": segment.cmd_segment,
    "export": export.cmd_export,
    "challenge": challenge.cmd_challenge,
}


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, handlers=[CurrentStdout()], force=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-cv`` console script."""
    _configure_logging()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    parser.subcommand(args.command).refuse_misspelt(extra)
    try:
        code = _COMMANDS[args.command](args, extra)
    except KeyboardInterrupt:
        # Ctrl-C outside a fold (composing the configuration, the report, its W&B run): one
        # line, not the traceback of wherever it landed. A fold's own stop is run_local's.
        sys.stderr.write(
            f"lightning-cv {args.command}: interrupted (Ctrl-C) before it finished; run the "
            "same command again.\n"
        )
        sys.exit(128 + signal.SIGINT)
    except Exception as error:
        exit_if_user_error(error)
        raise
    sys.exit(code)


if __name__ == "__main__":
    main()
