"""VCA-Net of Li (arXiv 2105.06544): visual-cortex-like encoder, IT bottleneck, U-Net decoder."""

from __future__ import annotations

import torch
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct

# The encoder halves the size four times (three pools in V1, one after V4; IT's stride 2 runs
# parallel to the last pool), and the decoder doubles it four times.
_DOWNSAMPLING = 16
# The reference's first width (V1's conv1); ``base_width`` scales every width by base_width / 64.
_REFERENCE_BASE_WIDTH = 64


class _Widths:
    """The reference's channel counts scaled by ``base_width / 64`` (rounded, at least 1)."""

    def __init__(self, base_width: int) -> None:
        self.base_width = base_width

    def __call__(self, reference: int) -> int:
        return max(1, round(reference * self.base_width / _REFERENCE_BASE_WIDTH))


class _CBL(ConvNormAct):
    """Conv (with bias) → BatchNorm → LeakyReLU: the reference code's only building block."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        negative_slope: float,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            2,
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            dilation=dilation,
            bias=True,
            act=("leakyrelu", {"negative_slope": negative_slope, "inplace": True}),
        )


class _FactorizedPair(nn.Module):
    """A 1×3 and a 3×1 CBL applied to the same input, concatenated (InceptionE's split)."""

    def __init__(self, channels: int, negative_slope: float) -> None:
        super().__init__()
        self.conv_1x3 = _CBL(channels, channels, (1, 3), negative_slope)
        self.conv_3x1 = _CBL(channels, channels, (3, 1), negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv_1x3(x), self.conv_3x1(x)], dim=1)  # (B, 2C, h, w)


class _InceptionE(nn.Module):
    """V1's InceptionE-like block, 128 → 32 + 2·52 + 2·52 + 16 = 256 channels (reference widths)."""

    def __init__(self, in_channels: int, negative_slope: float, w: _Widths) -> None:
        super().__init__()
        slope = negative_slope
        self.branch1 = _CBL(in_channels, w(32), 1, slope)
        self.branch2 = nn.Sequential(
            _CBL(in_channels, w(52), 1, slope), _FactorizedPair(w(52), slope)
        )
        self.branch3 = nn.Sequential(
            _CBL(in_channels, w(64), 1, slope),
            _CBL(w(64), w(52), 3, slope),
            _FactorizedPair(w(52), slope),
        )
        self.branch4 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True),
            _CBL(in_channels, w(16), 1, slope),
        )
        self.out_channels = w(32) + 2 * w(52) + 2 * w(52) + w(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, dim=1)  # (B, 256, h, w) = [b1, b2a, b2b, b3a, b3b, b4]


class _V1(nn.Module):
    """Area V1: three CBL stages with max-pooling; returns x_v1 and the skips c1, c2, c3."""

    def __init__(self, in_channels: int, negative_slope: float, w: _Widths) -> None:
        super().__init__()
        slope = negative_slope
        self.conv1 = _CBL(in_channels, w(64), 3, slope)
        self.conv2 = _CBL(w(64), w(64), 1, slope)
        self.conv3 = _CBL(w(64), w(128), 3, slope)
        self.inception = _InceptionE(w(128), slope, w)
        self.conv5 = _CBL(self.inception.out_channels, w(512), 3, slope)
        self.conv6 = _CBL(w(512), w(512), 1, slope)
        self.pool = nn.MaxPool2d(2)
        self.skip_channels = (w(64), self.inception.out_channels, w(512))
        self.out_channels = w(512)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.conv2(self.conv1(x))  # (B, 64, H, W)
        c2 = self.inception(self.conv3(self.pool(c1)))  # (B, 256, H/2, W/2)
        c3 = self.conv6(self.conv5(self.pool(c2)))  # (B, 512, H/4, W/4)
        x_v1 = self.pool(c3)  # (B, 512, H/8, W/8)
        return x_v1, c1, c2, c3


class _V2(nn.Module):
    """Area V2: InceptionA-like block, 512 → 128 + 64 + 64 + 256 = 512 channels."""

    def __init__(self, in_channels: int, negative_slope: float, w: _Widths) -> None:
        super().__init__()
        slope = negative_slope
        self.branch1 = _CBL(in_channels, w(128), 1, slope)
        self.branch2 = nn.Sequential(
            _CBL(in_channels, w(48), 1, slope), _CBL(w(48), w(64), 5, slope)
        )
        self.branch3 = nn.Sequential(
            _CBL(in_channels, w(64), 1, slope),
            _CBL(w(64), w(96), 3, slope),
            _CBL(w(96), w(64), 3, slope),
        )
        # The reference hard-codes 256 here and ignores its pool_features argument.
        self.branch4 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1), _CBL(in_channels, w(256), 1, slope)
        )
        self.out_channels = w(128) + w(64) + w(64) + w(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, dim=1)  # (B, 512, h, w)


class _V4(nn.Module):
    """Area V4: a 3×3 → 1×1 path on x_v2 and a 1×1 path on x_v1, concatenated (skip c4)."""

    def __init__(
        self, v1_channels: int, v2_channels: int, negative_slope: float, w: _Widths
    ) -> None:
        super().__init__()
        slope = negative_slope
        self.branch_v2 = nn.Sequential(
            _CBL(v2_channels, w(1024), 3, slope), _CBL(w(1024), w(1024), 1, slope)
        )
        self.branch_v1 = _CBL(v1_channels, w(1024), 1, slope)
        self.pool = nn.MaxPool2d(2)
        self.out_channels = w(1024) + w(1024)

    def forward(self, x_v1: torch.Tensor, x_v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c4 = torch.cat([self.branch_v2(x_v2), self.branch_v1(x_v1)], dim=1)  # (B, 2048, h, w)
        return c4, self.pool(c4)  # c4 and x_v4p (B, 2048, h/2, w/2)


class _IT(nn.Module):
    """Inferior temporal bottleneck: V1 and V2 gate the V4 path, joined by a dilated conv."""

    def __init__(
        self,
        v1_channels: int,
        v2_channels: int,
        v4_channels: int,
        negative_slope: float,
        keep_unused_bn: bool,
        w: _Widths,
    ) -> None:
        super().__init__()
        slope = negative_slope
        self.conv_v1 = _CBL(v1_channels, w(1024), 5, slope, stride=2)
        self.conv_v2 = _CBL(v2_channels, w(1024), 5, slope, stride=2)
        # t4 (2048) multiplies v12 = [t1, t2] element-wise, so its width is their sum.
        self.conv_v4 = _CBL(v4_channels, 2 * w(1024), 3, slope)
        # The paper's dilated "block" is a bare conv in the reference: no BN, no activation.
        self.conv_dilated = nn.Conv2d(2 * w(1024), w(1024), 3, padding=2, dilation=2)
        self.out_channels = w(1024) + 2 * w(1024)
        if keep_unused_bn:
            # Defined but never called in the reference; kept so the parameter count matches.
            self.norm_v12 = nn.BatchNorm2d(w(1024))

    def forward(self, x_v1: torch.Tensor, x_v2: torch.Tensor, x_v4p: torch.Tensor) -> torch.Tensor:
        t1 = self.conv_v1(x_v1)  # (B, 1024, h/2, w/2)
        t2 = self.conv_v2(x_v2)  # (B, 1024, h/2, w/2)
        t4 = self.conv_v4(x_v4p)  # (B, 2048, h/2, w/2)
        v12 = torch.cat([t1, t2], dim=1)  # (B, 2048, h/2, w/2)
        vm = t4 * v12  # the paper's "merge": element-wise product
        t4d = self.conv_dilated(t4)  # (B, 1024, h/2, w/2)
        return torch.cat([t4d, vm], dim=1)  # (B, 3072, h/2, w/2)


class _Up(nn.Sequential):
    """Nearest-neighbour ×2 upsampling, then a 3×3 CBL."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            _CBL(in_channels, out_channels, 3, negative_slope),
        )


class VCANet(nn.Module):
    """VCA-Net: a V1 → V2 → V4 → IT encoder modelled on the ventral stream, with a U-Net decoder.

    Li, *Stroke Lesion Segmentation with Visual Cortex Anatomy Alike Neural Nets*,
    arXiv 2105.06544, §2 and Fig. 1, as implemented in the reference repository
    ``DarkoBomer/VCA-Net`` at commit ``1c76deb`` (2021-05-26, MIT), ``model.py`` and
    ``custom_layers.py``; the layer tables are docs/papers.md §1. Every block is a CBL (conv with
    bias → BatchNorm → LeakyReLU); default PyTorch initialisation, as in the reference.

    * ``v1``: CBL 3×3 1→64, CBL 1×1 (skip c1), pool, CBL 3×3 →128, InceptionE-like →256
      (skip c2), pool, CBL 3×3 →512, CBL 1×1 (skip c3), pool → x_v1 (512, H/8).
    * ``v2``: InceptionA-like on x_v1 → x_v2 (512, H/8).
    * ``v4``: [CBL 3×3 → CBL 1×1 on x_v2, CBL 1×1 on x_v1] → 2048 (skip c4), pool → H/16.
    * ``it``: CBL 5×5 stride 2 on x_v1 and on x_v2 (concatenated, v12), CBL 3×3 on the pooled
      V4 (t4); output [dilated conv 3×3 of t4 (1024), t4 ⊙ v12 (2048)] = 3072 at H/16.
    * decoder: ``up1`` … ``up4`` (nearest ×2 → CBL 3×3) to 512, 256, 128, 64 channels, each
      followed by ``upconv1`` … ``upconv4`` (CBL 3×3) on [skip, upsampled]; ``outconv`` 1×1.

    Where the paper and its reference code disagree, this follows the code:

    * the network returns **logits**. The reference ends in a sigmoid and then feeds that
      probability to ``BCEWithLogitsLoss``, i.e. a double sigmoid; the loss module reproduces
      that (or not) from these logits, so apply ``torch.sigmoid`` for probabilities;
    * the reference defines a ``BatchNorm2d(1024)`` in IT (``it.norm_v12``) that its forward
      never uses. ``keep_unused_bn=True`` keeps it so that the parameter count is the
      reference's 120,997,673; it never receives a gradient. ``False`` gives 120,995,625;
    * the reference's unused max-pool in IT holds no parameters and is omitted.

    The channel counts above are those of the default ``base_width=64``.

    Args:
        in_channels: input maps (1: a T1-weighted ATLAS slice).
        num_classes: output channels (1: lesion logit).
        keep_unused_bn: keep the reference's unused ``it.norm_v12`` (2,048 parameters).
        negative_slope: LeakyReLU slope of every CBL (PyTorch's default 0.01 in the reference).
        base_width: the width of V1's first CBL, 64 in the reference (the default). Every
            width of the network is the reference's times ``base_width / 64``, rounded (at
            least 1 channel), so the layout above is kept and only the widths shrink or grow;
            a multiple of 16 scales every width exactly (16: 7,569,527 parameters, ~1/16 of
            the reference's). Not a setting of the paper: for CPU demos.

    Shape:
        Input (B, in_channels, H, W) with H and W multiples of 16 (224 × 192, the reference's
        crop of an ATLAS slice); output raw logits (B, num_classes, H, W). In training mode the
        BatchNorms of the bottleneck need B · H/16 · W/16 > 1.

    Raises:
        ValueError: for invalid arguments, or an input that is not (B, in_channels, H, W)
            with H, W divisible by 16.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        keep_unused_bn: bool = True,
        negative_slope: float = 0.01,
        base_width: int = _REFERENCE_BASE_WIDTH,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ConfigurationError(
                f"VCANet needs in_channels ≥ 1 and num_classes ≥ 1; got {in_channels} and "
                f"{num_classes}."
            )
        if negative_slope < 0:
            raise ConfigurationError(f"VCANet got negative_slope={negative_slope!r}; expected ≥ 0.")
        if base_width < 1:
            raise ConfigurationError(
                f"VCANet got base_width={base_width!r}; expected ≥ 1 (64 is the reference's)."
            )
        self.in_channels = in_channels
        slope = negative_slope

        self.base_width = base_width
        w = _Widths(base_width)

        self.v1 = _V1(in_channels, slope, w)
        self.v2 = _V2(self.v1.out_channels, slope, w)
        self.v4 = _V4(self.v1.out_channels, self.v2.out_channels, slope, w)
        self.it = _IT(
            self.v1.out_channels,
            self.v2.out_channels,
            self.v4.out_channels,
            slope,
            keep_unused_bn,
            w,
        )

        c1, c2, c3 = self.v1.skip_channels
        self.up1 = _Up(self.it.out_channels, w(512), slope)
        self.upconv1 = _CBL(self.v4.out_channels + w(512), w(512), 3, slope)
        self.up2 = _Up(w(512), w(256), slope)
        self.upconv2 = _CBL(c3 + w(256), w(256), 3, slope)
        self.up3 = _Up(w(256), w(128), slope)
        self.upconv3 = _CBL(c2 + w(128), w(128), 3, slope)
        self.up4 = _Up(w(128), w(64), slope)
        self.upconv4 = _CBL(c1 + w(64), w(64), 3, slope)
        self.outconv = nn.Conv2d(w(64), num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of slices.

        Args:
            x: (B, in_channels, H, W), H and W divisible by 16.

        Returns:
            Raw logits (B, num_classes, H, W); the reference's sigmoid is left to the loss.

        Raises:
            ValueError: if ``x`` is not (B, in_channels, H, W) with H, W divisible by 16.
        """
        if (
            x.ndim != 4
            or x.shape[1] != self.in_channels
            or x.shape[-2] % _DOWNSAMPLING
            or x.shape[-1] % _DOWNSAMPLING
        ):
            raise ValueError(
                f"VCANet expects input (B, {self.in_channels}, H, W) with H and W divisible by "
                f"{_DOWNSAMPLING}; got {tuple(x.shape)}. Crop or pad the slices, e.g. ATLAS "
                "233 × 197 → 224 × 192 as in the reference."
            )
        # Shapes for the reference input 224 × 192: H/8 = 28, H/16 = 14.
        x_v1, c1, c2, c3 = self.v1(x)  # (B, 512, H/8, W/8); skips at H, H/2, H/4
        x_v2 = self.v2(x_v1)  # (B, 512, H/8, W/8)
        c4, x_v4p = self.v4(x_v1, x_v2)  # (B, 2048, H/8, W/8), (B, 2048, H/16, W/16)
        x_it = self.it(x_v1, x_v2, x_v4p)  # (B, 3072, H/16, W/16)

        u1 = self.upconv1(torch.cat([c4, self.up1(x_it)], dim=1))  # (B, 512, H/8, W/8)
        u2 = self.upconv2(torch.cat([c3, self.up2(u1)], dim=1))  # (B, 256, H/4, W/4)
        u3 = self.upconv3(torch.cat([c2, self.up3(u2)], dim=1))  # (B, 128, H/2, W/2)
        u4 = self.upconv4(torch.cat([c1, self.up4(u3)], dim=1))  # (B, 64, H, W)
        return self.outconv(u4)  # (B, num_classes, H, W)
