"""SegNetDUNet: the simplified SegNet of D-UNet's code (arXiv 1908.05104); docs/papers.md §2."""

import pytest
import torch
from torch import nn

from networks.segnet import SegNetDUNet


def test_parameter_count_matches_the_keras_code(tester):
    net = SegNetDUNet()
    running = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in net.modules()
        if isinstance(m, nn.BatchNorm2d)
    )
    assert tester.count_parameters(net) == 10_183_937
    assert tester.count_parameters(net) + running == 10_189_825  # Keras total, docs/papers.md §2


def test_forward_backward(tester):
    tester.check_segmentation(SegNetDUNet(), (2, 1, 64, 32), num_classes=1)


def test_decoder_has_no_relu():
    assert not any(isinstance(m, nn.ReLU) for m in SegNetDUNet().decoder.modules())


def test_forward_is_pure_in_eval_mode(tester):
    tester.check_pure(SegNetDUNet(in_channels=2), (1, 2, 32, 32))


def test_invalid_inputs_are_reported():
    with pytest.raises(ValueError, match="divisible by 32.*H=48, W=32"):
        SegNetDUNet()(torch.zeros(1, 1, 48, 32))
    with pytest.raises(ValueError, match=r"expects input \(B, 1, H, W\)"):
        SegNetDUNet()(torch.zeros(1, 3, 32, 32))
