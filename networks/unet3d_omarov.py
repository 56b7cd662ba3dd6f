"""The modified 3D U-Net of Omarov et al. (seed 001), Reading A, and its classic 3D U-Net baseline.

The volume helpers the 3D networks share (input checks, centred padding to the multiple their
poolings need) are in :mod:`networks.blocks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from monai.networks.layers.factories import Act, Conv, Dropout, Norm
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import VolumeNet


class _ConvBlock(nn.Sequential):
    """Conv 3×3×3 (biased, as in Keras) → normalisation → activation."""

    def __init__(
        self, in_channels: int, out_channels: int, dilation: int, norm: nn.Module, act: nn.Module
    ) -> None:
        super().__init__(
            Conv[Conv.CONV, 3](in_channels, out_channels, 3, padding=dilation, dilation=dilation),
            norm,
            act,
        )


class _UpConv(nn.Sequential):
    """Nearest ×2 upsampling, then a 2×2×2 'same' conv halving the channels, then the activation.

    TensorFlow pads an even kernel's 'same' conv 0 before and 1 after on every axis, hence the
    explicit zero pad. No normalisation (Keras U-Nets normalise only the 3×3×3 convs).
    """

    def __init__(self, in_channels: int, out_channels: int, act: nn.Module) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.ZeroPad3d((0, 1) * 3),
            Conv[Conv.CONV, 3](in_channels, out_channels, 2),
            act,
        )


class OmarovUNet3D(VolumeNet):
    """Modified 3D U-Net: instance norm, LeakyReLU, dilation and spatial dropout (seed 001).

    Omarov, Tursynova et al., *Modified UNet Model for Brain Stroke Lesion Segmentation on CT
    Images*, CMC 71(3), 2022, §4.1 (the proposed method); docs/papers.md §5, "Reading A" (the
    paper publishes no code).

    Five levels of widths F·(1, 2, 4, 8, 16), each [conv 3×3×3 → InstanceNorm3d (affine) →
    LeakyReLU] × 2, max-pool 2×2×2 between levels; ``Dropout3d(0.5)`` (Keras's
    SpatialDropout3D) on the outputs of levels 4 and 5. Decoder: four times nearest ×2
    upsampling → conv 2×2×2 'same' halving the channels → LeakyReLU, concat [skip, up],
    [conv 3×3×3 → IN → LeakyReLU] × 2; conv 1×1×1 to ``out_channels``. That is 10 + 4·3 + 1 =
    **23 conv layers**, as §4.1 says.

    How the ambiguous points are read (each is an argument):

    * every conv has a bias (Keras's default), IN has affine γ/β (keras-contrib's default) and
      the 2×2×2 up-convs are not normalised. The paper prints no parameter count; these
      choices give the suite's own counts, recorded in docs/papers.md §5: F = 64 → 90,311,361;
      F = 32 → 22,584,673; F = 16 → 5,649,585 (``in_channels=5``, ``out_channels=1``);
    * "some convolutions" are dilated (§4.1): the second conv of levels 3–5, dilation 2
      (padding 2);
    * the up-convolution is upsampling + conv 2×2×2 as in the Keras U-Nets the text follows;
      a ``ConvTranspose3d`` 2×2×2 would have the same parameter count;
    * LeakyReLU slope 0.01 (Isensee et al., whose sentences the text paraphrases; Keras's
      default would be 0.3); norm eps 1e-3 (keras-contrib / Keras defaults);
    * Glorot-uniform weights and zero biases (Keras's defaults; the text names no init);
    * one logit channel, read through a sigmoid by the loss and at inference: the paper names
      no output layer or activation, only a binary voxel label (§4.2).

    The classic 3D U-Net the paper compares against (§4.1, Tab. 1) is the same skeleton with
    ``norm="batch", act="relu", dilation=1, dropout=0.0`` (:func:`classic_unet3d`); BatchNorm
    has as many parameters as affine IN, so its counts equal the ones above.

    Args:
        in_channels: input maps (5: CT, CBF, CBV, MTT, Tmax).
        out_channels: output logit channels (1: one lesion logit, for a sigmoid).
        base_width: F, the width of level 1 (64 by §4.1's "64-component feature vector").
        norm: ``"instance"`` (affine InstanceNorm3d, §4.1) or ``"batch"`` (BatchNorm3d,
            the classic U-Net, with Keras's momentum 0.99 = PyTorch's 0.01).
        act: ``"leakyrelu"`` (§4.1) or ``"relu"`` (the classic U-Net).
        negative_slope: LeakyReLU slope (ignored for ``"relu"``).
        dilation: dilation of the second conv of each level in ``dilated_levels``; 1 for none.
        dilated_levels: 1-based encoder levels whose second conv is dilated ((3, 4, 5)).
        dropout: ``Dropout3d`` probability after levels 4 and 5 (0.5); 0 for none.
        norm_eps: epsilon of the normalisation layers (1e-3).

    Shape:
        Input (B, in_channels, D, H, W), any D, H, W (zero-padded, centred, to multiples of 16
        and cropped back); output raw logits (B, out_channels, D, H, W). The paper's input is
        (B, 5, 32, 128, 128) (§4.1: "input form = [5, 128, 128, 32]", depth last).

    Raises:
        ValueError: for invalid arguments, or an input that is not (B, in_channels, D, H, W).
    """

    def __init__(
        self,
        in_channels: int = 5,
        out_channels: int = 1,
        base_width: int = 64,
        norm: Literal["instance", "batch"] = "instance",
        act: Literal["leakyrelu", "relu"] = "leakyrelu",
        negative_slope: float = 0.01,
        dilation: int = 2,
        dilated_levels: Sequence[int] = (3, 4, 5),
        dropout: float = 0.5,
        norm_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or base_width < 1:
            raise ConfigurationError(
                f"OmarovUNet3D needs in_channels, out_channels and base_width ≥ 1; got "
                f"{in_channels}, {out_channels} and {base_width}."
            )
        if norm not in ("instance", "batch"):
            raise ConfigurationError(
                f"OmarovUNet3D got norm={norm!r}; expected 'instance' or 'batch'."
            )
        if act not in ("leakyrelu", "relu"):
            raise ConfigurationError(
                f"OmarovUNet3D got act={act!r}; expected 'leakyrelu' or 'relu'."
            )
        if dilation < 1:
            raise ConfigurationError(
                f"OmarovUNet3D got dilation={dilation}; expected ≥ 1 (1 for none)."
            )
        if not set(dilated_levels) <= {1, 2, 3, 4, 5}:
            raise ConfigurationError(
                f"OmarovUNet3D got dilated_levels={tuple(dilated_levels)!r}; expected encoder "
                "levels among 1…5, e.g. (3, 4, 5)."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigurationError(
                f"OmarovUNet3D got dropout={dropout!r}; expected a probability in [0, 1)."
            )
        self.in_channels = in_channels
        self.multiples = (16, 16, 16)  # four 2×2×2 poolings

        def make_norm(channels: int) -> nn.Module:
            if norm == "instance":
                return Norm[Norm.INSTANCE, 3](channels, eps=norm_eps, affine=True)
            return Norm[Norm.BATCH, 3](channels, eps=norm_eps, momentum=0.01)

        def make_act() -> nn.Module:
            if act == "leakyrelu":
                return Act[Act.LEAKYRELU](negative_slope=negative_slope)
            return Act[Act.RELU]()

        def double_conv(cin: int, cout: int, second_dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(
                _ConvBlock(cin, cout, 1, make_norm(cout), make_act()),
                _ConvBlock(cout, cout, second_dilation, make_norm(cout), make_act()),
            )

        widths = [base_width * 2**level for level in range(5)]
        c1, c2, c3, c4, c5 = widths
        rates = [dilation if level in dilated_levels else 1 for level in range(1, 6)]
        self.enc1 = double_conv(in_channels, c1, rates[0])
        self.enc2 = double_conv(c1, c2, rates[1])
        self.enc3 = double_conv(c2, c3, rates[2])
        self.enc4 = double_conv(c3, c4, rates[3])
        self.enc5 = double_conv(c4, c5, rates[4])
        self.pool = nn.MaxPool3d(kernel_size=2)
        self.dropout = Dropout[Dropout.DROPOUT, 3](dropout) if dropout > 0 else nn.Identity()
        self.up4, self.dec4 = _UpConv(c5, c4, make_act()), double_conv(2 * c4, c4)
        self.up3, self.dec3 = _UpConv(c4, c3, make_act()), double_conv(2 * c3, c3)
        self.up2, self.dec2 = _UpConv(c3, c2, make_act()), double_conv(2 * c2, c2)
        self.up1, self.dec1 = _UpConv(c2, c1, make_act()), double_conv(2 * c1, c1)
        self.head = Conv[Conv.CONV, 3](c1, out_channels, 1)

        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.enc1(x)  # (B, F, D, H, W)
        x2 = self.enc2(self.pool(x1))  # (B, 2F, D/2, H/2, W/2)
        x3 = self.enc3(self.pool(x2))  # (B, 4F, D/4, H/4, W/4)
        x4 = self.dropout(self.enc4(self.pool(x3)))  # (B, 8F, D/8, H/8, W/8)
        x5 = self.dropout(self.enc5(self.pool(x4)))  # (B, 16F, D/16, H/16, W/16)
        u4 = self.dec4(torch.cat([x4, self.up4(x5)], dim=1))  # (B, 8F, D/8, H/8, W/8)
        u3 = self.dec3(torch.cat([x3, self.up3(u4)], dim=1))  # (B, 4F, D/4, H/4, W/4)
        u2 = self.dec2(torch.cat([x2, self.up2(u3)], dim=1))  # (B, 2F, D/2, H/2, W/2)
        u1 = self.dec1(torch.cat([x1, self.up1(u2)], dim=1))  # (B, F, D, H, W)
        return self.head(u1)  # (B, out_channels, D', H', W')


def classic_unet3d(
    in_channels: int = 5, out_channels: int = 1, base_width: int = 64
) -> OmarovUNet3D:
    """The plain 3D U-Net Omarov et al. compare against (docs/papers.md §5, Reading A).

    The same 23-conv skeleton as :class:`OmarovUNet3D` with BatchNorm3d and ReLU, no dilation
    and no dropout (§4.1 lists instance norm, leaky ReLU, dilation and dropout among its
    modifications); the paper trains it for 200 epochs (§4.1, §5). Same parameter count as the
    modified network as built here (BatchNorm and affine IN both have 2 parameters per
    channel); the paper prints no count.

    Args:
        in_channels: input maps (5).
        out_channels: output logit channels (1).
        base_width: F, the width of level 1 (64).

    Returns:
        The network, raw logits out.
    """
    return OmarovUNet3D(
        in_channels,
        out_channels,
        base_width,
        norm="batch",
        act="relu",
        dilation=1,
        dilated_levels=(),
        dropout=0.0,
    )
