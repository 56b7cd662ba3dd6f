"""The guard against PyTorch's CPU bf16 3D convolution of depth-2 inputs, whose weight gradient
picks up memory the kernel never wrote (networks.blocks.CPUBf16SafeConv3d)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from networks.blocks import CPUBf16SafeConv3d, guard_cpu_bf16_conv3d
from networks.unet3d_omarov import OmarovUNet3D


def _dirty_allocator() -> None:
    """Hand the CPU allocator back buffers full of NaN, as a training process has them."""
    buffers = [
        torch.full((n,), float("nan"), dtype=dtype)
        for n in (3456, 6912, 20000, 50000)
        for dtype in (torch.float32, torch.bfloat16)
    ]
    del buffers


def test_depth_two_weight_gradients_stay_finite_under_cpu_bf16_autocast():
    # Unguarded, this shape gave non-finite weight gradients in 189 of 200 passes
    # (torch 2.13.0+cpu); the guard runs it in float32.
    torch.manual_seed(0)
    conv = guard_cpu_bf16_conv3d(nn.Conv3d(8, 16, 3, padding=1))
    for _ in range(30):
        _dirty_allocator()
        conv.zero_grad(set_to_none=True)
        x = torch.randn(2, 8, 2, 8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        assert out.dtype == torch.bfloat16  # what autocast gives the next layer
        out.float().backward(torch.randn_like(out.float()))
        assert torch.isfinite(conv.weight.grad).all()
        assert torch.isfinite(conv.bias.grad).all()


def test_the_guard_changes_nothing_else():
    torch.manual_seed(1)
    plain = nn.Conv3d(4, 6, 3, padding=1)
    guarded = guard_cpu_bf16_conv3d(nn.Conv3d(4, 6, 3, padding=1))
    guarded.load_state_dict(plain.state_dict())
    assert isinstance(guarded, CPUBf16SafeConv3d)
    assert guarded.state_dict().keys() == plain.state_dict().keys()
    for depth in (1, 2, 3, 5):
        x = torch.randn(1, 4, depth, 6, 6)
        assert torch.equal(guarded(x), plain(x))  # float32: the plain path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, expected = guarded(x), plain(x)
        if depth == 2:  # float32, cast to bf16: the float32 result rounded once
            assert torch.equal(got, F.conv3d(x, plain.weight, plain.bias, padding=1).bfloat16())
        else:
            assert torch.equal(got, expected)


def test_every_conv3d_of_a_3d_network_is_guarded_with_its_weights():
    net = OmarovUNet3D(in_channels=2, base_width=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    guard_cpu_bf16_conv3d(net)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is CPUBf16SafeConv3d for m in convs)
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_the_segmentation_modules_guard_their_networks():
    from lightning_modules import SegmentationModule, VolumeSegmentationModule
    from losses import SoftJaccardLoss
    from networks.dunet import DUNet

    for module_class, net in (
        (VolumeSegmentationModule, OmarovUNet3D(in_channels=2, base_width=2)),
        (SegmentationModule, DUNet()),  # its slice branch pools 4 slices to 2
    ):
        module = module_class(net=net, loss=SoftJaccardLoss())
        convs = [m for m in module.net.modules() if isinstance(m, nn.Conv3d)]
        assert convs and all(type(m) is CPUBf16SafeConv3d for m in convs)
