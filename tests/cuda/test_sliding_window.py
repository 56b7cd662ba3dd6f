"""The 3D module's sliding-window inference (MONAI's ``sliding_window_inference``, Gaussian
blending) gives on the device the probabilities it gives on the CPU."""

from __future__ import annotations

import pytest
import torch

from datamodules.geometry import VolumeGeometry
from lightning_modules import VolumeSegmentationModule
from losses import SoftJaccardLoss
from networks import OmarovUNet3D

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("depth", [5, 13], ids=["padded-to-the-window", "three-windows"])
def test_sliding_window_inference_on_the_device_matches_the_cpu(depth, device, monkeypatch):
    # float32 convolutions, not cuDNN's default TF32: this compares the windows, their Gaussian
    # weights, the blending and the mapping back to the native grid, not TF32's rounding
    # (tests/cuda/test_ensemble.py tolerates that).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    net = OmarovUNet3D(in_channels=5, base_width=2, dropout=0.0)
    module = VolumeSegmentationModule(net, SoftJaccardLoss(), overlap=0.5).eval()
    geometry = VolumeGeometry.create_volume((2, 0, 1), size=32, depth=8)  # windows of 8 slices
    image = torch.randn(depth, 5, 32, 32, generator=torch.Generator().manual_seed(1))
    case = {"image": image, "native_shape": (depth, 40, 36), "geometry": geometry,
            "spacing": torch.tensor([5.0, 1.0, 1.0], dtype=torch.float64),
            "case": "TRAINING/case_1"}  # fmt: skip
    with torch.no_grad():
        expected = module.predict_case(case).probability
        got = module.to(device).predict_case({**case, "image": image.to(device)}).probability
    assert got.device.type == device.type and got.shape == expected.shape == (depth, 40, 36)
    assert expected.std() > 1e-3  # a network that says something
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=0)
