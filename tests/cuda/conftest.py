"""The CUDA tests: their device, their skip on machines without one, and the module families.

Every test of this folder is marked ``cuda`` and takes its device from the :func:`device`
fixture: the first CUDA GPU. ``make test-gpu`` (``pytest -m cuda tests/cuda``) runs them on a
GPU machine; ``make test`` collects them and skips them elsewhere, saying why, before any of
their fixtures is built. So that this code cannot rot unseen on machines without a GPU,
``STROKESEG_CUDA_TESTS_ON_CPU=1`` runs the same tests on the CPU (a comparison of the device
with the CPU then compares the CPU with itself, which still runs every line of it); the few that
need CUDA itself, such as its sync debug mode, take :func:`cuda_device` and skip there.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from core.run_layout import RunLayout

#: ``STROKESEG_CUDA_TESTS_ON_CPU=1``: run the CUDA tests on the CPU.
ON_CPU = os.environ.get("STROKESEG_CUDA_TESTS_ON_CPU") == "1"

_HERE = Path(__file__).resolve().parent
_NO_CUDA = (
    "no CUDA GPU here (torch.cuda.is_available() is False); `make test-gpu` runs these on a GPU "
    "machine, STROKESEG_CUDA_TESTS_ON_CPU=1 runs them on the CPU"
)

#: The module families, each as a recipe of ``tests.conftest.RECIPES`` (narrow network, tiny
#: twin, 2 training steps) and what it needs beyond the recipe's tiny overrides.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "2d": ("demo", ()),  # seed 003: PSPNet-18, focal loss, 32² slices
    "2d-eml": ("dunet", ()),  # seed 004: D-UNet, EML, 4-slice stacks of the ATLAS twin
    # seed 001: 32² × 8 volumes, 3 batches of fold 0's 6 training cases
    "3d": (
        "unet3d_omarov",
        ("--data.init_args.image_size", "32", "--data.init_args.batch_size", "2"),
    ),
    "gan": ("liu_stage4", ()),  # seed 002: G, D and S, 128² slices
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's tests without a CUDA device; refuse one not marked ``cuda`` (``make
    test-gpu`` selects them by the marker, so it would never run)."""
    skip = None if ON_CPU or torch.cuda.is_available() else pytest.mark.skip(reason=_NO_CUDA)
    unmarked = []
    for item in items:
        if _HERE not in item.path.resolve().parents:
            continue  # this hook sees the whole session's tests
        if item.get_closest_marker("cuda") is None:
            unmarked.append(item.nodeid)
        elif skip is not None:
            item.add_marker(skip)
    if unmarked:
        raise pytest.UsageError(
            f"Tests in {_HERE} must be marked cuda (pytestmark = pytest.mark.cuda), or make "
            f"test-gpu never runs them: {', '.join(unmarked)}"
        )


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the tests run: the first CUDA GPU (the CPU under STROKESEG_CUDA_TESTS_ON_CPU=1)."""
    return torch.device("cpu") if ON_CPU else torch.device("cuda", 0)


@pytest.fixture(scope="session")
def cuda_device(device: torch.device) -> torch.device:
    """The CUDA device, for tests of CUDA itself; they skip under STROKESEG_CUDA_TESTS_ON_CPU=1."""
    if device.type != "cuda":
        pytest.skip("needs CUDA itself (its sync debug mode), not only a device to run on")
    return device


def on_device(device: torch.device, precision: str = "bf16-mixed") -> list[str]:
    """The ``lightning`` arguments that train on ``device`` (one of it) in ``precision``."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    return [
        "--trainer.accelerator", accelerator,
        "--trainer.devices", "1",
        "--trainer.precision", precision,
    ]  # fmt: skip


@pytest.fixture
def family_args(recipe_args: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """``family_args(name)``: the ``lightning fit`` arguments of a family of :data:`FAMILIES`."""

    def build(family: str) -> list[str]:
        recipe, extra = FAMILIES[family]
        return [*recipe_args(recipe), *extra]

    return build


def fold_run(cwd: Path) -> RunLayout:
    """The one fold folder that a ``lightning fit`` run in ``cwd`` wrote."""
    (root,) = (cwd / "runs").glob("*/fold*")
    return RunLayout(root)


def assert_finished_with_finite_dice(run: RunLayout) -> None:
    """The fit finished (``fit_done.json``) with finite training losses and validation Dice."""
    assert run.fit_done.is_file(), f"{run.root}: the fit did not finish"
    with run.metrics.open() as handle:
        rows = list(csv.DictReader(handle))
    dice = [float(row["val/dice"]) for row in rows if row.get("val/dice")]
    losses = [float(row["train/loss_epoch"]) for row in rows if row.get("train/loss_epoch")]
    assert dice and all(math.isfinite(value) and 0.0 <= value <= 1.0 for value in dice), dice
    assert losses and all(math.isfinite(value) for value in losses), losses
