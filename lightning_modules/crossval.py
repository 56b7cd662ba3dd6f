"""``lightning-cv``: every fold of an experiment, its report beside the paper, ensembles.

Usage::

    lightning-cv fit --config experiments/pspnet_focal.yaml [--config ...] [--folds 0,1,2,3,4]
                     [--launcher local|slurm|submitit-local] [slurm options] [lightning options]
    lightning-cv report runs/pspnet_focal [--wandb]
    lightning-cv compare runs/pspnet_focal runs/pspnet_ce [--metric dice]
    lightning-cv predict runs/pspnet_focal [runs/pspnet_ce ...] [--name NAME]
                         [--split TESTING] [--save-probability] [lightning options]

``fit`` composes the configuration once (``lightning fit ... --print_config``), keeps it as
``runs/<experiment>/cv_config.yaml`` and runs ``lightning fit`` with it for each fold: a fold
that finished (``fold<k>/fit_done.json``) is skipped, one that was interrupted resumes from its
``last.ckpt`` in its own folder. Locally the folds run one after another; ``--launcher slurm``
submits one SLURM job array through submitit, one fold per array task, each task free to use
several GPUs or nodes (Lightning DDP under SLURM) and requeued on preemption by Lightning's
``SLURMEnvironment(auto_requeue=True)``. When every fold has finished, the report is written.
Any option that is not one of this command's is passed on to ``lightning fit`` (or
``lightning predict``), e.g. ``--data.init_args.data_dir data/isles2018``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datamodules.errors import ConfigurationError, UserError
from evaluation.cv_report import DONE_FILE, build_report, format_report, write_report
from evaluation.published import get_published
from evaluation.report import write_text
from lightning_modules.cli_errors import exit_if_user_error

log = logging.getLogger(__name__)

CV_CONFIG = "cv_config.yaml"
# Keys of the composed configuration that may differ between runs of the same experiment.
_PER_RUN_KEYS = ("ckpt_path", "overwrite", "print_config")


def _lightning(*args: str) -> list[str]:
    """The ``lightning`` command of this interpreter (works without the console script)."""
    return [sys.executable, "-m", "lightning_modules.cli", *args]


# -- composing the configuration ---------------------------------------------------------------
def compose_config(configs: list[str], extra: list[str]) -> dict[str, Any]:
    """The configuration ``lightning fit`` would run, composed by the ``lightning`` command
    itself (so defaults, overlays and overrides are resolved exactly as for one fold).

    Raises:
        ConfigurationError: With the ``lightning`` command's own one-line error.
    """
    args = [a for c in configs for a in ("--config", c)]
    done = subprocess.run(
        _lightning("fit", *args, *extra, "--print_config"), capture_output=True, text=True
    )
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        first = next((line for line in message if line.startswith("error:")), None)
        raise ConfigurationError(
            (first[len("error:") :].strip() if first else "\n".join(message[-5:]))
            + " (while composing the configuration of the folds)"
        )
    config = yaml.safe_load(done.stdout)
    for key in _PER_RUN_KEYS:
        config.pop(key, None)
    if config.get("paper"):
        get_published(config["paper"])  # an unknown key fails before any fold starts
    return config


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration without the fold (the same for every fold of an experiment)."""
    copy = yaml.safe_load(yaml.safe_dump(config))
    copy.get("data", {}).get("init_args", {}).pop("fold", None)
    return copy


def _keep_config(config: dict[str, Any], experiment_dir: Path, overwrite: bool) -> Path:
    """Write ``cv_config.yaml``, or check that it is the one the existing folds ran with."""
    path = experiment_dir / CV_CONFIG
    if path.is_file() and not overwrite:
        saved = yaml.safe_load(path.read_text())
        if _comparable(saved) != _comparable(config):
            changed = sorted(_differences(_comparable(saved), _comparable(config)))
            raise ConfigurationError(
                f"{experiment_dir} holds folds of another configuration ({path}); the new one "
                f"differs in {', '.join(changed[:6])}{' …' if len(changed) > 6 else ''}. Use "
                "another --experiment name, or --overwrite true to start every fold over."
            )
    return write_text(path, yaml.safe_dump(config, sort_keys=False))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


# -- one fold ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FoldJob:
    """What one fold runs: the composed configuration, the fold, and passed-on options."""

    config: str
    fold: int
    run_dir: str
    extra: tuple[str, ...] = ()

    def state(self) -> str:
        """``done``, ``resume`` (an interrupted fit with a ``last.ckpt``) or ``start``."""
        run_dir = Path(self.run_dir)
        if (run_dir / DONE_FILE).is_file():
            return "done"
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            return "resume"
        return "start"

    def arguments(self) -> list[str]:
        """The ``lightning fit`` arguments of the fold in its current state."""
        args = ["fit", "--config", self.config, "--data.init_args.fold", str(self.fold)]
        requeued = os.environ.get("SLURM_JOB_ID") and list(Path(self.run_dir).glob("hpc_ckpt_*"))
        if self.state() == "resume" and not requeued:  # a requeued job resumes by itself
            args += ["--ckpt_path", "last"]
        return [*args, *self.extra]

    def __call__(self) -> int:
        """Run the fold in this process (a submitit task: one of the job array's folds)."""
        if self.state() == "done":
            return 0
        if os.environ.get("SLURM_JOB_ID"):
            # submitit catches the preemption signal; hand it to Lightning, whose
            # SLURMEnvironment(auto_requeue=True) saves hpc_ckpt_<n>.ckpt and requeues.
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        from lightning_modules.cli import main as lightning_main

        try:
            lightning_main(self.arguments())
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
        return 0


def _run_local(jobs: list[FoldJob]) -> None:
    for number, job in enumerate(jobs, start=1):
        state = job.state()
        head = f"fold {job.fold} ({number}/{len(jobs)})"
        if state == "done":
            print(
                f"── {head}: finished before, skipped ({Path(job.run_dir) / DONE_FILE})", flush=True
            )
            continue
        print(
            f"── {head}: {'resuming from last.ckpt' if state == 'resume' else 'fitting'}",
            flush=True,
        )
        code = subprocess.run(_lightning(*job.arguments())).returncode
        if code != 0:
            raise FoldFailed(job, code)


class FoldFailed(UserError):
    """A fold's ``lightning fit`` exited with an error (its own message is above)."""

    def __init__(self, job: FoldJob, code: int) -> None:
        super().__init__(
            f"fold {job.fold} failed (lightning fit exited with status {code}; its message is "
            f"above, its files are in {job.run_dir}). Fix it and run the same command again: "
            "finished folds are skipped and this one resumes from its last checkpoint."
        )


def _executor(args: argparse.Namespace, folder: Path, experiment: str) -> Any:
    os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")  # Lightning's requeue signal
    import submitit

    cluster = "local" if args.launcher == "submitit-local" else "slurm"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    parameters: dict[str, Any] = {
        "name": f"cv-{experiment}",
        "timeout_min": args.timeout_min,
        "nodes": args.nodes,
        "tasks_per_node": args.gpus_per_node or 1,  # Lightning DDP: one task per GPU
        "cpus_per_task": args.cpus_per_task,
    }
    if args.gpus_per_node:
        parameters["gpus_per_node"] = args.gpus_per_node
    if cluster == "slurm":
        parameters["slurm_array_parallelism"] = args.array_parallelism
        if args.partition:
            parameters["slurm_partition"] = args.partition
        if args.account:
            parameters["slurm_account"] = args.account
        parameters["slurm_additional_parameters"] = {"requeue": True}
    executor.update_parameters(**parameters)
    return executor


def _submit(args: argparse.Namespace, jobs: list[FoldJob], experiment_dir: Path) -> list[Any]:
    pending = [job for job in jobs if job.state() != "done"]
    for job in jobs:
        if job not in pending:
            print(f"── fold {job.fold}: finished before, skipped", flush=True)
    if not pending:
        return []
    executor = _executor(args, experiment_dir / "submitit", experiment_dir.name)
    submitted = executor.map_array(FoldJob.__call__, pending)
    for job, handle in zip(pending, submitted):
        print(f"── fold {job.fold}: job {handle.job_id} ({job.state()})", flush=True)
    return submitted


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


def cmd_fit(args: argparse.Namespace, extra: list[str]) -> int:
    config = compose_config(args.config, extra)
    experiment = str(config.get("experiment", "experiment"))
    runs_dir = Path(str(config.get("runs_dir", "runs")))
    num_folds = int(config["data"]["init_args"]["num_folds"])
    folds = _parse_folds(args.folds, num_folds)
    experiment_dir = (runs_dir / experiment).absolute()
    if args.overwrite:  # start the chosen folds over
        for k in folds:
            shutil.rmtree(experiment_dir / f"fold{k}", ignore_errors=True)
    config_path = _keep_config(config, experiment_dir, args.overwrite)
    jobs = [
        FoldJob(str(config_path), k, str(experiment_dir / f"fold{k}"), tuple(extra)) for k in folds
    ]
    print(f"{experiment}: folds {', '.join(map(str, folds))} of {num_folds} → {experiment_dir}")
    if args.launcher == "local":
        _run_local(jobs)
    else:
        submitted = _submit(args, jobs, experiment_dir)
        if args.launcher == "slurm" and not args.wait:
            print(
                f"Submitted {len(submitted)} fold(s). When they have finished: "
                f"lightning-cv report {experiment_dir}"
            )
            return 0
        for handle in submitted:
            handle.result()  # raises with the task's traceback if the fold failed
    return _report(experiment_dir, wandb=args.wandb)


def _report(experiment_dir: Path, wandb: bool = False) -> int:
    report = build_report(experiment_dir)
    files = write_report(report)
    print(format_report(report))
    print(f"Report files: {files['report'].parent}")
    if wandb:
        _log_report_to_wandb(report, files)
    return 0 if report.complete else 1


def _log_report_to_wandb(report: Any, files: dict[str, Path]) -> None:
    from evaluation.report import read_case_table
    from lightning_modules.wandb_media import log_cv_summary

    config = yaml.safe_load((report.folds[0].run_dir / "config.yaml").read_text())
    logger = (config.get("trainer") or {}).get("logger") or {}
    loggers = logger if isinstance(logger, list) else [logger]
    wandb_args: dict[str, Any] = next(
        (
            entry.get("init_args", {})
            for entry in loggers
            if isinstance(entry, dict) and str(entry.get("class_path", "")).endswith("WandbLogger")
        ),
        {},
    )
    tables = {"folds": read_case_table(files["folds"])}
    if "cases_oof" in files:
        tables["cases_oof"] = read_case_table(files["cases_oof"])
    if report.comparison:
        tables["paper_vs_ours"] = [
            {
                k: row[k]
                for k in ("metric", "paper", "paper_sd", "ours", "ours_sd", "difference", "how")
            }
            for row in report.comparison
        ]
    summary = {f"cv/{m}_mean": v["fold_mean"] for m, v in report.summary.items()}
    summary |= {f"cv/{m}_sd": v["fold_sd"] for m, v in report.summary.items()}
    run = log_cv_summary(
        files["report"].parent,
        report.experiment,
        project=wandb_args.get("project") or "strokeseg-repro",
        entity=wandb_args.get("entity"),
        offline=bool(wandb_args.get("offline", True)),
        tables=tables,
        images={k: files[k] for k in ("dice_boxplot", "curves_all") if k in files},
        summary=summary,
    )
    print(f"W&B summary run: {run}")


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise ConfigurationError(f"report takes no option {extra[0]!r}.")
    return _report(Path(args.experiment_dir), wandb=args.wandb)


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from evaluation.compare import compare_experiments, write_comparison

    if extra:
        raise ConfigurationError(f"compare takes no option {extra[0]!r}.")
    tables = []
    for folder in (args.a, args.b):
        report = build_report(Path(folder))
        tables.append([row for fold in report.folds for row in fold.cases])
    names = (Path(args.a).name, Path(args.b).name)
    comparison = compare_experiments(*tables, metric=args.metric, names=names)
    out = Path(args.out) if args.out else Path(args.a).parent / f"compare_{names[0]}_vs_{names[1]}"
    files = write_comparison(comparison, out)
    print(files["md"].read_text())
    print(f"Comparison files: {out}")
    return 0


def cmd_predict(args: argparse.Namespace, extra: list[str]) -> int:
    from lightning_modules.ensemble import resolve_members

    members = [str(Path(m).absolute()) for m in args.members]
    checkpoints = resolve_members(members)  # fails now for a fold without a checkpoint
    first = Path(args.members[0]).absolute()
    fold_config = next(iter(sorted(first.glob("fold*/config.yaml"))), first / "config.yaml")
    if not fold_config.is_file():
        raise ConfigurationError(
            f"{first} holds no fold configuration (fold<k>/config.yaml): pass experiment or "
            "fold folders written by lightning-cv fit / lightning fit."
        )
    config = yaml.safe_load(fold_config.read_text())
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
            "class_path": "lightning_modules.EnsembleModule",
            "init_args": {
                "members": [str(p) for p in checkpoints],
                "metrics": model_args.get("metrics", "isles2018"),
                "monitor": model_args.get("monitor", "val/dice"),
                "monitor_mode": model_args.get("monitor_mode", "max"),
                "threshold": model_args.get("threshold", 0.5),
            },
        },
        "data": config["data"],
        "prediction_writer": {"save_probability": args.save_probability},
    }
    if args.split:
        ensemble["data"]["init_args"]["predict_split"] = args.split
    out = Path(ensemble["runs_dir"]) / name / "ensemble"
    path = write_text(out / "predict_config.yaml", yaml.safe_dump(ensemble, sort_keys=False))
    print(f"Ensemble of {len(checkpoints)} model(s) → {out / 'predict'}", flush=True)
    return subprocess.run(_lightning("predict", "--config", str(path), *extra)).returncode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    fit.add_argument("--overwrite", action="store_true", help="start the folds over")
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
    compare = commands.add_parser("compare", help="paired per-case comparison (Wilcoxon)")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--metric", default="dice")
    compare.add_argument("--out", help="output folder (default: runs/compare_<a>_vs_<b>)")
    predict = commands.add_parser("predict", help="ensemble prediction of experiments' folds")
    predict.add_argument("members", nargs="+", help="experiment folders, fold folders or .ckpt")
    predict.add_argument("--name", help="experiment name of the ensemble's folder")
    predict.add_argument("--runs-dir", help="root of the ensemble's folder (default: the first's)")
    predict.add_argument("--split", help="the split to predict (default: the DataModule's)")
    predict.add_argument("--save-probability", action="store_true")
    return parser


_COMMANDS = {"fit": cmd_fit, "report": cmd_report, "compare": cmd_compare, "predict": cmd_predict}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-cv`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, extra = _parser().parse_known_args(argv)
    try:
        code = _COMMANDS[args.command](args, extra)
    except Exception as error:
        exit_if_user_error(error)
        raise
    sys.exit(code)


if __name__ == "__main__":
    main()
