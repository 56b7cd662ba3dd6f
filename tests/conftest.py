"""Shared fixtures and helpers: tiny synthetic twins, the recipe table, and the commands.

The commands run two ways. :func:`run_cli` starts the installed console script in a new
process, exactly as a user types it (exit codes, DDP, ``kill -9``, import-time behaviour).
:func:`run_in_process` calls the same entry point in the test's process, with the same
arguments, working folder and environment, and captures what it prints: it pays Python's and
Lightning's start-up (~6 s) once per test session instead of once per command, which is what
keeps the suite within its time budget. ``lightning-cv`` run in process also runs its own
calls of ``lightning`` (composing the configuration, the folds' ``fit``, an ensemble's
``predict``) in process; ``fold_processes=True`` keeps each fold's ``lightning fit`` a process
of its own, as for a user (the fold-workflow fixture of ``tests/cli/test_crossval.py`` asks for
it; the job-array test's folds are submitit's processes anyway).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest

from datamodules.synth.isles2018 import write_isles2018_twin

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = REPO / "experiments"


# -- the recipes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """One experiment of ``experiments/`` as the tests run it.

    Attributes:
        configs: The YAMLs composed in order.
        data: The tiny twin it runs on.
        tiny: Overrides that shrink its network (and grid) to a CPU step; the recipe's layers,
            losses and data path are kept.
        weights: It loads the PSPNet VOC weights (a stand-in file is given).
        stage: ``predict`` for recipes that predict with trained members (an ensemble).
    """

    configs: tuple[str, ...]
    data: Literal["isles2018", "atlas", "isles2022"]
    tiny: tuple[str, ...] = ()
    weights: bool = False
    stage: Literal["fit", "predict"] = "fit"


_PSPNET_18 = ("--model.init_args.net.init_args.backbone_depth", "18")
_OMAROV = ("--model.init_args.net.init_args.base_width", "2", "--data.init_args.depth", "8")
_LIU_UNET = (
    "--data.init_args.image_size",
    "128",
    "--model.init_args.net.init_args.widths",
    "[16, 32]",
)
_LIU_GAN = (
    "--data.init_args.image_size", "128",
    "--model.init_args.generator.init_args.widths", "[16, 32]",
    "--model.init_args.segmentator.init_args.widths", "[16, 32]",
    "--model.init_args.discriminator.init_args.widths", "[16, 16, 16, 16, 16]",
)  # fmt: skip
_VCANET_8 = ("--model.init_args.net.init_args.base_width", "8")
# The CPU demos resize the twin's 32×32 slices to 128×128: keep them at 32×32.
_DEMO_GRID = ("--data.init_args.image_size", "32")

#: Every YAML of ``experiments/`` appears in at least one recipe (tests/test_recipes.py checks).
RECIPES: dict[str, Recipe] = {
    # Seed 003 (ISLES 2018, CT perfusion)
    "pspnet_focal": Recipe(("pspnet_focal.yaml",), "isles2018", _PSPNET_18, weights=True),
    "pspnet_ce": Recipe(("pspnet_focal.yaml", "pspnet_ce.yaml"), "isles2018", _PSPNET_18, True),
    "pspnet_wce": Recipe(("pspnet_focal.yaml", "pspnet_wce.yaml"), "isles2018", _PSPNET_18, True),
    "pspnet_scratch_focal": Recipe(
        ("pspnet_focal.yaml", "pspnet_scratch_focal.yaml"), "isles2018", _PSPNET_18
    ),
    "unet2d_isles": Recipe(
        ("unet2d_isles.yaml",),
        "isles2018",
        ("--model.init_args.net.init_args.channels", "[4, 8, 16, 32, 64]"),
    ),
    "demo": Recipe(("pspnet_focal.yaml", "demo.yaml"), "isles2018", _DEMO_GRID),
    "wandb": Recipe(("pspnet_focal.yaml", "demo.yaml", "wandb.yaml"), "isles2018", _DEMO_GRID),
    "cv_demo": Recipe(("pspnet_focal.yaml", "demo.yaml", "cv_demo.yaml"), "isles2018", _DEMO_GRID),
    "pspnet_ensemble": Recipe(
        ("pspnet_focal.yaml", "demo.yaml", "pspnet_ensemble.yaml"),
        "isles2018",
        _DEMO_GRID,
        stage="predict",
    ),
    # Seed 003's 3D baselines; seed 001 (3D U-Nets)
    "unet3d_isles": Recipe(
        ("unet3d_isles.yaml",),
        "isles2018",
        # Seed 003's in-plane augmentation, here on the training device (the CPU).
        (
            "--model.init_args.net.init_args.base_width",
            "4",
            "--data.init_args.augment_on_device",
            "true",
        ),
    ),
    "vnet_isles": Recipe(
        ("unet3d_isles.yaml", "vnet_isles.yaml"),
        "isles2018",
        ("--model.init_args.net.init_args.base_width", "4"),
    ),
    "unet3d_omarov": Recipe(("unet3d_omarov.yaml",), "isles2018", _OMAROV),
    "unet3d_classic_omarov": Recipe(
        ("unet3d_omarov.yaml", "unet3d_classic_omarov.yaml"), "isles2018", _OMAROV
    ),
    # The classic network with the proposed model's IoU loss, L2 term and Adam (a third delta).
    "unet3d_classic_omarov_modloss": Recipe(
        ("unet3d_omarov.yaml", "unet3d_classic_omarov.yaml", "unet3d_classic_omarov_modloss.yaml"),
        "isles2018",
        _OMAROV,
    ),
    "demo_3d": Recipe(
        ("unet3d_omarov.yaml", "demo_3d.yaml"), "isles2018", ("--data.init_args.image_size", "16")
    ),
    # Seed 002 (CTP -> DWI GAN)
    "liu_stage1": Recipe(("liu_stage1.yaml",), "isles2018", _LIU_UNET),
    "liu_stage2": Recipe(("liu_stage1.yaml", "liu_stage2.yaml"), "isles2018", _LIU_UNET),
    "liu_stage3": Recipe(("liu_stage3.yaml",), "isles2018", _LIU_GAN),
    "liu_stage4": Recipe(("liu_stage3.yaml", "liu_stage4.yaml"), "isles2018", _LIU_GAN),
    "demo_gan": Recipe(
        ("liu_stage3.yaml", "liu_stage4.yaml", "demo_gan.yaml"), "isles2018", _LIU_GAN
    ),
    # Seed 004 (D-UNet, ATLAS) with its ablations and baselines
    "dunet": Recipe(("dunet.yaml",), "atlas"),
    "dunet_adam": Recipe(("dunet.yaml", "dunet_adam.yaml"), "atlas"),
    "dunet_demo": Recipe(("dunet.yaml", "dunet_demo.yaml"), "atlas"),
    **{
        f"dunet_{variant}": Recipe(("dunet.yaml", f"dunet_{variant}.yaml"), "atlas")
        for variant in ("add1", "add12", "add23", "add123", "seadd12", "seadd123")
    },
    "unet2d_original": Recipe(("dunet.yaml", "unet2d_original.yaml"), "atlas"),
    "unet2d_transform": Recipe(("dunet.yaml", "unet2d_transform.yaml"), "atlas"),
    "unet3d_transform": Recipe(("dunet.yaml", "unet3d_transform.yaml"), "atlas"),
    "segnet_atlas": Recipe(("dunet.yaml", "segnet_atlas.yaml"), "atlas"),
    "deeplabv3plus_atlas": Recipe(("dunet.yaml", "deeplabv3plus_atlas.yaml"), "atlas", _PSPNET_18),
    "pspnet_atlas": Recipe(("dunet.yaml", "pspnet_atlas.yaml"), "atlas", _PSPNET_18),
    # Seed 000 (VCA-Net, ATLAS)
    "vcanet": Recipe(("vcanet.yaml",), "atlas", _VCANET_8),
    "vcanet_demo": Recipe(("vcanet.yaml", "vcanet_demo.yaml"), "atlas"),
    # ISLES 2022 (MRI): each paper's recipe, then its delta under experiments/isles22/
    "isles22_pspnet_focal": Recipe(
        ("pspnet_focal.yaml", "isles22/pspnet_focal.yaml"), "isles2022", _PSPNET_18, True
    ),
    "isles22_demo": Recipe(
        ("liu_stage1.yaml", "isles22/liu_stage1.yaml", "isles22/demo.yaml"), "isles2022"
    ),
    "isles22_dunet": Recipe(("dunet.yaml", "isles22/dunet.yaml"), "isles2022"),
    "isles22_vcanet": Recipe(("vcanet.yaml", "isles22/vcanet.yaml"), "isles2022", _VCANET_8),
    "isles22_unet3d_omarov": Recipe(
        ("unet3d_omarov.yaml", "isles22/unet3d_omarov.yaml"), "isles2022", _OMAROV
    ),
    "isles22_liu_stage1": Recipe(
        ("liu_stage1.yaml", "isles22/liu_stage1.yaml"),
        "isles2022",
        ("--model.init_args.net.init_args.widths", "[16, 32]"),
    ),
}


def _gloo_rank(rank: int, port: int, world_size: int, worker: Callable, args: tuple, out) -> None:
    import datetime

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60)
    )
    try:
        try:
            out[rank] = ("returned", worker(rank, *args))
        except Exception as error:  # the test reads what each rank raised
            out[rank] = ("raised", error)
    finally:
        dist.destroy_process_group()


def run_gloo(worker: Callable, world_size: int, *args: object) -> dict[int, tuple[str, object]]:
    """Run ``worker(rank, *args)`` in ``world_size`` forked processes joined by a gloo process
    group (real CPU DDP collectives); per rank, ``("returned", value)`` or ``("raised",
    exception)``. Fork, not spawn: the ranks reuse the test's imports (spawn costs ~4 s each)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(
            _gloo_rank,
            args=(port, world_size, worker, args, out),
            nprocs=world_size,
            start_method="fork",
        )
        return dict(out)


def configs(*names: str) -> list[str]:
    """``--config experiments/<name>`` for each name."""
    return [arg for name in names for arg in ("--config", str(EXPERIMENTS / name))]


def isles_args(twin: Path, tmp: Path, epochs: int = 1, cache: Path | None = None) -> list[str]:
    """A CPU step of an ISLES 2018 recipe on the tiny twin (32×32 slices), runs in ``tmp``."""
    return [
        "--data.init_args.data_dir", str(twin),
        "--data.init_args.cache_dir", str(cache or tmp / "cache"),
        "--data.init_args.num_workers", "0",
        "--data.init_args.num_folds", "3",
        "--data.init_args.batch_size", "4",
        "--runs_dir", str(tmp / "runs"),
        "--trainer.max_epochs", str(epochs),
        "--trainer.limit_train_batches", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def atlas_args(atlas: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    """A CPU step of an ATLAS recipe on the tiny R1.1 twin (47×40 slices, a 32×32 window)."""
    return [
        "--data.init_args.data_dir", str(atlas),
        "--data.init_args.cache_dir", str(cache or tmp / "cache"),
        "--data.init_args.release", "R1.1",  # the tiny twin's layout
        # The tiny twin's slices are 47x40: a 32x32 window replaces the papers' crops.
        "--data.init_args.crop", "[0, 32, 0, 32]",
        "--data.init_args.image_size", "32",
        "--data.init_args.num_workers", "0",
        "--data.init_args.num_folds", "4",
        "--data.init_args.batch_size", "2",
        "--runs_dir", str(tmp / "runs"),
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


def isles22_args(twin: Path, tmp: Path, cache: Path | None = None) -> list[str]:
    """A CPU step of an ISLES 2022 recipe on the tiny twin: 4 mm in-plane voxels on a 64×64
    grid (256 mm, the recipes' field of view), one batch of 2, one validation case."""
    return [
        "--data.init_args.data_dir", str(twin),
        "--data.init_args.cache_dir", str(cache or tmp / "cache"),
        "--data.init_args.target_spacing", "4.0",
        "--data.init_args.image_size", "64",
        "--data.init_args.num_workers", "0",
        "--data.init_args.num_folds", "3",
        "--data.init_args.batch_size", "2",
        "--runs_dir", str(tmp / "runs"),
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


# -- running the commands --------------------------------------------------------------------------
def _environment(cwd: Path) -> dict[str, str]:
    return {
        "PYTHONWARNINGS": "ignore",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        # W&B stages logged tables in the home folder until a sync; keep them in the test's.
        "WANDB_DATA_DIR": str(cwd / ".wandb-data"),
        "WANDB_CACHE_DIR": str(cwd / ".wandb-cache"),
        "WANDB_CONFIG_DIR": str(cwd / ".wandb-config"),
    }


@dataclass
class Result:
    """What a command returned and printed (the fields of ``subprocess.CompletedProcess``)."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _fail(args: tuple[str, ...], result: Result | subprocess.CompletedProcess) -> None:
    raise AssertionError(
        f"{' '.join(args)} exited {result.returncode}\n--- stdout ---\n{result.stdout[-6000:]}"
        f"\n--- stderr ---\n{result.stderr[-6000:]}"
    )


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run an installed console script (``lightning``/``lightning-data``/``lightning-cv``) in a new
    process, like a user would."""
    command, *rest = args
    full_env = {**os.environ, **_environment(cwd), **(env or {})}
    result = subprocess.run(
        [str(BIN / command), *rest],
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        _fail(args, result)
    return result


_ENTRY_POINTS = {
    "lightning": "cli.lightning",
    "lightning-cv": "cli.crossval",
    "lightning-data": "cli.data",
}
# The loggers the commands configure for their own output.
_SUITE_LOGGERS = (
    "core", "networks", "losses", "datamodules", "evaluation", "lightning_modules", "callbacks",
    "cli",
)  # fmt: skip


@contextlib.contextmanager
def _isolated(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """The working folder, environment and the global state a command changes, restored (a
    command run inside another, as ``lightning-cv`` runs ``lightning``, gives the outer one its
    state back)."""
    from monai.data import get_track_meta, set_track_meta

    saved_env, saved_cwd, saved_meta = dict(os.environ), os.getcwd(), get_track_meta()
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in _SUITE_LOGGERS)]
    saved_loggers = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for logger, (handlers, level, propagate) in zip(loggers, saved_loggers, strict=True):
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        set_track_meta(saved_meta)  # the DataModules turn MONAI's metadata tracking off
        _exit_wandb()


def _exit_wandb() -> None:
    """What a process's exit does to W&B: finish the run left open (Lightning's WandbLogger
    leaves it to the exit) and flush it; a later command would otherwise log into that run."""
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _cv_steps_in_process(fold_processes: bool) -> Iterator[None]:
    """``lightning-cv``'s calls of ``lightning`` in this process, through :func:`run_in_process`:
    composing the configuration (``--print_config``), an ensemble's ``predict`` and, unless
    ``fold_processes``, each fold's ``fit`` (which ``run_local`` starts with ``Popen``);
    anything else still starts a process."""
    import cli.crossval
    import cli.launchers

    prefix = cli.launchers.lightning_command()
    real = subprocess

    def run(command: list[str], *, capture_output: bool = False, text: bool = False, **kw):
        args = list(command)[len(prefix) :]
        composes = args[:1] == ["fit"] and "--print_config" in args
        fits_a_fold = args[:1] == ["fit"] and not composes and not fold_processes
        if (
            list(command)[: len(prefix)] != prefix
            or kw
            or not (composes or fits_a_fold or args[:1] == ["predict"])
        ):
            return real.run(command, capture_output=capture_output, text=text, **kw)
        done = run_in_process("lightning", *args, cwd=Path.cwd(), check=False)
        if capture_output:
            return subprocess.CompletedProcess(command, done.returncode, done.stdout, done.stderr)
        sys.stdout.write(done.stdout)  # a process would have printed into the caller's output
        sys.stderr.write(done.stderr)
        return subprocess.CompletedProcess(command, done.returncode)

    def popen(command: list[str], **kw):
        # A fold's fit (cli.launchers.run_local): run in this process unless fold_processes,
        # handed back as a process that has already exited.
        if list(command)[: len(prefix)] != prefix or fold_processes:
            return real.Popen(command, **kw)
        done = run(command)
        return SimpleNamespace(wait=lambda timeout=None: done.returncode)

    shim = SimpleNamespace(run=run, Popen=popen, TimeoutExpired=real.TimeoutExpired)
    cli.crossval.subprocess = shim  # type: ignore[assignment]
    cli.launchers.subprocess = shim  # type: ignore[assignment]
    try:
        yield
    finally:
        cli.crossval.subprocess = real
        cli.launchers.subprocess = real


def run_in_process(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    fold_processes: bool = False,
) -> Result:
    """Run a command's entry point in this process with the same arguments, working folder and
    environment as :func:`run_cli`; returns its exit code and what it printed.
    ``fold_processes``: ``lightning-cv`` fits each fold in a process of its own, as for a user."""
    command, *rest = args
    main: Callable[[list[str]], object] = import_module(_ENTRY_POINTS[command]).main
    out, err = io.StringIO(), io.StringIO()
    code = 0
    # The command's own name, not pytest's arguments (its arguments go to main, which Lightning
    # would otherwise compare with sys.argv, and warn).
    argv = [str(BIN / command)]
    steps = (
        _cv_steps_in_process(fold_processes)
        if command == "lightning-cv"
        else contextlib.nullcontext()
    )
    with _isolated(cwd, {**_environment(cwd), **(env or {})}), _argv(argv), steps:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                returned = main(list(rest))
                code = returned if isinstance(returned, int) else 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    result = Result(tuple(args), code, out.getvalue(), err.getvalue())
    if check and code != 0:
        _fail(tuple(args), result)
    return result


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs one worker per core), each worker and the commands
    it starts use the cores left to it: oversubscribed threads would slow every test."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        threads = str(max(1, (os.cpu_count() or 1) // int(workers)))
        os.environ["OMP_NUM_THREADS"] = threads  # read by the processes a test starts
        torch.set_num_threads(int(threads))


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny twin (32×32 slices): 12 training cases, 2 testing cases."""
    root = tmp_path_factory.mktemp("twin") / "isles2018"
    return write_isles2018_twin(root, cases=12, testing_cases=2, seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny ATLAS R1.1 twin (extract root holding ATLAS_R1.1/)."""
    from datamodules.synth.atlas import write_atlas_twin

    root = tmp_path_factory.mktemp("atlas") / "atlas"
    return write_atlas_twin(root, "R1.1", subjects=8, seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_isles22(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny ISLES 2022 twin: 6 subjects, two of each centre."""
    from datamodules.synth.isles2022 import write_isles2022_twin

    root = tmp_path_factory.mktemp("isles22") / "isles2022"
    return write_isles2022_twin(root, cases=6, seed=0, size="tiny")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the session: caches are keyed by their files and settings, so
    recipes with the same data settings share one build."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def voc_like_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the converted VOC checkpoint: 3 input channels, 21 classes, ResNet-18."""
    import torch

    from networks import PSPNet

    path = tmp_path_factory.mktemp("weights") / "pspnet18_voc.pth"
    net = PSPNet(in_channels=3, num_classes=21, backbone_depth=18, init_layer=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


@pytest.fixture
def twin_copy(tiny_twin: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny twin that a test may damage."""
    return Path(shutil.copytree(tiny_twin, tmp_path / "isles2018"))


@pytest.fixture
def recipe_args(
    tiny_twin: Path,
    tiny_atlas: Path,
    voc_like_weights: Path,
    shared_cache: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Callable[[str], list[str]]:
    """``recipe_args(name)``: the arguments of a CPU step of a recipe of :data:`RECIPES`."""

    def build(name: str) -> list[str]:
        recipe = RECIPES[name]
        if recipe.data == "atlas":
            data = atlas_args(tiny_atlas, tmp_path, shared_cache)
        elif recipe.data == "isles2022":
            data = isles22_args(request.getfixturevalue("tiny_isles22"), tmp_path, shared_cache)
        else:
            data = isles_args(tiny_twin, tmp_path, cache=shared_cache)
        weights = (
            ["--model.init_args.net.init_args.pretrained_weights", str(voc_like_weights)]
            if recipe.weights
            else []
        )
        return [*configs(*recipe.configs), *data, *recipe.tiny, *weights]

    return build
