"""MONAI augmentation for slice (2D) and volume (3D) training: the papers' random affine as one
resampling. A volume ``(C, D, H, W)`` is transformed in-plane: rotation about the axial (depth)
axis, in-plane translation, scale and flips, the same for every slice of it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import Affine, MapTransform, Randomizable
from monai.utils import MAX_SEED

KEYS = ("image", "label")


#: The top two rows of a homogeneous 3×3 in-plane affine matrix (the third is ``0 0 1``).
_Rows = tuple[tuple[float, float, float], tuple[float, float, float]]


def _then(first: _Rows, second: _Rows) -> _Rows:
    """``second @ first`` of two affine matrices given by their top rows."""
    return (
        (
            second[0][0] * first[0][0] + second[0][1] * first[1][0],
            second[0][0] * first[0][1] + second[0][1] * first[1][1],
            second[0][0] * first[0][2] + second[0][1] * first[1][2] + second[0][2],
        ),
        (
            second[1][0] * first[0][0] + second[1][1] * first[1][0],
            second[1][0] * first[0][1] + second[1][1] * first[1][1],
            second[1][0] * first[0][2] + second[1][1] * first[1][2] + second[1][2],
        ),
    )


def _in_plane(matrix: np.ndarray, spatial_dims: int) -> np.ndarray:
    """A homogeneous 3×3 in-plane matrix of the last two axes, for ``spatial_dims`` axes
    (the leading depth axis of a volume is kept as it is)."""
    if spatial_dims == 2:
        return matrix
    full = np.eye(spatial_dims + 1)
    lead = spatial_dims - 2
    full[lead:, lead:] = matrix
    return full


class RandomOrderAffined(Randomizable, MapTransform):
    """Seed 003's augmentation (arXiv:1811.01085 §4.1) as one resampling per sample.

    Rotation uniform in ±``rotate_degrees``, translation uniform in ±``translate_fraction`` of
    each side, isotropic scale uniform in ``scale_range`` and a flip with probability 0.5 per
    axis in ``flip_axes``, composed in a random order ("the order of these operations was
    chosen randomly"). The four operations are 3×3 homogeneous matrices about the image
    centre: their product in the drawn order is applied once with :class:`monai.transforms.Affine`
    (bilinear for the image, nearest for the label, zero padding). Chaining one MONAI transform
    per operation gives the same geometry but interpolates three times (more blur) and costs
    about three times as much. A volume ``(C, D, H, W)`` gets the same in-plane matrix for all
    its slices: rotation about the depth (axial) axis, no shift, scale or flip along depth.

    Args:
        rotate_degrees: Maximum absolute rotation in degrees.
        translate_fraction: Maximum absolute shift as a fraction of each image side.
        scale_range: ``(min, max)`` isotropic zoom factor (>1 enlarges the content).
        flip_axes: In-plane axes that may be flipped (0 = rows = NIfTI x, left-right in
            ISLES 2018; 1 = columns).
        keys: Image and label keys; the label is resampled with nearest neighbour.
        random_order: Shuffle the order per sample (seed 003). ``False`` composes rotation,
            translation, scale, flip in that fixed order, as Keras' ``ImageDataGenerator``
            (the D-UNet code) does.
    """

    def __init__(
        self,
        rotate_degrees: float = 10.0,
        translate_fraction: float = 0.1,
        scale_range: tuple[float, float] = (0.9, 1.1),
        flip_axes: Sequence[int] = (0,),
        keys: Sequence[Hashable] = KEYS,
        random_order: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys)
        self.random_order = random_order
        self.rotate = float(np.deg2rad(rotate_degrees))
        self.translate = float(translate_fraction)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.flip_axes = tuple(flip_axes)
        self._matrix = np.eye(3)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandomOrderAffined:
        """As MONAI's, with an integer seed reseeding this transform's own generator in place:
        the same stream as the ``RandomState(seed)`` MONAI builds, at 1.5 µs instead of about
        100 µs, which every training sample pays (16 per D-UNet batch on the device)."""
        if seed is None or state is not None or not isinstance(seed, (int, np.integer)):
            super().set_random_state(seed=seed, state=state)
            return self
        if "R" not in vars(self):  # MONAI's default generator is shared by the class
            self.R = np.random.RandomState()
        self.R.seed(int(seed) % MAX_SEED)
        return self

    def draw_in_plane(self, size: Sequence[float]) -> np.ndarray:
        """Draw one sample's in-plane ``(3, 3)`` matrix (output → input, pixel units about the
        centre) for slices of ``size = (H, W)``; the batched path draws through this too.

        The draws, in this order: rotation, shift along H, shift along W, scale, a flip per
        axis of ``flip_axes``, then the order of the four operations. The operations are
        composed on Python floats (their affine rows; the last row is ``0 0 1``): 16 samples
        a batch made NumPy's small-array overhead (28 µs a sample) a third of the device
        cache's time per batch (docs/performance.md, P1).
        """
        height, width = float(size[0]), float(size[1])
        flippable = [axis in self.flip_axes for axis in (0, 1)]
        # One call for the uniform draws: the doubles RandomState.uniform and .random would
        # take one at a time, mapped to their ranges as uniform does (low + (high − low)·u).
        u = self.R.random_sample(4 + sum(flippable)).tolist()
        rotate, translate, (low, high) = self.rotate, self.translate, self.scale_range
        angle = -rotate + (rotate - -rotate) * u[0]
        shift = (
            (-translate + (translate - -translate) * u[1]) * height,
            (-translate + (translate - -translate) * u[2]) * width,
        )
        # The matrix maps output to input coordinates: content zoom s samples at 1/s.
        zoom = 1.0 / (low + (high - low) * u[3])
        coins = iter(u[4:])
        flip = [-1.0 if can and next(coins) < 0.5 else 1.0 for can in flippable]
        cos, sin = float(np.cos(angle)), float(np.sin(angle))
        operations: tuple[_Rows, ...] = (
            ((cos, -sin, 0.0), (sin, cos, 0.0)),
            ((1.0, 0.0, shift[0]), (0.0, 1.0, shift[1])),
            ((zoom, 0.0, 0.0), (0.0, zoom, 0.0)),
            ((flip[0], 0.0, 0.0), (0.0, flip[1], 0.0)),
        )
        matrix: _Rows = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
        order = self.R.permutation(len(operations)) if self.random_order else range(len(operations))
        for index in order:
            matrix = _then(matrix, operations[index])
        return np.array([*matrix, (0.0, 0.0, 1.0)])

    def randomize(self, data: Any = None) -> None:
        spatial = tuple(data)  # (H, W) of a slice, (D, H, W) of a volume
        self._matrix = _in_plane(self.draw_in_plane(spatial[-2:]), len(spatial))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, Any]:
        sample: dict[Hashable, Any] = dict(data)
        self.randomize(sample[self.keys[0]].shape[1:])
        for key, mode in zip(self.keys, ("bilinear", "nearest")):
            resample = Affine(
                affine=torch.as_tensor(self._matrix),
                padding_mode="zeros",
                mode=mode,
                image_only=True,
            )
            sample[key] = resample(sample[key].float())  # grid sampling needs floats
        return sample


@dataclass(frozen=True)
class Augmentation:
    """Settings of the random affine augmentation of training slices.

    The defaults are seed 003's (arXiv:1811.01085 §4.1); datasets pass their papers' values.

    Args:
        rotate_degrees: Rotation range (±, degrees).
        translate_fraction: Translation range (± fraction of each image side).
        scale_range: ``(min, max)`` isotropic zoom.
        flip_axes: Image axes (0 = rows, 1 = columns) flipped with probability 0.5 each.
        random_order: Compose the four operations in a random order per sample (seed 003);
            ``False``: rotation, translation, zoom, flip, as Keras' ``ImageDataGenerator``.
    """

    rotate_degrees: float = 10.0
    translate_fraction: float = 0.1
    scale_range: tuple[float, float] = (0.9, 1.1)
    flip_axes: tuple[int, ...] = (0,)
    random_order: bool = True

    def transform(self) -> RandomOrderAffined:
        """The MONAI dictionary transform for ``{"image": (C, H, W), "label": (1, H, W)}``, or
        volumes ``(C, D, H, W)`` / ``(1, D, H, W)`` (in-plane, see :class:`RandomOrderAffined`)."""
        low, high = self.scale_range
        return RandomOrderAffined(
            self.rotate_degrees,
            self.translate_fraction,
            (low, high),
            self.flip_axes,
            random_order=self.random_order,
        )
