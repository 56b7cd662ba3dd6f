"""SoftJaccardLoss: hand-computed values, batch pooling, the MONAI relation, limits, gradients."""

import math

import monai
import pytest
import torch

from losses import SoftJaccardLoss

# Four pixels with p = (1/2, 3/4, 3/4, 1/4) and t = (1, 1, 0, 0):
# sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
LOGIT = torch.tensor([[[[0.0, math.log(3.0)], [math.log(3.0), -math.log(3.0)]]]])  # (1, 1, 2, 2)
TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # (1, 1, 2, 2)
# Σpt = 1/2 + 3/4 = 5/4; Σp = 9/4; Σt = 2; union = 9/4 + 2 - 5/4 = 3.
#   s = 1: J = (5/4 + 1) / (3 + 1) = 9/16, L = 7/16
L_S1 = 7 / 16
#   s = 1/2: J = (5/4 + 1/2) / (3 + 1/2) = 1/2, L = 1/2
L_S_HALF = 1 / 2

# A second sample: p = 1/2 everywhere (logit 0), t = 0: Σpt = 0, union = 2, J = 1/3, L = 2/3.
LOGIT2 = torch.cat([LOGIT, torch.zeros_like(LOGIT)])  # (2, 1, 2, 2)
TARGET2 = torch.cat([TARGET, torch.zeros_like(TARGET)])  # (2, 1, 2, 2)
# Pooled: Σpt = 5/4; Σp = 9/4 + 2 = 17/4; Σt = 2; union = 5; J = (9/4) / 6 = 3/8, L = 5/8.
L_POOLED = 5 / 8
# Per sample: mean(7/16, 2/3) = 53/96.
L_PER_SAMPLE = 53 / 96


def _keras_jaccard(p: torch.Tensor, t: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Float64 transcription of 1 - (Σpt + s) / (Σp + Σt - Σpt + s) over all elements."""
    p, t = p.double().flatten(), t.double().flatten()
    inter = (p * t).sum()
    return 1 - (inter + smooth) / (p.sum() + t.sum() - inter + smooth)


def _two_channel(logit: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) lesion logit -> (B, 2, ...) with a zero background logit (same softmax p)."""
    return torch.cat([torch.zeros_like(logit), logit], dim=1)


def test_hand_computed_value() -> None:
    loss = SoftJaccardLoss()
    assert loss(LOGIT, TARGET).item() == pytest.approx(L_S1, abs=1e-6)
    assert loss(_two_channel(LOGIT), TARGET).item() == pytest.approx(L_S1, abs=1e-6)
    assert loss(LOGIT, TARGET[:, 0].long()).item() == pytest.approx(L_S1, abs=1e-6)
    assert SoftJaccardLoss(smooth=0.5)(LOGIT, TARGET).item() == pytest.approx(L_S_HALF, abs=1e-6)


def test_probability_input() -> None:
    probs = torch.sigmoid(LOGIT)
    assert SoftJaccardLoss(sigmoid=False)(probs, TARGET).item() == pytest.approx(L_S1, abs=1e-6)
    assert SoftJaccardLoss(sigmoid=False)(probs, TARGET[:, 0]).item() == pytest.approx(
        L_S1, abs=1e-6
    )


def test_batch_pooled_by_default_and_per_sample_on_request() -> None:
    assert SoftJaccardLoss()(LOGIT2, TARGET2).item() == pytest.approx(L_POOLED, abs=1e-6)
    per_sample = SoftJaccardLoss(batch=False)(LOGIT2, TARGET2).item()
    assert per_sample == pytest.approx(L_PER_SAMPLE, abs=1e-6)


def test_defaults_are_the_docs() -> None:
    loss = SoftJaccardLoss()
    assert (loss.smooth, loss.sigmoid, loss.batch) == (1.0, True, True)


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("shape", [(3, 1, 6, 5), (2, 1, 4, 5, 3)])
def test_equals_monai_jaccard_with_doubled_smoothing(batch: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    logits = torch.randn(shape)
    target = torch.rand(shape)  # soft labels: MONAI's soft_label=False path uses the same sums
    ours = SoftJaccardLoss(smooth=1.0, batch=batch)(logits, target)
    monai_same = monai.losses.DiceLoss(
        sigmoid=True, jaccard=True, smooth_nr=2.0, smooth_dr=2.0, batch=batch
    )(logits, target)
    torch.testing.assert_close(ours, monai_same)
    # MONAI with smooth_nr = smooth_dr = 1 is this loss with s = 1/2, not s = 1.
    monai_unit = monai.losses.DiceLoss(
        sigmoid=True, jaccard=True, smooth_nr=1.0, smooth_dr=1.0, batch=batch
    )(logits, target)
    torch.testing.assert_close(SoftJaccardLoss(smooth=0.5, batch=batch)(logits, target), monai_unit)
    assert not torch.allclose(ours, monai_unit)


def test_hand_value_against_monai_documented_difference() -> None:
    monai_unit = monai.losses.DiceLoss(sigmoid=True, jaccard=True, smooth_nr=1.0, smooth_dr=1.0)
    assert monai_unit(LOGIT, TARGET).item() == pytest.approx(L_S_HALF, abs=1e-6)


@pytest.mark.parametrize("shape", [(2, 1, 7, 6), (2, 1, 3, 6, 5)])
def test_matches_float64_transcription_values_and_gradients(shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    logits = torch.randn(shape, requires_grad=True)
    target = (torch.rand(shape) > 0.6).float()
    ours = SoftJaccardLoss()(logits, target)
    (grad,) = torch.autograd.grad(ours, logits)
    ref_logits = logits.detach().double().requires_grad_()
    ref = _keras_jaccard(torch.sigmoid(ref_logits), target)
    (ref_grad,) = torch.autograd.grad(ref, ref_logits)
    assert ours.dtype == torch.float32 and ours.ndim == 0
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    torch.testing.assert_close(grad, ref_grad.float(), atol=1e-7, rtol=1e-4)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_perfect_prediction_and_empty_masks_give_zero() -> None:
    target = torch.zeros(2, 1, 4, 4, 3)
    target[0, 0, 1:3, 1:3, 1] = 1.0
    assert SoftJaccardLoss(sigmoid=False)(target, target).item() == 0.0
    assert SoftJaccardLoss(sigmoid=False, batch=False)(target, target).item() == 0.0
    confident = 40.0 * (2.0 * target - 1.0)  # logits ±40
    assert SoftJaccardLoss()(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 1, 3, 3)
    assert SoftJaccardLoss(sigmoid=False)(empty, empty).item() == 0.0


def test_better_prediction_gives_lower_loss() -> None:
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    good = torch.tensor([[[[3.0, 3.0, -3.0, -3.0]]]])
    worse = torch.tensor([[[[1.0, 1.0, -1.0, -1.0]]]])
    assert SoftJaccardLoss()(good, target) < SoftJaccardLoss()(worse, target)


def test_float32_under_autocast() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 4, 4, 4, dtype=torch.bfloat16)
    target = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = SoftJaccardLoss()(logits, target)
    assert loss.dtype == torch.float32
    expected = _keras_jaccard(torch.sigmoid(logits.double()), target)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_invalid_arguments_and_shapes() -> None:
    with pytest.raises(ValueError, match="smooth must be > 0"):
        SoftJaccardLoss(smooth=0.0)
    with pytest.raises(ValueError, match="found \\(1, 1, 3, 3\\)"):
        SoftJaccardLoss()(LOGIT, torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="C == 2"):
        SoftJaccardLoss()(torch.zeros(1, 3, 2, 2), TARGET)
    with pytest.raises(ValueError, match="sigmoid=False expected lesion probabilities"):
        SoftJaccardLoss(sigmoid=False)(_two_channel(LOGIT), TARGET)
    with pytest.raises(ValueError, match="found \\(1, 1, 2\\)"):
        SoftJaccardLoss(sigmoid=False)(torch.sigmoid(LOGIT), TARGET[:, :, 0])
