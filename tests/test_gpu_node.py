"""``make wheelhouse`` + ``.ci/gpu-node``: the wheelhouse names every dependency of the suite
that a CUDA PyTorch image lacks, so a new dependency cannot silently break the offline GPU
checks; the script parses and refuses to run without a GPU (its full dry run, CUDA tests in
CPU mode and the benchmark's tiny sizes, takes a minute: docs/performance.md)."""

from __future__ import annotations

import re
import subprocess

import tomllib

from tests.conftest import REPO

#: What a CUDA PyTorch image (a cluster's PyTorch module, NVIDIA's or a lab's container) holds.
_IMAGE_HAS = {
    "torch", "pytorch-lightning", "torchmetrics", "numpy", "scipy", "matplotlib", "tqdm", "rich",
}  # fmt: skip
#: Dependencies the GPU checks never import (non-NIfTI inputs, W&B): WHEEL_EXTRA when wanted.
_NOT_FOR_THE_GPU_CHECKS = {"simpleitk", "wandb"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[;\s]", requirement, maxsplit=1)[0].lower()


def test_the_wheelhouse_holds_every_dependency_a_pytorch_image_lacks():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {_name(r) for r in project["dependencies"]} - _IMAGE_HAS - _NOT_FOR_THE_GPU_CHECKS
    makefile = (REPO / "Makefile").read_text()
    match = re.search(r"^WHEEL_PACKAGES \?= ((?:.*\\\n)*.*)$", makefile, flags=re.MULTILINE)
    assert match is not None
    listed = set(match.group(1).replace("\\\n", " ").split())
    assert needed <= listed, f"add to WHEEL_PACKAGES: {sorted(needed - listed)}"
    # jsonargparse's signature helpers and highdicom's own needs come without their extras
    assert {"docstring-parser", "typeshed-client", "pydicom", "pyjpegls"} <= listed


def test_the_gpu_node_script_parses_and_needs_a_gpu(tmp_path):
    script = REPO / ".ci" / "gpu-node"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    assert "--system-site-packages" in text and "--no-index --no-deps" in text
    assert "pytest -q -m cuda tests/cuda" in text and "benchmarks/gpu.py" in text
    assert "torch.cuda.is_available()" in text and "exit 2" in text
