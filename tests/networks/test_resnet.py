"""DilatedResNet: He et al., arXiv 1512.03385; dilation as in PSPNet, arXiv 1612.01105."""

import pytest
import torch

from networks import DilatedResNet


@pytest.mark.parametrize(
    ("depth", "expected"),
    # torchvision's resnet18/resnet50 without the 1000-class fc (11,689,512 and 25,557,032).
    [(18, 11_176_512), (50, 23_508_032)],
)
def test_classic_stem_matches_the_imagenet_resnet(tester, depth, expected):
    assert tester.count_parameters(DilatedResNet(depth, deep_stem=False)) == expected


@pytest.mark.parametrize(
    ("deep_stem", "output_stride", "layer3_size", "layer4_size"),
    # ⌈65/s⌉ × ⌈49/s⌉ for the stride s of each stage
    [
        (True, 8, (9, 7), (9, 7)),
        (False, 8, (9, 7), (9, 7)),
        (True, 16, (5, 4), (5, 4)),
        (True, 32, (5, 4), (3, 2)),
    ],
)
def test_output_stride_sets_the_feature_sizes(
    tester, deep_stem, output_stride, layer3_size, layer4_size
):
    net = DilatedResNet(18, deep_stem=deep_stem, output_stride=output_stride)
    x3, x4 = tester.forward_backward(net, torch.randn(2, 3, 65, 49))
    assert x3.shape == (2, 256, *layer3_size)
    assert x4.shape == (2, 512, *layer4_size)


@pytest.mark.parametrize(("depth", "out_channels"), [(34, (256, 512)), (101, (1024, 2048))])
def test_out_channels(depth, out_channels):
    net = DilatedResNet(depth)
    assert net.out_channels == out_channels
    assert net.layer0[6].out_channels == 128  # deep stem: layer1 starts from 128 channels


def test_bottleneck_forward_and_3d(tester):
    x3, x4 = tester.forward_backward(DilatedResNet(50, in_channels=5), torch.randn(2, 5, 17, 17))
    assert (x3.shape, x4.shape) == ((2, 1024, 3, 3), (2, 2048, 3, 3))
    x3, x4 = tester.forward_backward(
        DilatedResNet(18, spatial_dims=3), torch.randn(2, 3, 9, 16, 17)
    )
    assert x4.shape == (2, 512, 2, 2, 3)


def test_invalid_arguments_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"depth=20; expected one of \[18, 34, 50, 101, 152\]"):
        DilatedResNet(20)
    with pytest.raises(ValueError, match=r"output_stride=4; expected one of \[8, 16, 32\]"):
        DilatedResNet(18, output_stride=4)
