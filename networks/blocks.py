"""Building blocks shared by the networks, written once for 2D and 3D."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import EllipsisType

import torch
from monai.networks.layers.convutils import same_padding
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.instancenorm import _InstanceNorm

from core.errors import ConfigurationError


class ConvNormAct(nn.Sequential):
    """Convolution, then an optional normalisation, then an optional activation.

    The children are positional (``0`` conv, ``1`` norm, ``2`` act; absent ones are skipped),
    so the block can be nested, or unpacked into a flat ``nn.Sequential`` with
    ``nn.Sequential(*ConvNormAct(...), ...)`` where a published checkpoint layout expects flat
    indices (PSPNet's ``cls.0``/``cls.1``).

    Args:
        spatial_dims: 2 for inputs of shape (B, C, H, W), 3 for (B, C, D, H, W).
        in_channels: C of the input.
        out_channels: channels of the output.
        kernel_size: an int, or one size per spatial dimension (e.g. ``(3, 3, 1)``).
        stride: the convolution stride.
        dilation: the convolution dilation.
        padding: the convolution padding; ``None`` keeps the size at stride 1 ("same" for
            odd kernels).
        bias: whether the convolution has a bias. A normalisation right after the conv makes
            the bias redundant, hence ``False`` by default.
        norm: a MONAI normalisation name or ``(name, kwargs)``, e.g. ``"batch"`` or
            ``("group", {"num_groups": 8})``; ``None`` for none.
        act: a MONAI activation name or ``(name, kwargs)``, e.g. ``"relu"``; ``None`` for none.

    Shape:
        (B, in_channels, *spatial) → (B, out_channels, *spatial / stride).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        bias: bool = False,
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
    ) -> None:
        if padding is None:
            padding = same_padding(kernel_size, dilation)
        layers: list[nn.Module] = [
            Conv[Conv.CONV, spatial_dims](
                in_channels,
                out_channels,
                kernel_size=kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=bias,
            )
        ]
        if norm is not None:
            layers.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels))
        if act is not None:
            layers.append(get_act_layer(act))
        super().__init__(*layers)


def check_input(name: str, x: torch.Tensor, channels: int, multiple: int = 1) -> None:
    """Raise a ValueError unless ``x`` is (B, channels, H, W) with H, W multiples of ``multiple``."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects input (B, {channels}, H, W); got {tuple(x.shape)}.")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"{name} needs H and W divisible by {multiple} (one halving per pooling level); got "
            f"H={height}, W={width}. Crop or pad the input, e.g. to 192×192 as in the D-UNet paper."
        )


# -- volumes (the 3D networks) ----------------------------------------------------------
def check_volume(name: str, x: torch.Tensor, channels: int) -> None:
    """Raise a ValueError unless ``x`` is a volume batch (B, channels, D, H, W)."""
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(
            f"{name} expects input (B, {channels}, D, H, W); got {tuple(x.shape)}. Add the "
            "channel axis, or build the network with the right in_channels."
        )


def pad_to_multiples(
    x: torch.Tensor, multiples: Sequence[int]
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad (centred) the spatial axes of ``(B, C, *spatial)`` up to multiples of
    ``multiples`` (one per spatial axis), so that a network's poolings divide them.

    Returns:
        The padded ``(B, C, *spatial')`` tensor and the slices of the spatial axes that crop
        it, or the network's output, back: ``out[(..., *crop)]``.
    """
    pads: list[tuple[int, int]] = []
    crop: list[slice] = []
    for size, multiple in zip(x.shape[2:], multiples):
        total = -size % multiple
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + size))
    # F.pad lists the last axis first: (W before, W after, H before, H after, …).
    flat = [amount for pair in reversed(pads) for amount in pair]
    return F.pad(x, flat), tuple(crop)


class VolumeNet(nn.Module):
    """Base of the 3D networks: any ``D, H, W`` in, logits of the same size out.

    ``forward`` checks the input, zero-pads ``D, H, W`` (centred) to the multiples the
    network's poolings need, runs :meth:`segment` and crops the logits back. Subclasses set
    ``in_channels`` and ``multiples`` and implement :meth:`segment`.
    """

    in_channels: int
    multiples: tuple[int, ...]

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, D', H', W')`` of a padded batch ``(B, C, D', H', W')``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of volumes.

        Args:
            x: (B, in_channels, D, H, W), any D, H, W.

        Returns:
            Raw logits (B, out_channels, D, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_channels, D, H, W).
            ConfigurationError: if the volume pools to one voxel where a normalisation layer
                needs more (:meth:`_check_deepest_level`).
        """
        check_volume(type(self).__name__, x, self.in_channels)
        padded, crop = pad_to_multiples(x, self.multiples)
        self._check_deepest_level(x, padded)
        index: tuple[EllipsisType | slice, ...] = (Ellipsis, *crop)
        return self.segment(padded)[index]

    def _check_deepest_level(self, x: torch.Tensor, padded: torch.Tensor) -> None:
        """Refuse a batch whose deepest level leaves a normalisation layer that uses the input's
        statistics a single value per channel: torch cannot normalise one value (instance norm
        needs two voxels of a sample, also in eval mode; batch norm, training, two voxels or
        samples).

        Raises:
            ConfigurationError: Naming the volume, the poolings and the settings to change.
        """
        voxels = math.prod(s // m for s, m in zip(padded.shape[2:], self.multiples))
        if voxels > 1:
            return
        norms = [
            m
            for m in self.modules()
            if isinstance(m, _NormBase) and (m.training or not m.track_running_stats)
        ]
        per_sample = any(isinstance(m, _InstanceNorm) for m in norms)
        if not norms or (not per_sample and x.shape[0] > 1):
            return
        depth, height, width = x.shape[2:]
        pool_d, pool_h, pool_w = self.multiples
        raise ConfigurationError(
            f"{type(self).__name__} cannot segment volumes of D×H×W = {depth}×{height}×{width}"
            f"{'' if per_sample else ' one at a time'}: its poolings (together "
            f"{pool_d}×{pool_h}×{pool_w}) leave one voxel at the deepest level, and its "
            f"{'instance' if per_sample else 'batch'} norm cannot normalise a single value. Set "
            f"data.init_args.image_size above {min(pool_h, pool_w)} or data.init_args.depth "
            f"above {pool_d} (null: each case's own depth)"
            + ("." if per_sample else ", or data.init_args.batch_size above 1.")
        )


def volume_settings(
    name: str, in_channels: int, out_channels: int, pool: int | Sequence[int]
) -> tuple[int, int, int]:
    """Check a 3D network's channel counts and pooling; the pooling per ``(D, H, W)`` axis.

    Raises:
        ConfigurationError: For channel counts below 1 or a pooling that is not one positive size per
            axis (or one size for all).
    """
    if in_channels < 1 or out_channels < 1:
        raise ConfigurationError(
            f"{name} needs in_channels ≥ 1 and out_channels ≥ 1; got {in_channels} and "
            f"{out_channels}."
        )
    sizes = (pool,) * 3 if isinstance(pool, int) else tuple(pool)
    if len(sizes) != 3 or any(size < 1 for size in sizes):
        raise ConfigurationError(
            f"{name} got pool={pool!r}; expected one positive size per (D, H, W) axis, "
            "e.g. (1, 2, 2) to pool only in-plane, or 2."
        )
    return sizes[0], sizes[1], sizes[2]


class CPUBf16SafeConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs inputs of depth 2 in float32 under CPU bf16 autocast.

    PyTorch's CPU (oneDNN) bf16 3D convolution returns non-finite entries in the **weight
    gradient** of a 3×3×3 convolution whose input has depth 2, intermittently: it reads memory
    it did not write (measured with torch 2.13.0+cpu, ``F.conv3d`` of a (2, 8, 2, 8, 8) bf16
    input with a 16×8×3×3×3 kernel, padding 1, after the allocator held NaN buffers: 189 of
    200 backward passes; depth 1, 3 or 4 and float32: none). Encoders that pool a 32-slice
    volume four times reach depth 2 at their deepest level, so a bf16-mixed fit of the 3D
    U-Nets on a CPU got NaN weights after a few steps. Such a convolution here runs in float32
    (autocast off) and its output is cast back to the autocast dtype, so the layers after it
    see what they would have seen; every other input, and every other device, takes the plain
    path. The parameters and the state dict are those of ``nn.Conv3d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.shape[-3] == 2
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
        ):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float()).to(torch.bfloat16)
        return super().forward(x)


def guard_cpu_bf16_conv3d(net: nn.Module) -> nn.Module:
    """Make every plain ``nn.Conv3d`` of ``net`` a :class:`CPUBf16SafeConv3d` (in place: the
    same parameters, the same state dict; MONAI's blocks included). Returns ``net``."""
    for module in net.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = CPUBf16SafeConv3d
    return net
