"""D-UNet of Zhou et al. (arXiv 1908.05104): a 2D U-Net whose encoder is fused with a 3D stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from networks.blocks import ConvNormAct

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

# Widths of the five 2D levels (and of the first three 3D levels) in the Keras code.
_WIDTHS = (32, 64, 128, 256, 512)


def _batch_norm(eps: float, momentum: float) -> tuple[str, dict[str, float]]:
    """A MONAI norm spec for Keras's BatchNormalization (PyTorch momentum = 1 − Keras momentum)."""
    return ("batch", {"eps": eps, "momentum": momentum})


def _init_keras(net: nn.Module, head: nn.Module | None) -> None:
    """He-normal convs and dense layers with zero biases, as Keras's ``he_normal``; Glorot head.

    ``head`` is the output conv the Keras code builds without an initializer argument, so it
    gets Keras's default ``glorot_uniform``; ``None`` when every layer is He-initialised.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            if module is head:
                nn.init.xavier_uniform_(module.weight)
            else:
                # Keras 2.2's he_normal is truncated; the untruncated normal is close enough.
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _check_input(name: str, x: torch.Tensor, channels: int, multiple: int) -> None:
    """Raise a ValueError unless ``x`` is (B, channels, H, W) with H, W multiples of ``multiple``."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects input (B, {channels}, H, W); got {tuple(x.shape)}.")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"{name} needs H and W divisible by {multiple} (one halving per pooling level); got "
            f"H={height}, W={width}. Crop or pad the input, e.g. to 192×192 as in the paper."
        )


class _DoubleConv(nn.Sequential):
    """[conv 3×3 (biased, as in Keras) → optional BN → ReLU] × 2, in 2D or 3D (Keras ``BN_block``)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm: tuple | None
    ) -> None:
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, out_channels, 3, bias=True, norm=norm),
            ConvNormAct(spatial_dims, out_channels, out_channels, 3, bias=True, norm=norm),
        )


class _UpConv(nn.Sequential):
    """Nearest upsampling, then a 2-wide 'same' conv + ReLU, no BN (Keras UpSampling + Conv 2).

    TensorFlow pads an even kernel's 'same' conv 0 before and 1 after on every axis, hence the
    explicit zero pad; ``ConvTranspose`` would have the same parameter count but not the function.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale_factor: Sequence[int] | int = 2,
    ) -> None:
        pad = nn.ZeroPad2d((0, 1, 0, 1)) if spatial_dims == 2 else nn.ZeroPad3d((0, 1) * 3)
        super().__init__(
            nn.Upsample(scale_factor=scale_factor, mode="nearest"),
            pad,
            ConvNormAct(
                spatial_dims, in_channels, out_channels, 2, padding=0, bias=True, norm=None
            ),
        )


class _UpBlock(nn.Module):
    """Up-convolution halving the channels, concat [skip, up] (Keras order), double conv."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: tuple | None,
        scale_factor: Sequence[int] | int = 2,
    ) -> None:
        super().__init__()
        self.up = _UpConv(spatial_dims, in_channels, out_channels, scale_factor)
        self.conv = _DoubleConv(spatial_dims, 2 * out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([skip, self.up(x)], dim=1)  # (B, 2·out_channels, *2·spatial)
        return self.conv(x)


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


class DUNet(nn.Module):
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
        super().__init__()
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
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"DUNet got dropout={dropout!r}; expected a probability in [0, 1).")
        self.in_slices = in_slices
        self.fusion_levels = levels
        norm = _batch_norm(bn_eps, bn_momentum)
        c1, c2, c3, c4, c5 = _WIDTHS

        widths_3d = (1, *_WIDTHS[:depth_3d])
        self.encoder_3d = nn.ModuleList(
            _DoubleConv(3, cin, cout, norm) for cin, cout in zip(widths_3d[:-1], widths_3d[1:])
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

        self.enc1 = _DoubleConv(2, in_slices, c1, norm)
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

    def _encode_3d(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 3D stream's level outputs, (B, 32·2^l, D/2^l, H/2^l, W/2^l) for l = 0, 1, …"""
        features, x3d = [], x.unsqueeze(1)  # (B, 1, D, H, W)
        for level, block in enumerate(self.encoder_3d):
            x3d = block(self.pool_3d(x3d) if level else x3d)
            features.append(x3d)
        return features

    def _fuse(self, level: int, x2d: torch.Tensor, features_3d: list[torch.Tensor]) -> torch.Tensor:
        """The 2D level output, plus the transformed 3D features if this level is fused."""
        if level not in self.fusion_levels:
            return x2d
        return self.fuse[str(level)](features_3d[level - 1], x2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment the middle slices of a batch of slice stacks.

        Args:
            x: (B, in_slices, H, W), H and W divisible by 16.

        Returns:
            Raw logits (B, 1, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_slices, H, W) with H, W divisible by 16.
        """
        _check_input("DUNet", x, self.in_slices, 16)
        features_3d = self._encode_3d(x)

        x1 = self._fuse(1, self.enc1(x), features_3d)  # (B, 32, H, W)
        x2 = self._fuse(2, self.enc2(self.pool(x1)), features_3d)  # (B, 64, H/2, W/2)
        x3 = self._fuse(3, self.enc3(self.pool(x2)), features_3d)  # (B, 128, H/4, W/4)
        x4 = self.dropout(self.enc4(self.pool(x3)))  # (B, 256, H/8, W/8)
        x5 = self.dropout(self.enc5(self.pool(x4)))  # (B, 512, H/16, W/16)
        u4 = self.up4(x5, x4)  # (B, 256, H/8, W/8)
        u3 = self.up3(u4, x3)  # (B, 128, H/4, W/4)
        u2 = self.up2(u3, x2)  # (B, 64, H/2, W/2)
        u1 = self.up1(u2, x1)  # (B, 32, H, W)
        return self.head(u1)  # (B, 1, H, W) logits
