"""An ensemble predicts on the device what it predicts on the CPU (``lightning-cv predict``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.run_layout import ExperimentLayout
from lightning_modules import EnsembleModule
from tests.conftest import RECIPES, configs, isles_args, run_in_process
from tests.cuda.conftest import on_device

pytestmark = pytest.mark.cuda

# cuDNN runs float32 convolutions in TF32 by default (torch.backends.cudnn.allow_tf32, Ampere and
# later): operands rounded to 10 mantissa bits, so the members' logits on the GPU differ from the
# CPU's by a fraction of a per cent, more where they are large. The probabilities are compared as
# logits, |Δ| ≤ LOGIT_ATOL + LOGIT_RTOL·|logit|: one epoch's members give probabilities from
# 1e-17 to 0.06 on the tiny twin, where a tolerance on probabilities would mean nothing. A mask
# voxel may differ only where the CPU's logit lies that close to the threshold's. (Rounding every
# convolution's operands to TF32 on the CPU moved these logits by at most 0.017, and changed 5 of
# the 3,687 lesion voxels at the threshold below.)
LOGIT_ATOL, LOGIT_RTOL = 0.05, 0.02
# The recipe's threshold (0.5) leaves such members' masks empty: the device's run takes the
# CPU's 90th percentile instead, so that a tenth of the voxels are lesion.
QUANTILE = 0.9


def _read(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.asarray(nib.load(path).dataobj) for path in sorted(folder.glob("*.nii"))}


def _logit(probability: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-30, 1.0 - 1e-7)
    return np.log(p) - np.log1p(-p)


@pytest.fixture(scope="module")
def members(tiny_twin, shared_cache, tmp_path_factory) -> Path:
    """Two folds of the demo recipe (PSPNet-18), one epoch each, trained on the CPU: their
    experiment folder."""
    tmp = tmp_path_factory.mktemp("members")
    recipe = RECIPES["demo"]
    demo = [
        *configs(*recipe.configs),
        *isles_args(tiny_twin, tmp, cache=shared_cache),
        *recipe.tiny,
    ]
    for fold in (0, 1):
        run_in_process("lightning", "fit", *demo, "--data.init_args.fold", str(fold), cwd=tmp)
    (experiment,) = (tmp / "runs").iterdir()
    return experiment


def _predict(members: Path, name: str, where: torch.device, cwd: Path, *extra: str):
    """The ensemble's masks and probabilities of the TRAINING cases, predicted on ``where``."""
    run_in_process(
        "lightning-cv", "predict", str(members), "--name", name, "--runs-dir", str(cwd),
        "--split", "TRAINING", "--save-probability", "--trainer.enable_progress_bar", "false",
        *on_device(where, "32-true"), *extra, cwd=cwd,
    )  # fmt: skip
    stage = ExperimentLayout(cwd / name).run(EnsembleModule.run_folder()).stage("predict")
    return _read(stage.predictions), _read(stage.probabilities_beside(stage.predictions))


def test_the_ensemble_predicts_on_the_device_what_it_predicts_on_the_cpu(members, device, tmp_path):
    cpu_masks, cpu = _predict(members, "cpu", torch.device("cpu"), tmp_path)
    for case, mask in cpu_masks.items():  # the command's rule, to apply at another threshold
        assert np.array_equal(mask, cpu[case] >= np.float32(0.5)), case
    threshold = float(np.quantile(np.concatenate([p.ravel() for p in cpu.values()]), QUANTILE))
    masks, on_it = _predict(
        members, "device", device, tmp_path, "--model.init_args.threshold", repr(threshold)
    )
    assert list(masks) == list(on_it) == list(cpu) and cpu
    band = LOGIT_ATOL + LOGIT_RTOL * abs(_logit(threshold))
    lesion = flipped = near = voxels = 0
    for case, probability in cpu.items():
        expected = probability >= np.float32(threshold)
        np.testing.assert_allclose(
            _logit(on_it[case]), _logit(probability), atol=LOGIT_ATOL, rtol=LOGIT_RTOL,
            err_msg=f"{case}: logits of the device's probabilities",
        )  # fmt: skip
        differ = masks[case].astype(bool) != expected
        at_threshold = np.abs(_logit(probability) - _logit(threshold)) <= band
        assert not (differ & ~at_threshold).any(), f"{case}: the masks differ off the threshold"
        lesion, voxels = lesion + int(expected.sum()), voxels + expected.size
        flipped, near = flipped + int(differ.sum()), near + int(at_threshold.sum())
    print(
        f"threshold {threshold:.3g}: {lesion} of {voxels} voxels lesion on the CPU; {flipped} "
        f"differ on the device ({near} within the tolerance of the threshold)"
    )
    assert lesion > voxels // 20 and flipped <= max(10, voxels // 1000)
