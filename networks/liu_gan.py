"""Seed 002's networks (Pengbo Liu, BrainLes 2018): the U-Net generator and segmentator, with
GroupNorm and a maxout head, and the LSGAN discriminator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import check_input, pad_to_multiples

Norm = Literal["group", "batch", "none"]
Head = Literal["linear", "maxout"]


def _group_norm(channels: int, channels_per_group: int) -> nn.GroupNorm:
    if channels % channels_per_group:
        raise ConfigurationError(
            f"GroupNorm with {channels_per_group} channels per group needs widths divisible by "
            f"{channels_per_group}; got {channels}. Choose widths that are multiples of it."
        )
    return nn.GroupNorm(channels // channels_per_group, channels)


class _ConvBlock(nn.Sequential):
    """Conv 3×3 ('same') → norm → ReLU, twice."""

    def __init__(self, cin: int, cout: int, norm: Norm, per_group: int) -> None:
        layers: list[nn.Module] = []
        for c_in in (cin, cout):
            layers.append(nn.Conv2d(c_in, cout, 3, padding=1, bias=norm == "none"))
            if norm == "group":
                layers.append(_group_norm(cout, per_group))
            elif norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MaxoutHead(nn.Module):
    """Seed 002's segmentation head: a 1×1 conv to 4 maps; background = the maximum of the first
    three, lesion = the fourth. Returns the two logits ``(B, 2, H, W)`` for a softmax.

    Args:
        in_channels: Channels of the features.
        background_maps: How many maps compete for the background (3 in the paper).
    """

    def __init__(self, in_channels: int, background_maps: int = 3) -> None:
        super().__init__()
        self.background_maps = background_maps
        self.conv = nn.Conv2d(in_channels, background_maps + 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.conv(x)  # (B, background_maps + 1, H, W)
        background = maps[:, : self.background_maps].amax(dim=1, keepdim=True)
        return torch.cat([background, maps[:, self.background_maps :]], dim=1)  # (B, 2, H, W)


class LiuUNet(nn.Module):
    """U-Net with GroupNorm (16 channels per group), seed 002's generator G and segmentator S.

    Encoder of [conv 3×3 → norm → ReLU] × 2 per level with max-pool 2×2 between levels; decoder of
    transposed conv 2×2 (stride 2, halving the channels), concat with the skip, and the same
    double conv; 'same' padding. The paper gives neither widths nor depth: the classic U-Net's
    (64, 128, 256, 512, 1024) are the default, ``widths`` changes them (and the depth: one
    pooling fewer per width left out).

    Heads: ``"linear"`` is a 1×1 conv to ``out_channels`` (G: one synthetic DWI channel, no
    activation); ``"maxout"`` is :class:`MaxoutHead` (S: 2 logits, background the max of three
    maps). Stages 2–3 of the paper use BatchNorm (``norm="batch"``) and a plain 2-class head.

    Args:
        in_channels: Input maps (5: CT_MTT, CT_Tmax, CT_CBV, CT_CBF, PWI_max; 1 for S on a DWI).
        out_channels: Output channels of a linear head (1 for G, 2 for a softmax segmentator).
        widths: Channels per level, the last one the bottleneck.
        norm: ``"group"`` (stage 4), ``"batch"`` (stages 1–3) or ``"none"``.
        channels_per_group: GroupNorm channels per group (16 in the paper).
        head: ``"linear"`` or ``"maxout"``.

    Shape:
        Input (B, in_channels, H, W), any H, W (zero-padded, centred, to a multiple of
        2^(levels − 1) and cropped back); output (B, out_channels or 2, H, W).

    Raises:
        ValueError: For invalid arguments or input.
    """

    def __init__(
        self,
        in_channels: int = 5,
        out_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: Norm = "group",
        channels_per_group: int = 16,
        head: Head = "linear",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or len(widths) < 2:
            raise ConfigurationError(
                f"LiuUNet needs in_channels, out_channels ≥ 1 and at least 2 widths; got "
                f"{in_channels}, {out_channels} and {tuple(widths)}."
            )
        if norm not in ("group", "batch", "none") or head not in ("linear", "maxout"):
            raise ConfigurationError(
                f"LiuUNet got norm={norm!r}, head={head!r}; expected norm in group/batch/none "
                "and head in linear/maxout."
            )
        self.in_channels = in_channels
        self.multiple = 2 ** (len(widths) - 1)
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(_ConvBlock(previous, width, norm, channels_per_group))
            previous = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(previous, width, kernel_size=2, stride=2))
            self.decoders.append(_ConvBlock(2 * width, width, norm, channels_per_group))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.head: nn.Module = (
            MaxoutHead(previous) if head == "maxout" else nn.Conv2d(previous, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("LiuUNet", x, self.in_channels)
        x, crop = pad_to_multiples(x, (self.multiple, self.multiple))  # (B, C, H', W')
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat([skip, up(x)], dim=1))
        return self.head(x)[(..., *crop)]  # (B, out_channels, H, W)


class LSGANDiscriminator(nn.Module):
    """Seed 002's discriminator: five 5×5 convs with stride 2 and no padding, each followed by a
    normalisation and ReLU, then average pooling to one score per image (LSGAN: no sigmoid).

    A 256² DWI shrinks 256 → 126 → 61 → 29 → 13 → 5 before the pooling. The paper gives no widths
    and no final layer: the default widths double from 64 to 512, and ``head`` is a linear layer
    from the pooled features to one score (``"linear"``) or their mean (``"mean"``).

    Args:
        in_channels: Channels of the judged image (1: a DWI).
        widths: Channels of the five convolutions.
        norm: ``"group"`` (16 channels per group, the paper's stage 4) or ``"batch"``.
        channels_per_group: GroupNorm channels per group.
        head: ``"linear"`` or ``"mean"``.

    Shape:
        Input (B, in_channels, H, W) with H, W ≥ 125 (five valid 5×5 stride-2 convs); output
        (B, 1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        norm: Literal["group", "batch"] = "group",
        channels_per_group: int = 16,
        head: Literal["linear", "mean"] = "linear",
    ) -> None:
        super().__init__()
        if len(widths) != 5 or head not in ("linear", "mean"):
            raise ConfigurationError(
                f"LSGANDiscriminator needs 5 widths and head 'linear' or 'mean'; got "
                f"{tuple(widths)} and {head!r}."
            )
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers.append(nn.Conv2d(previous, width, kernel_size=5, stride=2, bias=False))
            if norm == "group":
                layers.append(_group_norm(width, channels_per_group))
            else:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(previous, 1) if head == "linear" else None
        self.in_channels = in_channels

    @staticmethod
    def min_input_size() -> int:
        """The smallest H, W its five 5×5 stride-2 convolutions without padding accept (125)."""
        size = 1
        for _ in range(5):  # the inverse of (n - 5) // 2 + 1, from a 1×1 output
            size = (size - 1) * 2 + 5
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("LSGANDiscriminator", x, self.in_channels)
        if min(x.shape[-2:]) < self.min_input_size():
            raise ValueError(
                f"LSGANDiscriminator needs H, W ≥ {self.min_input_size()} for its five 5×5 "
                f"stride-2 convs without padding; got {tuple(x.shape[-2:])}."
            )
        features = self.pool(self.features(x)).flatten(1)  # (B, widths[-1])
        if self.head is None:
            return features.mean(dim=1, keepdim=True)
        return self.head(features)  # (B, 1)
