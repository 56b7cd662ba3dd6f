"""The batched random affine resamples a batch on the device as it does on the CPU, from the
same seeds (tests/datamodules/test_batched_augmentation.py pins the CPU to MONAI's path)."""

from __future__ import annotations

import pytest
import torch

from datamodules.batched_augmentation import BatchedAffine
from datamodules.transforms import Augmentation

pytestmark = pytest.mark.cuda

SEEDS = [3, 17, 256, 9001, 42, 7]


def _batch(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images (interpolation differences stay small) and a lesion label."""
    image = torch.randn(len(SEEDS), 4, *shape, generator=torch.Generator().manual_seed(0))
    image = torch.nn.functional.avg_pool2d(image.flatten(0, -3)[:, None], 3, 1, 1).reshape(
        image.shape
    )
    return image, (image[:, :1] > 0.3).to(torch.uint8)


@pytest.mark.parametrize(
    "augmentation",
    [
        Augmentation(),  # seed 003: random order, left-right flips
        Augmentation(20.0, 0.1, (0.8, 1.2), (1,), random_order=False),  # D-UNet's Keras order
    ],
    ids=["random-order", "keras-order"],
)
@pytest.mark.parametrize("shape", [(48, 40), (6, 24, 32)], ids=["slices", "volumes"])
def test_the_device_resamples_the_batch_as_the_cpu(augmentation, shape, device):
    image, label = _batch(shape)
    cpu_image, cpu_label = BatchedAffine(augmentation)(image, label, SEEDS)
    got_image, got_label = BatchedAffine(augmentation)(image.to(device), label.to(device), SEEDS)
    assert got_image.device.type == got_label.device.type == device.type
    assert got_image.dtype == torch.float32 and got_label.dtype == torch.uint8
    # The grids agree to float32 rounding (a few 1e-6 pixel), so bilinear values to ~1e-5.
    torch.testing.assert_close(got_image.cpu(), cpu_image, atol=1e-4, rtol=1e-4)
    # Nearest neighbour: a sampling point that lies on the boundary between two source voxels
    # may round either way; a handful along the label's edges, never inside it.
    differ = int((got_label.cpu() != cpu_label).sum())
    print(f"{differ} of {label.numel()} label voxels differ")
    assert differ <= max(2, label.numel() // 2000), differ
