"""MONAI augmentation pipelines for 2D slice training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import Compose, RandAffined, RandFlipd, RandomOrder, RandRotated, RandZoomd

KEYS = ("image", "label")
MODES = ("bilinear", "nearest")  # labels are resampled with nearest neighbour, staying binary


def slice_augmentation(
    spatial_size: Sequence[int],
    rotate_degrees: float = 10.0,
    translate_fraction: float = 0.1,
    scale_range: tuple[float, float] = (0.9, 1.1),
    flip_axes: Sequence[int] = (0,),
) -> Compose:
    """Seed 003's augmentation (arXiv:1811.01085 §4.1), applied in a random order per sample.

    Rotation uniform in ±``rotate_degrees``, translation uniform in ±``translate_fraction`` of
    the image size, isotropic scale uniform in ``scale_range``, and a flip with probability 0.5
    along each of ``flip_axes``. The paper samples every operation uniformly and shuffles their
    order, which :class:`monai.transforms.RandomOrder` reproduces.

    Args:
        spatial_size: ``(H, W)`` of the samples (converts the translation fraction to pixels).
        rotate_degrees: Maximum absolute rotation in degrees.
        translate_fraction: Maximum absolute shift as a fraction of each image side.
        scale_range: ``(min, max)`` zoom factor.
        flip_axes: Spatial axes to flip (0 = the NIfTI x axis, left-right in ISLES 2018).

    Returns:
        A dict transform on ``{"image": (C, H, W), "label": (1, H, W)}``.
    """
    height, width = spatial_size
    operations = [
        RandRotated(KEYS, range_x=float(np.deg2rad(rotate_degrees)), prob=1.0, mode=MODES,
                    padding_mode="zeros", keep_size=True),
        RandAffined(KEYS, prob=1.0, mode=MODES, padding_mode="zeros",
                    translate_range=(translate_fraction * height, translate_fraction * width)),
        RandZoomd(KEYS, prob=1.0, min_zoom=scale_range[0], max_zoom=scale_range[1],
                  mode=("bilinear", "nearest-exact"), padding_mode="constant", keep_size=True),
    ]  # fmt: skip
    operations += [RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in flip_axes]
    return Compose([RandomOrder(operations)])
