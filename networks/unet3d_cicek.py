"""The 3D U-Net of Çiçek et al. (arXiv 1606.06650), the 3D baseline of arXiv 1811.01085."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import VolumeNet, volume_settings


def _double_conv(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    """[conv 3×3×3 (biased) → BatchNorm3d → ReLU] × 2."""
    return nn.Sequential(
        *(
            Convolution(3, cin, cout, kernel_size=3, act="relu", norm="batch", bias=True)
            for cin, cout in ((in_channels, mid_channels), (mid_channels, out_channels))
        )
    )


class _Up(nn.Module):
    """Transposed conv (kernel = stride = the pooling, channels kept), concat [skip, up], 2 convs."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, pool: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.up = Conv[Conv.CONVTRANS, 3](in_channels, in_channels, kernel_size=pool, stride=pool)
        self.conv = _double_conv(skip_channels + in_channels, out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([skip, self.up(x)], dim=1)  # (B, skip + in, *skip spatial)
        return self.conv(x)


class UNet3DCicek(VolumeNet):
    """3D U-Net: analysis and synthesis paths of 3×3×3 convs with BatchNorm, max-pool, up-convs.

    Çiçek et al., *3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation*,
    arXiv 1606.06650, §2 and Fig. 1; as the 3D baseline of Abulnaga & Rubin, arXiv 1811.01085
    (docs/papers.md §4 "Baselines in the paper"; canonical layers in §6).

    Analysis path: levels of [conv 3×3×3 + BN + ReLU] × 2 with widths (32, 64), (64, 128),
    (128, 256) and bottom (256, 512), max-pooling ``pool`` between them. Synthesis path:
    transposed conv with kernel = stride = ``pool`` keeping the channels, concat [skip, up],
    [conv 3×3×3 + BN + ReLU] × 2 with widths 256, 128, 64; conv 1×1×1 to ``out_channels``.
    ``in_channels=1, out_channels=3, pool=2`` is the paper's network: 19,073,795 parameters.

    ``pool`` is in the tensor's (D, H, W) order. Seed 003 pools "(2, 2, 1)" in (H, W, D) order,
    i.e. never along the slice axis D: that is ``pool=(1, 2, 2)`` here, the default.

    Deliberate deviations from the paper: 'same' padding instead of 'valid' (no cropping, output
    size = input size), and inputs whose D, H, W are not multiples of the total pooling are
    zero-padded (centred) and the logits cropped back.

    Args:
        in_channels: input maps (5, the CTP stack of arXiv 1811.01085; 3 in the paper).
        out_channels: output logit channels (2, softmax, as seed 003's networks; 3 in the paper).
        pool: max-pool kernel = stride, and up-conv kernel = stride, per (D, H, W) axis; an int
            for all three. (1, 2, 2) by default; 2 is the paper's 2×2×2.
        base_width: Channels of the first conv (32, the paper's); every width of Fig. 1 scales
            with it (a narrow 3D U-Net of the same layout for tests and CPU demos).

    Shape:
        Input (B, in_channels, D, H, W), any D, H, W; output raw logits
        (B, out_channels, D, H, W).

    Raises:
        ValueError: for invalid arguments, or an input that is not (B, in_channels, D, H, W).
    """

    def __init__(
        self,
        in_channels: int = 5,
        out_channels: int = 2,
        pool: int | Sequence[int] = (1, 2, 2),
        base_width: int = 32,
    ) -> None:
        super().__init__()
        pool = volume_settings("UNet3DCicek", in_channels, out_channels, pool)
        if base_width < 1:
            raise ConfigurationError(f"UNet3DCicek got base_width={base_width!r}; expected ≥ 1.")
        self.in_channels = in_channels
        self.multiples = tuple(size**3 for size in pool)  # three poolings

        w = base_width  # 32 in Fig. 1: (32, 64), (64, 128), (128, 256), bottom (256, 512)
        self.enc1 = _double_conv(in_channels, w, 2 * w)
        self.enc2 = _double_conv(2 * w, 2 * w, 4 * w)
        self.enc3 = _double_conv(4 * w, 4 * w, 8 * w)
        self.bottom = _double_conv(8 * w, 8 * w, 16 * w)
        self.pool = Pool[Pool.MAX, 3](kernel_size=pool, stride=pool)
        self.up3 = _Up(16 * w, 8 * w, 8 * w, pool)
        self.up2 = _Up(8 * w, 4 * w, 4 * w, pool)
        self.up1 = _Up(4 * w, 2 * w, 2 * w, pool)
        self.head = Conv[Conv.CONV, 3](2 * w, out_channels, kernel_size=1)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.enc1(x)  # (B, 64, D, H, W)
        x2 = self.enc2(self.pool(x1))  # (B, 128, D/p, H/p, W/p)
        x3 = self.enc3(self.pool(x2))  # (B, 256, D/p², H/p², W/p²)
        x4 = self.bottom(self.pool(x3))  # (B, 512, D/p³, H/p³, W/p³)
        u3 = self.up3(x4, x3)  # (B, 256, D/p², H/p², W/p²)
        u2 = self.up2(u3, x2)  # (B, 128, D/p, H/p, W/p)
        u1 = self.up1(u2, x1)  # (B, 64, D, H, W)
        return self.head(u1)  # (B, out_channels, D', H', W')
