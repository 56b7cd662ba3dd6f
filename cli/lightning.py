"""The ``lightning`` command: LightningCLI in subclass mode over the suite's modules.

    lightning fit --config experiments/pspnet_focal.yaml [--config experiments/demo.yaml]
    lightning fit ... --ckpt_path last                      # resume the fold where it stopped
    lightning fit ... --overwrite                           # start the fold over
    lightning validate|test|predict --config runs/<experiment>/fold0/config.yaml --ckpt_path best
    lightning fit --config experiments/pspnet_focal.yaml --print_config

Each fold of an experiment lives in ``runs/<experiment>/fold<k>/`` (see :mod:`cli.runs` and
:class:`core.run_layout.RunLayout`); ``experiment`` is a top-level key of the experiment YAMLs
and the fold comes from ``data.init_args.fold`` (a module that owns its run folder, an
ensemble, has that folder instead). Every run gets, without repeating it in the YAMLs, a
``ModelCheckpoint`` of the best epoch and one of the last (``last.ckpt`` after every epoch), a
``LearningRateMonitor``, a ``CaseReport``, per-step seeding for exact resumes (``StepSeed``), a
``NiftiPredictionWriter`` for ``predict`` and an optional ``early_stopping``, all following the
model's single ``monitor``/``monitor_mode`` through ``link_arguments``. ``paper`` names the
published result the experiment reproduces (checked against the package's table). A finished
``fit`` writes ``fit_done.json`` into the fold's folder (the fold workflow, :mod:`cli.crossval`,
skips such folds). A ``WandbLogger`` given in a config logs beside the CSV logger, grouped by
experiment and named by fold, with its files inside the fold's folder.

The hooks it calls on the classes of a configuration are declared in :mod:`core.protocols`;
configurations written by earlier releases are read through :func:`core.legacy.upgrade_config`
(with a warning). User mistakes exit with status 2 and one paragraph (:mod:`cli.errors`).

This module imports nothing heavy: the mistakes a command line shows before any class is needed
(no subcommand, a ``--config`` file that does not exist) are answered in a fraction of a second
(:func:`check_command_line`); :class:`cli.suite_cli.SuiteCLI`, and torch and Lightning with it,
is imported only after that.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cli.console import CurrentStdout
from cli.errors import exit_if_user_error
from core.errors import ConfigurationError
from core.legacy import upgrade_config
from core.run_layout import ExperimentLayout, RunLayout

if TYPE_CHECKING:
    from cli.runs import RunPlan

log = logging.getLogger(__name__)

#: LightningCLI's subcommands.
SUBCOMMANDS = ("fit", "validate", "test", "predict")

_PACKAGES = (
    "core", "networks", "losses", "datamodules", "evaluation", "lightning_modules", "callbacks",
    "cli",
)  # fmt: skip


def _configure_logging() -> None:
    # Lightning announces the seed before the arguments are checked; the seed is in the run's
    # config.yaml, and a user error must be the first thing a user reads.
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)
    handler = CurrentStdout()
    for package in _PACKAGES:
        package_log = logging.getLogger(package)
        package_log.setLevel(logging.INFO)
        package_log.handlers = [handler]
        package_log.propagate = False


def _config_paths(argv: list[str]) -> list[tuple[int, Path]]:
    """The ``--config`` files of a command line, with the index of each path in ``argv``."""
    found = []
    for index, argument in enumerate(argv):
        if argument == "--config" and index + 1 < len(argv):
            found.append((index + 1, Path(argv[index + 1])))
        elif argument.startswith("--config="):
            found.append((index, Path(argument.split("=", 1)[1])))
    return [(index, path) for index, path in found if path.is_file()]


def _run_home(argv: list[str]) -> Path | None:
    """The run folder whose own ``config.yaml`` is among the ``--config`` files, if any (the
    last one): a later stage then works in that folder, with its checkpoints."""
    home = None
    for _, path in _config_paths(argv):
        run = RunLayout(path.absolute().parent)
        if path.name == run.config.name and run.checkpoints.is_dir():
            home = run.root
    return home


def _upgrade_configs(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config`` file written by an earlier release replaced by today's
    reading of it (as YAML text, which ``--config`` also takes), with a warning per file."""
    argv = list(argv)
    for index, path in _config_paths(argv):
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue  # jsonargparse reports the file's syntax error itself
        upgraded, changes = upgrade_config(config)
        if not changes:
            continue
        warnings.warn(
            f"{path} was written by an earlier release of the suite; it is read as today's "
            f"({'; '.join(changes)}). These spellings will stop working in the next release: "
            "update the file (lightning ... --print_config writes today's).",
            FutureWarning,
            stacklevel=2,
        )
        text = yaml.safe_dump(upgraded, sort_keys=False)
        argv[index] = text if argv[index] == str(path) else f"--config={text}"
    return argv


def _config_values(argv: list[str]) -> list[str]:
    """The values of a command line's ``--config``/``-c`` options, as given."""
    values = []
    for index, argument in enumerate(argv):
        if argument in ("--config", "-c") and index + 1 < len(argv):
            values.append(argv[index + 1])
        elif argument.startswith("--config="):
            values.append(argument.split("=", 1)[1])
    return values


def check_command_line(argv: list[str]) -> None:
    """Refuse the mistakes a command line shows before any class is needed.

    Building LightningCLI's parser imports torch, Lightning and every class it may have to
    resolve (seconds); a missing subcommand or configuration file is told at once instead.
    Anything not caught here is left to LightningCLI's own parsing.

    Raises:
        ConfigurationError: No subcommand, an unknown first word, or a ``--config`` path that is
            not a file.
    """
    if any(argument in ("-h", "--help") for argument in argv):
        return
    example = "e.g. lightning fit --config experiments/pspnet_focal.yaml"
    if argv and not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
        close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1)
        raise ConfigurationError(
            f"{argv[0]!r} is not a subcommand of lightning"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; give one of {', '.join(SUBCOMMANDS)} ({example})."
        )
    configs = _config_values(argv)
    # A top-level configuration may name the subcommand itself: LightningCLI decides then.
    if not configs and not any(argument in SUBCOMMANDS for argument in argv):
        raise ConfigurationError(
            f"lightning needs a subcommand, one of {', '.join(SUBCOMMANDS)} ({example}); "
            "lightning --help lists them."
        )
    for value in configs:
        if "\n" in value or ":" in value or "{" in value:
            continue  # configuration text (as --config also takes), not a path
        path = Path(value)
        if path.is_dir():
            raise ConfigurationError(
                f"--config {value}: is a folder, not a configuration file; give an experiment "
                f"YAML, or a run's {RunLayout(path).config.name} (e.g. runs/<experiment>/fold0/)."
            )
        if not path.is_file():
            raise ConfigurationError(
                f"--config {value}: no such file (from {Path.cwd()}); give an experiment YAML, "
                "e.g. experiments/pspnet_focal.yaml, or a run's fold<k>/config.yaml."
            )
        _check_config_file(value, path)


def _check_config_file(value: str, path: Path) -> None:
    """Refuse a ``--config`` file that is not a YAML mapping of settings, naming the file.

    jsonargparse would say "Unexpected config" or quote a YAML error "in <unicode string>",
    without the file.

    Raises:
        ConfigurationError: For a file that cannot be read, is not YAML, is empty (or only
            comments), or holds something other than a mapping.
    """
    example = "an experiment YAML maps settings to values, e.g. 'trainer: {max_epochs: 1}'"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        reason = (error.strerror if isinstance(error, OSError) else None) or type(error).__name__
        raise ConfigurationError(
            f"--config {value}: cannot be read ({reason}); give a readable YAML text file."
        ) from error
    except yaml.YAMLError as error:
        marked = isinstance(error, yaml.MarkedYAMLError)
        mark = error.problem_mark if marked else None
        problem = (error.problem if marked else None) or str(error).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigurationError(
            f"--config {value}: not valid YAML ({problem}{where}); correct the file ({example})."
        ) from error
    if config is None:
        raise ConfigurationError(
            f"--config {value}: holds no settings (the file is empty or only comments); "
            f"leave it out of the command line or add settings ({example})."
        )
    if not isinstance(config, dict):
        text = " ".join(str(config).split())
        raise ConfigurationError(
            f"--config {value}: holds a {type(config).__name__} ({text[:40]!r}), not a mapping "
            f"of settings; {example}."
        )


#: Exit status of a command stopped by SIGTERM (the shell's 128 + signal number).
TERMINATED_STATUS = 128 + signal.SIGTERM


@contextlib.contextmanager
def _sigterm_unwinds(exception: type[BaseException]) -> Iterator[None]:
    """Within the block, SIGTERM raises ``exception`` (as Ctrl-C raises KeyboardInterrupt), so
    that the ``finally`` clauses run: a run set aside by ``--overwrite`` is put back.

    Only where SIGTERM would otherwise kill the process at once (no handler of a launcher such
    as submitit's). While Lightning's loops run, its own handler (which calls this one too)
    stops them at the end of a step instead.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    raised: list[int] = []

    def unwind(signum: int, frame: Any) -> None:
        # Once: a second SIGTERM (a fold of lightning-cv gets one from the command and one from
        # SLURM's signal to the whole job) would interrupt the unwinding with a traceback.
        if signal.getsignal(signal.SIGTERM) is unwind and not raised:  # not Lightning's call
            raised.append(signum)
            raise exception

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _is_cv_fold(argv: list[str]) -> bool:
    """Whether the command is a fold that ``lightning-cv fit`` started (it runs the experiment's
    composed configuration)."""
    return any(
        path.name == ExperimentLayout(path.parent).cv_config.name for _, path in _config_paths(argv)
    )


def _report_terminated(argv: list[str], plans: list[RunPlan], by: str = "SIGTERM") -> None:
    """Say on stderr that the command was stopped (``by`` SIGTERM, Ctrl-C), and how to go on."""
    stage = next((argument for argument in argv if argument in SUBCOMMANDS), "fit")
    message = f"lightning {stage}: stopped by {by} before it finished"
    if plans and stage == "fit" and plans[-1].replaced is not None:
        message += f"; the earlier run of {plans[-1].run.root} is kept: run the command again."
    elif plans and stage == "fit" and plans[-1].run.last_checkpoint.is_file():
        run = plans[-1].run
        again = (
            "run the lightning-cv command again to resume it"
            if _is_cv_fold(argv)
            else "run the same command with --ckpt_path last to resume"
        )
        message += f"; {run.checkpoints} keeps the checkpoints of the last finished epoch: {again}."
    elif plans and stage == "fit":
        message += "; no epoch finished: run the command again."
    elif plans and stage == "predict":
        # The writer publishes a prediction's masks only once every case is written.
        # (Its folder is the writer's output_dir, which the plan does not know.)
        message += "; it published no mask: run it again."
    elif plans:
        message += f"; what it wrote to {plans[-1].stage.root} is incomplete: run it again."
    else:
        message += "."
    sys.stderr.write(message + "\n")


#: Exit status of a command stopped by Ctrl-C (the shell's 128 + SIGINT).
INTERRUPTED_STATUS = 128 + signal.SIGINT


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning`` console script."""
    _configure_logging()
    argv = list(sys.argv[1:] if args is None else args)
    plans: list[RunPlan] = []
    try:
        _main(argv, args, plans)
    except KeyboardInterrupt:
        # Ctrl-C while the command starts (imports, parsing, the cache build); once Lightning's
        # loops run, it is theirs (see _main).
        _report_terminated(argv, plans, by="Ctrl-C")
        sys.exit(INTERRUPTED_STATUS)


class _NoAdvertisedTips(logging.Filter):
    """Leaves out Lightning's "💡 Tip" lines: they advertise installing a cloud service."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _quiet_library_noise() -> None:
    """Leave out what the libraries print on every run that a user of the suite cannot act on:
    Lightning's advertised tips, and a deprecation inside Lightning's own use of torch's pytree
    (its `isinstance(treespec, LeafSpec)`, warned by torch 2.13 at every fit and predict)."""
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisedTips) for f in rank_zero.filters):
        rank_zero.addFilter(_NoAdvertisedTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def _main(argv: list[str], args: list[str] | None, plans: list[RunPlan]) -> None:
    try:
        check_command_line(argv)
    except ConfigurationError as error:
        exit_if_user_error(error)
        raise
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from cli.suite_cli import SuiteCLI

    upgraded = _upgrade_configs(argv)
    # The arguments are passed explicitly (they may hold upgraded configurations); Lightning
    # warns about that whenever the process also has command-line arguments, as it always has.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    _quiet_library_noise()
    try:
        with _sigterm_unwinds(SIGTERMException):
            SuiteCLI(
                pl.LightningModule,
                pl.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_kwargs={"overwrite": True},
                args=None if args is None and upgraded == argv else upgraded,
                home=_run_home(argv),
                plans=plans,
            )
    except SIGTERMException:
        # Lightning stops its loops at SIGTERM with a SystemExit whose status is 0, which would
        # tell a script, a scheduler or lightning-cv that the command finished.
        _report_terminated(argv, plans)
        sys.exit(TERMINATED_STATUS)
    except SystemExit as stop:
        if not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        # Lightning's own Ctrl-C handling (its "graceful shutdown": callbacks and loggers told,
        # W&B closed) ends in sys.exit(1), the status of a failure, with nothing said.
        _report_terminated(argv, plans, by="Ctrl-C")
        sys.exit(INTERRUPTED_STATUS)
    except Exception as error:
        exit_if_user_error(error)
        raise
    finally:
        for plan in plans:
            plan.rollback()  # a replaced run is put back unless the new fit started training
            plan.release()  # another fit may train the run now
        # Lightning leaves the process group alive after fit; tearing gloo down explicitly
        # avoids an abort ("terminate called without an active exception") at interpreter exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def __getattr__(name: str) -> Any:
    # SuiteCLI lives in cli.suite_cli (it imports Lightning); `from cli.lightning import
    # SuiteCLI` keeps working.
    if name == "SuiteCLI":
        from cli.suite_cli import SuiteCLI

        return SuiteCLI
    raise AttributeError(f"module 'cli.lightning' has no attribute {name!r}")


if __name__ == "__main__":
    main()
