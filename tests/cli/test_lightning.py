"""The ``lightning`` command on the tiny synthetic ISLES 2018 twin: its stages, run folders,
resume, DDP and the user's mistakes. Every recipe's one step is in ``tests/test_recipes.py``."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

from core.checkpoints import AtomicCheckpointIO
from tests.conftest import BIN, RECIPES, REPO, configs, isles_args, run_cli, run_in_process


def _demo(twin: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    """The CPU demo recipe (PSPNet-18) on 32×32 slices of the tiny twin, run in ``tmp``."""
    recipe = RECIPES["demo"]
    return [*configs(*recipe.configs), *isles_args(twin, tmp, cache=cache), *recipe.tiny]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def demo_runs(tiny_twin, shared_cache, tmp_path_factory) -> Path:
    """One epoch of the demo recipe's fold 0: the ``runs/`` folder holding it (read-only: a
    test that writes into the run copies it with :func:`_copy_runs`)."""
    tmp = tmp_path_factory.mktemp("demo-fold")
    run_in_process("lightning", "fit", *_demo(tiny_twin, tmp, shared_cache), cwd=tmp)
    return tmp / "runs"


def _copy_runs(runs: Path, tmp_path: Path) -> Path:
    """A private copy of a ``runs/`` folder in the test's folder: its fold0 folder."""
    shutil.copytree(runs, tmp_path / "runs")
    return tmp_path / "runs" / "pspnet_focal_demo" / "fold0"


def test_missing_dataset_fails_fast_with_instructions(tmp_path):
    result = run_in_process(
        "lightning", "fit", *configs("pspnet_focal.yaml"), cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "ISLES 2018 data not found" in result.stderr
    assert str(tmp_path / "data" / "isles2018") in result.stderr
    assert "TRAINING/case_<N>/SMIR.Brain.XX.O.<MOD>.<id>" in result.stderr
    assert "lightning-data synth isles2018 data/isles2018" in result.stderr
    # It failed before anything was built: no run folder, no cache, nothing in the folder.
    assert list(tmp_path.iterdir()) == [], sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.slow
def test_the_device_cache_trains_the_weights_the_loader_trains(tiny_twin, shared_cache, tmp_path):
    # Both paths draw the same samples in the same order and augment them on the training
    # device from the same seeds: one epoch through either gives bit-identical weights.
    paths = {"loader": "augment_on_device", "cache": "cache_on_device"}
    weights = {}
    for path, setting in paths.items():
        folder = tmp_path / path
        folder.mkdir()
        args = [*_demo(tiny_twin, folder, shared_cache), f"--data.init_args.{setting}", "true"]
        run_in_process("lightning", "fit", *args, cwd=folder)
        last = folder / "runs" / "pspnet_focal_demo" / "fold0" / "checkpoints" / "last.ckpt"
        weights[path] = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert weights["loader"].keys() == weights["cache"].keys()
    for name, value in weights["loader"].items():
        assert torch.equal(value, weights["cache"][name]), name


@pytest.mark.slow
def test_a_device_cache_that_does_not_fit_is_one_paragraph(
    tiny_twin, shared_cache, tmp_path, monkeypatch
):
    monkeypatch.setattr("datamodules.device_cache.free_bytes", lambda device: 2_000)
    args = [*_demo(tiny_twin, tmp_path, shared_cache), "--data.init_args.cache_on_device", "true"]
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message.startswith("error: The training cache does not fit on cpu: 20 slices")
    assert "KB are free" in message and "cache_on_device: false" in message


@pytest.mark.slow
def test_print_config_resolves_the_composition(tmp_path):
    result = run_in_process(
        "lightning",
        "fit",
        *configs("pspnet_focal.yaml", "pspnet_ce.yaml"),
        "--print_config",
        cwd=tmp_path,
    )
    assert "losses.CrossEntropyLoss" in result.stdout and "experiment: pspnet_ce" in result.stdout
    assert "backbone_depth: 101" in result.stdout


@pytest.mark.slow
def test_bf16_mixed_precision_fit(tiny_twin, shared_cache, tmp_path):
    args = _demo(tiny_twin, tmp_path, shared_cache)
    run_in_process("lightning", "fit", *args, "--trainer.precision", "bf16-mixed", cwd=tmp_path)
    rows = _metrics(tmp_path / "runs" / "pspnet_focal_demo" / "fold0")
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert losses and np.isfinite(losses).all()


def _val_table(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "val_cases_last.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_ddp_two_processes_fit_and_validate_like_one(tiny_twin, shared_cache, tmp_path):
    # Two processes need real ones (DDP spawns the second rank as a copy of the command).
    args = _demo(tiny_twin, tmp_path, shared_cache)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    # With seed 003's two-stage fine-tuning (frozen backbone in epoch 0): the command makes DDP
    # look for the parameters without gradients (TwoStageFinetuning is PartialBackward).
    finetuning = [
        "--trainer.callbacks+=callbacks.TwoStageFinetuning",
        "--trainer.callbacks.unfreeze_at_epoch=1",
        "--trainer.max_epochs=2",
    ]
    run_cli("lightning", "fit", *args, *ddp, *finetuning, cwd=tmp_path)
    run_dir = tmp_path / "runs" / "pspnet_focal_demo" / "fold0"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1 and last["callbacks"]["TwoStageFinetuning"]["in_stage2"]
    assert "strategy: ddp_find_unused_parameters_true" in (run_dir / "config.yaml").read_text()
    # Every number logged is the one process's, to the last digit, without Lightning's advice
    # to sync_dist the case summaries (gathered from every process: the same on each). One
    # thread in every process: a convolution's float32 sums depend on how many share it, and
    # Lightning gives each of N DDP processes 1/N of the cores.
    env = {"PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"}
    validate = ["lightning", "validate", *args, "--ckpt_path", "last"]
    run_cli(*validate, cwd=tmp_path, env=env)
    one, logged = _val_table(run_dir / "validate"), _metrics(run_dir / "validate")
    done = run_cli(*validate, *ddp, cwd=tmp_path, env=env)
    assert "sync_dist=True" not in done.stderr, done.stderr[-3000:]
    assert _val_table(run_dir / "validate") == one and _metrics(run_dir / "validate") == logged
    assert len(one) == len({row["case"] for row in one})
    # The loss is the mean over all cases, however they are shared. Four processes hold 2, 2,
    # 1 and 1 of the 6 cases: averaging the ranks' means (sync_dist) logged another value.
    assert len(one) % 4 != 0, "the check below needs cases the ranks cannot share evenly"
    four = ["--trainer.strategy", "ddp", "--trainer.devices", "4"]
    run_cli(*validate, *four, cwd=tmp_path, env=env)
    assert _val_table(run_dir / "validate") == one and _metrics(run_dir / "validate") == logged
    # Prediction: each rank writes its cases into the one folder rank 0 publishes (the
    # writer once asked rank 0 alone for trainer.log_dir, a collective, at the end: a crash).
    predict = ["--ckpt_path", "last", "--prediction_writer.save_probability=true"]
    run_in_process("lightning", "predict", *args, *predict, cwd=tmp_path)
    single = {p.name: p.read_bytes() for p in (run_dir / "predict" / "predictions").iterdir()}
    done = run_cli("lightning", "predict", *args, *ddp, *predict, cwd=tmp_path)
    # Nothing a user cannot act on: Lightning's advertised tips, the checkpoint callbacks'
    # "dirpath has changed" of a stage that saves none, a deprecation inside Lightning.
    for noise in ("💡 Tip", "dirpath has changed", "LeafSpec"):
        assert noise not in done.stdout + done.stderr, noise
    both = {p.name: p.read_bytes() for p in (run_dir / "predict" / "predictions").iterdir()}
    assert both == single and len(single) == len(list((tiny_twin / "TESTING").iterdir()))


def _one_error(result: subprocess.CompletedProcess) -> str:
    """The error a DDP command printed: exit 2, no traceback, one line (every rank raised it,
    the first printed it)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return message


@pytest.mark.slow
def test_ddp_user_mistakes_are_one_line_on_every_rank(tiny_twin, shared_cache, tmp_path):
    # Two processes need real ones. Each mistake was a traceback: MONAI's distributed sampler
    # ("the dataset length is less than the number of participating ranks"), and gloo's
    # "Connection closed by peer" of a rank left waiting by rank 0's refusal.
    args = [*_demo(tiny_twin, tmp_path, shared_cache), "--trainer.strategy", "ddp"]
    args += ["--trainer.devices", "2"]
    small_fold = ["--data.init_args.num_folds", "6", "--data.init_args.fold", "3"]  # 1 case
    message = _one_error(
        run_cli("lightning", "validate", *args, *small_fold, cwd=tmp_path, check=False)
    )
    assert message.startswith(
        "error: lightning validate with 2 processes: validation fold 3 of 6 "
        f"({tiny_twin}) holds 1 case, and every process needs at least one"
    )
    assert "(--trainer.devices 1), or make the folds larger" in message
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "SMIR.strokeseg.1.nii").write_bytes(b"")
    output = ["--prediction_writer.output_dir", str(taken)]
    message = _one_error(run_cli("lightning", "predict", *args, *output, cwd=tmp_path, check=False))
    assert message.startswith(f"error: prediction_writer.output_dir {taken} is not empty.")


@pytest.mark.slow
def test_test_and_predict_from_the_run_write_into_its_folder(
    tiny_twin, shared_cache, demo_runs, tmp_path
):
    args = _demo(tiny_twin, tmp_path, shared_cache)
    run_dir = _copy_runs(demo_runs, tmp_path)
    run_in_process("lightning", "test", *args, "--ckpt_path", "best", cwd=tmp_path)
    assert any(r.get("test/dice") for r in _metrics(run_dir / "test"))
    with (run_dir / "test" / "test_cases.csv").open() as handle:
        assert {row["case"] for row in csv.DictReader(handle)} <= set(
            json.loads((run_dir / "split.json").read_text())["val_cases"]
        )
    # Predict from the run's own settings, a checkpoint file and the writer with probabilities.
    fit_rows = _metrics(run_dir)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    writer = ["--prediction_writer.save_probability=true"]
    run_in_process(
        "lightning",
        "predict",
        "--config",
        str(run_dir / "config.yaml"),
        *writer,
        "--ckpt_path",
        str(checkpoint),
        "--trainer.enable_progress_bar",
        "false",
        cwd=tmp_path,
    )
    masks = sorted((run_dir / "predict" / "predictions").glob("SMIR.strokeseg.*.nii"))
    assert len(masks) == len(list((tiny_twin / "TESTING").iterdir()))
    for mask in masks:
        mtt_id = mask.name.split(".")[2]
        (ct,) = [
            c
            for c in (tiny_twin / "TESTING").glob("case_*")
            if list(c.glob(f"SMIR.Brain.XX.O.CT_MTT.{mtt_id}"))
        ]
        source = next(ct.glob("SMIR.Brain.XX.O.CT.*/*.nii"))
        written, original = nib.load(mask), nib.load(source)
        assert written.shape == original.shape
        assert written.header.get_zooms() == pytest.approx(original.header.get_zooms())
        # The identity-sform quirk is kept: the evaluator sees the same grid as for the CT.
        np.testing.assert_allclose(written.header.get_sform(), original.header.get_sform())
        np.testing.assert_allclose(
            written.header.get_qform(), original.header.get_qform(), atol=1e-6
        )
        assert written.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}
        probability = run_dir / "predict" / "probabilities" / mask.name
        assert nib.load(probability).get_data_dtype() == np.float32
    assert not list((tmp_path / "runs").glob("*/fold0-*")), "no second folder for the fold"
    # The run's config.yaml holds its fit's CSV logger: predicting left the fit's log alone.
    assert _metrics(run_dir) == fit_rows
    # Nothing of this test reached the shared run it was copied from.
    assert {p.name for p in (demo_runs / "pspnet_focal_demo" / "fold0").iterdir()}.isdisjoint(
        {"test", "predict"}
    )


@pytest.mark.slow
def test_tta_predicts_a_fold_and_an_ensemble_of_it_alike(tiny_twin, demo_runs, tmp_path):
    run_dir = _copy_runs(demo_runs, tmp_path)
    quiet = ["--trainer.enable_progress_bar", "false"]
    run_in_process(
        "lightning", "predict", "--config", str(run_dir / "config.yaml"),
        "--model.init_args.tta", "true", "--prediction_writer.save_probability=true",
        "--ckpt_path", "best", *quiet, cwd=tmp_path,
    )  # fmt: skip
    out = run_dir / "predict"
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["init_args"]["tta"] is True
    masks = sorted((out / "predictions").glob("SMIR.strokeseg.*.nii"))
    assert len(masks) == len(list((tiny_twin / "TESTING").iterdir()))
    # One member, TTA on the ensemble: each member mirrors, so it predicts as the fold does.
    ens = tmp_path / "ens"
    run_in_process(
        "lightning-cv", "predict", str(run_dir), "--tta", "--save-probability", "--name", "tta",
        "--runs-dir", str(ens), *quiet, cwd=tmp_path,
    )  # fmt: skip
    ensemble = ens / "tta" / "ensemble"
    assert yaml.safe_load((ensemble / "predict_config.yaml").read_text())["model"]["init_args"][
        "tta"
    ]
    for mask in masks:
        np.testing.assert_allclose(
            np.asarray(nib.load(ensemble / "predict" / "probabilities" / mask.name).dataobj),
            np.asarray(nib.load(out / "probabilities" / mask.name).dataobj),
            atol=1e-6,
        )


@pytest.mark.slow
def test_a_trained_pspnet_predicts_without_its_pretrained_file(recipe_args, tmp_path):
    """The VOC file a fold was initialised from is not needed once its checkpoint holds every
    weight: predicting with the fold, or with the experiment as an ensemble (as segment, a
    model folder and the challenge containers do), used to stop with "PSPNet pretrained weights
    not found" where the file was not (another working folder, a container)."""
    weights = tmp_path / "voc.pth"
    shutil.copy(recipe_args("pspnet_focal")[-1], weights)
    pretrained = ["--model.init_args.net.init_args.pretrained_weights", str(weights)]
    run_in_process("lightning", "fit", *recipe_args("pspnet_focal"), *pretrained, cwd=tmp_path)
    weights.unlink()
    run = tmp_path / "runs" / "pspnet_focal" / "fold0"
    config = ["--config", str(run / "config.yaml"), "--ckpt_path", "best"]
    run_in_process("lightning", "predict", *config, cwd=tmp_path)
    assert len(list((run / "predict" / "predictions").glob("SMIR.strokeseg.*.nii"))) == 2
    run_in_process("lightning-cv", "predict", str(run.parent), "--split", "TESTING", cwd=tmp_path)
    ensemble = run.parent / "ensemble" / "predict" / "predictions"
    assert len(list(ensemble.glob("SMIR.strokeseg.*.nii"))) == 2


def test_predict_refuses_a_checkpoint_trained_on_another_grid(
    tiny_twin, shared_cache, demo_runs, tmp_path
):
    # The shared run was trained on 32×32 slices; predicting on 16×16 ones is refused.
    args = _demo(tiny_twin, tmp_path, shared_cache) + ["--data.init_args.image_size", "16"]
    checkpoint = _copy_runs(demo_runs, tmp_path) / "checkpoints" / "last.ckpt"
    result = run_in_process(
        "lightning", "predict", *args, "--ckpt_path", str(checkpoint), cwd=tmp_path, check=False
    )
    assert result.returncode == 2, result.stderr[-3000:]
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error: The data settings differ from those")
    assert "'size': [32, 32]" in first and "'size': [16, 16]" in first
    assert "runs/<experiment>/fold<k>/config.yaml" in first
    assert "Traceback" not in result.stderr
    assert not (checkpoint.parents[1] / "predict" / "predictions").exists()


def test_a_checkpoint_of_another_network_is_one_paragraph_naming_it(
    tiny_twin, shared_cache, demo_runs, tmp_path
):
    checkpoint = demo_runs / "pspnet_focal_demo" / "fold0" / "checkpoints" / "last.ckpt"
    args = _demo(tiny_twin, tmp_path, shared_cache)
    args += ["--model.init_args.net.init_args.backbone_depth", "34", "--ckpt_path", str(checkpoint)]
    for stage in ("fit", "validate"):
        result = run_in_process("lightning", stage, *args, "--experiment", "other", cwd=tmp_path,
                                check=False)  # fmt: skip
        assert result.returncode == 2, result.stderr[-3000:]
        head = _stderr_head(result)
        assert head.startswith(f"error: {checkpoint} holds the weights of another network"), head
        assert "missing (net.layer" in head and "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "other").exists()


@pytest.mark.slow
def test_resume_continues_the_fold_in_its_own_folder(tiny_twin, shared_cache, demo_runs, tmp_path):
    args = _demo(tiny_twin, tmp_path, shared_cache)
    run_dir = _copy_runs(demo_runs, tmp_path)  # one epoch of fit, as the first session left it
    again = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert again.returncode == 2
    assert "already holds a run of this fold" in again.stderr and "--ckpt_path last" in again.stderr
    run_in_process(
        "lightning", "fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last", cwd=tmp_path
    )
    assert [p.name for p in (tmp_path / "runs" / "pspnet_focal_demo").iterdir()] == ["fold0"]
    epochs = sorted({int(float(r["epoch"])) for r in _metrics(run_dir) if r.get("val/dice")})
    assert epochs == [0, 1]  # one metrics.csv for both sessions
    with (run_dir / "val_cases_best.csv").open() as handle:
        assert list(csv.DictReader(handle))
    run_in_process("lightning", "fit", *args, "--overwrite", cwd=tmp_path)
    epochs = sorted({int(float(r["epoch"])) for r in _metrics(run_dir) if r.get("val/dice")})
    assert epochs == [0]


def _ctrl_c_as_in_a_terminal() -> None:
    # A test run started in the background (`.ci/run &`, nohup) ignores Ctrl-C, and its
    # children inherit that: Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_fit(args: list[str], cwd: Path) -> subprocess.Popen:
    """``lightning fit`` as its own process, for a test to signal: stderr piped, one thread,
    Ctrl-C handled as in a terminal."""
    return subprocess.Popen(
        [str(BIN / "lightning"), "fit", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )


def _fit_stopped_after_an_epoch(args: list[str], cwd: Path, signum: int) -> tuple[Path, int, str]:
    """``lightning fit`` sent ``signum`` once its first epoch is checkpointed: its run folder,
    exit status and stderr."""
    process = _start_fit(args, cwd)
    run_dir = cwd / "runs" / "pspnet_focal_demo" / "fold0"
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert process.poll() is None and time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return run_dir, process.returncode, stderr


@pytest.mark.slow
def test_a_fit_stopped_by_sigterm_exits_nonzero_and_resumes(tiny_twin, shared_cache, tmp_path):
    args = [*_demo(tiny_twin, tmp_path, shared_cache), "--trainer.max_epochs", "50"]
    run_dir, code, stderr = _fit_stopped_after_an_epoch(args, tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]  # not 0: not finished
    assert "lightning fit: stopped by SIGTERM before it finished" in stderr
    assert "--ckpt_path last to resume" in stderr and "Traceback" not in stderr
    assert not (run_dir / "fit_done.json").exists()
    assert not [p.name for p in run_dir.rglob("*") if ".tmp" in p.name]
    epoch = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    resumed = [*args[:-2], "--trainer.max_epochs", str(epoch + 2), "--ckpt_path", "last"]
    run_in_process("lightning", "fit", *resumed, cwd=tmp_path)
    assert (run_dir / "fit_done.json").is_file()


@pytest.mark.slow
def test_a_fit_stopped_by_ctrl_c_says_so_and_exits_130(tiny_twin, shared_cache, tmp_path):
    # Lightning's own Ctrl-C handling stops the fit and closes its loggers, then exits 1 as
    # for a failure; the command says what happened and how to resume, as for SIGTERM.
    args = [*_demo(tiny_twin, tmp_path, shared_cache), "--trainer.max_epochs", "50"]
    run_dir, code, stderr = _fit_stopped_after_an_epoch(args, tmp_path, signal.SIGINT)
    assert code == 128 + signal.SIGINT, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("lightning fit: stopped by Ctrl-C before it finished"), stderr[-3000:]
    assert last.endswith("--ckpt_path last to resume.") and "Traceback" not in stderr
    assert not (run_dir / "fit_done.json").exists()


@pytest.mark.slow
def test_a_prediction_stopped_by_sigterm_publishes_no_mask(demo_runs, tmp_path):
    # Lightning's prediction loop only notes SIGTERM and predicts every case (exit 0): lightning
    # predict stops after its current case, with the masks of no case published.
    run_dir = _copy_runs(demo_runs, tmp_path)
    args = ["--config", str(run_dir / "config.yaml"), "--ckpt_path", "best"]
    process = subprocess.Popen(
        [str(BIN / "lightning"), "predict", *args, "--model.init_args.tta", "true"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    staging, deadline = run_dir / "predict" / ".predictions.partial", time.monotonic() + 120
    while not (staging.is_dir() and any(staging.iterdir())):  # the first case is written
        assert process.poll() is None and time.monotonic() < deadline, "no case was predicted"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("lightning predict: stopped by SIGTERM before it finished"), last
    assert not (run_dir / "predict" / "predictions").exists()


def test_ctrl_c_while_the_command_starts_is_one_line_not_a_traceback(tmp_path):
    # Ctrl-C during the imports (seconds of them): the command says it stopped, status 130.
    # The signal is sent once the process has loaded torch's library, inside the command.
    process = _start_fit(["--config", str(REPO / "experiments" / "demo.yaml")], tmp_path)
    maps, deadline = Path(f"/proc/{process.pid}/maps"), time.monotonic() + 60
    while "libtorch" not in (maps.read_text() if maps.exists() else ""):
        assert process.poll() is None and time.monotonic() < deadline, "torch never loaded"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert stderr.startswith("lightning fit: stopped by Ctrl-C before it finished")
    assert "Traceback" not in stderr


def test_a_second_sigterm_does_not_interrupt_the_unwinding_of_the_first():
    # A fold of lightning-cv gets SIGTERM from the command and, on SLURM, from the job's
    # signal to all its processes: the second must not break off the first one's clean-up.
    from cli.lightning import _sigterm_unwinds

    class Stop(Exception):
        pass

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    cleaned = False
    with _sigterm_unwinds(Stop):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            cleaned = True
    assert cleaned


def test_a_stopped_fold_of_lightning_cv_says_to_run_lightning_cv_again(tmp_path, capsys):
    from cli.lightning import _report_terminated
    from cli.runs import RunPlan
    from core.run_layout import ExperimentLayout, RunLayout

    experiment = ExperimentLayout(tmp_path / "runs" / "exp")
    run = RunLayout(experiment.fold(0).root)
    run.last_checkpoint.parent.mkdir(parents=True)
    run.last_checkpoint.write_bytes(b"")
    experiment.cv_config.write_text("experiment: exp\n")
    argv = ["fit", "--config", str(experiment.cv_config), "--data.init_args.fold", "0"]
    _report_terminated(argv, [RunPlan(run, run, None, None)])
    message = capsys.readouterr().err
    assert message.startswith("lightning fit: stopped by SIGTERM before it finished")
    assert message.rstrip().endswith("run the lightning-cv command again to resume it.")


@pytest.mark.slow
def test_sigterm_before_an_overwriting_fit_trains_puts_the_earlier_run_back(
    tiny_twin, shared_cache, demo_runs, tmp_path
):
    run_dir = _copy_runs(demo_runs, tmp_path)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    # A deep backbone keeps the new fit a second or two between setting the old run aside and
    # starting Lightning's loops (whose own SIGTERM handling stops at the end of a step).
    args = [*_demo(tiny_twin, tmp_path, shared_cache), "--overwrite"]
    args += ["--model.init_args.net.init_args.backbone_depth", "101"]
    process = _start_fit(args, tmp_path)
    deadline = time.monotonic() + 120
    while not list(run_dir.parent.glob(f".{run_dir.name}.replaced-*")):  # set aside, not trained
        assert process.poll() is None and time.monotonic() < deadline, "the run was not set aside"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert f"the earlier run of {run_dir} is kept" in stderr and "Traceback" not in stderr
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_wandb_runs_are_grouped_by_experiment_named_by_fold_and_kept_in_its_folder(
    tiny_twin, tmp_path, monkeypatch
):
    from cli.lightning import SuiteCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = configs("pspnet_focal.yaml", "demo.yaml", "wandb.yaml") + [
        "--data.init_args.data_dir",
        str(tiny_twin),
        "--data.init_args.fold",
        "2",
    ]
    cli = SuiteCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=args,
    )
    run_dir = tmp_path / "runs" / "pspnet_focal_demo" / "fold2"
    csv_logger, wandb_logger = cli.trainer.loggers
    assert Path(cli.trainer.log_dir) == run_dir == Path(csv_logger.log_dir)
    settings = wandb_logger._wandb_init
    assert settings["group"] == "pspnet_focal_demo"
    assert settings["name"] == "fold2"
    assert Path(settings["dir"]) == run_dir
    assert settings["id"] == (run_dir / "wandb_run_id").read_text().strip()  # resumes continue it
    # W&B warns that `anonymous` has no effect whenever wandb.init is given it, None included.
    assert "anonymous" not in settings
    # Checkpoints are written beside their name and renamed, never moved in from TMPDIR.
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "missing_folder", "non_binary_ot", "ot_spacing"])
def test_bad_input_gives_one_error_naming_the_file(damage, twin_copy, tmp_path):
    case_dir = sorted((twin_copy / "TRAINING").iterdir())[1]
    if damage == "truncated":
        (target,) = case_dir.glob("SMIR.Brain.XX.O.CT_CBF.*/*.nii")
        target.write_bytes(target.read_bytes()[:1000])
        expected = f"{target}: cannot be read as NIfTI"
    elif damage == "missing_folder":
        (folder,) = case_dir.glob("SMIR.Brain.XX.O.CT_MTT.*")
        shutil.rmtree(folder)
        expected = f"{case_dir}: no MTT folder"
    elif damage == "non_binary_ot":
        (target,) = case_dir.glob("SMIR.Brain.XX.O.OT.*/*.nii")
        image = nib.load(target)
        data = np.asarray(image.dataobj).copy()
        data[data == 1] = 255
        nib.save(nib.Nifti1Image(data, None, image.header), target)
        expected = f"{target}: the lesion mask must be binary"
    else:  # an OT whose spacing differs from the CT's (the sform stays the identity quirk)
        (target,) = case_dir.glob("SMIR.Brain.XX.O.OT.*/*.nii")
        (ct,) = case_dir.glob("SMIR.Brain.XX.O.CT.*/*.nii")
        image = nib.load(target)
        qform = image.header.get_qform()
        qform[2, 2] *= 2.0
        moved = nib.Nifti1Image(np.asarray(image.dataobj), None, image.header)
        moved.set_qform(qform, 2)
        moved.set_sform(image.header.get_sform(), 2)
        nib.save(moved, target)
        expected = f"{target}: its voxel grid does not match {ct}"
    args = _demo(twin_copy, tmp_path)  # its own cache folder, which must stay empty
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir()), "a failed build left files behind"


def _stderr_head(result) -> str:
    return result.stderr.strip().splitlines()[0] if result.stderr.strip() else ""


@pytest.mark.slow
def test_headline_recipe_without_weights_is_one_paragraph(tiny_twin, tmp_path):
    args = configs("pspnet_focal.yaml") + ["--data.init_args.data_dir", str(tiny_twin)]
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    head = _stderr_head(result)
    expected = f"error: PSPNet pretrained weights not found: {tmp_path / 'weights' / 'pspnet101_voc2012.pth'}"
    assert head.startswith(expected), result.stderr
    assert "pspnet_scratch_focal.yaml" in head and "Pretrained weights" in head
    assert "Traceback" not in result.stderr and "usage" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, expected",
    [
        (["--data.init_args.fold", "7"], "error: fold must be in [0, 2] for num_folds=3, got 7."),
        (["--data.init_args.num_folds", "40"], "error: "),
        (
            ["--data.init_args.batchsize", "3"],
            "error: data (datamodules.ISLES2018DataModule): Option 'batchsize' is not accepted "
            "(did you mean 'batch_size'?)",
        ),
        (
            ["--model.init_args.net", "networks.PSPNett"],
            "error: model.net (networks.PSPNett): module 'networks' has no attribute 'PSPNett' "
            "(did you mean 'networks.PSPNet'?)",
        ),
    ],
)
def test_user_mistakes_exit_2_with_the_problem_first(
    override, expected, tiny_twin, shared_cache, tmp_path
):
    args = _demo(tiny_twin, tmp_path, shared_cache) + override
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert _stderr_head(result).startswith(expected), result.stderr
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    if override[0] == "--data.init_args.num_folds":
        assert "Cannot make 40 folds from the 8 patients" in result.stderr


@pytest.mark.parametrize(
    "override, reason",
    [
        (["--trainer.strategy", "nonsense"], "invalid strategy name: `strategy='nonsense'`"),
        (["--trainer.devices", "0"], "value is not a valid input using cpu accelerator"),
        (["--trainer.num_nodes", "0"], "`num_nodes` must be a positive integer, but got 0."),
    ],
    ids=["strategy", "devices", "num_nodes"],
)
def test_trainer_settings_lightning_refuses_are_one_paragraph(
    override, reason, tiny_twin, shared_cache, tmp_path
):
    args = _demo(tiny_twin, tmp_path, shared_cache) + override
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    head = _stderr_head(result)
    assert head.startswith("error: The trainer settings cannot be used here ("), result.stderr
    assert f"trainer.{override[0].rsplit('.', 1)[1]}=" in head and reason in head
    assert "--trainer.accelerator cpu" in head
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "where, expected",
    [
        ("runs_dir", "cannot hold the run folders, {blocker} exists and is not a folder"),
        ("experiment", "does not name a folder of its own under runs_dir"),
    ],
)
def test_a_run_folder_that_cannot_be_made_is_one_paragraph(
    where, expected, tiny_twin, shared_cache, tmp_path
):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    args = _demo(tiny_twin, tmp_path, shared_cache)
    args += ["--runs_dir", str(blocker / "runs")] if where == "runs_dir" else ["--experiment", ""]
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected.format(blocker=blocker) in _stderr_head(result), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_impossible_cache_folder_is_a_user_error(tiny_twin, tmp_path):
    (tmp_path / "blocker").write_text("")
    args = _demo(tiny_twin, tmp_path)
    args += ["--data.init_args.cache_dir", str(tmp_path / "blocker" / "cache")]
    result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    head = _stderr_head(result)
    assert head.startswith(
        f"error: Cannot use {tmp_path / 'blocker' / 'cache'} as the preprocessing"
    )
    assert "data.init_args.cache_dir" in head and "Traceback" not in result.stderr


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_a_stage_from_the_fold_config_logs_a_wandb_run_of_its_own_beside_the_fit(stage, tmp_path):
    from jsonargparse import Namespace

    from cli.runs import plan_run
    from cli.suite_cli import SuiteCLI

    run_dir = tmp_path / "runs" / "exp" / "fold0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run_dir / "wandb_run_id").write_text("fit12345\n")
    # The W&B logger as the fit saved it in fold0/config.yaml (jsonargparse puts the fit's
    # group/job type/resume in both places when the file is read again).
    saved = Namespace(
        class_path="pytorch_lightning.loggers.WandbLogger",
        init_args=Namespace(name="fold0", save_dir=str(run_dir), id="fit12345", job_type="fit"),
        dict_kwargs={"group": "exp", "job_type": "fit", "resume": "allow"},
    )
    cfg = Namespace(experiment="exp", trainer=Namespace(logger=[saved]))
    plan = plan_run(str(tmp_path / "runs"), "exp", 0, stage, "last", False, home=run_dir)
    SuiteCLI._configure_loggers(cfg, plan, "fold0", stage)
    (logger,) = cfg.trainer.logger[1:]
    assert logger.init_args.id is None  # not the fit's run: it would be resumed and overwritten
    assert logger.init_args.name == f"fold0-{stage}"
    assert logger.init_args.job_type is None and logger.dict_kwargs["job_type"] == stage
    assert logger.dict_kwargs["group"] == "exp"
    assert Path(logger.init_args.save_dir) == run_dir / stage  # not the fit's wandb/ folder


def test_a_fit_of_a_fold_another_fit_trains_is_refused_at_once(tiny_twin, shared_cache, tmp_path):
    # Two trainers of one fold (two terminals, an orphaned fold, a SLURM requeue racing a task
    # still running) wrote the same checkpoints and metrics.csv, epochs twice.
    from core.locks import RunLock
    from core.run_layout import RunLayout

    args = _demo(tiny_twin, tmp_path, shared_cache)
    run = RunLayout(tmp_path / "runs" / "pspnet_focal_demo" / "fold0")
    other = RunLock(run).acquire()  # as the other fit, training
    try:
        result = run_in_process("lightning", "fit", *args, cwd=tmp_path, check=False)
    finally:
        other.release()
    assert result.returncode == 2, result.stderr[-3000:]
    head = _stderr_head(result)
    assert head.startswith(f"error: {run.root} is being trained by another lightning fit"), head
    assert f"(PID {os.getpid()};" in head and f"stop that process (kill {os.getpid()}:" in head
    assert "Traceback" not in result.stderr and not run.root.exists()
    # A fit that ran in this process lets the fold go when it ends.
    run_in_process("lightning", "fit", *args, cwd=tmp_path)
    assert not run.fit_lock.exists()
    RunLock(run).acquire().release()
