"""CrossEntropyLoss: hand-computed values, torch equivalences, the 1/N weighting, shape errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from losses import CrossEntropyLoss, FocalLoss

# Same four pixels as the focal test: p = (1/2, 3/4, 3/4, 1/4), y = (1, 1, 0, 0).
LOGIT = torch.tensor([[[[0.0, math.log(3.0)], [math.log(3.0), -math.log(3.0)]]]])  # (1, 1, 2, 2)
TARGET = torch.tensor([[[[1, 1], [0, 0]]]])
# Plain: (ln 2 + ln(4/3) + ln 4 + ln(4/3)) / 4 = 2.65480568 / 4
CE = 0.66370142
# w = 0.9: [0.9 (ln 2 + ln(4/3)) + 0.1 (ln 4 + ln(4/3))] / 4 = (0.88274633 + 0.16739764) / 4
WCE_09 = 0.26253600


def _two_channel(logit: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(logit), logit], dim=1)


@pytest.mark.parametrize(("weight", "expected"), [(None, CE), (0.9, WCE_09)])
def test_hand_computed_values(weight: float | None, expected: float) -> None:
    loss = CrossEntropyLoss(weight)
    assert loss(LOGIT, TARGET).item() == pytest.approx(expected, abs=1e-6)
    assert loss(_two_channel(LOGIT), TARGET[:, 0]).item() == pytest.approx(expected, abs=1e-6)


def test_unweighted_equals_torch_and_focal_gamma0() -> None:
    torch.manual_seed(0)
    logits2 = torch.randn(2, 2, 7, 3)
    logits1 = torch.randn(2, 1, 7, 3)
    target = torch.randint(0, 2, (2, 7, 3))
    torch.testing.assert_close(
        CrossEntropyLoss()(logits2, target), F.cross_entropy(logits2, target)
    )
    torch.testing.assert_close(
        CrossEntropyLoss()(logits1, target),
        F.binary_cross_entropy_with_logits(logits1[:, 0], target.float()),
    )
    torch.testing.assert_close(CrossEntropyLoss()(logits2, target), FocalLoss(0.0)(logits2, target))


def test_half_weight_is_half_the_plain_loss() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 5, 5)
    target = torch.randint(0, 2, (2, 1, 5, 5))
    torch.testing.assert_close(
        CrossEntropyLoss(0.5)(logits, target), 0.5 * CrossEntropyLoss()(logits, target)
    )


def test_weighted_mean_is_over_pixels_not_over_weights() -> None:
    """Eq. 3/4 divide by N; torch's class-weighted mean divides by the sum of pixel weights."""
    torch.manual_seed(2)
    logits = torch.randn(2, 2, 6, 6)
    target = torch.randint(0, 2, (2, 6, 6))
    w = 0.8
    class_weight = torch.tensor([1 - w, w])
    n_pixels = target.numel()
    ours = CrossEntropyLoss(w)(logits, target)
    torch_sum = F.cross_entropy(logits, target, weight=class_weight, reduction="sum")
    torch.testing.assert_close(ours, torch_sum / n_pixels)
    torch_mean = F.cross_entropy(logits, target, weight=class_weight)
    assert not torch.isclose(ours, torch_mean)


def test_weight_extremes_keep_one_class_only() -> None:
    target = torch.tensor([[[1, 0]]])
    logits = torch.tensor([[[-1.0, 2.0]]])  # both pixels wrong
    only_lesion = CrossEntropyLoss(1.0)(logits, target).item()
    only_background = CrossEntropyLoss(0.0)(logits, target).item()
    assert only_lesion == pytest.approx(-F.logsigmoid(torch.tensor(-1.0)).item() / 2)
    assert only_background == pytest.approx(-F.logsigmoid(torch.tensor(-2.0)).item() / 2)


@pytest.mark.parametrize("weight", [None, 0.7])
def test_better_prediction_gives_lower_loss(weight: float | None) -> None:
    target = torch.tensor([[[1, 0, 1, 0]]])
    good = torch.tensor([[[2.0, -2.0, 2.0, -2.0]]])
    worse = torch.tensor([[[0.5, -0.5, 0.5, -0.5]]])
    loss = CrossEntropyLoss(weight)
    assert loss(good, target) < loss(worse, target) < loss(-good, target)


@pytest.mark.parametrize("channels", [1, 2])
def test_finite_value_and_gradient_for_extreme_logits(channels: int) -> None:
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0]).repeat(channels, 1)[None]
    logits.requires_grad_(True)
    loss = CrossEntropyLoss(0.9)(logits, torch.tensor([[1, 0, 0, 1]]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_weight_out_of_range_rejected(weight: float) -> None:
    with pytest.raises(ValueError, match=r"lesion_weight must be in \[0, 1\]"):
        CrossEntropyLoss(weight)


def test_shape_error() -> None:
    with pytest.raises(ValueError, match=r"Expected target of shape .* found \(2, 3, 3\)"):
        CrossEntropyLoss()(torch.zeros(2, 2, 4, 4), torch.zeros(2, 3, 3))
