"""Mirroring test-time augmentation: a prediction averaged over flips of its input.

The mean over flipped passes is nnU-Net's mirroring (Isensee et al., *nnU-Net*, Nature Methods
2021, arXiv:1809.10486): each flipped input goes through the network and its output is flipped
back, so every pass lands on the same grid before it is averaged. The flips are of the last
``spatial_dims`` axes, so one flip set serves inputs ``(B, C, *spatial)`` and outputs
``(B, *spatial)`` or ``(B, K, *spatial)`` alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch

#: A flip: the axes it reverses (negative: counted from the last); ``()`` is the identity.
Flip = tuple[int, ...]

#: No augmentation: the network's own prediction.
IDENTITY: tuple[Flip, ...] = ((),)


def mirror_flips(spatial_dims: int) -> tuple[Flip, ...]:
    """Every combination of flips of the last ``spatial_dims`` axes, the identity first.

    2: ``(), (-2,), (-1,), (-2, -1)`` (4 passes); 3: the same with the depth axis (8 passes).
    """
    axes = tuple(range(-spatial_dims, 0))
    return tuple(flip for n in range(spatial_dims + 1) for flip in combinations(axes, n))


def flip_average(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    flips: Sequence[Flip] = IDENTITY,
    identity: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean of ``flip(fn(flip(x)))`` over ``flips``.

    Args:
        fn: Maps ``x`` to an output whose last axes are ``x``'s spatial axes.
        x: Input ``(B, C, *spatial)``.
        flips: Axis tuples to reverse (``()``: identity); :data:`IDENTITY` is ``fn(x)`` itself.
        identity: ``fn(x)`` when the caller already has it: the identity flip reuses it.

    Returns:
        The average, shaped as ``fn``'s output.
    """
    total: torch.Tensor | None = None
    for flip in flips:
        if not flip:
            out = fn(x) if identity is None else identity
        else:
            out = fn(x.flip(flip)).flip(flip)
        total = out if total is None else total + out
    if total is None:
        raise ValueError("flip_average needs at least one flip (IDENTITY for none).")
    return total if len(flips) == 1 else total / len(flips)
