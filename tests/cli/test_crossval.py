"""The fold workflow through the real commands: lightning-cv fit / report / compare / predict,
the SLURM job-array path on submitit's local executor, and exact resume after kill -9.

``lightning-cv`` runs in the test's process (:func:`tests.conftest.run_in_process`); the
``lightning`` processes it starts (the composition, each fold, each ensemble's predict) are
real processes, as for a user.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.errors import ConfigurationError, DataValidationError
from tests.conftest import (
    EXPERIMENTS,
    RECIPES,
    REPO,
    Result,
    atlas_args,
    configs,
    isles_args,
    run_cli,
    run_in_process,
)


def _data(twin: Path, tmp: Path, cache: Path | None = None, folds: int = 2, epochs: int = 2):
    """CPU steps on 32×32 slices of the tiny twin, ``folds`` folds of ``epochs`` epochs."""
    return [
        *isles_args(twin, tmp, epochs=epochs, cache=cache),
        "--data.init_args.num_folds", str(folds),
        *RECIPES["demo"].tiny,
    ]  # fmt: skip


def _demo(twin: Path, tmp: Path, cache: Path | None = None, folds: int = 2, epochs: int = 2):
    """The CPU demo recipe (PSPNet-18) on the tiny twin (:func:`_data`)."""
    return [*configs(*RECIPES["demo"].configs), *_data(twin, tmp, cache, folds, epochs)]


def _best_per_fold(experiment_dir: Path) -> dict[int, float]:
    """Each fold's best val/dice, read straight from its metrics.csv."""
    best = {}
    for fold_dir in sorted(experiment_dir.glob("fold*")):
        with (fold_dir / "metrics.csv").open() as handle:
            values = [float(r["val/dice"]) for r in csv.DictReader(handle) if r.get("val/dice")]
        best[int(fold_dir.name[4:])] = max(values)
    return best


@dataclass(frozen=True)
class TrainedExperiment:
    """An experiment whose folds ``lightning-cv fit`` trained, and what that command printed."""

    cwd: Path
    args: tuple[str, ...]
    fit: Result

    @property
    def runs(self) -> Path:
        return self.cwd / "runs"

    @property
    def dir(self) -> Path:
        return self.runs / "pspnet_focal_demo"

    def copy_to(self, tmp_path: Path) -> Path:
        """A private copy of the experiment's ``runs/`` folder: its experiment folder."""
        shutil.copytree(self.runs, tmp_path / "runs")
        return tmp_path / "runs" / self.dir.name


@pytest.fixture(scope="module")
def focal_cv(tiny_twin, shared_cache, tmp_path_factory) -> TrainedExperiment:
    """The demo recipe's two folds, two epochs each, trained once for the report, ensemble and
    compare tests (read-only: a test that writes into it works on a copy)."""
    tmp = tmp_path_factory.mktemp("focal-cv")
    args = _demo(tiny_twin, tmp, shared_cache)
    fit = run_in_process("lightning-cv", "fit", *args, cwd=tmp, fold_processes=True)
    return TrainedExperiment(tmp, tuple(args), fit)


def _snapshot(experiment_dir: Path) -> dict[str, int]:
    """The modification times of every file in the experiment's fold folders."""
    return {
        str(p.relative_to(experiment_dir)): p.stat().st_mtime_ns
        for p in experiment_dir.glob("fold*/**/*")
        if p.is_file()
    }


@pytest.mark.slow
def test_all_folds_then_a_report_beside_the_paper_then_an_ensemble(
    focal_cv, tiny_twin, capfd, tmp_path
):
    experiment_dir = focal_cv.dir
    for k in range(2):
        assert (experiment_dir / f"fold{k}" / "fit_done.json").is_file()
    assert sorted(p.name for p in experiment_dir.iterdir() if p.name.startswith("fold")) == [
        "fold0", "fold1",
    ]  # fmt: skip
    report = experiment_dir / "report"
    for name in ("summary.json", "folds.csv", "cases_oof.csv", "report.md"):
        assert (report / name).is_file(), name
    for name in ("dice_boxplot.png", "curves_all.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Beside the paper" in focal_cv.fit.stdout

    # The report's mean ± sd is the mean and sample sd of the folds' best val/dice.
    summary = json.loads((report / "summary.json").read_text())
    best = _best_per_fold(experiment_dir)
    assert summary["summary"]["dice"]["fold_mean"] == pytest.approx(np.mean(list(best.values())))
    expected_sd = np.std(list(best.values()), ddof=1)
    assert summary["summary"]["dice"]["fold_sd"] == pytest.approx(expected_sd, abs=1e-12)
    assert [f["values"]["dice"] for f in summary["folds"]] == pytest.approx(list(best.values()))

    # Out of fold: every training case exactly once, scored by the fold that held it out.
    with (report / "cases_oof.csv").open() as handle:
        oof = list(csv.DictReader(handle))
    training = sorted(f"TRAINING/{p.name}" for p in (tiny_twin / "TRAINING").glob("case_*"))
    assert sorted(r["case"] for r in oof) == training
    for row in oof:
        split = json.loads((experiment_dir / f"fold{row['fold']}" / "split.json").read_text())
        assert row["case"] in split["val_cases"]
    assert {"dice", "hd", "assd", "precision", "recall", "avd"} <= set(oof[0])

    # The paper column comes from the package data: seed 003 Table 1, focal loss.
    (dice,) = [row for row in summary["comparison"] if row["metric"] == "dice"]
    assert dice["paper"] == 0.54 and dice["paper_sd"] == 0.09
    assert dice["paper_folds"] == [0.64, 0.42, 0.48, 0.55, 0.58]
    assert dice["difference"] == pytest.approx(dice["ours"] - 0.54)
    text = (report / "report.md").read_text()
    assert "0.5400 ± 0.0900" in text and "Table 1" in text

    # Run again: finished folds are skipped, nothing is trained (no fold process, no file of a
    # fold touched).
    before = _snapshot(experiment_dir)
    capfd.readouterr()
    again = run_in_process("lightning-cv", "fit", *focal_cv.args, cwd=focal_cv.cwd)
    assert again.stdout.count("finished before, skipped") == 2
    assert "Epoch" not in again.stdout + capfd.readouterr().out
    assert _snapshot(experiment_dir) == before

    # The report as a W&B summary run in the experiment's group (offline), beside the folds.
    experiment_dir = focal_cv.copy_to(tmp_path)
    report = experiment_dir / "report"
    run_in_process("lightning-cv", "report", str(experiment_dir), "--wandb", cwd=tmp_path)
    (summary_run,) = (report / "wandb").glob("offline-run-*")
    assert list(summary_run.glob("files/media/table/**/*.table.json"))
    assert list(summary_run.glob("files/media/images/**/*.png"))

    # Ensemble of the folds on TESTING: masks on the source grids, probabilities float32.
    run_in_process(
        "lightning-cv", "predict", str(experiment_dir), "--save-probability",
        "--trainer.enable_progress_bar", "false", cwd=tmp_path,
    )  # fmt: skip
    out = experiment_dir / "ensemble" / "predict"
    masks = sorted((out / "predictions").glob("SMIR.strokeseg.*.nii"))
    assert len(masks) == len(list((tiny_twin / "TESTING").glob("case_*")))
    for mask in masks:
        (source,) = [
            s
            for s in (tiny_twin / "TESTING").glob("case_*/SMIR.Brain.XX.O.CT.*/*.nii")
            if list(s.parent.parent.glob(f"SMIR.Brain.XX.O.CT_MTT.{mask.name.split('.')[2]}"))
        ]
        written, original = nib.load(mask), nib.load(source)
        assert written.shape == original.shape
        np.testing.assert_allclose(written.header.get_sform(), original.header.get_sform())
        np.testing.assert_allclose(written.header.get_qform(), original.header.get_qform())
        assert written.header.get_zooms() == pytest.approx(original.header.get_zooms())
        assert nib.load(out / "probabilities" / mask.name).get_data_dtype() == np.float32


@pytest.mark.slow
def test_the_ensemble_is_the_mean_of_its_members_and_scores_labelled_cases(
    focal_cv, tiny_twin, tmp_path
):
    experiment_dir = focal_cv.dir  # read only: the ensembles go to tmp_path/ens
    common = ["--save-probability", "--split", "TRAINING", "--trainer.enable_progress_bar", "false"]
    probabilities = {}
    for name, members in (
        ("both", [experiment_dir]),
        *((f"f{k}", [experiment_dir / f"fold{k}"]) for k in (0, 1)),
    ):
        run_in_process("lightning-cv", "predict", *map(str, members), "--name", name, "--runs-dir", str(tmp_path / "ens"), *common, cwd=tmp_path)  # fmt: skip
        out = tmp_path / "ens" / name / "ensemble" / "predict"
        probabilities[name] = {
            p.name: np.asarray(nib.load(p).dataobj) for p in (out / "probabilities").glob("*.nii")
        }
        with (out / "predict_cases.csv").open() as handle:  # labelled: scored per case
            rows = list(csv.DictReader(handle))
        assert len(rows) == len(list((tiny_twin / "TRAINING").glob("case_*")))
        assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert probabilities["both"].keys() == probabilities["f0"].keys()
    for name, both in probabilities["both"].items():
        mean = (probabilities["f0"][name] + probabilities["f1"][name]) / 2
        np.testing.assert_allclose(both, mean, atol=1e-6)
    assert not (experiment_dir / "ensemble").exists()


@pytest.mark.slow
def test_the_reports_post_processing_reaches_the_masks_and_their_scores(
    focal_cv, tiny_twin, tmp_path
):
    from scipy import ndimage

    from evaluation.postprocessing import CANDIDATES

    # Every fold scored the candidates at its best epoch; the report chose one of them.
    for k in range(2):
        with (focal_cv.dir / f"fold{k}" / "val_postprocessing_best.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert [r["postprocessing"] for r in rows[: len(CANDIDATES)]] == list(CANDIDATES)
    chosen = json.loads((focal_cv.dir / "report" / "summary.json").read_text())["postprocessing"]
    assert chosen["choice"] in CANDIDATES and set(chosen["candidates"]) == set(CANDIDATES)
    assert "## Post-processing" in (focal_cv.dir / "report" / "report.md").read_text()

    # A report that chose keep-largest: the ensemble writes one component per mask, and the
    # labelled cases' scores are those of the written masks.
    experiment_dir = focal_cv.copy_to(tmp_path)
    summary_path = experiment_dir / "report" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["postprocessing"]["choice"] = "largest"
    summary_path.write_text(json.dumps(summary))
    run_in_process(
        "lightning-cv", "predict", str(experiment_dir), "--split", "TRAINING",
        "--trainer.enable_progress_bar", "false", cwd=tmp_path,
    )  # fmt: skip
    out = experiment_dir / "ensemble"
    assert "postprocessing: largest" in (out / "predict_config.yaml").read_text()
    with (out / "predict" / "predict_cases.csv").open() as handle:
        scores = {r["case"]: float(r["dice"]) for r in csv.DictReader(handle)}
    for mask in sorted((out / "predict" / "predictions").glob("SMIR.strokeseg.*.nii")):
        written = np.asarray(nib.load(mask).dataobj) > 0
        assert ndimage.label(written, structure=np.ones((3, 3, 3)))[1] <= 1
        (case,) = [
            c
            for c in (tiny_twin / "TRAINING").glob("case_*")
            if list(c.glob(f"SMIR.Brain.XX.O.CT_MTT.{mask.name.split('.')[2]}"))
        ]
        (label_file,) = case.glob("SMIR.Brain.XX.O.OT.*/*.nii")
        label = np.asarray(nib.load(label_file).dataobj) > 0
        both = written.sum() + label.sum()
        dice = 2 * (written & label).sum() / both if both else 1.0
        assert scores[f"TRAINING/{case.name}"] == pytest.approx(dice, abs=1e-6)


@pytest.mark.slow
def test_compare_two_experiments_case_by_case(focal_cv, tiny_twin, shared_cache, tmp_path):
    focal = focal_cv.copy_to(tmp_path)
    runs = focal.parent
    # A second experiment of the same folds: cross-entropy instead of the focal loss, its folds
    # fitted one by one (lightning-cv fit has its own tests; compare only reads the folders).
    ce = _demo(tiny_twin, tmp_path, shared_cache, epochs=1)
    ce += ["--config", str(EXPERIMENTS / "pspnet_ce.yaml"), "--experiment", "ce"]
    for k in (0, 1):
        run_in_process("lightning", "fit", *ce, "--data.init_args.fold", str(k), cwd=tmp_path)
    done = run_in_process("lightning-cv", "compare", str(focal), str(runs / "ce"), cwd=tmp_path)
    out = runs / "compare_pspnet_focal_demo_vs_ce"
    assert (out / "comparison.png").is_file() and "Wilcoxon" in done.stdout
    with (out / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) <= len(list((tiny_twin / "TRAINING").glob("case_*")))
    for row in rows:
        assert float(row["difference"]) == pytest.approx(float(row["b"]) - float(row["a"]))

    # Seed 003's ensemble recipe over both experiments' folds (2 + 2 here, 5 + 5 in the paper).
    members = f"[{focal}, {runs / 'ce'}]"
    recipe = [*configs(*RECIPES["pspnet_ensemble"].configs), *_data(tiny_twin, tmp_path)]
    done = run_in_process("lightning", "predict", *recipe, "--model.init_args.members", members, cwd=tmp_path)  # fmt: skip
    assert done.stdout.count("/checkpoints/best-") == 4, "four members"
    masks = list((runs / "pspnet_ensemble" / "ensemble" / "predict" / "predictions").glob("*.nii"))
    assert len(masks) == len(list((tiny_twin / "TESTING").glob("case_*")))


@pytest.mark.slow
def test_the_job_array_path_on_submitits_local_executor(tiny_twin, shared_cache, tmp_path):
    args = _demo(tiny_twin, tmp_path, shared_cache, epochs=1)
    done = run_in_process(
        "lightning-cv", "fit", *args, "--launcher", "submitit-local", cwd=tmp_path
    )
    experiment_dir = tmp_path / "runs" / "pspnet_focal_demo"
    assert "fold 0: job" in done.stdout and "fold 1: job" in done.stdout
    for k in (0, 1):
        assert (experiment_dir / f"fold{k}" / "fit_done.json").is_file()
    logs = list((experiment_dir / "submitit").rglob("*_log.out"))
    assert len(logs) == 2, "one submitit task per fold"
    assert (experiment_dir / "report" / "report.md").is_file()


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_a_fold_killed_after_an_epoch_resumes_to_the_same_weights(
    tiny_twin, shared_cache, tmp_path
):
    # Augmentation, dropout and a worker process: every random draw must repeat after resume.
    # One epoch before the kill, one after it: enough to see that nothing is lost or repeated.
    args = _demo(tiny_twin, tmp_path, shared_cache, folds=3, epochs=2)
    args += ["--data.init_args.num_workers", "1", "--data.init_args.foreground_fraction", "0.5"]
    run_in_process("lightning", "fit", *args, "--experiment", "straight", cwd=tmp_path)
    kill = [
        "--trainer.callbacks+=tests.helpers.kill.KillAtEpochStart",
        "--trainer.callbacks.epoch=1",
    ]
    env = {"PYTHONPATH": str(REPO)}
    # kill -9 needs a process of its own.
    killed = run_cli(
        "lightning", "fit", *args, *kill, "--experiment", "killed", cwd=tmp_path, env=env,
        check=False, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -9
    run_dir = tmp_path / "runs" / "killed" / "fold0"
    assert not (run_dir / "fit_done.json").exists()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, mmap=True)
    assert saved["epoch"] == 0
    run_in_process("lightning", "fit", *args, "--experiment", "killed", "--ckpt_path", "last", cwd=tmp_path)  # fmt: skip
    straight = _weights(tmp_path / "runs" / "straight" / "fold0" / "checkpoints" / "last.ckpt")
    resumed = _weights(run_dir / "checkpoints" / "last.ckpt")
    assert straight.keys() == resumed.keys()
    diff = max((straight[k].double() - resumed[k].double()).abs().max().item() for k in straight)
    print(f"max |weight difference| after kill -9 and resume: {diff:.3g}")
    assert diff == 0.0
    with (run_dir / "metrics.csv").open() as handle:
        epochs = [int(float(r["epoch"])) for r in csv.DictReader(handle) if r.get("val/dice")]
    assert epochs == [0, 1], "one validation row per epoch: none lost, none repeated"
    assert (run_dir / "fit_done.json").is_file()


def test_user_mistakes_exit_2_with_one_line(tiny_twin, tmp_path):
    args = _demo(tiny_twin, tmp_path, folds=3)
    wrong_fold = run_in_process("lightning-cv", "fit", *args, "--folds", "0,7", cwd=tmp_path, check=False)  # fmt: skip
    assert wrong_fold.returncode == 2
    assert wrong_fold.stderr.startswith("error: --folds '0,7': folds must be in 0..2")
    nothing = run_in_process("lightning-cv", "report", str(tmp_path / "runs" / "nope"), cwd=tmp_path, check=False)  # fmt: skip
    assert nothing.returncode == 2 and "nope does not exist" in nothing.stderr.splitlines()[0]
    paper = run_in_process("lightning-cv", "fit", *args, "--paper", "abulnaga/focall", cwd=tmp_path, check=False)  # fmt: skip
    assert paper.returncode == 2 and "abulnaga/focal" in paper.stderr.splitlines()[0]
    assert not (tmp_path / "runs" / "pspnet_focal_demo" / "fold0").exists(), "no fold started"


def test_the_slurm_launcher_without_slurm_exits_2_before_writing_anything(tmp_path, monkeypatch):
    """On a machine without SLURM, ``--launcher slurm`` ended in submitit's RuntimeError (a
    traceback, status 1) after writing the experiment's files."""
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # no srun, no sbatch
    args = [*configs("pspnet_focal.yaml"), "--runs_dir", str(tmp_path / "runs")]
    done = run_in_process(
        "lightning-cv", "fit", *args, "--launcher", "slurm", cwd=tmp_path, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: --launcher slurm: this machine has no SLURM (no srun")
    assert "--launcher local" in done.stderr.splitlines()[0]
    assert not (tmp_path / "runs").exists()


def _stopped_status(job) -> int:
    """The exit status of ``run_local([job])``, which a signal sent meanwhile must stop; this
    process survives a SIGTERM that the command does not catch."""
    import cli.launchers

    previous = signal.signal(signal.SIGTERM, lambda *a: None)
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.launchers.run_local([job])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return stopped.value.code


def test_sigterm_stops_the_running_fold_with_the_command(tmp_path, monkeypatch):
    # `kill <pid of lightning-cv>` or `timeout`: the fold's process must not train on unseen
    # (a second run would share its folder); the command says how to resume.
    import cli.launchers

    pid_file = tmp_path / "fold.pid"
    fold = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(5)"
    monkeypatch.setattr(cli.launchers, "lightning_command", lambda *a: [sys.executable, "-c", fold])

    def terminate() -> None:
        while not pid_file.is_file():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    job = cli.launchers.FoldJob(str(tmp_path / "cv_config.yaml"), 1, str(tmp_path / "fold1"))
    threading.Thread(target=terminate, daemon=True).start()
    assert _stopped_status(job) == 128 + signal.SIGTERM
    fold_pid, deadline = int(pid_file.read_text()), time.monotonic() + 2
    try:  # the fold's process was killed (a zombie until this process reaps it), or reaped
        while (ended := os.waitpid(fold_pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ended[0] == fold_pid, "the fold's process still runs"
    except ChildProcessError:
        pass


def test_the_running_fold_stops_when_the_command_is_killed(tmp_path):
    # kill -9 of lightning-cv used to leave its fold training as an orphan: the same command run
    # again resumed the fold beside it, and metrics.csv held epochs twice. Linux now sends the
    # fold SIGTERM at its parent's death: it stops as at Ctrl-C, closing its files.
    fold = _fold_that_stops_slowly(tmp_path, grace=0.1)
    command = (
        "import sys; from cli.launchers import run_stoppable; "
        f"run_stoppable({fold!r}, 'fold 1'); sys.exit(3)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", command], env=env, cwd=REPO)
    pid_file, deadline = tmp_path / "fold.pid", time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    fold_pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not (tmp_path / "closed").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert (tmp_path / "closed").is_file(), "the fold trains on after its command was killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(fold_pid, signal.SIGKILL)  # only left running without the fix


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_fold_whose_command_died_before_it_started_stops_at_once():
    # The parent may die between fork and prctl: the signal was asked for too late, and the
    # child would run as an orphan. Here "the parent" is a PID that is not the child's parent.
    import cli.launchers

    start = functools.partial(
        cli.launchers._start_stoppable, os.getpid() + 1, cli.launchers._parent_death_signal()
    )
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], preexec_fn=start
    )
    assert child.wait(timeout=10) == -signal.SIGTERM


def _fold_that_stops_slowly(tmp_path: Path, grace: float = 1.0) -> list[str]:
    """A fold process that writes its pid, then trains until SIGTERM and takes ``grace``
    seconds to close its files (as Lightning ends its step and W&B flushes its run), writing
    ``closed`` last; a Ctrl-C that reached it would end it at once with a traceback."""
    script = f"""
import os, signal, sys, time
from pathlib import Path
def stop(signum, frame):
    time.sleep({grace})
    Path({str(tmp_path / "closed")!r}).write_text("closed")
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
Path({str(tmp_path / "fold.pid")!r}).write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""
    return [sys.executable, "-c", script]


def _when_the_fold_runs(tmp_path: Path, *signals: int) -> None:
    """Send ``signals`` to the fold's process group (the fold and this process, as Ctrl-C in a
    terminal reaches both) once the fold has started, from a thread."""

    def send() -> None:
        pid_file = tmp_path / "fold.pid"
        while not pid_file.is_file() or not pid_file.read_text():
            time.sleep(0.05)
        for signum in signals:
            os.kill(int(pid_file.read_text()), signum)
            os.kill(os.getpid(), signum)
            time.sleep(0.2)

    threading.Thread(target=send, daemon=True).start()


def test_ctrl_c_lets_the_running_fold_close_its_files_before_the_command_exits(
    tmp_path, monkeypatch, capsys
):
    # Ctrl-C reaches the fold too; it used to be killed 0.25 s later (subprocess.run's wait),
    # before Lightning's shutdown and W&B's finish: a W&B run file with its header only.
    import cli.launchers

    fold = _fold_that_stops_slowly(tmp_path)
    monkeypatch.setattr(cli.launchers, "lightning_command", lambda *a: fold)
    job = cli.launchers.FoldJob(str(tmp_path / "cv_config.yaml"), 1, str(tmp_path / "fold1"))
    _when_the_fold_runs(tmp_path, signal.SIGINT)
    assert _stopped_status(job) == 128 + signal.SIGINT
    assert (tmp_path / "closed").is_file(), "the fold was killed before it closed its files"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("interrupted (SIGINT): stopping fold 1 at the end of its current")
    assert lines[-1].startswith(f"fold 1 stopped (lightning fit exited with status {128 + 15})")
    assert "Traceback" not in "\n".join(lines)


def test_a_fold_that_does_not_stop_is_killed_after_the_grace_period(tmp_path, monkeypatch):
    import cli.launchers

    fold = _fold_that_stops_slowly(tmp_path, grace=30)
    monkeypatch.setattr(cli.launchers, "lightning_command", lambda *a: fold)
    monkeypatch.setattr(cli.launchers, "STOP_GRACE_S", 0.5)
    job = cli.launchers.FoldJob(str(tmp_path / "cv_config.yaml"), 1, str(tmp_path / "fold1"))
    _when_the_fold_runs(tmp_path, signal.SIGTERM)
    started = time.monotonic()
    assert _stopped_status(job) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 15, "the command waited for the fold past its grace"
    assert not (tmp_path / "closed").exists()


@pytest.mark.slow
def test_ctrl_c_lets_an_ensemble_prediction_stop_after_its_case(focal_cv, tmp_path, monkeypatch):
    # The prediction's process was killed 0.25 s after Ctrl-C (subprocess.run's wait): it gets
    # one SIGTERM and the time to stop, as a fold does.
    import cli.crossval

    monkeypatch.setattr(
        cli.crossval, "lightning_command", lambda *a: _fold_that_stops_slowly(tmp_path)
    )
    _when_the_fold_runs(tmp_path, signal.SIGINT)
    runs = ["--runs-dir", str(tmp_path / "ens")]
    result = run_in_process("lightning-cv", "predict", str(focal_cv.dir), *runs, cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    assert (tmp_path / "closed").is_file(), "the prediction was killed before it stopped"
    lines = result.stderr.splitlines()
    assert lines[0].startswith("interrupted (SIGINT): stopping the prediction after its current")
    assert lines[-1].startswith(f"lightning-cv predict: stopped (lightning predict exited with status {128 + 15})")  # fmt: skip
    assert "Traceback" not in result.stderr


def test_ctrl_c_while_composing_the_configuration_is_one_line(tmp_path, monkeypatch):
    import cli.crossval

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.crossval, "compose_config", interrupted)
    args = ["--config", str(EXPERIMENTS / "demo.yaml")]
    try:
        result = run_in_process("lightning-cv", "fit", *args, cwd=tmp_path, check=False)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left lightning-cv with a traceback")
    assert result.returncode == 128 + signal.SIGINT
    assert result.stderr.splitlines() == [
        "lightning-cv fit: interrupted (Ctrl-C) before it finished; run the same command again."
    ]


def test_an_interrupted_fold_without_its_last_checkpoint_is_named_before_any_fold_runs(
    tmp_path, monkeypatch
):
    # Its best checkpoint is there, last.ckpt is not (deleted, or killed in between): the fold
    # cannot resume, and `lightning fit` would refuse to start over it, advising --ckpt_path.
    import cli.launchers

    started: list = []
    fold = [sys.executable, "-c", "raise SystemExit(2)"]
    monkeypatch.setattr(cli.launchers, "lightning_command", lambda *a: started.append(a) or fold)
    jobs = [
        cli.launchers.FoldJob(str(tmp_path / "cv_config.yaml"), k, str(tmp_path / f"fold{k}"))
        for k in (0, 1)
    ]
    (jobs[1].run.checkpoints).mkdir(parents=True)
    (jobs[1].run.checkpoints / "best-epoch003-dice0.5000.ckpt").write_bytes(b"")
    with pytest.raises(ConfigurationError, match=r"^\S+fold1/checkpoints/last\.ckpt is missing"):
        cli.launchers.run_local(jobs)
    assert not started, "no fold ran"
    jobs[1] = cli.launchers.FoldJob(jobs[1].config, 1, jobs[1].run_dir, overwrite=True)
    jobs[1].check_resumable()  # --overwrite starts it over


def test_a_finished_fold_without_its_config_is_named_not_skipped(tmp_path, monkeypatch):
    # fit would skip it (fit_done.json) and the report count it missing, run after run.
    import cli.launchers

    monkeypatch.setattr(cli.launchers, "lightning_command", lambda *a: pytest.fail("a fold ran"))
    job = cli.launchers.FoldJob(str(tmp_path / "cv_config.yaml"), 1, str(tmp_path / "fold1"))
    job.run.root.mkdir()
    job.run.fit_done.write_text("{}")
    with pytest.raises(ConfigurationError, match=r"^\S+fold1/config\.yaml is missing, but fit_d"):
        cli.launchers.run_local([job])


def test_a_cut_off_configuration_is_named_with_what_to_do(tmp_path):
    from cli.launchers import read_config

    experiment = tmp_path / "exp"
    (experiment / "fold0").mkdir(parents=True)
    for path in (experiment / "cv_config.yaml", experiment / "fold0" / "config.yaml"):
        path.write_text("model:\n  class_path: x\ndata: [1,")
    with pytest.raises(
        DataValidationError, match=r"^\S+/cv_config\.yaml is not a readable .*delete"
    ):
        read_config(experiment / "cv_config.yaml")
    with pytest.raises(DataValidationError, match=r"^\S+/fold0/config\.yaml is not .*--overwrite"):
        read_config(experiment / "fold0" / "config.yaml")


def test_the_experiment_folder_is_under_runs_dir_wherever_the_command_runs(
    tiny_twin, tmp_path, monkeypatch
):
    # --runs_dir elsewhere than <working folder>/runs: the composed configuration, the folds
    # and the report all belong in <runs_dir>/<experiment>, not in ./runs.
    import cli.crossval

    jobs: list = []
    monkeypatch.setattr(cli.crossval, "run_local", jobs.extend)
    monkeypatch.setattr(cli.crossval, "_report", lambda experiment, wandb=False: 0)
    args = _demo(tiny_twin, tmp_path)
    runs_dir = tmp_path / "scratch" / "runs"
    (tmp_path / "cwd").mkdir()
    run_in_process("lightning-cv", "fit", *args, "--runs_dir", str(runs_dir), cwd=tmp_path / "cwd")
    experiment = runs_dir / "pspnet_focal_demo"
    assert (experiment / "cv_config.yaml").is_file()
    assert not (tmp_path / "cwd" / "runs").exists()
    assert [Path(job.run_dir) for job in jobs] == [experiment / "fold0", experiment / "fold1"]


@pytest.mark.slow
def test_atlas_folds_report_per_subject_and_pooled_dice_beside_dunet(
    tiny_atlas, shared_cache, tmp_path
):
    args = [*configs(*RECIPES["dunet"].configs), *atlas_args(tiny_atlas, tmp_path, shared_cache)]
    args += ["--data.init_args.num_folds", "2", "--trainer.limit_val_batches", "1.0"]
    run_in_process("lightning-cv", "fit", *args, cwd=tmp_path)
    summary = json.loads((tmp_path / "runs" / "dunet" / "report" / "summary.json").read_text())
    assert summary["complete"] and not summary["notes"]
    rows = {row["metric"]: row for row in summary["comparison"]}
    # D-UNet Table 2: per-subject mean ± sd, and the global Dice pooled over all voxels.
    assert rows["dice"]["paper"] == 0.5349 and rows["dice"]["how"].startswith(
        "mean ± sd over cases"
    )
    assert (
        rows["global_dice"]["paper"] == 0.7231 and rows["global_dice"]["how"] == "pooled over cases"
    )
    with (tmp_path / "runs" / "dunet" / "report" / "cases_oof.csv").open() as handle:
        oof = list(csv.DictReader(handle))
    tp, fp, fn = (sum(float(r[k]) for r in oof) for k in ("tp", "fp", "fn"))
    pooled = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    assert rows["global_dice"]["ours"] == pytest.approx(pooled)
    split = json.loads((tmp_path / "runs" / "dunet" / "fold0" / "split.json").read_text())
    every_scan = sorted(split["train_cases"] + split["val_cases"])
    assert sorted(r["case"] for r in oof) == every_scan  # every scan of the twin, once


@pytest.mark.parametrize(
    "gpus, nodes, trainer, expected",
    [
        (4, 1, {"devices": "auto", "strategy": "auto"}, {"devices": 4, "strategy": "ddp"}),
        (4, 2, {"devices": "4", "num_nodes": 1}, {"devices": "4", "num_nodes": 2}),
        (2, 1, {"devices": [0, 1], "strategy": "ddp_spawn"}, {"strategy": "ddp_spawn"}),
        (0, 1, {"devices": "auto", "strategy": "auto"}, {"devices": 1, "strategy": "auto"}),
        (4, 1, {"devices": 1}, "--trainer.devices 4, or --gpus-per-node 1"),
        (4, 2, {"num_nodes": 3}, "--trainer.num_nodes 2, or --nodes 3"),
    ],
)
def test_a_job_array_task_trains_on_the_processes_slurm_starts(gpus, nodes, trainer, expected):
    """Lightning refuses, inside each started task, a trainer whose devices or nodes differ
    from SLURM's tasks: the fold's trainer takes the allocation's numbers where it says
    ``auto``, and other numbers are refused before anything is submitted."""
    from argparse import Namespace

    from cli.crossval import _fit_the_allocation

    args = Namespace(gpus_per_node=gpus, nodes=nodes)
    if isinstance(expected, str):
        with pytest.raises(ConfigurationError, match=expected):
            _fit_the_allocation(args, trainer, started={})
        return
    _fit_the_allocation(args, trainer, started={})
    assert trainer.items() >= {"num_nodes": nodes, **expected}.items()


def test_an_experiment_started_with_auto_devices_keeps_them():
    """Before 0.13.0 nothing was derived: an experiment whose folds ran with ``auto`` keeps it
    (else its next ``lightning-cv fit`` saw another recipe and refused to resume it)."""
    from argparse import Namespace

    from cli.crossval import _fit_the_allocation

    trainer = {"devices": "auto", "strategy": "auto"}
    started = {"devices": "auto", "strategy": "auto", "num_nodes": 1}
    _fit_the_allocation(Namespace(gpus_per_node=4, nodes=1), trainer, started)
    assert trainer == {"devices": "auto", "strategy": "auto", "num_nodes": 1}


@pytest.mark.slow
def test_each_fold_runs_the_composed_configuration_not_the_command_line_again(
    tmp_path, monkeypatch
):
    """A fold runs the experiment's ``cv_config.yaml`` and ``cv_run.yaml``. It used to be
    given the command line again after them: ``--trainer.callbacks+=X`` was appended twice
    (Lightning refused the fold), an option of the list's items reached another item,
    ``--trainer.num_nodes 1`` undid ``--nodes 2`` (Lightning refused every task), and the
    W&B logger of ``--config experiments/wandb.yaml``, a per-run key left out of
    ``cv_config.yaml``, reached no fold."""
    import yaml

    from cli import crossval

    submitted: list = []
    monkeypatch.setattr(
        crossval, "submit", lambda args, jobs, experiment: submitted.extend(jobs) or []
    )
    monkeypatch.setattr(crossval, "_check_slurm_here", lambda args: None)  # submission faked
    recipe = configs("pspnet_focal.yaml", "demo.yaml", "wandb.yaml")
    argv = ["fit", *recipe, "--launcher", "slurm", "--nodes", "2"]
    extra = ["--trainer.num_nodes", "1", "--trainer.devices=auto", "--runs_dir", str(tmp_path)]
    extra += ["--data.init_args.num_workers", "3"]
    extra += ["--trainer.callbacks+=callbacks.TwoStageFinetuning"]
    extra += ["--trainer.callbacks.unfreeze_at_epoch=1"]
    extra += ["--trainer.callbacks+=pytorch_lightning.callbacks.Timer"]
    extra += ["--trainer.callbacks.interval=epoch"]
    args, extra = crossval._parser().parse_known_args([*argv, *extra])
    assert crossval.cmd_fit(args, extra) == 0
    fold = [*submitted[0].arguments(), "--print_config"]
    config = yaml.safe_load(run_in_process("lightning", *fold, cwd=tmp_path).stdout)
    trainer = config["trainer"]
    assert (trainer["num_nodes"], trainer["devices"], trainer["strategy"]) == (2, 1, "ddp")
    first, second = trainer["callbacks"]
    assert first["class_path"] == "callbacks.TwoStageFinetuning"
    assert first["init_args"]["unfreeze_at_epoch"] == 1
    assert second["init_args"]["interval"] == "epoch"
    assert trainer["logger"]["class_path"] == "pytorch_lightning.loggers.WandbLogger"
    assert config["data"]["init_args"]["num_workers"] == 3
    assert config["runs_dir"] == str(tmp_path)
