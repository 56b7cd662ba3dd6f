"""EnhancedMixingLoss / EMLWithBCE: hand-computed values, code vs paper, soft labels, numerics."""

import math

import pytest
import torch
import torch.nn.functional as F

from losses import EMLWithBCE, EnhancedMixingLoss

# Four pixels with p = (1/2, 3/4, 3/4, 1/4) and y = (1, 1, 0, 0):
# sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
LOGIT = torch.tensor([[[[0.0, math.log(3.0)], [math.log(3.0), -math.log(3.0)]]]])  # (1, 1, 2, 2)
TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # (1, 1, 2, 2)

# Dice: Σyp = 1/2 + 3/4 = 5/4; Σy² = 2; Σp² = (4 + 9 + 9 + 1)/16 = 23/16.
#   dice = (2·5/4 + 1) / (2 + 23/16 + 1) = (7/2) / (71/16) = 56/71; -ln(56/71) = 0.23732818
NEG_LOG_DICE = math.log(71 / 56)
# alpha = 0.25, gamma = 1:
#   lesion:     0.25·(1/2)·ln 2 + 0.25·(1/4)·ln(4/3) = 0.08664340 + 0.01798013 = 0.10462353; / 4
#   background: 0.75·(3/4)·ln 4 + 0.75·(1/4)·ln(4/3) = 0.77979053 + 0.05394039 = 0.83373092; / 4
#   EML = 0.02615588 + 0.20843273 + 0.23732818
EML_A025_G1 = 0.47191680
# Code defaults alpha = 0.48, gamma = 1.1 (0.5^1.1 = 0.46651650, 0.25^1.1 = 0.21763764,
# 0.75^1.1 = 0.72873124):
#   lesion:     0.48·0.46651650·ln 2 + 0.48·0.21763764·ln(4/3) = 0.15521502 + 0.03005313; / 4
#   background: 0.52·0.72873124·ln 4 + 0.52·0.21763764·ln(4/3) = 0.52532646 + 0.03255756; / 4
#   EML = 0.04631704 + 0.13947101 + 0.23732818
EML_DEFAULT = 0.42311523


def _two_channel(logit: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) lesion logit -> (B, 2, ...) with a zero background logit (same softmax p)."""
    return torch.cat([torch.zeros_like(logit), logit], dim=1)


def _keras_eml(p, y, alpha=0.48, gamma=1.1, smooth=1.0, eps=1e-7) -> torch.Tensor:
    """Float64 transcription of Statistics.EML in probability space (finite inputs only)."""
    p, y = p.double().flatten(), y.double().flatten()
    dice = (2 * (y * p).sum() + smooth) / ((y * y).sum() + (p * p).sum() + smooth)
    p = p.clamp(min=eps)
    pt1 = torch.where(y == 1, p, torch.ones_like(p))
    pt0 = torch.where(y == 0, p, torch.zeros_like(p))
    fl = -(alpha * (1 - pt1) ** gamma * pt1.log()).mean()
    fl = fl - ((1 - alpha) * pt0**gamma * (1 - pt0).log()).mean()
    return fl - dice.log()


@pytest.mark.parametrize(
    ("kwargs", "expected"), [({"alpha": 0.25, "gamma": 1.0}, EML_A025_G1), ({}, EML_DEFAULT)]
)
def test_hand_computed_values_sigmoid_and_softmax(kwargs: dict, expected: float) -> None:
    loss = EnhancedMixingLoss(**kwargs)
    assert loss(LOGIT, TARGET).item() == pytest.approx(expected, abs=1e-6)
    assert loss(_two_channel(LOGIT), TARGET).item() == pytest.approx(expected, abs=1e-6)
    assert loss(LOGIT, TARGET[:, 0].long()).item() == pytest.approx(expected, abs=1e-6)


def test_dice_term_alone_with_alpha_weights_cancelled() -> None:
    # gamma = 0, alpha = 1: only the lesion log-term, -(ln 1/2 + ln 3/4)/4 = 0.24520357.
    loss = EnhancedMixingLoss(alpha=1.0, gamma=0.0)
    expected = (math.log(2) + math.log(4 / 3)) / 4 + NEG_LOG_DICE
    assert loss(LOGIT, TARGET).item() == pytest.approx(expected, abs=1e-6)


def test_defaults_are_the_codes_and_paper_parameters_swap_them() -> None:
    code = EnhancedMixingLoss()
    assert (code.alpha, code.gamma, code.smooth, code.epsilon) == (0.48, 1.1, 1.0, 1e-7)
    paper = EnhancedMixingLoss(paper_parameters=True)
    assert (paper.alpha, paper.gamma) == (1.1, 0.48)
    p = torch.sigmoid(LOGIT)
    expected = _keras_eml(p, TARGET, alpha=1.1, gamma=0.48)
    assert paper(LOGIT, TARGET).item() == pytest.approx(expected.item(), abs=1e-6)
    # 1 - alpha < 0: a confidently wrong background pixel *lowers* the paper-valued loss.
    wrong_background = LOGIT.clone()
    wrong_background[..., 1, 1] = 8.0  # y = 0 pixel, p ~ 1
    assert paper(wrong_background, TARGET) < paper(LOGIT, TARGET)
    assert code(wrong_background, TARGET) > code(LOGIT, TARGET)


def test_matches_float64_keras_transcription_on_random_soft_labels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 7, 6) * 4
    target = torch.randint(0, 2, (3, 1, 7, 6)).float()
    target[:, :, 0] = 0.5  # a row of antialiased boundary pixels
    for kwargs in ({}, {"alpha": 0.3, "gamma": 2.0, "smooth": 0.5}):
        expected = _keras_eml(torch.sigmoid(logits.double()), target, **kwargs)
        got = EnhancedMixingLoss(**kwargs)(logits, target)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_boundary_pixels_excluded_from_focal_terms_but_kept_in_dice() -> None:
    # y = (1, 1/2, 0, 0): the soft pixel drops out of the focal sums, N stays 4.
    #   focal (alpha = 0.25, gamma = 1): lesion 0.08664340 / 4; background 0.83373092 / 4
    #   dice: Σyp = 1/2 + 3/8 = 7/8; Σy² = 1 + 1/4 = 5/4;
    #         (7/4 + 1) / (5/4 + 23/16 + 1) = (11/4) / (59/16) = 44/59
    soft = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    expected = 0.08664340 / 4 + 0.83373092 / 4 + math.log(59 / 44)  # 0.52344140
    loss = EnhancedMixingLoss(alpha=0.25, gamma=1.0)
    assert loss(LOGIT, soft).item() == pytest.approx(expected, abs=1e-6)
    # The soft pixel's gradient is the Dice term's alone.
    logit = LOGIT.clone().requires_grad_(True)
    loss(logit, soft).backward()
    dice_only = LOGIT.clone().requires_grad_(True)
    p = torch.sigmoid(dice_only)
    dice = (2 * (soft * p).sum() + 1) / ((soft * soft).sum() + (p * p).sum() + 1)
    (-dice.log()).backward()
    assert logit.grad[..., 0, 1].item() == pytest.approx(dice_only.grad[..., 0, 1].item(), rel=1e-5)


def test_better_prediction_gives_lower_loss() -> None:
    target = torch.tensor([[[1, 0, 1, 0]]])  # (1, 1, 4)
    good = torch.tensor([[[3.0, -3.0, 3.0, -3.0]]])
    worse = torch.tensor([[[1.0, -1.0, 0.5, -0.5]]])
    wrong = -good
    for loss in (EnhancedMixingLoss(), EMLWithBCE(), EMLWithBCE(double_sigmoid=True)):
        assert loss(good, target) < loss(worse, target) < loss(wrong, target)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("double_sigmoid", [None, False, True])
def test_finite_value_and_gradient_for_extreme_logits(channels: int, double_sigmoid) -> None:
    # +-30 already rounds sigmoid to exactly 1.0 in float32, where Keras's log(1 - p) is -inf.
    base = torch.tensor([100.0, -100.0, 100.0, -100.0, 30.0, -30.0])
    logits = base.repeat(channels, 1)[None].requires_grad_(True)  # (1, C, 6)
    target = torch.tensor([[1, 0, 0, 1, 0, 1]])  # two right, four confidently wrong
    loss_fn = (
        EnhancedMixingLoss()
        if double_sigmoid is None
        else EMLWithBCE(double_sigmoid=double_sigmoid)
    )
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_confident_wrong_background_grows_with_the_logit_instead_of_inf() -> None:
    # One y = 0 pixel with logit x >> 17: log(1 - p) = -x, pt0^gamma = 1, so the focal term is
    # (1 - alpha) x / N (N = 1) plus the Dice term -log(1 / (1 + 1)) = ln 2.
    target = torch.zeros(1, 1, 1)
    for x in (20.0, 40.0):
        got = EnhancedMixingLoss()(torch.full((1, 1, 1), x), target).item()
        assert got == pytest.approx(0.52 * x + math.log(2), rel=1e-6)


def test_emlwithbce_is_eml_plus_bce_on_probabilities() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 5, 4) * 3
    target = torch.randint(0, 2, (2, 1, 5, 4)).float()
    eml = EnhancedMixingLoss()(logits, target)
    bce = F.binary_cross_entropy(torch.sigmoid(logits), target)
    torch.testing.assert_close(EMLWithBCE()(logits, target), eml + bce)
    torch.testing.assert_close(EMLWithBCE()(_two_channel(logits), target), eml + bce)


def test_double_sigmoid_equals_bce_with_logits_of_sigmoid() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 5, 4) * 3
    target = torch.randint(0, 2, (2, 1, 5, 4)).float()
    eml = EnhancedMixingLoss()(logits, target)
    reference = F.binary_cross_entropy_with_logits(torch.sigmoid(logits), target)
    torch.testing.assert_close(EMLWithBCE(double_sigmoid=True)(logits, target), eml + reference)
    # The second sigmoid squeezes the BCE into [ln(1 + e^-1), ln(1 + e)] = [0.3133, 1.3133].
    assert 0.31 < reference.item() < 1.32


def test_emlwithbce_forwards_eml_arguments() -> None:
    loss = EMLWithBCE(double_sigmoid=True, paper_parameters=True)
    assert (loss.alpha, loss.gamma, loss.double_sigmoid) == (1.1, 0.48, True)
    assert "double_sigmoid=True" in repr(loss)


def test_float32_under_bf16_autocast() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = EMLWithBCE()(logits.bfloat16(), target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, EMLWithBCE()(logits.bfloat16().float(), target))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.1}, r"alpha must be in \[0, 1\].*paper_parameters=True"),
        ({"gamma": -1.0}, r"gamma must be >= 0"),
        ({"smooth": 0.0}, r"smooth must be > 0"),
        ({"epsilon": 0.0}, r"epsilon must be in \(0, 1\)"),
        ({"paper_parameters": True, "alpha": 0.3}, r"Pass one or the other"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EnhancedMixingLoss(**kwargs)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"C == 2 .* found shape \(2, 3, 4, 4\)"):
        EnhancedMixingLoss()(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"found \(2, 1, 4, 5\)"):
        EMLWithBCE()(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
