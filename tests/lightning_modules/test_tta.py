"""Mirroring TTA: the identity is no TTA, an equivariant network is unchanged, and a case's
probability is the mean of the flipped-back passes (2D slices, 3D volumes, the GAN's S(G(x)))."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datamodules.geometry import SliceGeometry, VolumeGeometry
from lightning_modules import CTPToDWIGAN, SegmentationModule, VolumeSegmentationModule
from lightning_modules.tta import IDENTITY, flip_average, mirror_flips
from losses import SoftJaccardLoss


def _case(image: torch.Tensor, geometry: object) -> dict:
    return {
        "image": image,  # (N, C, h, w) network-grid slices
        "native_shape": (image.shape[0], *image.shape[-2:]),
        "geometry": geometry,
        "spacing": torch.tensor([5.0, 1.0, 1.0], dtype=torch.float64),
        "case": "TRAINING/case_1",
    }


def _conv(spatial_dims: int, kernel_size: int, channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
    return conv(channels, 2, kernel_size, padding=kernel_size // 2)


def _predict(module: SegmentationModule, case: dict) -> torch.Tensor:
    with torch.no_grad():
        return module.eval().predict_case(case).probability


def test_the_flip_sets_are_every_mirroring_the_identity_first():
    assert mirror_flips(2) == ((), (-2,), (-1,), (-2, -1))
    assert len(mirror_flips(3)) == len(set(mirror_flips(3))) == 8
    assert mirror_flips(3)[0] == () and (-3, -2, -1) in mirror_flips(3)
    assert SegmentationModule(_conv(2, 1), SoftJaccardLoss()).tta_flips == IDENTITY
    assert SegmentationModule(_conv(2, 1), SoftJaccardLoss(), tta=True).tta_flips == mirror_flips(2)
    volume = VolumeSegmentationModule(_conv(3, 1), SoftJaccardLoss(), tta=True)
    assert volume.tta_flips == mirror_flips(3)


def test_the_identity_flip_alone_is_no_tta_exactly():
    image = torch.randn(5, 3, 12, 10)
    case = _case(image, SliceGeometry.create((2, 0, 1)))
    plain = SegmentationModule(_conv(2, 3), SoftJaccardLoss())
    identity = SegmentationModule(_conv(2, 3), SoftJaccardLoss(), tta=True)
    identity.tta_flips = IDENTITY
    assert torch.equal(_predict(identity, case), _predict(plain, case))
    fn = torch.nn.Sigmoid()
    assert torch.equal(flip_average(fn, image, IDENTITY), fn(image))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_an_equivariant_network_is_unchanged_and_a_3x3_one_is_not(spatial_dims):
    module = (SegmentationModule, VolumeSegmentationModule)[spatial_dims - 2]
    geometry = (
        SliceGeometry.create((2, 0, 1))
        if spatial_dims == 2
        else VolumeGeometry.create_volume((2, 0, 1), depth=8)
    )
    case = _case(torch.randn(6, 3, 12, 10), geometry)
    for kernel_size, same in ((1, True), (3, False)):
        plain = _predict(module(_conv(spatial_dims, kernel_size), SoftJaccardLoss()), case)
        tta = _predict(module(_conv(spatial_dims, kernel_size), SoftJaccardLoss(), tta=True), case)
        assert torch.allclose(tta, plain, atol=1e-6) is same, kernel_size


def test_a_slice_case_is_the_mean_of_its_four_flipped_back_passes():
    image = torch.randn(5, 3, 12, 10)
    geometry = SliceGeometry.create((2, 0, 1), size=(8, 6))  # resized: flips on the network grid
    case = _case(image, geometry) | {"native_shape": (5, 16, 12)}
    module = SegmentationModule(_conv(2, 3), SoftJaccardLoss(), tta=True, slice_batch=2).eval()
    with torch.no_grad():
        passes = [
            module.lesion_probability(image),
            module.lesion_probability(image.flip(-2)).flip(-2),
            module.lesion_probability(image.flip(-1)).flip(-1),
            module.lesion_probability(image.flip(-2, -1)).flip(-2, -1),
        ]
    expected = geometry.to_native(torch.stack(passes).mean(0), (16, 12))
    torch.testing.assert_close(_predict(module, case), expected, atol=1e-6, rtol=0)


def test_a_volume_is_the_mean_of_its_eight_flipped_back_passes():
    image = torch.randn(6, 3, 12, 10)  # (D, C, h, w), shallower than the window: one window
    geometry = VolumeGeometry.create_volume((2, 0, 1), depth=8)
    module = VolumeSegmentationModule(_conv(3, 3), SoftJaccardLoss(), tta=True).eval()
    volume = geometry.pad_depth(geometry.volume(image))[None]  # (1, C, 8, h, w)
    with torch.no_grad():
        passes = [module.lesion_probability(volume.flip(f)).flip(f) for f in mirror_flips(3)]
    expected = geometry.crop_depth(torch.stack(passes).mean(0)[0], 6)
    torch.testing.assert_close(
        _predict(module, _case(image, geometry)), expected, atol=1e-6, rtol=0
    )


def test_the_gan_averages_its_segmentation_and_keeps_the_unflipped_synthetic_dwi():
    torch.manual_seed(0)
    gan = CTPToDWIGAN(
        nn.Conv2d(5, 1, 3, padding=1),
        nn.Conv2d(1, 2, 3, padding=1),
        nn.Flatten(),  # D plays no part in prediction
        SoftJaccardLoss(),
        tta=True,
    ).eval()
    image = torch.randn(3, 5, 12, 10)
    with torch.no_grad():
        prediction = gan.predict_case(_case(image, SliceGeometry.create((2, 0, 1))))
        passes = [gan.lesion_probability(image.flip(f)).flip(f) for f in mirror_flips(2)]
        fake = gan.generator(image)
    torch.testing.assert_close(
        prediction.probability, torch.stack(passes).mean(0), atol=1e-6, rtol=0
    )
    assert torch.equal(prediction.images["dwi"], fake)
