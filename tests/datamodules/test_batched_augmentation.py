"""The batched random affine equals the per-sample MONAI path on the same seeds."""

from __future__ import annotations

import pytest
import torch

from datamodules.batched_augmentation import BatchedAffine
from datamodules.datasets import augment
from datamodules.transforms import Augmentation

SEEDS = [3, 17, 256, 9001, 42, 7]


def _batch(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(len(SEEDS), 4, *shape, generator=generator)
    image = torch.nn.functional.avg_pool2d(image.flatten(0, -3)[:, None], 3, 1, 1).reshape(
        image.shape
    )  # smooth, so interpolation differences stay small
    label = (image[:, :1] > 0.3).to(torch.uint8)
    return image, label


def _per_sample(augmentation, image, label):
    transform = augmentation.transform()
    samples = [
        augment({"image": i, "label": m}, transform, seed)
        for i, m, seed in zip(image, label, SEEDS)
    ]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])


@pytest.mark.parametrize(
    "augmentation",
    [
        Augmentation(),  # seed 003: random order, left-right flips
        Augmentation(20.0, 0.1, (0.8, 1.2), (1,), random_order=False),  # D-UNet's Keras order
        Augmentation(10.0, 0.1, (0.9, 1.1), (0, 1)),  # sagittal and coronal flips
    ],
)
@pytest.mark.parametrize("shape", [(48, 40), (6, 24, 32)], ids=["slices", "volumes"])
def test_the_batch_equals_each_sample_resampled_alone(augmentation, shape):
    image, label = _batch(shape)
    expected_image, expected_label = _per_sample(augmentation, image, label)
    got_image, got_label = BatchedAffine(augmentation)(image, label, SEEDS)
    assert got_image.dtype == torch.float32 and got_label.dtype == torch.uint8
    assert got_image.shape == image.shape and got_label.shape == label.shape
    torch.testing.assert_close(got_image, expected_image, atol=1e-4, rtol=1e-4)
    # Nearest neighbour: a voxel whose sampling point lies on a boundary between two source
    # voxels may round either way; allow a handful along label edges, never inside.
    differ = (got_label != expected_label).sum().item()
    assert differ <= max(2, label.numel() // 2000), differ


def test_the_draw_depends_on_the_seed_only():
    augmentation = Augmentation()
    batched = BatchedAffine(augmentation)
    first = batched.matrices([5, 6], 32, 32)
    batched.matrices([99], 32, 32)
    again = batched.matrices([5, 6], 32, 32)
    assert (first == again).all() and not (first[0] == first[1]).all()


def test_identity_matrices_leave_the_batch_unchanged():
    augmentation = Augmentation(0.0, 0.0, (1.0, 1.0), ())
    image, label = _batch((20, 28))
    got_image, got_label = BatchedAffine(augmentation)(image, label, SEEDS)
    torch.testing.assert_close(got_image, image, atol=1e-5, rtol=0)
    assert torch.equal(got_label, label)


def test_reseeding_in_place_draws_monais_stream_and_leaves_the_class_generator():
    from monai.transforms import Randomizable

    shared = Randomizable.R.get_state()[1].copy()
    ours, monai = Augmentation().transform(), Augmentation().transform()
    for seed in (0, 5, 2**32 - 1, 2**40 + 3):  # MONAI takes seeds modulo 2³²
        ours.set_random_state(seed=seed)
        Randomizable.set_random_state(monai, seed=seed)  # MONAI's own: a new RandomState
        assert (ours.draw_in_plane((32, 32)) == monai.draw_in_plane((32, 32))).all()
    assert (Randomizable.R.get_state()[1] == shared).all()
    assert ours.R is not Augmentation().transform().R  # each transform its own generator


def _drawn_with_numpy(augmentation: Augmentation, seed: int, size: tuple[int, int]):
    """The paper's draw written plainly: RandomState's uniform and random one at a time,
    each operation a 3×3 NumPy matrix, composed in the drawn order."""
    import numpy as np

    draw, (height, width) = np.random.RandomState(seed), size
    rotate, translate = np.deg2rad(augmentation.rotate_degrees), augmentation.translate_fraction
    angle = draw.uniform(-rotate, rotate)
    cos, sin = np.cos(angle), np.sin(angle)
    shift = [draw.uniform(-translate, translate) * side for side in (height, width)]
    zoom = 1.0 / draw.uniform(*augmentation.scale_range)
    flip = [
        -1.0 if axis in augmentation.flip_axes and draw.random() < 0.5 else 1.0 for axis in (0, 1)
    ]
    operations = [
        np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]),
        np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]]),
        np.diag([zoom, zoom, 1.0]),
        np.diag([*flip, 1.0]),
    ]
    order = draw.permutation(4) if augmentation.random_order else range(4)
    matrix = np.eye(3)
    for index in order:
        matrix = operations[index] @ matrix
    return matrix


@pytest.mark.parametrize(
    "augmentation",
    [
        Augmentation(),
        Augmentation(20.0, 0.1, (0.8, 1.2), (1,), random_order=False),
        Augmentation(10.0, 0.1, (0.9, 1.1), (0, 1)),
        Augmentation(30.0, 0.2, (0.8, 1.25), ()),
    ],
)
def test_the_drawn_matrices_are_the_papers_draw_composed_in_the_drawn_order(augmentation):
    """The draw takes the uniform doubles in one call and composes on Python floats; the
    matrices are those of one RandomState call per value and NumPy products (to rounding in
    the products: ≤ 2 ulp of the shifts), so the random stream and the composition order are
    the paper's."""
    transform = augmentation.transform()
    for seed in range(300):
        transform.set_random_state(seed=seed)
        got = transform.draw_in_plane((64, 57))
        expected = _drawn_with_numpy(augmentation, seed, (64, 57))
        assert abs(got - expected).max() <= 1e-13, seed
