"""VCANet: Li, arXiv 2105.06544, reference DarkoBomer/VCA-Net@1c76deb; docs/papers.md §1."""

import pytest
import torch
from torch import nn

from networks.vcanet import VCANet

# docs/papers.md §1, "Parameter count": measured on the reference model.py, VCANet(1, 1).
BREAKDOWN = {
    "v1": 1_608_696,
    "v2": 443_504,
    "v4": 6_300_672,
    "it": 82_852_864,  # includes the unused norm_v12 (2,048)
    "up1": 14_157_312,
    "upconv1": 11_798_016,
    "up2": 1_180_416,
    "upconv2": 1_770_240,
    "up3": 295_296,
    "upconv3": 442_752,
    "up4": 73_920,
    "upconv4": 73_920,
    "outconv": 65,
}
INPUT_SHAPE = (2, 1, 32, 32)  # the smallest multiple of 16 with a 2 × 2 bottleneck


def _on_meta(**kwargs) -> VCANet:
    """A VCANet without storage: counting 121 M parameters needs no memory or init time."""
    with torch.device("meta"):
        return VCANet(**kwargs)


@pytest.mark.parametrize(
    ("keep_unused_bn", "expected"), [(True, 120_997_673), (False, 120_995_625)]
)
def test_parameter_count_matches_the_reference(tester, keep_unused_bn, expected):
    assert tester.count_parameters(_on_meta(keep_unused_bn=keep_unused_bn)) == expected


def test_per_module_breakdown_and_buffers_match_the_reference(tester):
    net = _on_meta()
    counts = {name: tester.count_parameters(module) for name, module in net.named_children()}
    assert counts == BREAKDOWN
    batch_norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batch_norms) == 36
    running = sum(b.numel() for k, b in net.named_buffers() if "running" in k)
    assert running == 25_072
    assert tester.count_parameters(net.it.norm_v12) == 2_048


def test_forward_backward(tester):
    tester.check_segmentation(VCANet(keep_unused_bn=False), INPUT_SHAPE, num_classes=1)


def test_unused_batch_norm_is_never_called():
    net = VCANet()
    net.it.norm_v12.register_forward_hook(lambda *_: pytest.fail("norm_v12 was called"))
    net(torch.randn(INPUT_SHAPE)).square().mean().backward()
    no_grad = [name for name, p in net.named_parameters() if p.grad is None]
    assert no_grad == ["it.norm_v12.weight", "it.norm_v12.bias"]


def test_forward_is_pure_in_eval_mode(tester):
    tester.check_pure(VCANet(in_channels=2, num_classes=3), (1, 2, 32, 16))


def test_negative_slope_reaches_every_activation():
    slopes = {
        m.negative_slope
        for m in _on_meta(negative_slope=0.2).modules()
        if isinstance(m, nn.LeakyReLU)
    }
    assert slopes == {0.2}


def test_base_width_16_quarters_every_width_of_the_reference(tester):
    reference, narrow = _on_meta(), _on_meta(base_width=16)
    assert tester.count_parameters(narrow) == 7_569_527
    ref_layers = {n: m for n, m in reference.named_modules() if isinstance(m, nn.Conv2d)}
    narrow_layers = {n: m for n, m in narrow.named_modules() if isinstance(m, nn.Conv2d)}
    assert narrow_layers.keys() == ref_layers.keys()  # the same layout, layer for layer
    for name, ref in ref_layers.items():
        conv = narrow_layers[name]
        expected_in = 1 if name == "v1.conv1.0" else ref.in_channels // 4
        expected_out = 1 if name == "outconv" else ref.out_channels // 4
        assert (conv.in_channels, conv.out_channels) == (expected_in, expected_out), name
        assert (conv.kernel_size, conv.stride, conv.dilation) == (
            ref.kernel_size,
            ref.stride,
            ref.dilation,
        ), name
    assert narrow.it.norm_v12.num_features == 256


def test_narrow_demo_width_trains_and_keeps_the_output_shape(tester):
    # vcanet_demo.yaml's widths: the reference's / 8, rounded (InceptionE's 52 -> 6); without
    # the unused BatchNorm, which gets no gradient, 1,893,205 - 2 * 128 parameters.
    net = VCANet(base_width=8, keep_unused_bn=False)
    assert tester.count_parameters(net) == 1_892_949
    assert net.v1.inception.out_channels == 4 + 2 * 6 + 2 * 6 + 2
    assert net.it.out_channels == 384
    (logits,) = tester.check_segmentation(net, INPUT_SHAPE, num_classes=1)
    assert logits.shape == (2, 1, 32, 32)


def test_invalid_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="in_channels ≥ 1"):
        VCANet(in_channels=0)
    with pytest.raises(ValueError, match="base_width=0; expected ≥ 1"):
        VCANet(base_width=0)
    net = _on_meta()  # the input is checked before any weight is touched
    with pytest.raises(ValueError, match=r"divisible by 16; got \(1, 1, 224, 190\)"):
        net(torch.zeros(1, 1, 224, 190))
    with pytest.raises(ValueError, match=r"expects input \(B, 1, H, W\).*got \(1, 3, 32, 32\)"):
        net(torch.zeros(1, 3, 32, 32))
