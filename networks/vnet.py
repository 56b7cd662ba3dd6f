"""V-Net (Milletari et al., arXiv 1606.04797) as the 3D baseline of arXiv 1811.01085 uses it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from monai.networks.nets.vnet import (
    DownTransition,
    OutputTransition,
    UpTransition,
    get_acti_layer,
)
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import VolumeNet, volume_settings

_ACTS: dict[str, tuple[str, dict] | str] = {"elu": ("elu", {"inplace": True}), "prelu": "prelu"}


class _InputTransition(nn.Module):
    """Conv 3×3×3 (padding 1) + BN to ``width`` (16) channels, plus the input repeated to that
    many channels, act.

    The reference repeats a 1-channel input 16 times for the residual sum. For C channels the
    input is repeated ⌈16 / C⌉ times and cut to 16 channels: no parameters, and the same as the
    reference (and MONAI) whenever C divides 16.
    """

    def __init__(self, in_channels: int, act: tuple | str, bias: bool, width: int = 16) -> None:
        super().__init__()
        self.width = width
        self.repeats = -(-width // in_channels)
        self.conv = Convolution(
            3, in_channels, width, kernel_size=3, act=None, norm="batch", bias=bias
        )
        self.act = get_acti_layer(act, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x.repeat(1, self.repeats, 1, 1, 1)[:, : self.width]  # (B, 16, D, H, W)
        return self.act(self.conv(x) + residual)


class VNet(VolumeNet):
    """V-Net: residual stages of 5×5×5 convs, strided down-convs and transposed up-convs.

    Milletari et al., *V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
    Segmentation*, arXiv 1606.04797, in the layout of the usual PyTorch port
    (``mattmacy/vnet.pytorch``), with the two changes of Abulnaga & Rubin, arXiv 1811.01085
    (docs/papers.md §4 "Baselines in the paper"; canonical layers in §6):

    * the first convolution is 3×3×3 with padding 1 instead of 5×5×5;
    * the down-convs (conv, kernel = stride) and up-convs (transposed conv, kernel = stride) use
      ``pool``, by default in-plane only.

    Stages (16 → 32 → 64 → 128 → 256 channels): input transition (1 conv, residual), down
    stages of 1, 2, 3, 2 [conv 5³ + BN + act] with a residual each, up stages of 2, 2, 1, 1;
    dropout (``Dropout3d``) before the two deepest down stages' convs and on both inputs of the
    two deepest up stages, and on the skip of every up stage; output conv 5³ + BN + act, then
    conv 1³ to ``out_channels``. Built from MONAI's V-Net blocks
    (``monai.networks.nets.vnet``): ``monai.networks.nets.VNet`` hard-codes a 5³ first conv,
    2³ down/up-convs and ``16 % in_channels == 0``, so this class swaps in its own input
    transition and the ``pool``-shaped down/up-convs. As in MONAI, the convs followed by BN
    have no bias (the port's have), so the count is a little below the port's.

    ``pool`` is in the tensor's (D, H, W) order. Seed 003's "(2, 2, 1)" is in (H, W, D) order,
    i.e. never along the slice axis D: that is ``pool=(1, 2, 2)`` here, the default.
    docs/papers.md gives no V-Net parameter count; the measured count of the default
    (5 → 2 channels, ELU) is 45,206,890 (tests/networks/test_unet3d.py).

    Args:
        in_channels: input maps (5, the CTP stack of arXiv 1811.01085).
        out_channels: output logit channels (2, softmax, as in the paper).
        pool: kernel = stride of the down- and up-convs per (D, H, W) axis; an int for all
            three. (1, 2, 2) by default; 2 is the original V-Net.
        act: ``"elu"`` (the port's default) or ``"prelu"`` (the paper's).
        dropout: ``Dropout3d`` probability (0.5, the port's).
        base_width: Channels of the first stage (16, the port's), doubled at each down stage; a
            smaller value gives a narrow V-Net of the same layout (tests, CPU demos).

    Shape:
        Input (B, in_channels, D, H, W), any D, H, W (zero-padded, centred, to multiples of the
        total down-sampling and cropped back); output raw logits (B, out_channels, D, H, W).

    Raises:
        ValueError: for invalid arguments, or an input that is not (B, in_channels, D, H, W).
    """

    def __init__(
        self,
        in_channels: int = 5,
        out_channels: int = 2,
        pool: int | Sequence[int] = (1, 2, 2),
        act: Literal["elu", "prelu"] = "elu",
        dropout: float = 0.5,
        base_width: int = 16,
    ) -> None:
        super().__init__()
        pool = volume_settings("VNet", in_channels, out_channels, pool)
        if base_width < 1:
            raise ConfigurationError(f"VNet got base_width={base_width!r}; expected ≥ 1.")
        if act not in _ACTS:
            raise ConfigurationError(f"VNet got act={act!r}; expected one of {sorted(_ACTS)}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigurationError(
                f"VNet got dropout={dropout!r}; expected a probability in [0, 1)."
            )
        self.in_channels = in_channels
        self.multiples = tuple(size**4 for size in pool)  # four down-convs
        activation = _ACTS[act]

        w = base_width  # 16 in the port: stages of 16, 32, 64, 128, 256 channels
        self.in_tr = _InputTransition(in_channels, activation, bias=False, width=w)
        self.down_tr32 = DownTransition(3, w, 1, activation)
        self.down_tr64 = DownTransition(3, 2 * w, 2, activation)
        self.down_tr128 = DownTransition(3, 4 * w, 3, activation, dropout_prob=dropout)
        self.down_tr256 = DownTransition(3, 8 * w, 2, activation, dropout_prob=dropout)
        both = (dropout, dropout)
        self.up_tr256 = UpTransition(3, 16 * w, 16 * w, 2, activation, dropout_prob=both)
        self.up_tr128 = UpTransition(3, 16 * w, 8 * w, 2, activation, dropout_prob=both)
        self.up_tr64 = UpTransition(3, 8 * w, 4 * w, 1, activation, dropout_prob=(None, dropout))
        self.up_tr32 = UpTransition(3, 4 * w, 2 * w, 1, activation, dropout_prob=(None, dropout))
        self.out_tr = OutputTransition(3, 2 * w, out_channels, activation)

        # Seed 003's (2, 2, 1) down/up-convs in place of MONAI's fixed 2×2×2 ones.
        for down in (self.down_tr32, self.down_tr64, self.down_tr128, self.down_tr256):
            channels = down.bn1.num_features
            down.down_conv = Conv[Conv.CONV, 3](
                channels // 2, channels, kernel_size=pool, stride=pool, bias=False
            )
        ups = (
            (self.up_tr256, 16 * w),
            (self.up_tr128, 16 * w),
            (self.up_tr64, 8 * w),
            (self.up_tr32, 4 * w),
        )
        for up, up_in in ups:
            up.up_conv = Conv[Conv.CONVTRANS, 3](
                up_in, up.bn1.num_features, kernel_size=pool, stride=pool
            )

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        out16 = self.in_tr(x)  # (B, 16, D, H, W)
        out32 = self.down_tr32(out16)  # (B, 32, D/p, H/p, W/p)
        out64 = self.down_tr64(out32)  # (B, 64, D/p², …)
        out128 = self.down_tr128(out64)  # (B, 128, D/p³, …)
        out256 = self.down_tr256(out128)  # (B, 256, D/p⁴, …)
        u128 = self.up_tr256(out256, out128)  # (B, 256, D/p³, …)
        u64 = self.up_tr128(u128, out64)  # (B, 128, D/p², …)
        u32 = self.up_tr64(u64, out32)  # (B, 64, D/p, …)
        u16 = self.up_tr32(u32, out16)  # (B, 32, D, H, W)
        return self.out_tr(u16)  # (B, out_channels, D', H', W')
