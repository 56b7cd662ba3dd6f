"""FocalLoss: hand-computed values, limiting cases, the MONAI relation, numerics, shape errors."""

import math

import monai
import pytest
import torch
import torch.nn.functional as F

from losses import FocalLoss

# Four pixels with lesion probabilities p = (1/2, 3/4, 3/4, 1/4) and labels y = (1, 1, 0, 0):
# sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
LOGIT = torch.tensor([[[[0.0, math.log(3.0)], [math.log(3.0), -math.log(3.0)]]]])  # (1, 1, 2, 2)
TARGET = torch.tensor([[[[1, 1], [0, 0]]]])  # (1, 1, 2, 2)

# gamma = 1, by hand, FL = -y(1-p) ln p - (1-y) p ln(1-p):
#   (1/2) ln 2 + (1/4) ln(4/3) + (3/4) ln 4 + (1/4) ln(4/3)
#   = 0.34657359 + 0.07192052 + 1.03972077 + 0.07192052 = 1.53013539; / 4 pixels
FL_GAMMA1 = 0.38253385
# gamma = 2: (1/4) ln 2 + (1/16) ln(4/3) + (9/16) ln 4 + (1/16) ln(4/3) = 0.98903763; / 4
FL_GAMMA2 = 0.24725941
# gamma = 0 (cross entropy): ln 2 + ln(4/3) + ln 4 + ln(4/3) = 2.65480568; / 4
CE = 0.66370142


def _two_channel(logit: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) lesion logit -> (B, 2, ...) with a zero background logit (same softmax p)."""
    return torch.cat([torch.zeros_like(logit), logit], dim=1)


@pytest.mark.parametrize(("gamma", "expected"), [(0.0, CE), (1.0, FL_GAMMA1), (2.0, FL_GAMMA2)])
def test_hand_computed_values_sigmoid_and_softmax(gamma: float, expected: float) -> None:
    loss = FocalLoss(gamma)
    assert loss(LOGIT, TARGET).item() == pytest.approx(expected, abs=1e-6)
    assert loss(_two_channel(LOGIT), TARGET).item() == pytest.approx(expected, abs=1e-6)
    # Target without the channel axis, as float.
    assert loss(LOGIT, TARGET[:, 0].float()).item() == pytest.approx(expected, abs=1e-6)


def test_default_gamma_is_the_papers() -> None:
    assert FocalLoss().gamma == 1.0


def test_softmax_invariant_to_a_shared_logit_offset() -> None:
    logits = _two_channel(LOGIT)
    assert FocalLoss()(logits + 7.0, TARGET).item() == pytest.approx(FL_GAMMA1, abs=1e-6)


def test_gamma0_equals_torch_cross_entropy_and_bce() -> None:
    torch.manual_seed(0)
    logits2 = torch.randn(3, 2, 5, 4, 2)
    logits1 = torch.randn(3, 1, 5, 4, 2)
    target = torch.randint(0, 2, (3, 1, 5, 4, 2))
    ce = F.cross_entropy(logits2, target[:, 0])
    bce = F.binary_cross_entropy_with_logits(logits1, target.float())
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits2, target), ce)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits1, target), bce)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_relation_to_monai_focal_loss(gamma: float) -> None:
    """Ours = MONAI softmax focal "mean" x C (= 2) = MONAI "sum" / B; = MONAI sigmoid "mean"."""
    torch.manual_seed(1)
    batch = 3
    logits2 = torch.randn(batch, 2, 6, 5) * 3
    logits1 = torch.randn(batch, 1, 6, 5) * 3
    target = torch.randint(0, 2, (batch, 1, 6, 5))
    ours2 = FocalLoss(gamma)(logits2, target)

    def monai_softmax(reduction: str) -> torch.Tensor:
        return monai.losses.FocalLoss(
            gamma=gamma, alpha=None, use_softmax=True, to_onehot_y=True, reduction=reduction
        )(logits2, target)

    torch.testing.assert_close(ours2, 2 * monai_softmax("mean"))
    torch.testing.assert_close(ours2, monai_softmax("sum") / batch)
    monai_sigmoid = monai.losses.FocalLoss(gamma=gamma, alpha=None, reduction="mean")
    torch.testing.assert_close(
        FocalLoss(gamma)(logits1, target), monai_sigmoid(logits1, target.float())
    )


def test_better_prediction_gives_lower_loss() -> None:
    target = torch.tensor([[[1, 0, 1, 0]]])  # (1, 1, 4)
    good = torch.tensor([[[2.0, -2.0, 2.0, -2.0]]])
    worse = torch.tensor([[[1.0, -1.0, 0.5, -0.5]]])
    wrong = -good
    loss = FocalLoss()
    assert loss(good, target) < loss(worse, target) < loss(wrong, target)


def test_focusing_down_weights_easy_pixels_more_than_hard_ones() -> None:
    easy = torch.tensor([[[3.0]]])  # p = 0.95 on a lesion pixel
    hard = torch.tensor([[[-1.0]]])  # p = 0.27 on a lesion pixel
    target = torch.ones(1, 1, 1)
    ratio_easy = FocalLoss(1.0)(easy, target) / FocalLoss(0.0)(easy, target)
    ratio_hard = FocalLoss(1.0)(hard, target) / FocalLoss(0.0)(hard, target)
    assert ratio_easy < ratio_hard < 1.0


@pytest.mark.parametrize("channels", [1, 2])
def test_finite_value_and_gradient_for_extreme_logits(channels: int) -> None:
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0]).repeat(channels, 1)[None]  # (1, C, 4)
    logits.requires_grad_(True)
    target = torch.tensor([[1, 0, 0, 1]])  # two confident right, two confident wrong
    loss = FocalLoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_float32_under_bf16_autocast() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = FocalLoss()(logits.bfloat16(), target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, FocalLoss()(logits.bfloat16().float(), target))


@pytest.mark.parametrize(
    ("logits_shape", "target_shape", "match"),
    [
        ((2, 3, 4, 4), (2, 1, 4, 4), r"C == 2 .* found shape \(2, 3, 4, 4\)"),
        ((2, 2), (2, 2), r"at least one spatial axis"),
        ((2, 2, 4, 4), (2, 1, 4, 5), r"found \(2, 1, 4, 5\)"),
        ((2, 2, 4, 4), (2, 2, 4, 4), r"not a one-hot"),
        ((2, 2, 4, 4), (1, 4, 4), r"Expected target of shape"),
    ],
)
def test_shape_errors(logits_shape: tuple, target_shape: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FocalLoss()(torch.zeros(logits_shape), torch.zeros(target_shape))


def test_negative_gamma_rejected() -> None:
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FocalLoss(gamma=-1.0)
