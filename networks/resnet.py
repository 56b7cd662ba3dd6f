"""Dilated ResNet encoder, the backbone of PSPNet (arXiv 1612.01105) and DeepLab-style nets."""

from __future__ import annotations

from typing import Literal

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct


def _conv(spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int, **kwargs) -> nn.Module:
    """A bias-free convolution: every conv in the ResNet is followed by BatchNorm."""
    return Conv[Conv.CONV, spatial_dims](in_ch, out_ch, kernel_size, bias=False, **kwargs)


class _BasicBlock(nn.Module):
    """Two 3×3 convs with an identity shortcut (ResNet-18/34); both convs carry the dilation."""

    expansion = 1

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        norm = Norm[Norm.BATCH, spatial_dims]
        self.conv1 = _conv(
            spatial_dims, in_channels, planes, 3, stride=stride, padding=dilation, dilation=dilation
        )
        self.bn1 = norm(planes)
        self.conv2 = _conv(spatial_dims, planes, planes, 3, padding=dilation, dilation=dilation)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided, dilated), 1×1 expand ×4, with a shortcut (ResNet-50/101/152)."""

    expansion = 4

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        norm = Norm[Norm.BATCH, spatial_dims]
        self.conv1 = _conv(spatial_dims, in_channels, planes, 1)
        self.bn1 = norm(planes)
        self.conv2 = _conv(
            spatial_dims, planes, planes, 3, stride=stride, padding=dilation, dilation=dilation
        )
        self.bn2 = norm(planes)
        self.conv3 = _conv(spatial_dims, planes, planes * self.expansion, 1)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_Block = type[_BasicBlock] | type[_Bottleneck]

# depth → (block, number of blocks in layer1..layer4), He et al. arXiv 1512.03385, Table 1.
_ARCHITECTURES: dict[int, tuple[_Block, tuple[int, int, int, int]]] = {
    18: (_BasicBlock, (2, 2, 2, 2)),
    34: (_BasicBlock, (3, 4, 6, 3)),
    50: (_Bottleneck, (3, 4, 6, 3)),
    101: (_Bottleneck, (3, 4, 23, 3)),
    152: (_Bottleneck, (3, 8, 36, 3)),
}

# output stride → (stride, dilation) of layer1..layer4; dilation replaces the dropped strides.
_STRIDES_AND_DILATIONS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
}


def _make_layer(
    block: _Block,
    spatial_dims: int,
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    dilation: int,
) -> nn.Sequential:
    """One ResNet stage; its first block projects the shortcut when the shape changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            _conv(spatial_dims, in_channels, out_channels, 1, stride=stride),
            Norm[Norm.BATCH, spatial_dims](out_channels),
        )
    blocks = [block(spatial_dims, in_channels, planes, stride, dilation, downsample)]
    blocks += [
        block(spatial_dims, out_channels, planes, 1, dilation, None) for _ in range(num_blocks - 1)
    ]
    return nn.Sequential(*blocks)


class DilatedResNet(nn.Module):
    """ResNet encoder whose last strides are traded for dilation (dilated FCN backbone).

    He et al., *Deep Residual Learning for Image Recognition*, arXiv 1512.03385, Table 1
    (depths and blocks), as used by Zhao et al., *Pyramid Scene Parsing Network* (PSPNet),
    arXiv 1612.01105, §3.3: output stride 8 from dilation 2 in layer3 and 4 in layer4, and the
    "deep stem" of three 3×3 convs instead of one 7×7 of the released Caffe models.

    The stride of a stage sits on its 3×3 conv, as in the PSPNet Caffe models and torchvision
    (He et al.'s original Caffe ResNet strides the first 1×1). Every block of a dilated stage,
    its first included, uses that stage's dilation, as the PSPNet Caffe models do. Submodules are
    ``layer0`` (the stem, a flat ``nn.Sequential``) and ``layer1`` … ``layer4`` with
    torchvision's block attribute names, so PSPNet checkpoints in that layout load unchanged.

    Spatial sizes below are ⌈H/k⌉ for any H, W (no divisibility needed):

    ============  ==========================  ====================  ==============
    stage         channels (e = 1 or 4)       output stride 8       16 / 32
    ============  ==========================  ====================  ==============
    layer0        128 deep stem, 64 classic   H/4                   H/4
    layer1        64·e                        H/4                   H/4
    layer2        128·e                       H/8                   H/8
    layer3        256·e                       H/8 (dilation 2)      H/16
    layer4        512·e                       H/8 (dilation 4)      H/16 / H/32
    ============  ==========================  ====================  ==============

    Args:
        depth: 18 or 34 (basic blocks, e = 1), 50, 101 or 152 (bottlenecks, e = 4).
        in_channels: C of the input image (3 for ImageNet/VOC weights).
        deep_stem: three 3×3 convs (3→64 stride 2, 64→64, 64→128, each + BN + ReLU) then
            3×3 max-pool stride 2, as in the PSPNet Caffe models; ``False`` gives the classic
            7×7 stride-2 conv to 64 channels + BN + ReLU + max-pool.
        output_stride: input size / feature size at layer4: 8, 16 or 32 (no dilation).
        spatial_dims: 2 for (B, C, H, W) inputs, 3 for (B, C, D, H, W).

    Attributes:
        out_channels: channels of the (layer3, layer4) features that ``forward`` returns.
        stage_channels: channels of the layer1 … layer4 features that ``forward_stages``
            returns (DeepLabv3+'s decoder reads layer1).

    Raises:
        ValueError: for an unknown ``depth``, ``output_stride`` or ``spatial_dims``.
    """

    def __init__(
        self,
        depth: Literal[18, 34, 50, 101, 152] = 101,
        in_channels: int = 3,
        deep_stem: bool = True,
        output_stride: Literal[8, 16, 32] = 8,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if depth not in _ARCHITECTURES:
            raise ConfigurationError(
                f"DilatedResNet got depth={depth!r}; expected one of {sorted(_ARCHITECTURES)}."
            )
        if output_stride not in _STRIDES_AND_DILATIONS:
            raise ConfigurationError(
                f"DilatedResNet got output_stride={output_stride!r}; expected one of "
                f"{sorted(_STRIDES_AND_DILATIONS)}."
            )
        if spatial_dims not in (2, 3):
            raise ConfigurationError(
                f"DilatedResNet got spatial_dims={spatial_dims!r}; expected 2 or 3."
            )
        block, num_blocks = _ARCHITECTURES[depth]
        strides, dilations = _STRIDES_AND_DILATIONS[output_stride]
        relu = ("relu", {"inplace": True})

        if deep_stem:
            stem_channels = 128
            # Unpacked so the stem is one flat Sequential, layer0.{0..9}, as in the PSPNet layout.
            stem: list[nn.Module] = [
                *ConvNormAct(spatial_dims, in_channels, 64, 3, stride=2, act=relu),
                *ConvNormAct(spatial_dims, 64, 64, 3, act=relu),
                *ConvNormAct(spatial_dims, 64, stem_channels, 3, act=relu),
            ]
        else:
            stem_channels = 64
            stem = [*ConvNormAct(spatial_dims, in_channels, stem_channels, 7, stride=2, act=relu)]
        pool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)
        self.layer0 = nn.Sequential(*stem, pool)

        widths = (64, 128, 256, 512)
        stages = []
        channels = stem_channels
        for planes, n, stride, dilation in zip(widths, num_blocks, strides, dilations, strict=True):
            stages.append(_make_layer(block, spatial_dims, channels, planes, n, stride, dilation))
            channels = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        e = block.expansion
        self.stage_channels = (widths[0] * e, widths[1] * e, widths[2] * e, widths[3] * e)
        self.out_channels = (self.stage_channels[2], self.stage_channels[3])

        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_stages(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode an image and keep every stage's output.

        Args:
            x: (B, in_channels, H, W), or (B, in_channels, D, H, W) for ``spatial_dims=3``.

        Returns:
            ``(x1, x2, x3, x4)``: the layer1 … layer4 features, (B, stage_channels[i], …);
            sizes as in the table (layer1 is the stride-4 "low-level" map of DeepLabv3+).
        """
        x0 = self.layer0(x)  # (B, 128 or 64, H/4, W/4)
        x1 = self.layer1(x0)  # (B, 64·e, H/4, W/4)
        x2 = self.layer2(x1)  # (B, 128·e, H/8, W/8)
        x3 = self.layer3(x2)  # (B, 256·e, H/8, W/8) at output stride 8
        x4 = self.layer4(x3)  # (B, 512·e, H/8, W/8) at output stride 8
        return x1, x2, x3, x4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode an image.

        Args:
            x: (B, in_channels, H, W), or (B, in_channels, D, H, W) for ``spatial_dims=3``.

        Returns:
            ``(x3, x4)``: the layer3 features (B, out_channels[0], …) that PSPNet's auxiliary
            head reads, and the layer4 features (B, out_channels[1], …); sizes as in the table.
        """
        _, _, x3, x4 = self.forward_stages(x)
        return x3, x4
