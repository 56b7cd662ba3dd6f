"""The U-Net baselines of the D-UNet paper (Zhou et al., arXiv 1908.05104), from its Keras code."""

from __future__ import annotations

import torch
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct, check_input
from networks.keras_unet import (
    KERAS_WIDTHS,
    DoubleConv,
    KerasUNet,
    check_dropout,
    init_keras,
    keras_batch_norm,
)

# Widths of the Keras ``Unet_origin``: the classic U-Net.
_ORIGINAL_WIDTHS = (64, 128, 256, 512, 1024)


class _UNet(KerasUNet):
    """The 2D U-Net shared by ``Unet()`` and ``Unet_origin()``: 5 levels, Dropout at 4 and 5."""

    def __init__(
        self,
        name: str,
        in_channels: int,
        widths: tuple[int, ...],
        norm: tuple | None,
        dropout: float,
    ) -> None:
        if in_channels < 1:
            raise ConfigurationError(f"{name} needs in_channels ≥ 1; got {in_channels}.")
        check_dropout(name, dropout)
        super().__init__(2, in_channels, widths, norm, dropout)
        self.label = name
        self.in_channels = in_channels
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)
        init_keras(self, head=self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self.label, x, self.in_channels, 16)
        return self.head(self.features(x))  # (B, 1, H, W) logits


class UNetTransform(_UNet):
    """The "2D UNet (transform)" baseline: the 2D stream of D-UNet alone.

    Zhou et al., D-UNet, arXiv 1908.05104, the comparison with 2D/3D U-Nets; the Keras
    function ``Unet()`` of the authors' ``model.py`` (docs/papers.md §2 "Baselines"). Levels of
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
            "UNetTransform",
            in_channels,
            KERAS_WIDTHS,
            keras_batch_norm(bn_eps, bn_momentum),
            dropout,
        )


class UNetOriginal(_UNet):
    """The "2D UNet (original)" baseline: Ronneberger's U-Net as written in the D-UNet code.

    Zhou et al., D-UNet, arXiv 1908.05104, the comparison with 2D/3D U-Nets; the Keras function
    ``Unet_origin()`` (docs/papers.md §2 "Baselines"). Levels of [conv 3×3 + ReLU] × 2, no
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


class UNet3DTransform(KerasUNet):
    """The "3D UNet (transform)" baseline: a 3D U-Net over the slice stack, then a 2D head.

    Zhou et al., D-UNet, arXiv 1908.05104, the comparison with 2D/3D U-Nets; the Keras function
    ``Unet3d()`` (docs/papers.md §2 "Baselines"). The input (B, S, H, W) is seen as (B, 1, S, H, W).
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
        if in_slices < 1:
            raise ConfigurationError(f"UNet3DTransform needs in_slices ≥ 1; got {in_slices}.")
        check_dropout("UNet3DTransform", dropout)
        norm = keras_batch_norm(bn_eps, bn_momentum)
        # Keras (2, 2, 1) on (H, W, D): pool and upsample H, W only, never the slice axis.
        super().__init__(3, 1, KERAS_WIDTHS, norm, dropout, pool_kernel=(1, 2, 2))
        self.in_slices = in_slices
        c1 = KERAS_WIDTHS[0]
        self.squeeze = ConvNormAct(3, c1, 1, 1, bias=True, norm=None, act="relu")
        self.head_2d = DoubleConv(2, in_slices, c1, norm)
        self.head = nn.Conv2d(c1, 1, kernel_size=1)
        init_keras(self, head=self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment the middle slices of a batch of slice stacks.

        Args:
            x: (B, in_slices, H, W), H and W divisible by 16.

        Returns:
            Raw logits (B, 1, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_slices, H, W) with H, W divisible by 16.
        """
        check_input("UNet3DTransform", x, self.in_slices, 16)
        u1 = self.features(x.unsqueeze(1))  # (B, 32, S, H, W)
        slices = self.squeeze(u1).squeeze(1)  # (B, 1, S, H, W) → (B, S, H, W)
        return self.head(self.head_2d(slices))  # (B, 1, H, W) logits
