"""The U-Net baselines of the D-UNet paper (Zhou et al., arXiv 1908.05104), from its Keras code."""

from __future__ import annotations

import torch
from torch import nn

from networks.blocks import ConvNormAct
from networks.dunet import (
    _WIDTHS,
    _batch_norm,
    _check_input,
    _DoubleConv,
    _init_keras,
    _UpBlock,
)

# Widths of the Keras ``Unet_origin``: the classic U-Net.
_ORIGINAL_WIDTHS = (64, 128, 256, 512, 1024)


def _check_dropout(name: str, dropout: float) -> None:
    """Raise a ValueError unless ``dropout`` is a probability in [0, 1)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name} got dropout={dropout!r}; expected a probability in [0, 1).")


class _UNet(nn.Module):
    """The 2D U-Net shared by ``Unet()`` and ``Unet_origin()``: 5 levels, Dropout at 4 and 5."""

    def __init__(
        self,
        name: str,
        in_channels: int,
        widths: tuple[int, ...],
        norm: tuple | None,
        dropout: float,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"{name} needs in_channels ≥ 1; got {in_channels}.")
        _check_dropout(name, dropout)
        self.label = name
        self.in_channels = in_channels
        c1, c2, c3, c4, c5 = widths
        self.enc1 = _DoubleConv(2, in_channels, c1, norm)
        self.enc2 = _DoubleConv(2, c1, c2, norm)
        self.enc3 = _DoubleConv(2, c2, c3, norm)
        self.enc4 = _DoubleConv(2, c3, c4, norm)
        self.enc5 = _DoubleConv(2, c4, c5, norm)
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.dropout = nn.Dropout(dropout)
        self.up4 = _UpBlock(2, c5, c4, norm)
        self.up3 = _UpBlock(2, c4, c3, norm)
        self.up2 = _UpBlock(2, c3, c2, norm)
        self.up1 = _UpBlock(2, c2, c1, norm)
        self.head = nn.Conv2d(c1, 1, kernel_size=1)
        _init_keras(self, head=self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self.label, x, self.in_channels, 16)
        x1 = self.enc1(x)  # (B, c1, H, W)
        x2 = self.enc2(self.pool(x1))  # (B, c2, H/2, W/2)
        x3 = self.enc3(self.pool(x2))  # (B, c3, H/4, W/4)
        x4 = self.dropout(self.enc4(self.pool(x3)))  # (B, c4, H/8, W/8)
        x5 = self.dropout(self.enc5(self.pool(x4)))  # (B, c5, H/16, W/16)
        u4 = self.up4(x5, x4)  # (B, c4, H/8, W/8)
        u3 = self.up3(u4, x3)  # (B, c3, H/4, W/4)
        u2 = self.up2(u3, x2)  # (B, c2, H/2, W/2)
        u1 = self.up1(u2, x1)  # (B, c1, H, W)
        return self.head(u1)  # (B, 1, H, W) logits


class UNetTransform(_UNet):
    """The "2D UNet (transform)" baseline: the 2D stream of D-UNet alone.

    Zhou et al., D-UNet, arXiv 1908.05104, the comparison with 2D/3D U-Nets; the Keras
    function ``Unet()`` of the authors' ``model.py`` (papers.md §2 "Baselines"). Levels of
    [conv 3×3 + BN + ReLU] × 2 with widths 32, 64, 128, 256, 512, max-pool 2, Dropout after
    levels 4 and 5; decoder of nearest ×2 + conv 2×2 + ReLU (no BN), concat [skip, up],
    [conv 3×3 + BN + ReLU] × 2; conv 1×1 to one map.

    Keras total (``in_channels=1``) 7,771,297 = 7,765,409 PyTorch parameters + 5,888 BN
    running mean/var. The default follows the code: a single-slice input (the paper's
    "transform" U-Net), BN eps 1e-3 / momentum 0.99, raw logits instead of the final sigmoid.

    Args:
        in_channels: input maps (1 in the code; 4 gives the D-UNet input without the 3D stream).
        dropout: element-wise dropout after encoder levels 4 and 5 (0.3).
        bn_eps: BatchNorm epsilon (Keras default 1e-3).
        bn_momentum: BatchNorm momentum in PyTorch's convention (0.01 = Keras 0.99).

    Shape:
        Input (B, in_channels, H, W), H and W divisible by 16; output raw logits (B, 1, H, W).

    Raises:
        ValueError: for invalid arguments, or an input of the wrong shape or size.
    """

    def __init__(
        self,
        in_channels: int = 1,
        dropout: float = 0.3,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__(
            "UNetTransform", in_channels, _WIDTHS, _batch_norm(bn_eps, bn_momentum), dropout
        )


class UNetOriginal(_UNet):
    """The "2D UNet (original)" baseline: Ronneberger's U-Net as written in the D-UNet code.

    Zhou et al., D-UNet, arXiv 1908.05104, the comparison with 2D/3D U-Nets; the Keras function
    ``Unet_origin()`` (papers.md §2 "Baselines"). Levels of [conv 3×3 + ReLU] × 2, no
    normalisation, widths 64, 128, 256, 512, 1024, max-pool 2, Dropout after levels 4 and 5;
    decoder of nearest ×2 + conv 2×2 + ReLU, concat [skip, up], [conv 3×3 + ReLU] × 2; conv 1×1.

    Keras total 31,030,593 (no BN, so equal to the PyTorch parameter count). It differs from
    ``UNet2D`` (transposed up-convs, 2 classes, dropout 0.5 on the bottleneck only); this class
    follows the D-UNet code and returns raw logits instead of the final sigmoid.

    Args:
        in_channels: input maps (1 in the code).
        dropout: element-wise dropout after encoder levels 4 and 5 (0.3).

    Shape:
        Input (B, in_channels, H, W), H and W divisible by 16; output raw logits (B, 1, H, W).

    Raises:
        ValueError: for invalid arguments, or an input of the wrong shape or size.
    """

    def __init__(self, in_channels: int = 1, dropout: float = 0.3) -> None:
        super().__init__("UNetOriginal", in_channels, _ORIGINAL_WIDTHS, None, dropout)


class UNet3DTransform(nn.Module):
    """The "3D UNet (transform)" baseline: a 3D U-Net over the slice stack, then a 2D head.

    Zhou et al., D-UNet, arXiv 1908.05104, the comparison with 2D/3D U-Nets; the Keras function
    ``Unet3d()`` (papers.md §2 "Baselines"). The input (B, S, H, W) is seen as (B, 1, S, H, W).
    Levels of [conv 3×3×3 + BN + ReLU] × 2 with widths 32, 64, 128, 256, 512 and max-pool
    (1, 2, 2), so the slice axis is never pooled; Dropout after levels 4 and 5; decoder of
    nearest (1, 2, 2) upsampling + conv 2×2×2 'same' + ReLU, concat [skip, up],
    [conv 3×3×3 + BN + ReLU] × 2. Then conv 1×1×1 to one channel + ReLU, the S slices become
    channels, a 2D [conv 3×3 + BN + ReLU] × 2 to 32 channels and a conv 1×1 to one map.

    Keras total 22,597,826 = 22,591,810 PyTorch parameters + 6,016 BN running mean/var. The
    default follows the code (ReLU before the squeeze, BN eps 1e-3 / momentum 0.99) and returns
    raw logits instead of the final sigmoid.

    Args:
        in_slices: neighbouring slices stacked as channels, the depth of the 3D U-Net (4).
        dropout: element-wise dropout after encoder levels 4 and 5 (0.3).
        bn_eps: BatchNorm epsilon (Keras default 1e-3).
        bn_momentum: BatchNorm momentum in PyTorch's convention (0.01 = Keras 0.99).

    Shape:
        Input (B, in_slices, H, W), H and W divisible by 16; output raw logits (B, 1, H, W).

    Raises:
        ValueError: for invalid arguments, or an input of the wrong shape or size.
    """

    def __init__(
        self,
        in_slices: int = 4,
        dropout: float = 0.3,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        if in_slices < 1:
            raise ValueError(f"UNet3DTransform needs in_slices ≥ 1; got {in_slices}.")
        _check_dropout("UNet3DTransform", dropout)
        self.in_slices = in_slices
        norm = _batch_norm(bn_eps, bn_momentum)
        c1, c2, c3, c4, c5 = _WIDTHS
        in_plane = (1, 2, 2)  # Keras (2, 2, 1) on (H, W, D): pool and upsample H, W only

        self.enc1 = _DoubleConv(3, 1, c1, norm)
        self.enc2 = _DoubleConv(3, c1, c2, norm)
        self.enc3 = _DoubleConv(3, c2, c3, norm)
        self.enc4 = _DoubleConv(3, c3, c4, norm)
        self.enc5 = _DoubleConv(3, c4, c5, norm)
        self.pool = nn.MaxPool3d(kernel_size=in_plane)
        self.dropout = nn.Dropout(dropout)
        self.up4 = _UpBlock(3, c5, c4, norm, scale_factor=in_plane)
        self.up3 = _UpBlock(3, c4, c3, norm, scale_factor=in_plane)
        self.up2 = _UpBlock(3, c3, c2, norm, scale_factor=in_plane)
        self.up1 = _UpBlock(3, c2, c1, norm, scale_factor=in_plane)
        self.squeeze = ConvNormAct(3, c1, 1, 1, bias=True, norm=None, act="relu")
        self.head_2d = _DoubleConv(2, in_slices, c1, norm)
        self.head = nn.Conv2d(c1, 1, kernel_size=1)
        _init_keras(self, head=self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment the middle slices of a batch of slice stacks.

        Args:
            x: (B, in_slices, H, W), H and W divisible by 16.

        Returns:
            Raw logits (B, 1, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_slices, H, W) with H, W divisible by 16.
        """
        _check_input("UNet3DTransform", x, self.in_slices, 16)
        x1 = self.enc1(x.unsqueeze(1))  # (B, 32, S, H, W)
        x2 = self.enc2(self.pool(x1))  # (B, 64, S, H/2, W/2)
        x3 = self.enc3(self.pool(x2))  # (B, 128, S, H/4, W/4)
        x4 = self.dropout(self.enc4(self.pool(x3)))  # (B, 256, S, H/8, W/8)
        x5 = self.dropout(self.enc5(self.pool(x4)))  # (B, 512, S, H/16, W/16)
        u4 = self.up4(x5, x4)  # (B, 256, S, H/8, W/8)
        u3 = self.up3(u4, x3)  # (B, 128, S, H/4, W/4)
        u2 = self.up2(u3, x2)  # (B, 64, S, H/2, W/2)
        u1 = self.up1(u2, x1)  # (B, 32, S, H, W)
        slices = self.squeeze(u1).squeeze(1)  # (B, 1, S, H, W) → (B, S, H, W)
        return self.head(self.head_2d(slices))  # (B, 1, H, W) logits
