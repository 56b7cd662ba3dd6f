"""VolumeSegmentationModule: whole-case 3D inference mapped back exactly, and the L2 term."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from core.errors import ConfigurationError
from datamodules.geometry import VolumeGeometry
from lightning_modules import SegmentationModule, VolumeSegmentationModule
from losses import SoftJaccardLoss
from losses.regularization import kernel_l2
from networks import OmarovUNet3D


class FirstChannel(nn.Module):
    """A pointwise 3D "network": the logit is 3 × input channel 0 (exact under any windowing)."""

    def __init__(self, channels: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, 1, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 3.0
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 5
        return self.conv(x)


def _case(image: torch.Tensor, geometry: VolumeGeometry, native_hw: tuple[int, int]) -> dict:
    return {
        "image": image,  # (D, C, h, w) network-grid slices
        "native_shape": (image.shape[0], *native_hw),
        "geometry": geometry,
        "spacing": torch.tensor([5.0, 1.0, 1.0], dtype=torch.float64),  # mm along (D, H, W)
        "case": "TRAINING/case_1",
    }


def _module(net: nn.Module, **kwargs) -> VolumeSegmentationModule:
    return VolumeSegmentationModule(net, SoftJaccardLoss(), **kwargs)


@pytest.mark.parametrize("depth", [3, 8, 13])
def test_a_case_comes_back_on_its_native_slices_padded_or_windowed(depth):
    geometry = VolumeGeometry.create_volume((2, 0, 1), depth=8)
    image = torch.randn(depth, 5, 12, 10)
    module = _module(FirstChannel()).eval()
    with torch.no_grad():
        probability = module.predict_case(_case(image, geometry, (12, 10))).probability
    assert probability.shape == (depth, 12, 10)
    # Padding cut off exactly; deeper cases: Gaussian-blended windows of a pointwise net.
    torch.testing.assert_close(probability, torch.sigmoid(3 * image[:, 0]), atol=1e-5, rtol=0)


def test_native_depth_and_a_resized_grid_go_back_through_the_geometry():
    geometry = VolumeGeometry.create_volume((2, 0, 1), size=(8, 6), depth=None)
    image = torch.randn(5, 5, 8, 6)
    module = _module(FirstChannel()).eval()
    with torch.no_grad():
        probability = module.predict_case(_case(image, geometry, (16, 12))).probability
    expected = geometry.to_native(torch.sigmoid(3 * image[:, 0]), (16, 12))
    assert probability.shape == (5, 16, 12)
    torch.testing.assert_close(probability, expected, atol=1e-5, rtol=0)


def test_a_real_network_predicts_a_shallow_case_in_one_forward(monkeypatch):
    net = OmarovUNet3D(base_width=2, dropout=0.0)
    geometry = VolumeGeometry.create_volume((2, 0, 1), depth=16)
    module = _module(net).eval()
    calls = []
    original = net.forward
    monkeypatch.setattr(net, "forward", lambda x: calls.append(x.shape) or original(x))
    image = torch.randn(5, 5, 32, 32)
    with torch.no_grad():
        probability = module.predict_case(_case(image, geometry, (32, 32))).probability
        padded = geometry.pad_depth(image.permute(1, 0, 2, 3))[None]
        direct = torch.sigmoid(original(padded))[0, 0]
    assert calls == [torch.Size([1, 5, 16, 32, 32])]
    torch.testing.assert_close(probability, geometry.crop_depth(direct, 5), atol=1e-5, rtol=0)


def test_the_kernel_l2_term_joins_the_training_loss():
    net = OmarovUNet3D(base_width=2, dropout=0.0)
    module = _module(net, kernel_l2=1e-3)
    batch = {
        "image": torch.randn(2, 5, 16, 32, 32),
        "label": (torch.rand(2, 1, 16, 32, 32) > 0.8).to(torch.uint8),
    }
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        loss = module.training_step(batch, 0)
    torch.manual_seed(0)
    jaccard = SoftJaccardLoss()(net(batch["image"]), batch["label"].float())
    squares = sum(float(m.weight.square().sum()) for m in net.modules() if isinstance(m, nn.Conv3d))
    assert float(loss) == pytest.approx(float(jaccard) + 1e-3 * squares, rel=1e-5)
    assert float(kernel_l2(net, 1e-3)) == pytest.approx(1e-3 * squares, rel=1e-6)
    with pytest.raises(ConfigurationError, match="kernel_l2 must be"):
        _module(net, kernel_l2=-1.0)


def test_modules_refuse_data_of_the_other_dimensionality():
    flat = type("DM", (), {"spatial_dims": 2, "network_size": None})()
    volume = type("DM", (), {"spatial_dims": 3, "network_size": None})()
    _module(FirstChannel()).check_data(volume)
    with pytest.raises(ConfigurationError, match="spatial_dims: 3"):
        _module(FirstChannel()).check_data(flat)
    two_d = SegmentationModule(nn.Conv2d(5, 1, 1), SoftJaccardLoss())
    two_d.check_data(flat)
    with pytest.raises(ConfigurationError, match="VolumeSegmentationModule"):
        two_d.check_data(volume)
