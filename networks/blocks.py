"""Building blocks shared by the networks, written once for 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.convutils import same_padding
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn


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
