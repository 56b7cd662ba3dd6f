"""Keras conventions, blocks and 5-level U-Net of the D-UNet code (D-UNet, baselines, SegNet).

The D-UNet authors' ``model.py`` (docs/papers.md §2) builds every network from the same pieces:
``BN_block`` (two biased 3×3 convs with optional BatchNorm), nearest upsampling followed by a
2-wide 'same' conv, decoder concatenation in the order [skip, up], He-normal initialisation and
Keras's BatchNormalization defaults. They live here once, in 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct

# Widths of the five levels of the Keras ``Unet()`` / D-UNet 2D stream.
KERAS_WIDTHS = (32, 64, 128, 256, 512)


def keras_batch_norm(eps: float, momentum: float) -> tuple[str, dict[str, float]]:
    """A MONAI norm spec for Keras's BatchNormalization (PyTorch momentum = 1 − Keras momentum)."""
    return ("batch", {"eps": eps, "momentum": momentum})


def init_keras(net: nn.Module, head: nn.Module | None) -> None:
    """He-normal convs and dense layers with zero biases, as Keras's ``he_normal``; Glorot head.

    ``head`` is the output conv the Keras code builds without an initializer argument, so it
    gets Keras's default ``glorot_uniform``; ``None`` when every layer is He-initialised.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            if module is head:
                nn.init.xavier_uniform_(module.weight)
            else:
                # Keras 2.2's he_normal is truncated; the untruncated normal is close enough.
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def check_dropout(name: str, dropout: float) -> None:
    """Raise a ValueError unless ``dropout`` is a probability in [0, 1)."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigurationError(
            f"{name} got dropout={dropout!r}; expected a probability in [0, 1)."
        )


class DoubleConv(nn.Sequential):
    """[conv 3×3 (biased, as in Keras) → optional BN → ReLU] × 2, 2D or 3D (Keras ``BN_block``)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm: tuple | None
    ) -> None:
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, out_channels, 3, bias=True, norm=norm),
            ConvNormAct(spatial_dims, out_channels, out_channels, 3, bias=True, norm=norm),
        )


class UpConv(nn.Sequential):
    """Nearest upsampling, then a 2-wide 'same' conv + ReLU, no BN (Keras UpSampling + Conv 2).

    TensorFlow pads an even kernel's 'same' conv 0 before and 1 after on every axis, hence the
    explicit zero pad; ``ConvTranspose`` would have the same parameter count but not the function.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale_factor: int | tuple[int, ...] = 2,
    ) -> None:
        pad = nn.ZeroPad2d((0, 1, 0, 1)) if spatial_dims == 2 else nn.ZeroPad3d((0, 1) * 3)
        super().__init__(
            nn.Upsample(scale_factor=scale_factor, mode="nearest"),
            pad,
            ConvNormAct(
                spatial_dims, in_channels, out_channels, 2, padding=0, bias=True, norm=None
            ),
        )


class UpBlock(nn.Module):
    """Up-convolution halving the channels, concat [skip, up] (Keras order), double conv."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: tuple | None,
        scale_factor: int | tuple[int, ...] = 2,
    ) -> None:
        super().__init__()
        self.up = UpConv(spatial_dims, in_channels, out_channels, scale_factor)
        self.conv = DoubleConv(spatial_dims, 2 * out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([skip, self.up(x)], dim=1)  # (B, 2·out_channels, *2·spatial)
        return self.conv(x)


class KerasUNet(nn.Module):
    """The five-level U-Net of the Keras code, without its head (subclasses add one).

    Levels of :class:`DoubleConv` (``enc1`` … ``enc5``) with max-pooling ``pool_kernel``,
    Dropout after levels 4 and 5, and four :class:`UpBlock` s (``up4`` … ``up1``) whose
    upsampling undoes the pooling. :meth:`features` runs it and returns the level-1 decoder
    output. The U-Net baselines build on it; D-UNet lays out the same blocks itself, so that
    its forward shows where the 3D stream is fused.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels of ``enc1``.
        widths: The five level widths.
        norm: MONAI norm spec of the double convs, or ``None`` (the "original" U-Net).
        dropout: Element-wise dropout after levels 4 and 5.
        pool_kernel: Pooling (and upsampling) factor per spatial axis.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        widths: Sequence[int],
        norm: tuple | None,
        dropout: float,
        pool_kernel: int | tuple[int, ...] = 2,
    ) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.enc1 = DoubleConv(spatial_dims, in_channels, c1, norm)
        self.enc2 = DoubleConv(spatial_dims, c1, c2, norm)
        self.enc3 = DoubleConv(spatial_dims, c2, c3, norm)
        self.enc4 = DoubleConv(spatial_dims, c3, c4, norm)
        self.enc5 = DoubleConv(spatial_dims, c4, c5, norm)
        self.pool = (nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d)(kernel_size=pool_kernel)
        self.dropout = nn.Dropout(dropout)
        self.up4 = UpBlock(spatial_dims, c5, c4, norm, scale_factor=pool_kernel)
        self.up3 = UpBlock(spatial_dims, c4, c3, norm, scale_factor=pool_kernel)
        self.up2 = UpBlock(spatial_dims, c3, c2, norm, scale_factor=pool_kernel)
        self.up1 = UpBlock(spatial_dims, c2, c1, norm, scale_factor=pool_kernel)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The level-1 decoder output ``(B, c1, *spatial)`` of an input ``(B, C, *spatial)``."""
        x1 = self.enc1(x)  # (B, c1, S)
        x2 = self.enc2(self.pool(x1))  # (B, c2, S/2)
        x3 = self.enc3(self.pool(x2))  # (B, c3, S/4)
        x4 = self.dropout(self.enc4(self.pool(x3)))  # (B, c4, S/8)
        x5 = self.dropout(self.enc5(self.pool(x4)))  # (B, c5, S/16)
        u4 = self.up4(x5, x4)  # (B, c4, S/8)
        u3 = self.up3(u4, x3)  # (B, c3, S/4)
        u2 = self.up2(u3, x2)  # (B, c2, S/2)
        return self.up1(u2, x1)  # (B, c1, S)
