"""``benchmarks/gpu.py``: every network's rows from a tiny CPU run, its options, its busy share."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import common, gpu
from tests.conftest import REPO

# Every network's numeric rows on the CPU; memory and busy share need a GPU.
ROWS = {"P1g.a", "P1g.b", "P7.amp", "img/s"}
ROWS_2D = ROWS | {"P7.cl"}
GPU_ONLY = {"memory", "busy"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    """``benchmarks/gpu.py --tiny --device cpu --json`` in a process of its own."""
    folder = tmp_path_factory.mktemp("bench-gpu")
    out = folder / "gpu.json"
    command = [sys.executable, "benchmarks/gpu.py", "--tiny", "--device", "cpu", "--json",
               str(out), "--workdir", str(folder / "work")]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(out.read_text())


@pytest.mark.slow  # the tiny run: a process of its own and a loader worker (~20 s on 2 cores)
def test_every_network_has_its_rows_with_finite_positive_numbers(tiny_run):
    done, result = tiny_run
    assert set(result["networks"]) == set(gpu.NETWORKS)
    for key, network in result["networks"].items():
        assert network["error"] is None, key
        rows = network["rows"]
        wanted = ROWS_2D if gpu.NETWORKS[key].spatial_dims == 2 else ROWS
        assert wanted | GPU_ONLY <= set(rows), f"{key}: rows {sorted(rows)}"
        for name in wanted:
            value = rows[name]["value"]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, name)
        assert all(rows[name]["value"] is None and rows[name]["text"] == "n/a" for name in GPU_ONLY)
        assert rows["P7.amp"]["target"] == ("≤ 0.77" if key != "unet3d" else "≤ 0.5")
        assert f"| {network['label']} | P1g.a |" in done.stdout


@pytest.mark.slow
def test_the_printout_names_the_setup_and_the_targets(tiny_run):
    done, _ = tiny_run
    assert "torch: " in done.stdout and "cuda: " in done.stdout and "gpu: none" in done.stdout
    assert "| network | # | measure | value | target | pass |" in done.stdout
    assert "≤ 0.77" in done.stdout and "≥ 0.95" in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--only", "dunet,vnet"], "unknown network vnet"),
        (["--steps", "0"], "--steps 0"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_a_wrong_option_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("benchmarks/gpu.py: ") and message in err and err.count("\n") == 1


def test_cuda_is_refused_where_torch_sees_none(capsys, monkeypatch):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--device", "cuda"])
    assert exit_.value.code == 2 and "--device cpu" in capsys.readouterr().err


def test_the_busy_share_counts_overlapping_kernels_once():
    assert common.union_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.7)]) == 4.0
    assert common.union_seconds([]) == 0.0
    trace = {
        "traceEvents": [
            {"cat": "kernel", "ts": 100.0, "dur": 50.0},
            {"cat": "kernel", "ts": 120.0, "dur": 50.0},  # a second stream, overlapping
            {"cat": "gpu_memcpy", "ts": 300.0, "dur": 100.0},  # not a kernel
            {"cat": "cuda_runtime", "ts": 90.0, "dur": 500.0},  # host time
            {"ph": "i", "cat": "kernel", "ts": 10.0},  # an instant: no duration
        ]
    }
    assert common.kernel_seconds(trace) == pytest.approx(70e-6)
