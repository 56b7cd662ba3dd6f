"""D-UNet of Zhou et al. (arXiv 1908.05104): a 2D U-Net whose encoder is fused with a 3D stream."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct, check_input
from networks.keras_unet import (
    KERAS_WIDTHS,
    DoubleConv,
    UpBlock,
    check_dropout,
    init_keras,
    keras_batch_norm,
)

Fusion = Literal["Add-1", "Add-12", "Add-23", "Add-123", "SEAdd-12", "SEAdd-23", "SEAdd-123"]

# Fused encoder levels of each ablation variant; the 3D stream runs down to the deepest one.
FUSION_LEVELS: dict[str, tuple[int, ...]] = {
    "Add-1": (1,),
    "Add-12": (1, 2),
    "Add-23": (2, 3),
    "Add-123": (1, 2, 3),
    "SEAdd-12": (1, 2),
    "SEAdd-23": (2, 3),
    "SEAdd-123": (1, 2, 3),
}


class _SqueezeExcite(nn.Module):
    """Channel SE of Hu et al. with bias-free dense layers, as Keras ``squeeze_excite_block``."""

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // ratio, bias=False),
            nn.ReLU(),
            nn.Linear(channels // ratio, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))  # (B, C)
        return x * weights[:, :, None, None]


class _DimensionTransform(nn.Module):
    """The dimension-transform block: 3D features → 2D features, added to the 2D stream.

    Conv3d 1×1×1 to one channel, the D slices become channels, conv 3×3 + ReLU to the 2D width
    (equal to the 3D width at every level); with ``se_ratio``, separate SE blocks on both
    summands (``D_SE_Add``), else none (``D_Add``).
    """

    def __init__(self, depth: int, channels: int, se_ratio: int | None) -> None:
        super().__init__()
        self.squeeze = ConvNormAct(3, channels, 1, 1, bias=True, norm=None, act=None)
        self.project = ConvNormAct(2, depth, channels, 3, bias=True, norm=None, act="relu")
        self.se_3d = _SqueezeExcite(channels, se_ratio) if se_ratio else nn.Identity()
        self.se_2d = _SqueezeExcite(channels, se_ratio) if se_ratio else nn.Identity()

    def forward(self, x3d: torch.Tensor, x2d: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x3d).squeeze(1)  # (B, C, D, H, W) → (B, 1, D, H, W) → (B, D, H, W)
        x = self.project(x)  # (B, C, H, W)
        return self.se_3d(x) + self.se_2d(x2d)


class DUNet(nn.Module):
    """D-UNet: a 2D U-Net whose first encoder levels are fused with a shallow 3D U-Net encoder.

    Zhou et al., *D-UNet: a dimension-fusion U shape network for chronic stroke lesion
    segmentation*, IEEE/ACM TCBB 2021, arXiv 1908.05104: the architecture figure, the
    dimension-transform block with squeeze-and-excitation, and the fusion ablation
    (Add-* / SEAdd-*). Ported layer by layer from the authors' Keras ``model.py``
    (``D_Unet``, ``D_Add``, ``D_SE_Add``, ``squeeze_excite_block``); see docs/papers.md §2.

    The input is 4 neighbouring slices as channels. The 2D stream is a U-Net of
    [conv 3×3 + BN + ReLU] × 2 levels with widths 32, 64, 128, 256, 512, max-pool 2, Dropout
    after levels 4 and 5, and a decoder of nearest ×2 upsampling + conv 2×2 + ReLU, concat
    [skip, up], [conv 3×3 + BN + ReLU] × 2. The 3D stream sees the input as (B, 1, D=4, H, W)
    and runs 3D levels 32, 64, 128 with max-pool 2³ (D halves too: 4, 2, 1). At each fused
    level a dimension-transform block maps the 3D features to the 2D width and adds them to the
    2D features; the sum replaces the 2D level's output both for pooling and as the skip.

    Fusion variants (ablation; Keras totals = PyTorch parameters + BN running mean/var):

    =========  ============  =========  ===========================================
    variant    fused levels  3D levels  Keras total
    =========  ============  =========  ===========================================
    Add-1      1             1          7,802,210
    Add-12     1, 2          1–2        7,970,019
    Add-23     2, 3          1–3        8,635,043
    Add-123    1, 2, 3       1–3        8,636,260
    SEAdd-12   1, 2          1–2        7,971,299
    SEAdd-23   2, 3          1–3        8,640,163 (the D-UNet; 8,633,379 parameters)
    SEAdd-123  1, 2, 3       1–3        8,647,012 only with ``se_ratio=8``
    =========  ============  =========  ===========================================

    Where the paper and the code disagree, the default follows the code: the SE reduction ratio
    is the code's 16, although the paper's SEAdd-123 count is reproduced only with
    ``se_ratio=8`` (8,641,636 at 16), so that run probably used r = 8 — pass ``se_ratio=8`` to
    match it.

    The network returns raw logits; the final sigmoid of paper and code is left to the loss and
    the metrics. Keras conventions are kept: biased convs, BatchNorm eps 1e-3 and momentum 0.99
    (PyTorch ``momentum=0.01``), He-normal init with a Glorot-uniform 1×1 head. Submodules are
    numbered as the code's layers: ``enc3d_1`` … ``enc3d_3`` (``conv3d1`` …), ``enc1`` …
    ``enc5`` (``conv1`` …), ``fuse1`` … ``fuse3`` (the ``D_SE_Add`` / ``D_Add`` calls; ``None``
    where the variant does not fuse), ``up6`` … ``up9`` (``up6``/``conv6`` …), ``head``
    (``conv10``).

    Args:
        in_slices: neighbouring slices stacked as channels, the D of the 3D stream (4).
        in_channels: images per slice (1: the paper's T1). With more (ISLES 2022's DWI, ADC,
            FLAIR) the input holds ``in_slices`` groups of ``in_channels`` channels, slice by
            slice as the data modules stack them; the 2D stream sees all of them as channels,
            the 3D stream sees ``in_channels`` channels of depth ``in_slices``. 1 is the
            paper's network, weight for weight.
        fusion: the fusion variant; ``"SEAdd-23"`` is the D-UNet of the paper.
        se_ratio: SE reduction ratio r (16 in the code); ignored by the Add-* variants.
        dropout: element-wise dropout after encoder levels 4 and 5 (0.3 in the code).
        bn_eps: BatchNorm epsilon (Keras default 1e-3).
        bn_momentum: BatchNorm running-statistics momentum in PyTorch's convention
            (0.01 = Keras momentum 0.99).

    Shape:
        Input (B, in_slices · in_channels, H, W) with H, W divisible by 16 (192×192 in the
        paper); output raw logits (B, 1, H, W).

    Raises:
        ValueError: for an unknown fusion variant, invalid arguments, or a badly shaped input.
    """

    def __init__(
        self,
        in_slices: int = 4,
        fusion: Fusion = "SEAdd-23",
        in_channels: int = 1,
        se_ratio: int = 16,
        dropout: float = 0.3,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        if fusion not in FUSION_LEVELS:
            raise ConfigurationError(
                f"DUNet got fusion={fusion!r}; expected one of {sorted(FUSION_LEVELS)}."
            )
        levels = FUSION_LEVELS[fusion]
        depth_3d = max(levels)
        if in_slices < 2 ** (depth_3d - 1):
            raise ConfigurationError(
                f"DUNet with fusion={fusion!r} pools the slice axis {depth_3d - 1} time(s), so it "
                f"needs in_slices ≥ {2 ** (depth_3d - 1)}; got {in_slices}."
            )
        se = se_ratio if fusion.startswith("SE") else None
        c1, c2, c3, c4, c5 = KERAS_WIDTHS
        fused_widths = [KERAS_WIDTHS[level - 1] for level in levels]
        if se is not None and not 1 <= se <= min(fused_widths):
            raise ConfigurationError(
                f"DUNet got se_ratio={se_ratio}; expected 1 ≤ se_ratio ≤ {min(fused_widths)} so "
                f"that every SE block of {fusion!r} keeps at least one hidden unit."
            )
        if in_channels < 1:
            raise ConfigurationError(f"DUNet got in_channels={in_channels}; expected ≥ 1.")
        check_dropout("DUNet", dropout)
        norm = keras_batch_norm(bn_eps, bn_momentum)
        self.in_slices = in_slices
        self.in_channels = in_channels
        self.fusion_levels = levels

        # Registration order fixes the order init_keras draws the random weights in.
        # 2D stream, the Keras Unet(): encoder levels 1-5, decoder levels 6-9.
        self.enc1 = DoubleConv(2, in_slices * in_channels, c1, norm)
        self.enc2 = DoubleConv(2, c1, c2, norm)
        self.enc3 = DoubleConv(2, c2, c3, norm)
        self.enc4 = DoubleConv(2, c3, c4, norm)
        self.enc5 = DoubleConv(2, c4, c5, norm)
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.dropout = nn.Dropout(dropout)
        self.up6 = UpBlock(2, c5, c4, norm)
        self.up7 = UpBlock(2, c4, c3, norm)
        self.up8 = UpBlock(2, c3, c2, norm)
        self.up9 = UpBlock(2, c2, c1, norm)
        # 3D stream, down to the deepest fused level.
        self.enc3d_1 = DoubleConv(3, in_channels, c1, norm)
        self.enc3d_2 = DoubleConv(3, c1, c2, norm) if depth_3d >= 2 else None
        self.enc3d_3 = DoubleConv(3, c2, c3, norm) if depth_3d >= 3 else None
        self.pool_3d = nn.MaxPool3d(kernel_size=2)
        # Dimension-transform blocks of the fused levels; the slice axis D halves per 3D level.
        self.fuse1 = _DimensionTransform(in_slices, c1, se) if 1 in levels else None
        self.fuse2 = _DimensionTransform(in_slices // 2, c2, se) if 2 in levels else None
        self.fuse3 = _DimensionTransform(in_slices // 4, c3, se) if 3 in levels else None
        self.head = nn.Conv2d(c1, 1, kernel_size=1)
        init_keras(self, head=self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment the middle slices of a batch of slice stacks.

        Args:
            x: (B, in_slices · in_channels, H, W), H and W divisible by 16.

        Returns:
            Raw logits (B, 1, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_slices · in_channels, H, W) with H, W divisible
                by 16.
        """
        check_input("DUNet", x, self.in_slices * self.in_channels, 16)
        # 3D stream: the D = in_slices slices seen as one volume of in_channels channels.
        batch, _, height, width = x.shape
        volume = x.reshape(batch, self.in_slices, self.in_channels, height, width).transpose(1, 2)
        x3d_1 = self.enc3d_1(volume)  # (B, C, D, H, W) → (B, 32, D, H, W)
        x3d_2 = x3d_3 = None  # the 3D stream stops at the deepest fused level
        if self.enc3d_2 is not None:
            x3d_2 = self.enc3d_2(self.pool_3d(x3d_1))  # (B, 64, D/2, H/2, W/2)
        if self.enc3d_3 is not None:
            x3d_3 = self.enc3d_3(self.pool_3d(x3d_2))  # (B, 128, D/4, H/4, W/4)

        # 2D encoder; a fused sum replaces the level's output, pooled and used as the skip.
        x1 = self.enc1(x)  # (B, 32, H, W)
        if self.fuse1 is not None:
            x1 = self.fuse1(x3d_1, x1)  # (B, 32, H, W)
        x2 = self.enc2(self.pool(x1))  # (B, 64, H/2, W/2)
        if self.fuse2 is not None:
            x2 = self.fuse2(x3d_2, x2)  # (B, 64, H/2, W/2)
        x3 = self.enc3(self.pool(x2))  # (B, 128, H/4, W/4)
        if self.fuse3 is not None:
            x3 = self.fuse3(x3d_3, x3)  # (B, 128, H/4, W/4)
        x4 = self.dropout(self.enc4(self.pool(x3)))  # (B, 256, H/8, W/8)
        x5 = self.dropout(self.enc5(self.pool(x4)))  # (B, 512, H/16, W/16)

        # 2D decoder: upsample, concat [skip, up], double conv.
        u6 = self.up6(x5, x4)  # (B, 256, H/8, W/8)
        u7 = self.up7(u6, x3)  # (B, 128, H/4, W/4)
        u8 = self.up8(u7, x2)  # (B, 64, H/2, W/2)
        u9 = self.up9(u8, x1)  # (B, 32, H, W)
        logits = self.head(u9)  # (B, 1, H, W)
        return logits
