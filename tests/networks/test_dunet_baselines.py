"""U-Net baselines of D-UNet (arXiv 1908.05104); counts in docs/papers.md §2 and test_dunet.py."""

import pytest
import torch

from networks.dunet_baselines import UNet3DTransform, UNetOriginal, UNetTransform

CASES = [  # (factory, input shape); factories keep the 31M-parameter nets out of collection
    (lambda: UNetTransform(), (2, 1, 32, 32)),
    (lambda: UNetTransform(in_channels=4), (2, 4, 48, 32)),
    (lambda: UNetOriginal(), (2, 1, 32, 48)),
    (lambda: UNet3DTransform(), (2, 4, 32, 32)),
]
IDS = ["transform", "transform-4ch", "original", "3d-transform"]


@pytest.mark.parametrize(("factory", "input_shape"), CASES, ids=IDS)
def test_forward_backward(tester, factory, input_shape):
    tester.check_segmentation(factory(), input_shape, num_classes=1)


@pytest.mark.parametrize(("factory", "input_shape"), CASES, ids=IDS)
def test_forward_is_pure_in_eval_mode(tester, factory, input_shape):
    tester.check_pure(factory(), (1, input_shape[1], 16, 16))


def test_3d_unet_never_pools_the_slice_axis():
    net = UNet3DTransform(in_slices=3)
    depths = []
    net.enc5.register_forward_hook(lambda module, args, out: depths.append(out.shape[2]))
    net.eval()(torch.randn(1, 3, 32, 32))
    assert depths == [3]


def test_invalid_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="dropout"):
        UNetOriginal(dropout=1.0)
    with pytest.raises(ValueError, match="in_slices ≥ 1"):
        UNet3DTransform(in_slices=0)
    with pytest.raises(ValueError, match=r"UNetTransform expects input \(B, 1, H, W\)"):
        UNetTransform()(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="UNet3DTransform needs H and W divisible by 16"):
        UNet3DTransform()(torch.zeros(1, 4, 32, 24))
