"""DeepLabV3Plus: Chen et al., arXiv 1802.02611; docs/papers.md §6."""

import pytest
import torch

from networks.deeplabv3plus import DeepLabV3Plus

SMALL = {"backbone_depth": 18}  # same layout as R-101, fast enough for forward/backward
# ASPP 1×1 + 3 × 3×3 + pooling 1×1 + projection (15,535,104) and decoder 1×1 48 + 2 × 3×3 256
# (1,303,648), all with BN, on torchvision's resnet101 without fc (42,500,160); + classifier.
R101_HEADS = 15_535_104 + 1_303_648


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"in_channels": 3, "num_classes": 21}, 42_500_160 + R101_HEADS + 21 * 257),
        ({"in_channels": 3}, 42_500_160 + R101_HEADS + 257),
        ({}, 42_500_160 - 2 * 7 * 7 * 64 + R101_HEADS + 257),  # 1-channel 7×7 stem
    ],
)
def test_parameter_count_matches_resnet101_plus_the_heads(tester, kwargs, expected):
    with torch.device("meta"):
        net = DeepLabV3Plus(**kwargs)
    assert tester.count_parameters(net) == expected


@pytest.mark.parametrize("output_stride", [8, 16])
def test_forward_backward_for_odd_sizes(tester, output_stride):
    net = DeepLabV3Plus(output_stride=output_stride, **SMALL)
    tester.check_segmentation(net, (2, 1, 37, 45), num_classes=1)


def test_stack_of_slices_and_deep_stem(tester):
    net = DeepLabV3Plus(in_channels=4, num_classes=2, deep_stem=True, **SMALL)
    tester.check_segmentation(net, (2, 4, 48, 40), num_classes=2)


def test_forward_is_pure_in_eval_mode(tester):
    tester.check_pure(DeepLabV3Plus(**SMALL), (1, 1, 33, 29))


@pytest.mark.parametrize(
    ("output_stride", "aspp_rates", "expected"),
    [(16, (6, 12, 18), (6, 12, 18)), (8, (6, 12, 18), (12, 24, 36)), (8, (3, 5), (3, 5))],
)
def test_paper_rates_double_at_output_stride_8(output_stride, aspp_rates, expected):
    with torch.device("meta"):
        net = DeepLabV3Plus(output_stride=output_stride, aspp_rates=aspp_rates, **SMALL)
    assert net.aspp_rates == expected
    dilations = [branch[0].dilation[0] for branch in net.aspp.branches[1:-1]]
    assert tuple(dilations) == expected


def test_invalid_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="output_stride=32; expected 8 or 16"):
        DeepLabV3Plus(output_stride=32, **SMALL)
    with pytest.raises(ValueError, match="backbone_depth=152"):
        DeepLabV3Plus(backbone_depth=152)
    with pytest.raises(ValueError, match=r"aspp_rates=\(\)"):
        DeepLabV3Plus(aspp_rates=(), **SMALL)
    with pytest.raises(ValueError, match="final_dropout=1.0"):
        DeepLabV3Plus(final_dropout=1.0, **SMALL)
    with pytest.raises(ValueError, match=r"expects input \(B, 1, H, W\); got \(2, 3, 33, 33\)"):
        DeepLabV3Plus(**SMALL)(torch.zeros(2, 3, 33, 33))
