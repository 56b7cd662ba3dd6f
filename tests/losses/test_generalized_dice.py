"""Seed 002's SegLoss = weighted CE − log(generalised Dice coefficient), against numpy by hand."""

import numpy as np
import pytest
import torch

from losses import CEGeneralizedDiceLoss


def _by_hand(logits: torch.Tensor, target: torch.Tensor, lesion_weight: float) -> float:
    p = torch.softmax(logits.double(), dim=1).numpy()  # (B, 2, H, W)
    y = target[:, 0].numpy().astype(int)  # (B, H, W)
    r = np.stack([1 - y, y], axis=1)  # one-hot reference
    # Sudre et al.: w_l = 1 / (Σ_i r_li)², sums over the batch; an absent class gets the
    # largest finite weight (MONAI's rule), smoothing 1e-5 above and below.
    volumes = r.sum(axis=(0, 2, 3)).astype(float)
    w = np.where(volumes > 0, 1.0 / np.maximum(volumes, 1e-12) ** 2, 0.0)
    w[volumes == 0] = w.max()
    gd = (2 * (w * (r * p).sum(axis=(0, 2, 3))).sum() + 1e-5) / (
        (w * (r + p).sum(axis=(0, 2, 3))).sum() + 1e-5
    )
    pixel_weight = np.where(y == 1, lesion_weight, 1.0)
    log_p = np.log(np.take_along_axis(p, y[:, None], axis=1))[:, 0]
    cross_entropy = -(pixel_weight * log_p).sum() / pixel_weight.sum()
    return float(cross_entropy - np.log(gd))


@pytest.mark.parametrize("lesion_weight", [1.0, 3.0, 10.0])
def test_matches_a_hand_computation(lesion_weight):
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 6, 5)
    target = (torch.rand(2, 1, 6, 5) > 0.7).float()
    loss = CEGeneralizedDiceLoss(lesion_weight=lesion_weight)(logits, target)
    assert float(loss) == pytest.approx(_by_hand(logits, target, lesion_weight), rel=1e-5)


def test_a_batch_without_lesion_and_a_perfect_prediction():
    logits = torch.randn(1, 2, 4, 4)
    empty = torch.zeros(1, 1, 4, 4)
    assert float(CEGeneralizedDiceLoss()(logits, empty)) == pytest.approx(
        _by_hand(logits, empty, 10.0), rel=1e-5
    )
    target = torch.zeros(1, 1, 4, 4)
    target[..., 1:3, 1:3] = 1
    perfect = torch.cat([(1 - target) * 30, target * 30], dim=1)
    assert float(CEGeneralizedDiceLoss()(perfect, target)) == pytest.approx(0.0, abs=1e-5)


def test_one_lesion_logit_is_the_pair_zero_and_it():
    torch.manual_seed(1)
    logit = torch.randn(2, 1, 5, 5)
    target = (torch.rand(2, 1, 5, 5) > 0.6).float()
    pair = torch.cat([torch.zeros_like(logit), logit], dim=1)
    loss = CEGeneralizedDiceLoss()
    assert float(loss(logit, target)) == pytest.approx(float(loss(pair, target)), rel=1e-6)
    with pytest.raises(ValueError, match=r"expects logits \(B, 2"):
        loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="lesion_weight must be > 0"):
        CEGeneralizedDiceLoss(lesion_weight=0.0)
