"""kernel_l2: hand-computed penalty, only conv kernels counted, gradient 2λw, weight_decay = 2λ."""

import pytest
import torch
from torch import nn

from losses import kernel_l2


def _tiny_model() -> nn.Sequential:
    """Conv3d, InstanceNorm3d (affine), ConvTranspose3d, Linear; all weights set by hand."""
    conv = nn.Conv3d(1, 1, kernel_size=(1, 1, 2))  # kernel 2 weights
    norm = nn.InstanceNorm3d(1, affine=True)
    up = nn.ConvTranspose3d(1, 2, kernel_size=1)  # kernel (1, 2, 1, 1, 1)
    linear = nn.Linear(2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -2.0]).view(1, 1, 1, 1, 2))
        conv.bias.fill_(10.0)
        norm.weight.fill_(3.0)
        norm.bias.fill_(4.0)
        up.weight.copy_(torch.tensor([0.5, 3.0]).view(1, 2, 1, 1, 1))
        up.bias.fill_(-7.0)
        linear.weight.fill_(5.0)
        linear.bias.fill_(6.0)
    return nn.Sequential(conv, norm, up, nn.Flatten(), linear)


# Kernels only: 1² + (-2)² + 0.5² + 3² = 1 + 4 + 0.25 + 9 = 14.25.
# Not counted: conv/up biases (10, -7), norm affine (3, 4), linear weight and bias (5, 5, 6).
SUM_SQUARES = 14.25


def test_hand_computed_penalty_counts_only_conv_kernels() -> None:
    model = _tiny_model()
    assert kernel_l2(model).item() == pytest.approx(1e-3 * SUM_SQUARES, rel=1e-6)
    assert kernel_l2(model, weight=0.1).item() == pytest.approx(0.1 * SUM_SQUARES, rel=1e-6)
    assert kernel_l2(model, weight=0.0).item() == 0.0


def test_gradient_is_two_lambda_w_and_zero_elsewhere() -> None:
    model = _tiny_model()
    lam = 1e-3
    kernel_l2(model, weight=lam).backward()
    conv, norm, up, _, linear = model
    torch.testing.assert_close(conv.weight.grad, 2 * lam * conv.weight.detach())
    torch.testing.assert_close(up.weight.grad, 2 * lam * up.weight.detach())
    untouched = [conv.bias, up.bias, norm.weight, norm.bias, linear.weight, linear.bias]
    assert all(p.grad is None for p in untouched)


def test_shared_kernel_counted_once_and_2d_layers_counted() -> None:
    conv = nn.Conv2d(1, 1, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0)
    model = nn.Sequential(conv, conv)  # the same layer twice
    assert kernel_l2(model, weight=1.0).item() == pytest.approx(4.0)


def test_no_convolution_gives_zero() -> None:
    loss = kernel_l2(nn.Sequential(nn.Linear(3, 2), nn.InstanceNorm3d(2, affine=True)))
    assert loss.item() == 0.0 and loss.ndim == 0


def test_coupled_weight_decay_of_two_lambda_on_kernels_gives_the_same_adam_steps() -> None:
    torch.manual_seed(0)
    lam = 1e-3
    model_a = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.InstanceNorm3d(3, affine=True))
    model_b = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.InstanceNorm3d(3, affine=True))
    model_b.load_state_dict(model_a.state_dict())
    x = torch.randn(2, 2, 4, 4, 4)
    opt_a = torch.optim.Adam(model_a.parameters(), lr=2e-4)
    kernel = model_b[0].weight
    rest = [p for p in model_b.parameters() if p is not kernel]
    opt_b = torch.optim.Adam(
        [{"params": [kernel], "weight_decay": 2 * lam}, {"params": rest}], lr=2e-4
    )
    for _ in range(3):
        opt_a.zero_grad()
        (model_a(x).square().mean() + kernel_l2(model_a, weight=lam)).backward()
        opt_a.step()
        opt_b.zero_grad()
        model_b(x).square().mean().backward()
        opt_b.step()
    for p_a, p_b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(p_a, p_b)


def test_negative_weight_rejected() -> None:
    with pytest.raises(ValueError, match="weight must be >= 0"):
        kernel_l2(nn.Conv3d(1, 1, 1), weight=-1e-3)
