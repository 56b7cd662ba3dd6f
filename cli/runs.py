"""One fold = one folder: where a run's files go, how it resumes, how it is replaced, its logger.

Every ``lightning`` command of an experiment's fold works in ``runs/<experiment>/fold<k>/``
(the files are named by :class:`core.run_layout.RunLayout`):

* ``fit`` writes the configuration, split, metrics, checkpoints, per-case tables and curves
  there, whatever the loggers (a W&B run keeps its files in ``wandb/`` inside it).
  ``--ckpt_path last`` resumes in the same folder: ``metrics.csv`` keeps its rows up to the
  checkpoint's epoch, the W&B run continues under the same id. A SLURM job requeued by
  Lightning's auto-requeue resumes there from its ``hpc_ckpt_<n>.ckpt`` with the same command.
  Starting a new fit over a folder that holds checkpoints is refused unless ``--overwrite``.
* ``--overwrite`` deletes nothing up front: the old folder is renamed aside
  (``.fold<k>.replaced-<pid>``), and deleted only once the new fit has passed every check and
  starts training (:meth:`RunPlan.commit`); if anything fails before that — a broken case, a
  wrong setting — the old folder is put back (:meth:`RunPlan.rollback`). After a hard kill in
  between, the old folder is still there under the aside name.
* ``validate``/``test``/``predict`` write into ``<fold folder>/<stage>/``. With a checkpoint
  inside a run folder (``…/fold<k>/checkpoints/x.ckpt``), or with a run's own ``config.yaml``
  as the configuration, that run's folder is used, so a prediction never lands in another
  experiment's folder and a copied run folder uses its own weights; ``--ckpt_path last``/
  ``best`` name the fold's own checkpoints.
* One trainer per run folder: ``fit`` locks the run (:class:`core.locks.RunLock`, the file
  ``.fold<k>.lock`` beside it) before it touches the folder and until the command ends; a second
  ``fit`` of the same run — a fold orphaned by a killed ``lightning-cv`` still training, another
  terminal, a SLURM requeue racing a task still running — is refused at once, naming the
  process that trains it. Only the process that owns the folder (global rank 0) locks it.
  ``validate``/``test``/``predict`` take no lock: they read the fit's atomically written
  checkpoints and write their own stage folders, so they run while the fold trains.
"""

from __future__ import annotations

import csv
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cli.options import OVERWRITE
from core.checkpoints import best_checkpoint, checkpoint_epoch
from core.errors import ConfigurationError
from core.io import temporary_sibling, write_text
from core.locks import RunLock
from core.run_layout import ExperimentLayout, RunLayout, fold_name

log = logging.getLogger(__name__)


def _global_rank() -> int:
    """This process's rank, from the launcher's environment (0 outside distributed jobs)."""
    return int(getattr(rank_zero_only, "rank", 0))


@dataclass
class RunPlan:
    """Where one command of a fold works.

    Attributes:
        run: The fold's folder, ``<runs_dir>/<experiment>/fold<k>``.
        stage: ``run`` for ``fit``; ``run/<stage>`` otherwise.
        ckpt_path: The checkpoint to start from (resolved), or ``None``.
        resume_epoch: For a ``fit`` that resumes in ``run``: the checkpoint's epoch.
        replaced: For ``fit --overwrite``: where the old run folder waits until the new fit
            starts training (then it is deleted) or fails (then it is put back).
        lock: For ``fit`` in the process that owns the folder: the run's lock, held until
            :meth:`release`.
    """

    run: RunLayout
    stage: RunLayout
    ckpt_path: Path | None
    resume_epoch: int | None
    replaced: Path | None = field(default=None)
    lock: RunLock | None = field(default=None)

    @property
    def logger_version(self) -> str:
        """The CSV logger's version: the stage folder relative to ``<runs_dir>/<experiment>``."""
        return self.stage.root.relative_to(self.run.root.parent).as_posix()

    def commit(self) -> None:
        """The new fit passed its checks and trains: delete the replaced run folder."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            log.info("Replaced the earlier run of this fold (--overwrite).")
            self.replaced = None

    def rollback(self) -> None:
        """The new fit failed before training: put the replaced run folder back."""
        if self.replaced is None or not self.replaced.exists():
            return
        shutil.rmtree(self.run.root, ignore_errors=True)
        self.replaced.replace(self.run.root)
        log.warning("The earlier run of this fold was kept: %s", self.run.root)
        self.replaced = None

    def release(self) -> None:
        """The command ends: let another ``fit`` train the run (after :meth:`rollback`)."""
        if self.lock is not None:
            self.lock.release()


def _requeue_checkpoint(run: RunLayout) -> Path | None:
    """The newest ``hpc_ckpt_<n>.ckpt`` Lightning saved before SLURM requeued this job, if this
    is a SLURM job (Lightning then resumes from it by itself)."""
    if not SLURMEnvironment.detect():
        return None
    saved = run.hpc_checkpoints()
    return saved[-1] if saved else None


def _resolve(ckpt_path: str, run: RunLayout) -> Path:
    """``last``/``best``/a path → an existing checkpoint file, or a one-paragraph error."""
    if ckpt_path in ("last", "best"):
        found = run.last_checkpoint if ckpt_path == "last" else best_checkpoint(run)
        if found is not None and found.is_file():
            return found.resolve()
        present = [p.name for p in run.checkpoint_files()]
        raise ConfigurationError(
            f"--ckpt_path {ckpt_path}: no {ckpt_path} checkpoint of this fold in "
            f"{run.checkpoints} "
            f"({'it holds ' + ', '.join(present) if present else 'it holds no checkpoint'}). The "
            "run never finished a validated epoch, or --experiment / --data.init_args.fold name "
            "another run; start without --ckpt_path, or pass a checkpoint file."
        )
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"--ckpt_path {ckpt_path}: no such checkpoint file ({path.absolute()}). Pass an "
            f"existing .ckpt, or 'last'/'best' for the fold's own checkpoints in {run.checkpoints}."
        )
    return path.resolve()


def _set_aside(run: RunLayout) -> Path:
    """Rename an existing run folder out of the way (nothing is deleted yet)."""
    aside = run.root.with_name(f".{run.root.name}.replaced-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    run.root.replace(aside)
    return aside


def plan_run(
    runs_dir: str,
    experiment: str,
    fold: int | None,
    stage: str,
    ckpt_path: str | None,
    overwrite: bool,
    folder: str | None = None,
    home: Path | None = None,
) -> RunPlan:
    """Decide the folders of one command, resolve its checkpoint and guard existing runs.

    Nothing is deleted here. Only the launching process (global rank 0) locks the run of a
    ``fit`` (first, before anything is read or moved; :meth:`RunPlan.release` lets it go) and
    sets an old run aside for ``overwrite``; DDP processes started later compute the same plan
    without side effects.

    Args:
        folder: The run folder's name when the model belongs to no fold (an ensemble:
            ``"ensemble"``); ``None``: ``fold<k>``.
        home: For ``validate``/``test``/``predict``: the run folder whose own configuration
            the command was given (its checkpoints and outputs are used, wherever the folder
            now is).

    Raises:
        ConfigurationError: For a missing checkpoint, a ``fit`` that would overwrite a run, or
            one of a run that another process trains.
    """
    name = folder or (fold_name(fold) if fold is not None else "run")
    run = ExperimentLayout((Path(runs_dir) / experiment).absolute()).run(name)
    if stage != "fit":
        base = RunLayout(home.absolute()) if home is not None else run
        checkpoint = _resolve(ckpt_path, base) if ckpt_path else None
        origin = RunLayout.of_checkpoint(checkpoint) if checkpoint is not None else None
        owner = origin or base
        return RunPlan(owner, owner.stage(stage), checkpoint, None)
    lock = RunLock(run).acquire() if _global_rank() == 0 else None
    try:
        return _plan_fit(run, ckpt_path, overwrite, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _plan_fit(
    run: RunLayout, ckpt_path: str | None, overwrite: bool, lock: RunLock | None
) -> RunPlan:
    """:func:`plan_run` for ``fit``, the run locked (``lock``; ``None`` off global rank 0)."""
    checkpoint = _resolve(ckpt_path, run) if ckpt_path else None
    origin = RunLayout.of_checkpoint(checkpoint) if checkpoint is not None else None
    resumes = origin is not None and origin.root == run.root.resolve()
    requeued = _requeue_checkpoint(run) if checkpoint is None else None
    if requeued is not None:  # a requeued SLURM job: Lightning resumes from its HPC checkpoint
        return RunPlan(run, run, None, checkpoint_epoch(requeued), lock=lock)
    existing = run.checkpoint_files()
    replaced = None
    if existing and not resumes and _global_rank() == 0:
        if not overwrite:
            raise ConfigurationError(
                f"{run.root} already holds a run of this fold ({len(existing)} checkpoint(s), "
                f"e.g. {existing[-1].name}). Resume it with --ckpt_path last, start it over with "
                f"{OVERWRITE} (the old run is deleted once the new one starts training), or "
                "choose another --experiment name."
            )
        replaced = _set_aside(run)
    epoch = checkpoint_epoch(checkpoint) if resumes and checkpoint is not None else None
    return RunPlan(run, run, checkpoint, epoch, replaced, lock)


def wandb_run_id(path: Path) -> str:
    """A W&B run id kept in the file ``path``, created once: a resumed fit continues the same
    W&B run (a fold's :attr:`RunLayout.wandb_run_id`; ``validate``/``test``/``predict`` log runs
    of their own), a report written again updates its run (:attr:`ReportLayout.wandb_run_id`)."""
    if path.is_file():
        return path.read_text().strip()
    # A letter first: an all-digit id, or one like 0070e115, is a number to YAML, and the fold's
    # config.yaml would not give the id back (jsonargparse reads 0070e115 as 7e+116).
    run_id = secrets.choice("abcdefghijklmnopqrstuvwxyz") + secrets.token_hex(4)[1:]
    if _global_rank() == 0:
        write_text(path, run_id + "\n")
    return run_id


class _ResumingWriter(ExperimentWriter):
    """Keeps the rows of an existing ``metrics.csv`` up to an epoch, then appends.

    Rows without an epoch (the learning-rate monitor's, logged as an epoch starts) are kept up
    to the last step of the kept epochs: a later one belongs to an epoch that is run again (it
    is logged again) or, resuming from an earlier checkpoint, to a discarded timeline.
    """

    def __init__(self, log_dir: str, keep_until_epoch: int | None) -> None:
        self._keep_until_epoch = keep_until_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_until_epoch is None or not path.is_file():
            if path.is_file():  # a new run in this folder: the old rows are stale
                path.unlink()
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            keys = sorted(reader.fieldnames or [])  # Lightning's writer keeps its keys sorted
            rows = list(reader)
        epochs = [r for r in rows if r.get("epoch") not in ("", None)]
        kept = [r for r in epochs if float(r["epoch"]) <= self._keep_until_epoch]
        last_step = max((float(r["step"]) for r in kept if r.get("step")), default=-1.0)
        rows = [
            r
            for r in rows
            if (r in kept)
            or (r.get("epoch") in ("", None) and r.get("step") and float(r["step"]) <= last_step)
        ]
        tmp = temporary_sibling(path)
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
        self.metrics_keys = keys


class RunCSVLogger(CSVLogger):
    """Lightning's CSV logger that continues a resumed run's ``metrics.csv``.

    Args:
        save_dir, name, version: As :class:`~pytorch_lightning.loggers.CSVLogger`.
        keep_until_epoch: Resuming from a checkpoint of this epoch: keep the file's rows up
            to it (later rows belong to the interrupted epoch and are logged again). ``None``:
            a new run; an old ``metrics.csv`` in the folder is replaced.
    """

    def __init__(
        self, save_dir: str, name: str, version: str, keep_until_epoch: int | None = None
    ) -> None:
        super().__init__(save_dir, name=name, version=version)
        self._keep_until_epoch = keep_until_epoch

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(self.log_dir, self._keep_until_epoch)
        return self._experiment
