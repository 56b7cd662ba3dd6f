"""Running the folds of an experiment: one after another here, or as a SLURM job array.

A :class:`FoldJob` is one fold's ``lightning fit`` with the experiment's composed configuration.
Locally (:func:`run_local`) each fold is a ``lightning`` process; on SLURM (:func:`submit`,
through submitit) each fold is one task of a job array, which may span several GPUs and nodes
(Lightning DDP) and is requeued on preemption by Lightning's
``SLURMEnvironment(auto_requeue=True)``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cli.options import OVERWRITE
from core.errors import ConfigurationError, DataValidationError, FoldFailedError
from core.legacy import upgrade_config
from core.recipe import recipe_differences, recipe_of
from core.run_layout import ExperimentLayout, RunLayout

log = logging.getLogger(__name__)

FoldState = Literal["done", "resume", "start", "stale"]


def lightning_command(*args: str) -> list[str]:
    """The ``lightning`` command of this interpreter (works without the console script)."""
    return [sys.executable, "-m", "cli.lightning", *args]


def run_lightning_here(*args: str) -> int:
    """The ``lightning`` command in this process; its exit status."""
    from cli.lightning import main

    try:
        main(list(args))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return 0


def read_config(path: Path) -> dict[str, Any]:
    """A configuration file as today's release reads it (see :mod:`core.legacy`).

    Raises:
        DataValidationError: For a file that is not a YAML mapping (cut off or edited).
    """
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(config, dict):
            raise ValueError(f"a {type(config).__name__}, not a mapping of settings")
    except (yaml.YAMLError, ValueError) as error:
        reason = str(error).splitlines()[0]
        remedy = (
            "It is the experiment's composed configuration: delete it and run lightning-cv fit "
            "again (it is composed anew and checked against the folds' own config.yaml)."
            if path.name == ExperimentLayout(path.parent).cv_config.name
            else "Restore it from a copy, or start its fold over (lightning-cv fit --config … "
            f"--folds <k> {OVERWRITE})."
        )
        raise DataValidationError(
            f"{path} is not a readable configuration ({reason}): it was cut off or edited. "
            + remedy
        ) from error
    return upgrade_config(config)[0]


@dataclass(frozen=True)
class FoldJob:
    """What one fold runs: the composed configuration, the fold, and passed-on options.

    Attributes:
        config: The experiment's ``cv_config.yaml``.
        fold: The fold number.
        run_dir: The fold's folder.
        extra: Options passed on to ``lightning fit``.
        overwrite: Start the fold over (``lightning fit --overwrite``) whatever it holds.
    """

    config: str
    fold: int
    run_dir: str
    extra: tuple[str, ...] = ()
    overwrite: bool = False

    @property
    def run(self) -> RunLayout:
        return RunLayout(Path(self.run_dir))

    def recipe_changes(self) -> list[str]:
        """The recipe keys in which the fold's run differs from the experiment's configuration
        (none for a fold without a run)."""
        if not self.run.config.is_file():
            return []
        ours = recipe_of(read_config(Path(self.config)))
        theirs = recipe_of(read_config(self.run.config))
        return recipe_differences(theirs, ours)

    def state(self) -> FoldState:
        """``stale`` (a run of another recipe), ``done``, ``resume`` (an interrupted fit with a
        ``last.ckpt``) or ``start``."""
        if self.recipe_changes():
            return "stale"
        if self.run.fit_done.is_file():
            return "done"
        if self.run.last_checkpoint.is_file():
            return "resume"
        return "start"

    def arguments(self) -> list[str]:
        """The ``lightning fit`` arguments of the fold in its current state."""
        args = ["fit", "--config", self.config, "--data.init_args.fold", str(self.fold)]
        if self.overwrite:
            return [*args, OVERWRITE, *self.extra]
        requeued = os.environ.get("SLURM_JOB_ID") and self.run.hpc_checkpoints()
        if self.state() == "resume" and not requeued:  # a requeued job resumes by itself
            args += ["--ckpt_path", "last"]
        return [*args, *self.extra]

    def pending(self) -> bool:
        """Whether the fold has work to do."""
        return self.overwrite or self.state() != "done"

    def check_resumable(self) -> None:
        """Refuse a damaged fold folder that neither ``fit`` nor the report could use: a
        finished fit without its ``config.yaml`` (skipped here, a missing fold in the report),
        or an interrupted one whose checkpoints are there but not ``last.ckpt``.

        Raises:
            ConfigurationError: Naming the missing file and how to start the fold over.
        """
        if self.overwrite:
            return
        if self.run.fit_done.is_file() and not self.run.config.is_file():
            raise ConfigurationError(
                f"{self.run.config} is missing, but {self.run.fit_done.name} says fold "
                f"{self.fold} finished: without it the report counts the fold as missing. Restore "
                f"it from a copy, or start this fold over (lightning-cv fit --config … --folds "
                f"{self.fold} {OVERWRITE}; the other folds are kept)."
            )
        if self.state() != "start":
            return
        present = self.run.checkpoint_files()
        if present:
            raise ConfigurationError(
                f"{self.run.last_checkpoint} is missing, but fold {self.fold} holds "
                f"{', '.join(p.name for p in present)} and no {self.run.fit_done.name}: its "
                "interrupted fit cannot resume where it stopped. Start this fold over (lightning-cv "
                f"fit --config … --folds {self.fold} {OVERWRITE}; the other folds are kept), or "
                "put its last.ckpt back."
            )

    def __call__(self) -> int:
        """Run the fold in this process (a submitit task: one of the job array's folds)."""
        if not self.pending():
            return 0
        if os.environ.get("SLURM_JOB_ID"):
            # submitit catches the preemption signal; hand it to Lightning, whose
            # SLURMEnvironment(auto_requeue=True) saves hpc_ckpt_<n>.ckpt and requeues.
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        from cli.lightning import main as lightning_main

        try:
            lightning_main(self.arguments())
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
        return 0


def _failed(job: FoldJob, code: int) -> FoldFailedError:
    return FoldFailedError(
        f"fold {job.fold} failed (lightning fit exited with status {code}; its message is "
        f"above, its files are in {job.run_dir}). Fix it and run the same command again: "
        "finished folds are skipped and this one resumes from its last checkpoint."
    )


#: Seconds a fold's process is given to stop after the command passed it a stop: Lightning ends
#: the running step, then the fold's loggers (W&B included) close their files.
STOP_GRACE_S = 60.0

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


#: Linux's ``prctl`` option that has a process signalled when its parent dies.
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[..., int] | None:
    """Linux's ``prctl`` (looked up here, in the parent: a forked child must not load
    libraries), or ``None`` on other systems, where nothing stops a process with its parent."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _start_stoppable(parent: int, prctl: Callable[..., int] | None) -> None:
    """In the new process, before it runs the command: ignore Ctrl-C, and stop (SIGTERM) when
    the command that started it dies, even by ``kill -9``, so that no fold trains on unseen."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's handler (it records stop signals) is inherited until exec: a SIGTERM before
    # then would be recorded by a copy of the parent and lost.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def _recording_stop_signals() -> Iterator[list[int]]:
    """Within the block, Ctrl-C and SIGTERM are recorded in the yielded list instead of
    stopping this process (the main thread only; elsewhere the list stays empty)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        signum: signal.signal(signum, lambda n, f: received.append(n)) for signum in _STOP_SIGNALS
    }
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_stoppable(command: list[str], what: str) -> tuple[int, int | None]:
    """Run a ``lightning`` command as a process that Ctrl-C and SIGTERM stop cleanly; its exit
    status, and the stop signal this command received meanwhile (None: none).

    Ctrl-C reaches every process of the terminal's group, SIGTERM may reach only this one (``kill
    <pid>``, ``timeout``) or all of them (SLURM): the process ignores Ctrl-C and gets one SIGTERM
    from here, whichever arrived, and stops as Lightning stops for SIGTERM, at the end of a step,
    closing its files (checkpoints, ``metrics.csv``, W&B run). It is killed at a second signal or
    after :data:`STOP_GRACE_S`: nothing runs on unseen after the command has gone. On Linux it
    also gets SIGTERM when this command dies without passing it a stop (``kill -9``, the OOM
    killer, a closed SSH session), and stops the same way.

    Args:
        command: The process's command line (:func:`lightning_command`).
        what: What stops, for the line said at the first signal, e.g. ``"fold 0 at the end of
            its current step (runs/x/fold0)"``.
    """
    with _recording_stop_signals() as received:
        # The signal at the parent's death is tied to this thread, which waits here until the
        # process ends.
        start = functools.partial(_start_stoppable, os.getpid(), _parent_death_signal())
        process = subprocess.Popen(command, preexec_fn=start)
        deadline = None
        while True:
            try:
                code = process.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and deadline is None:
                name = signal.Signals(received[0]).name
                sys.stderr.write(
                    f"interrupted ({name}): stopping {what}; {name} again stops it at once.\n"
                )
                process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE_S
            elif deadline is not None and (len(received) > 1 or time.monotonic() > deadline):
                process.kill()
        return code, (received[0] if received else None)


def _fit_fold(job: FoldJob) -> tuple[int, int | None]:
    """Run the fold's ``lightning fit`` as a process (:func:`run_stoppable`)."""
    what = f"fold {job.fold} at the end of its current step ({job.run_dir})"
    return run_stoppable(lightning_command(*job.arguments()), what)


def run_local(jobs: list[FoldJob]) -> None:
    """Run the folds one after another, each as a ``lightning fit`` process.

    Ctrl-C or SIGTERM stops the running fold at the end of its step (:func:`_fit_fold`; it
    resumes from its ``last.ckpt`` when the command is run again) and exits with 128 + the
    signal's number.

    Raises:
        ConfigurationError: Before any fold runs, for a fold that cannot resume
            (:meth:`FoldJob.check_resumable`).
        FoldFailedError: When a fold's ``lightning fit`` fails (its own message came first).
    """
    for job in jobs:
        job.check_resumable()
    for number, job in enumerate(jobs, start=1):
        head = f"fold {job.fold} ({number}/{len(jobs)})"
        if not job.pending():
            log.info("── %s: finished before, skipped (%s)", head, job.run.fit_done)
            continue
        state = "starting over" if job.overwrite else job.state()
        what = {"resume": "resuming from last.ckpt", "start": "fitting"}.get(state, state)
        log.info("── %s: %s", head, what)
        code, signum = _fit_fold(job)
        if signum is not None:
            sys.stderr.write(
                f"fold {job.fold} stopped (lightning fit exited with status {code}). Run the "
                "same command again: finished folds are skipped and this one resumes from its "
                "last checkpoint.\n"
            )
            raise SystemExit(128 + signum)
        if code != 0:
            raise _failed(job, code)


def _executor(args: argparse.Namespace, experiment: ExperimentLayout) -> Any:
    os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")  # Lightning's requeue signal
    import submitit

    cluster = "local" if args.launcher == "submitit-local" else "slurm"
    executor = submitit.AutoExecutor(folder=experiment.submitit / "%j", cluster=cluster)
    parameters: dict[str, Any] = {
        "name": f"cv-{experiment.name}",
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


def submit(
    args: argparse.Namespace, jobs: list[FoldJob], experiment: ExperimentLayout
) -> list[Any]:
    """Submit the pending folds as one job array (submitit); return the job handles."""
    for job in jobs:
        job.check_resumable()
    pending = [job for job in jobs if job.pending()]
    for job in jobs:
        if job not in pending:
            log.info("── fold %d: finished before, skipped", job.fold)
    if not pending:
        return []
    executor = _executor(args, experiment)
    submitted = executor.map_array(FoldJob.__call__, pending)
    for job, handle in zip(pending, submitted):
        log.info("── fold %d: job %s (%s)", job.fold, handle.job_id, job.state())
    return submitted
