"""D-UNet of Zhou et al. (arXiv 1908.05104): a 2D U-Net whose encoder is fused with a 3D stream."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from networks.blocks import ConvNormAct, check_input
from networks.keras_unet import (
    KERAS_WIDTHS,
    DoubleConv,
    KerasUNet,
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

_WIDTHS = KERAS_WIDTHS  # the five 2D levels; the 3D stream uses the first three


class _SqueezeExcite(nn.Module):
    """Channel SE of Hu et al. with bias-free dense layers, as the Keras ``squeeze_excite_block``."""

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

    Conv3d 1×1×1 to one channel, the D slices become channels, conv 3×3 + ReLU to the 2D width;
    with ``se_ratio``, separate SE blocks on both summands (``D_SE_Add``), else none (``D_Add``).
    """

    def __init__(self, depth: int, channels_3d: int, channels: int, se_ratio: int | None) -> None:
        super().__init__()
        self.squeeze = ConvNormAct(3, channels_3d, 1, 1, bias=True, norm=None, act=None)
        self.project = ConvNormAct(2, depth, channels, 3, bias=True, norm=None, act="relu")
        self.se_3d = _SqueezeExcite(channels, se_ratio) if se_ratio else nn.Identity()
        self.se_2d = _SqueezeExcite(channels, se_ratio) if se_ratio else nn.Identity()

    def forward(self, x3d: torch.Tensor, x2d: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x3d).squeeze(1)  # (B, C3, D, H, W) → (B, D, H, W)
        x = self.project(x)  # (B, C, H, W)
        return self.se_3d(x) + self.se_2d(x2d)


class DUNet(KerasUNet):
    """D-UNet: a 2D U-Net whose first encoder levels are fused with a shallow 3D U-Net encoder.

    Zhou et al., *D-UNet: a dimension-fusion U shape network for chronic stroke lesion
    segmentation*, IEEE/ACM TCBB 2021, arXiv 1908.05104: the architecture figure, the
    dimension-transform block with squeeze-and-excitation, and the fusion ablation
    (Add-* / SEAdd-*). Ported layer by layer from the authors' Keras ``model.py``
    (``D_Unet``, ``D_Add``, ``D_SE_Add``, ``squeeze_excite_block``); see papers.md §2.

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
    the metrics. Keras conventions are kept: biased convs, BatchNorm eps 1e-3 and momentum 0.99 (PyTorch
    ``momentum=0.01``), He-normal init with a Glorot-uniform 1×1 head.

    Args:
        in_slices: neighbouring slices stacked as channels, the D of the 3D stream (4).
        fusion: the fusion variant; ``"SEAdd-23"`` is the D-UNet of the paper.
        se_ratio: SE reduction ratio r (16 in the code); ignored by the Add-* variants.
        dropout: element-wise dropout after encoder levels 4 and 5 (0.3 in the code).
        bn_eps: BatchNorm epsilon (Keras default 1e-3).
        bn_momentum: BatchNorm running-statistics momentum in PyTorch's convention
            (0.01 = Keras momentum 0.99).

    Shape:
        Input (B, in_slices, H, W) with H, W divisible by 16 (192×192 in the paper); output raw
        logits (B, 1, H, W).

    Raises:
        ValueError: for an unknown fusion variant, invalid arguments, or a badly shaped input.
    """

    def __init__(
        self,
        in_slices: int = 4,
        fusion: Fusion = "SEAdd-23",
        se_ratio: int = 16,
        dropout: float = 0.3,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
    ) -> None:
        if fusion not in FUSION_LEVELS:
            raise ValueError(
                f"DUNet got fusion={fusion!r}; expected one of {sorted(FUSION_LEVELS)}."
            )
        levels = FUSION_LEVELS[fusion]
        depth_3d = max(levels)
        if in_slices < 2 ** (depth_3d - 1):
            raise ValueError(
                f"DUNet with fusion={fusion!r} pools the slice axis {depth_3d - 1} time(s), so it "
                f"needs in_slices ≥ {2 ** (depth_3d - 1)}; got {in_slices}."
            )
        use_se = fusion.startswith("SE")
        fused_widths = [_WIDTHS[level - 1] for level in levels]
        if use_se and not 1 <= se_ratio <= min(fused_widths):
            raise ValueError(
                f"DUNet got se_ratio={se_ratio}; expected 1 ≤ se_ratio ≤ {min(fused_widths)} so "
                f"that every SE block of {fusion!r} keeps at least one hidden unit."
            )
        check_dropout("DUNet", dropout)
        norm = keras_batch_norm(bn_eps, bn_momentum)
        super().__init__(2, in_slices, _WIDTHS, norm, dropout)
        self.in_slices = in_slices
        self.fusion_levels = levels

        widths_3d = (1, *_WIDTHS[:depth_3d])
        self.encoder_3d = nn.ModuleList(
            DoubleConv(3, cin, cout, norm) for cin, cout in zip(widths_3d[:-1], widths_3d[1:])
        )
        self.pool_3d = nn.MaxPool3d(kernel_size=2)
        self.fuse = nn.ModuleDict(
            {
                str(level): _DimensionTransform(
                    depth=in_slices // 2 ** (level - 1),
                    channels_3d=_WIDTHS[level - 1],
                    channels=_WIDTHS[level - 1],
                    se_ratio=se_ratio if use_se else None,
                )
                for level in levels
            }
        )
        self.head = nn.Conv2d(_WIDTHS[0], 1, kernel_size=1)
        init_keras(self, head=self.head)

    def _encode_3d(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 3D stream's level outputs, (B, 32·2^l, D/2^l, H/2^l, W/2^l) for l = 0, 1, …"""
        features, x3d = [], x.unsqueeze(1)  # (B, 1, D, H, W)
        for level, block in enumerate(self.encoder_3d):
            x3d = block(self.pool_3d(x3d) if level else x3d)
            features.append(x3d)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment the middle slices of a batch of slice stacks.

        Args:
            x: (B, in_slices, H, W), H and W divisible by 16.

        Returns:
            Raw logits (B, 1, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_slices, H, W) with H, W divisible by 16.
        """
        check_input("DUNet", x, self.in_slices, 16)
        features_3d = self._encode_3d(x)

        def fuse(level: int, x2d: torch.Tensor) -> torch.Tensor:
            """The 2D level output, plus the transformed 3D features if this level is fused."""
            if level not in self.fusion_levels:
                return x2d
            return self.fuse[str(level)](features_3d[level - 1], x2d)

        return self.head(self.features(x, fuse))  # (B, 1, H, W) logits
