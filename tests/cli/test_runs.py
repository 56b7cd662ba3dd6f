"""One fold = one folder: run plans, checkpoint names, resume and the resuming CSV log."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.runs import RunCSVLogger, plan_run, wandb_run_id
from core.errors import ConfigurationError


def _checkpoint(path: Path, epoch: int, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, **extra}, path)
    return path


def _run(tmp_path: Path, experiment: str = "exp", fold: int = 0) -> Path:
    run_dir = tmp_path / "runs" / experiment / f"fold{fold}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("experiment: exp\n")
    return run_dir


def test_a_new_fit_works_in_the_folds_folder(tmp_path):
    plan = plan_run(str(tmp_path / "runs"), "exp", 3, "fit", None, False)
    assert plan.run.root == plan.stage.root == (tmp_path / "runs" / "exp" / "fold3").absolute()
    assert plan.ckpt_path is None and plan.resume_epoch is None
    assert plan.logger_version == "fold3"


def test_a_second_fit_is_refused_unless_resumed_or_overwritten(tmp_path):
    run_dir = _run(tmp_path)
    last = _checkpoint(run_dir / "checkpoints" / "last.ckpt", 4)
    with pytest.raises(
        ConfigurationError, match="already holds a run.*--ckpt_path last.*--overwrite "
    ):
        plan_run(str(tmp_path / "runs"), "exp", 0, "fit", None, False)
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "fit", "last", False)
    assert plan.ckpt_path == last.resolve() and plan.resume_epoch == 4


def test_overwrite_sets_the_old_run_aside_until_the_new_fit_trains(tmp_path):
    run_dir = _run(tmp_path)
    _checkpoint(run_dir / "checkpoints" / "last.ckpt", 4)
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "fit", None, True)
    assert not run_dir.exists() and plan.resume_epoch is None
    assert plan.replaced is not None and (plan.replaced / "checkpoints" / "last.ckpt").is_file()
    run_dir.mkdir()  # the new fit has started writing
    (run_dir / "split.json").write_text("{}")
    plan.rollback()  # ... and failed before training: the old run is back, the new one gone
    plan.release()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "split.json").exists() and plan.replaced is None
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "fit", None, True)
    aside = plan.replaced
    plan.commit()  # the new fit trains: now the old run is deleted
    assert aside is not None and not aside.exists()
    plan.rollback()  # nothing left to put back
    assert not run_dir.exists()


def test_a_fit_of_a_run_in_training_is_refused_naming_the_process_that_trains_it(tmp_path):
    # An orphaned fold still training while its command resumed it, two terminals, a SLURM
    # requeue racing a task still running: two trainers wrote one run (epochs twice).
    run_dir = _run(tmp_path)
    _checkpoint(run_dir / "checkpoints" / "last.ckpt", 4)
    runs = str(tmp_path / "runs")
    training = plan_run(runs, "exp", 0, "fit", "last", False)
    for ckpt_path, overwrite in (("last", False), (None, True), (None, False)):
        with pytest.raises(ConfigurationError) as refused:
            plan_run(runs, "exp", 0, "fit", ckpt_path, overwrite)
        first_line = str(refused.value).splitlines()[0]
        assert first_line.startswith(f"{run_dir.absolute()} is being trained by another ")
        assert (
            f"(PID {os.getpid()};" in first_line and "wait for it to finish, or stop" in first_line
        )
        assert f"kill {os.getpid()}:" in first_line
    assert run_dir.is_dir() and (run_dir / "checkpoints" / "last.ckpt").is_file()  # untouched
    # Later stages write their own folders: they run while the fold trains.
    assert plan_run(runs, "exp", 0, "validate", "last", False).stage.root == run_dir / "validate"
    another = plan_run(runs, "exp", 1, "fit", None, False)
    another.release()
    training.release()
    plan_run(runs, "exp", 0, "fit", "last", False).release()
    # A fit refused before it wrote anything leaves no folder (nor lock file) behind.
    plan_run(str(tmp_path / "new"), "exp", 0, "fit", None, False).release()
    assert not (tmp_path / "new").exists()


def test_a_killed_fits_lock_file_blocks_nothing(tmp_path):
    # The kernel releases a flock at the holder's death; the file stays, with its PID.
    run_dir = _run(tmp_path)
    _checkpoint(run_dir / "checkpoints" / "last.ckpt", 4)
    lock_file = run_dir.with_name(f".{run_dir.name}.lock")
    script = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d here' % os.getpid()); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", script, str(lock_file)], check=False)
    assert lock_file.read_text().endswith(" here")
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "fit", "last", False)
    assert lock_file.read_text().split()[0] == str(os.getpid())
    plan.release()


def test_a_fit_that_fails_its_checks_lets_the_run_go(tmp_path):
    run_dir = _run(tmp_path)
    _checkpoint(run_dir / "checkpoints" / "last.ckpt", 4)
    runs = str(tmp_path / "runs")
    with pytest.raises(ConfigurationError, match="already holds a run"):
        plan_run(runs, "exp", 0, "fit", None, False)
    with pytest.raises(ConfigurationError, match="no best checkpoint"):
        plan_run(runs, "exp", 0, "fit", "best", False)
    plan_run(runs, "exp", 0, "fit", "last", False).release()


def test_only_the_process_that_owns_the_run_locks_it(tmp_path, monkeypatch):
    # DDP processes started by Lightning plan the same run while global rank 0 holds its lock.
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    run_dir = _run(tmp_path)
    _checkpoint(run_dir / "checkpoints" / "last.ckpt", 4)
    runs = str(tmp_path / "runs")
    owner = plan_run(runs, "exp", 0, "fit", "last", False)
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    other = plan_run(runs, "exp", 0, "fit", "last", False)
    assert other.lock is None and other.ckpt_path == owner.ckpt_path
    other.release()
    owner.release()


def test_last_and_best_name_the_folds_checkpoints(tmp_path):
    run_dir = _run(tmp_path)
    best = _checkpoint(run_dir / "checkpoints" / "best-epoch002-dice0.5000.ckpt", 2)
    callbacks = {"ModelCheckpoint{'monitor': 'val/dice'}": {"best_model_path": str(best)}}
    _checkpoint(run_dir / "checkpoints" / "last.ckpt", 5, callbacks=callbacks)
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "test", "best", False)
    assert plan.ckpt_path == best.resolve()
    assert plan.stage.root == run_dir.absolute() / "test"
    with pytest.raises(ConfigurationError, match="no last checkpoint of this fold"):
        plan_run(str(tmp_path / "runs"), "exp", 1, "validate", "last", False)
    with pytest.raises(ConfigurationError, match="no such checkpoint file"):
        plan_run(str(tmp_path / "runs"), "exp", 0, "predict", str(tmp_path / "nope.ckpt"), False)


def test_a_checkpoint_of_another_run_predicts_into_that_runs_folder(tmp_path):
    other = _run(tmp_path, experiment="other", fold=2)
    checkpoint = _checkpoint(other / "checkpoints" / "last.ckpt", 1)
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "predict", str(checkpoint), False)
    assert plan.run.root == other.resolve() and plan.stage.root == other.resolve() / "predict"


def test_a_copied_run_folder_uses_its_own_best_checkpoint(tmp_path):
    import shutil

    original = _run(tmp_path, experiment="exp")
    best = _checkpoint(original / "checkpoints" / "best-epoch002-dice0.5000.ckpt", 2)
    callbacks = {"ModelCheckpoint{'monitor': 'val/dice'}": {"best_model_path": str(best)}}
    _checkpoint(original / "checkpoints" / "last.ckpt", 5, callbacks=callbacks)
    copy = Path(shutil.copytree(original, tmp_path / "elsewhere" / "fold0"))
    # The copy's config.yaml still names the original's runs_dir/experiment: its own folder
    # (the home of the config it was given) decides, and best is looked up inside it.
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "predict", "best", False, home=copy)
    assert plan.ckpt_path == (copy / "checkpoints" / best.name).resolve()
    assert plan.stage.root == copy.resolve() / "predict"
    (copy / "checkpoints" / best.name).unlink()  # never fall back to the original's file
    with pytest.raises(ConfigurationError, match="no best checkpoint"):
        plan_run(str(tmp_path / "runs"), "exp", 0, "predict", "best", False, home=copy)


def test_a_requeued_slurm_job_resumes_from_its_hpc_checkpoint(tmp_path, monkeypatch):
    run_dir = _run(tmp_path)
    _checkpoint(run_dir / "checkpoints" / "last.ckpt", 2)
    _checkpoint(run_dir / "hpc_ckpt_1.ckpt", 3)
    _checkpoint(run_dir / "hpc_ckpt_2.ckpt", 6)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "fold0")
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, "fit", None, False)
    assert plan.ckpt_path is None and plan.resume_epoch == 6  # Lightning loads the HPC one


def test_the_csv_log_keeps_its_rows_up_to_the_resumed_epoch(tmp_path):
    run_dir = tmp_path / "exp" / "fold0"
    run_dir.mkdir(parents=True)
    # As Lightning writes them: the learning-rate monitor's rows (no epoch) as each epoch
    # starts, at the step after the previous epoch's last.
    rows = [
        {"epoch": "", "step": "0", "val/dice": "", "lr": "0.1"},
        {"epoch": "0", "step": "1", "val/dice": "0.1", "lr": ""},
        {"epoch": "", "step": "2", "val/dice": "", "lr": "0.05"},
        {"epoch": "1", "step": "3", "val/dice": "0.2", "lr": ""},
        {"epoch": "", "step": "4", "val/dice": "", "lr": "0.02"},
        {"epoch": "2", "step": "4", "val/dice": "", "lr": ""},
    ]
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "val/dice", "lr"])
        writer.writeheader()
        writer.writerows(rows)
    logger = RunCSVLogger(str(tmp_path), "exp", "fold0", keep_until_epoch=1)
    logger.log_metrics({"lr": 0.02}, step=4)  # epoch 2 starts again: its rate is logged again
    logger.log_metrics({"val/dice": 0.3, "epoch": 2}, step=5)
    logger.save()
    with (run_dir / "metrics.csv").open() as handle:
        kept = [(r["epoch"], r["val/dice"], r["lr"]) for r in csv.DictReader(handle)]
    assert kept == [
        ("", "", "0.1"), ("0", "0.1", ""), ("", "", "0.05"), ("1", "0.2", ""),
        ("", "", "0.02"), ("2", "0.3", ""),
    ]  # fmt: skip

    # Resuming from an earlier checkpoint (epoch 0, e.g. --ckpt_path best): the later epochs'
    # rates belong to a discarded timeline.
    earlier = RunCSVLogger(str(tmp_path), "exp", "fold0", keep_until_epoch=0)
    earlier.log_metrics({"val/dice": 0.4, "epoch": 1}, step=3)
    earlier.save()
    with (run_dir / "metrics.csv").open() as handle:
        kept = [(r["epoch"], r["val/dice"], r["lr"]) for r in csv.DictReader(handle)]
    assert kept == [("", "", "0.1"), ("0", "0.1", ""), ("1", "0.4", "")]
    fresh = RunCSVLogger(str(tmp_path), "exp", "fold0")  # a new run: the old file goes
    fresh.log_metrics({"val/dice": 0.9, "epoch": 0}, step=0)
    fresh.save()
    with (run_dir / "metrics.csv").open() as handle:
        assert [r["val/dice"] for r in csv.DictReader(handle)] == ["0.9"]


def test_a_new_wandb_run_id_reads_back_from_yaml_as_the_same_string(tmp_path, monkeypatch):
    import secrets

    from jsonargparse._loaders_dumpers import yaml_load

    from core.run_layout import RunLayout

    # An id such as 0070e115 came back from the fold's config.yaml as the number 7e+116, and
    # validate/test/predict --config fold<k>/config.yaml refused the W&B logger.
    monkeypatch.setattr(secrets, "token_hex", lambda n: "0070e115"[: 2 * n])
    run_id = wandb_run_id(RunLayout(tmp_path / "fold0").wandb_run_id)
    assert yaml_load(run_id) == run_id
    assert (tmp_path / "fold0" / "wandb_run_id").read_text().strip() == run_id
