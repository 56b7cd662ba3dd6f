"""One fold = one folder: where a run's files go, how it resumes, and its loggers.

Every ``lightning`` command of an experiment's fold works in ``runs/<experiment>/fold<k>/``:

* ``fit`` writes ``config.yaml``, ``split.json``, ``metrics.csv``, ``checkpoints/``, the
  per-case tables and ``curves.png`` there, whatever the loggers (a W&B run keeps its files in
  ``wandb/`` inside it). ``--ckpt_path last`` resumes in the same folder: ``metrics.csv`` keeps
  its rows up to the checkpoint's epoch, the W&B run continues under the same id. A SLURM job
  requeued by Lightning's auto-requeue resumes there from its ``hpc_ckpt_<n>.ckpt`` with the
  same command. Starting a new fit over a folder that holds checkpoints is refused unless
  ``--overwrite true``.
* ``validate``/``test``/``predict`` write into ``<fold folder>/<stage>/``. With a checkpoint
  inside a run folder (``…/fold<k>/checkpoints/x.ckpt``) that run's folder is used, so a
  prediction never lands in another experiment's folder; ``--ckpt_path last``/``best`` name
  the fold's own checkpoints.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from datamodules.errors import ConfigurationError

_WANDB_ID_FILE = "wandb_run_id"


def _global_rank() -> int:
    """This process's rank, from the launcher's environment (0 outside distributed jobs)."""
    return int(getattr(rank_zero_only, "rank", 0))


@dataclass(frozen=True)
class RunPlan:
    """Where one command of a fold works.

    Attributes:
        run_dir: The fold's folder, ``<runs_dir>/<experiment>/fold<k>``.
        stage_dir: ``run_dir`` for ``fit``; ``run_dir/<stage>`` otherwise.
        ckpt_path: The checkpoint to start from (resolved), or ``None``.
        resume_epoch: For a ``fit`` that resumes in ``run_dir``: the checkpoint's epoch.
    """

    run_dir: Path
    stage_dir: Path
    ckpt_path: Path | None
    resume_epoch: int | None

    @property
    def logger_version(self) -> str:
        """The CSV logger's version: ``stage_dir`` relative to ``<runs_dir>/<experiment>``."""
        return self.stage_dir.relative_to(self.run_dir.parent).as_posix()


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint was written into (``…/fold<k>/checkpoints/x.ckpt``), if any."""
    folder = checkpoint.parent.parent
    if checkpoint.parent.name == "checkpoints" and (folder / "config.yaml").is_file():
        return folder
    return None


def _epoch_of(checkpoint: Path) -> int:
    """The epoch a Lightning checkpoint was saved in (memory-mapped: the weights stay on disk)."""
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)["epoch"])


def _requeue_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``hpc_ckpt_<n>.ckpt`` Lightning saved before SLURM requeued this job, if this
    is a SLURM job (Lightning then resumes from it by itself)."""
    if not SLURMEnvironment.detect() or not run_dir.is_dir():
        return None
    saved = sorted(run_dir.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return saved[-1] if saved else None


def best_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint ModelCheckpoint recorded in the fold's ``last.ckpt``."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    state = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    for key, value in state.get("callbacks", {}).items():
        monitored = "'monitor': None" not in key  # not the every-epoch last.ckpt writer
        if key.startswith("ModelCheckpoint") and monitored and value.get("best_model_path"):
            best = Path(value["best_model_path"])
            return best if best.is_file() else run_dir / "checkpoints" / best.name
    return None


def _resolve(ckpt_path: str, run_dir: Path) -> Path:
    """``last``/``best``/a path → an existing checkpoint file, or a one-paragraph error."""
    folder = run_dir / "checkpoints"
    if ckpt_path in ("last", "best"):
        found = folder / "last.ckpt" if ckpt_path == "last" else best_checkpoint(run_dir)
        if found is not None and found.is_file():
            return found.resolve()
        present = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
        raise ConfigurationError(
            f"--ckpt_path {ckpt_path}: no {ckpt_path} checkpoint of this fold in {folder} "
            f"({'it holds ' + ', '.join(present) if present else 'it holds no checkpoint'}). The "
            "run never finished a validated epoch, or --experiment / --data.init_args.fold name "
            "another run; start without --ckpt_path, or pass a checkpoint file."
        )
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"--ckpt_path {ckpt_path}: no such checkpoint file ({path.absolute()}). Pass an "
            f"existing .ckpt, or 'last'/'best' for the fold's own checkpoints in {folder}."
        )
    return path.resolve()


def plan_run(
    runs_dir: str,
    experiment: str,
    fold: int | None,
    stage: str,
    ckpt_path: str | None,
    overwrite: bool,
    folder: str | None = None,
) -> RunPlan:
    """Decide the folders of one command, resolve its checkpoint and guard existing runs.

    Only the launching process (global rank 0) deletes a folder for ``overwrite``; DDP
    processes started later compute the same plan without side effects.

    Args:
        folder: The run folder's name when the model belongs to no fold (an ensemble:
            ``"ensemble"``); ``None``: ``fold<k>``.

    Raises:
        ConfigurationError: For a missing checkpoint, or a ``fit`` that would overwrite a run.
    """
    name = folder or (f"fold{fold}" if fold is not None else "run")
    run_dir = (Path(runs_dir) / experiment / name).absolute()
    checkpoint = _resolve(ckpt_path, run_dir) if ckpt_path else None
    if stage != "fit":
        origin = run_folder_of(checkpoint) if checkpoint is not None else None
        home = origin or run_dir
        return RunPlan(home, home / stage, checkpoint, None)
    resumes = checkpoint is not None and run_folder_of(checkpoint) == run_dir.resolve()
    requeued = _requeue_checkpoint(run_dir) if checkpoint is None else None
    if requeued is not None:  # a requeued SLURM job: Lightning resumes from its HPC checkpoint
        return RunPlan(run_dir, run_dir, None, _epoch_of(requeued))
    existing = sorted((run_dir / "checkpoints").glob("*.ckpt")) if run_dir.is_dir() else []
    if existing and not resumes and _global_rank() == 0:
        if not overwrite:
            raise ConfigurationError(
                f"{run_dir} already holds a run of this fold ({len(existing)} checkpoint(s), "
                f"e.g. {existing[-1].name}). Resume it with --ckpt_path last, start it over with "
                "--overwrite true (deletes the folder), or choose another --experiment name."
            )
        shutil.rmtree(run_dir)
    epoch = _epoch_of(checkpoint) if resumes and checkpoint is not None else None
    return RunPlan(run_dir, run_dir, checkpoint, epoch)


def wandb_run_id(run_dir: Path) -> str:
    """The fold's W&B run id, created once and kept in the run folder, so a resumed run (or a
    later ``test``) continues the same W&B run."""
    path = run_dir / _WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    if _global_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


class _ResumingWriter(ExperimentWriter):
    """Keeps the rows of an existing ``metrics.csv`` up to an epoch, then appends."""

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
            keys = list(reader.fieldnames or [])
            rows = [
                r
                for r in reader
                if r.get("epoch") in ("", None) or float(r["epoch"]) <= self._keep_until_epoch
            ]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
