"""DeepLabv3+ of Chen et al. (arXiv 1802.02611): dilated ResNet, ASPP and a stride-4 decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct, check_input
from networks.resnet import DilatedResNet

# Widths fixed by the paper (§3.1, §4.1 Table 2): every ASPP branch and decoder 3×3 conv has 256.
_ASPP_CHANNELS = 256
_DECODER_CHANNELS = 256
_PAPER_RATES = (6, 12, 18)  # for output stride 16; doubled at output stride 8


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with aligned corners, as in the common PyTorch DeepLab code."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class _ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool → 1×1 conv + BN + ReLU → upsample."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvNormAct(2, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _resize(self.conv(self.pool(x)), x.shape[-2:])  # (B, C_out, h, w)


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, 3×3 at each rate, image pooling; concat, 1×1."""

    def __init__(
        self, in_channels: int, out_channels: int, rates: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                ConvNormAct(2, in_channels, out_channels, 1),
                *(ConvNormAct(2, in_channels, out_channels, 3, dilation=r) for r in rates),
                _ImagePooling(in_channels, out_channels),
            ]
        )
        self.project = nn.Sequential(
            ConvNormAct(2, out_channels * len(self.branches), out_channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, 1280, h, w)
        return self.project(pyramid)  # (B, 256, h, w)


class _Decoder(nn.Module):
    """Reduce the low-level features, concat the upsampled ASPP output, refine, classify."""

    def __init__(
        self,
        low_level_in: int,
        low_level_channels: int,
        aspp_channels: int,
        num_classes: int,
        dropouts: tuple[float, float],
    ) -> None:
        super().__init__()
        self.reduce = ConvNormAct(2, low_level_in, low_level_channels, 1)
        self.refine = nn.Sequential(
            ConvNormAct(2, low_level_channels + aspp_channels, _DECODER_CHANNELS, 3),
            nn.Dropout(dropouts[0]),
            ConvNormAct(2, _DECODER_CHANNELS, _DECODER_CHANNELS, 3),
            nn.Dropout(dropouts[1]),
        )
        self.classifier = nn.Conv2d(_DECODER_CHANNELS, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.reduce(low_level)  # (B, 48, H/4, W/4)
        x = _resize(x, low_level.shape[-2:])  # (B, 256, H/4, W/4)
        x = torch.cat([x, low_level], dim=1)  # (B, 304, H/4, W/4)
        return self.classifier(self.refine(x))  # (B, num_classes, H/4, W/4)


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+: ASPP on a dilated ResNet, and a decoder that adds stride-4 features.

    Chen et al., *Encoder-Decoder with Atrous Separable Convolution for Semantic Image
    Segmentation*, arXiv 1802.02611, §3.1 and Fig. 2 (encoder: DeepLabv3's ASPP with image
    pooling, output stride 16 or 8; decoder), §4.1 Tables 1–2 (48 low-level channels, two 3×3
    convs of 256), with the ResNet-101 backbone of its §4.2; docs/papers.md §6. Dropout follows
    the widely used PyTorch port ``jfzhang95/pytorch-deeplab-xception`` (0.5 after the ASPP
    projection and after the first decoder conv, 0.1 after the second); the paper does not give
    it.

    ``backbone`` layer1 … layer4 (output stride 16: dilation 2 in layer4) · ``aspp`` 1×1 conv
    256 + three 3×3 convs 256 at ``aspp_rates`` + image pooling (GAP → 1×1 conv 256 → upsample),
    each + BN + ReLU; concat 1280 → 1×1 conv 256 + BN + ReLU + Dropout · ``decoder`` layer1
    → 1×1 conv 48 + BN + ReLU, ASPP output bilinearly upsampled to stride 4, concat 304 →
    [3×3 conv 256 + BN + ReLU + Dropout] × 2 → 1×1 conv → num_classes · bilinear upsample to
    the input size.

    Choices and deviations:

    * the atrous rates are given for output stride 16. At output stride 8 the paper's rates
      (the default (6, 12, 18)) are doubled to (12, 24, 36) as in DeepLabv3; rates passed
      explicitly are used as given at either stride. ``aspp_rates`` holds the rates in use;
    * plain 3×3 convs, not the depthwise-separable ones the paper adds for Xception (its
      ResNet-101 results use ordinary convs);
    * no Multi-Grid in layer4 (every block dilated 2 at output stride 16, as in the dilated
      ResNet of PSPNet; ``jfzhang95`` uses rates 2·(1, 2, 4)), and no ImageNet weights: the
      backbone is trained from scratch, nothing is downloaded;
    * the classic 7×7 stem of ResNet by default; ``deep_stem=True`` gives PSPNet's three 3×3;
    * logits are resized to the exact input size, so any H, W works.

    Args:
        in_channels: input maps (1: one slice, as for D-UNet's Table 3 at 192 × 192; 4 for a
            stack of slices).
        num_classes: output channels (1: lesion logit).
        backbone_depth: ResNet depth; 101 in the paper.
        output_stride: input size / encoder feature size, 16 (the paper's default) or 8.
        aspp_rates: atrous rates of the 3×3 ASPP branches, (6, 12, 18) in the paper.
        low_level_channels: channels the stride-4 features are reduced to (48, §4.1).
        dropout: Dropout probability after the ASPP projection and the first decoder conv.
        final_dropout: Dropout probability after the second decoder conv.
        deep_stem: use PSPNet's three-3×3-conv stem instead of the 7×7 conv.

    Shape:
        Input (B, in_channels, H, W), any H, W; output raw logits (B, num_classes, H, W).
        The image-pooling branch's BatchNorm sees one value per channel and sample, so
        training mode needs B ≥ 2.

    Raises:
        ValueError: for invalid arguments, or an input that is not (B, in_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        backbone_depth: Literal[18, 34, 50, 101] = 101,
        output_stride: Literal[8, 16] = 16,
        aspp_rates: Sequence[int] = _PAPER_RATES,
        low_level_channels: int = 48,
        dropout: float = 0.5,
        final_dropout: float = 0.1,
        deep_stem: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or low_level_channels < 1:
            raise ConfigurationError(
                "DeepLabV3Plus needs in_channels, num_classes and low_level_channels ≥ 1; got "
                f"{in_channels}, {num_classes} and {low_level_channels}."
            )
        if backbone_depth not in (18, 34, 50, 101):
            raise ConfigurationError(
                f"DeepLabV3Plus got backbone_depth={backbone_depth!r}; expected 18, 34, 50 or 101."
            )
        if output_stride not in (8, 16):
            raise ConfigurationError(
                f"DeepLabV3Plus got output_stride={output_stride!r}; expected 8 or 16."
            )
        rates = tuple(aspp_rates)
        if not rates or any(int(r) != r or r < 1 for r in rates):
            raise ConfigurationError(
                f"DeepLabV3Plus got aspp_rates={aspp_rates!r}; expected positive ints, e.g. "
                f"{_PAPER_RATES}."
            )
        for name, p in (("dropout", dropout), ("final_dropout", final_dropout)):
            if not 0.0 <= p < 1.0:
                raise ConfigurationError(
                    f"DeepLabV3Plus got {name}={p!r}; expected a probability in [0, 1)."
                )
        if output_stride == 8 and rates == _PAPER_RATES:
            rates = tuple(2 * r for r in rates)
        self.in_channels = in_channels
        self.aspp_rates = tuple(int(r) for r in rates)

        self.backbone = DilatedResNet(
            depth=backbone_depth,
            in_channels=in_channels,
            deep_stem=deep_stem,
            output_stride=output_stride,
        )
        low_level_in, _, _, high_level_in = self.backbone.stage_channels
        self.aspp = _ASPP(high_level_in, _ASPP_CHANNELS, self.aspp_rates, dropout)
        self.decoder = _Decoder(
            low_level_in, low_level_channels, _ASPP_CHANNELS, num_classes, (dropout, final_dropout)
        )
        for module in (*self.aspp.modules(), *self.decoder.modules()):
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of images.

        Args:
            x: (B, in_channels, H, W), any H, W.

        Returns:
            Raw logits (B, num_classes, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_channels, H, W).
        """
        check_input("DeepLabV3Plus", x, self.in_channels)
        # Shapes for the defaults (R-101, output stride 16); H/16 stands for ⌈H/16⌉.
        x1, _, _, x4 = self.backbone.forward_stages(x)  # (B, 256, H/4, ·), (B, 2048, H/16, ·)
        context = self.aspp(x4)  # (B, 256, H/16, W/16)
        logits = self.decoder(context, x1)  # (B, num_classes, H/4, W/4)
        return _resize(logits, x.shape[-2:])  # (B, num_classes, H, W)
