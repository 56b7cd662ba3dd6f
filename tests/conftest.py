"""Shared fixtures: tiny synthetic ISLES 2018 twins and a runner for the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules.synth.isles2018 import write_isles2018_twin

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


@pytest.fixture
def twin_copy(tiny_twin: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny twin that a test may damage."""
    return Path(shutil.copytree(tiny_twin, tmp_path / "isles2018"))


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run an installed console script (``lightning``/``lightning-data``) like a user would."""
    command, *rest = args
    full_env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        # W&B stages logged tables in the home folder until a sync; keep them in the test's.
        "WANDB_DATA_DIR": str(cwd / ".wandb-data"),
        "WANDB_CACHE_DIR": str(cwd / ".wandb-cache"),
        "WANDB_CONFIG_DIR": str(cwd / ".wandb-config"),
        **(env or {}),
    }
    result = subprocess.run(
        [str(BIN / command), *rest],
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout ---\n{result.stdout[-6000:]}"
            f"\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result
