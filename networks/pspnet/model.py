"""PSPNet with the multi-channel initializer layer of Abulnaga & Rubin (arXiv 1811.01085)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigurationError
from core.pretrained import pretrained_initialisation_wanted
from networks.blocks import ConvNormAct, check_input
from networks.pspnet.weights import load_pretrained
from networks.resnet import DilatedResNet

# Hidden widths of the classifier and of the auxiliary head. They are not arguments because the
# published PSPNet checkpoints fix them: other widths could not load pretrained weights.
_HEAD_CHANNELS = 512
_AUX_CHANNELS = 256


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with aligned corners, as in the PSPNet reference code."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class _PyramidPooling(nn.Module):
    """Pyramid pooling (§3.2): per bin, pool to b×b, 1×1 conv + BN + ReLU, upsample; concat."""

    def __init__(self, in_channels: int, bins: Sequence[int]) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        # Flat Sequential(pool, conv, bn, relu) so the keys are ppm.features.{i}.{1,2}.*.
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), *ConvNormAct(2, in_channels, reduced, 1))
            for b in bins
        )
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [_resize(branch(x), size) for branch in self.features]
        return torch.cat([x, *pooled], dim=1)  # (B, C + len(bins)·C/len(bins), h, w)


class PSPNet(nn.Module):
    """PSPNet on a dilated ResNet, preceded by the paper's BN + 1×1-conv initializer layer.

    Abulnaga & Rubin, *Ischemic Stroke Lesion Segmentation in CT Perfusion Scans using Pyramid
    Pooling and Focal Loss*, arXiv 1811.01085, §4.2 (network, Fig. 2) and §4.3 (initializer
    layer, Eq. 1, and the new binary classifier). The network is Zhao et al., *Pyramid Scene
    Parsing Network*, arXiv 1612.01105, §3.2–3.3 and Fig. 3, as released for Pascal VOC 2012:

    ``init`` BN(C_in) → conv 1×1 C_in→3 · ``layer0`` deep stem · ``layer1``–``layer4`` dilated
    ResNet (output stride 8) · ``ppm`` pool to 1², 2², 3², 6² → conv 1×1 C→C/4 + BN + ReLU →
    bilinear upsample → concat with the input (2C channels) · ``cls`` conv 3×3 2C→512 + BN + ReLU
    + Dropout2d + conv 1×1 512→num_classes · bilinear upsample to the input size. ``aux``
    (training only, deep supervision of §4) does the same on layer3 with 256 hidden channels.

    Submodule names follow the widely used PyTorch PSPNet layout (``hszhao/semseg``), so a
    converted VOC checkpoint loads without renaming; ``init`` is the paper's addition.

    Where the paper and the reference code leave a choice, the defaults are:

    * the initializer conv has a bias (Eq. 1 shows only the kernel; the bias adds 3 parameters);
    * no auxiliary head (the paper does not mention one; ``aux_head=True`` gives the reference
      code's, which it trains with loss weight 0.4);
    * two output channels for a softmax ("binary output channels", §4.3);
    * adaptive average pooling in the pyramid (``hszhao/semseg``); the Caffe model's fixed
      kernels equal it only for its 473×473 input;
    * logits are resized to the exact input size, so any H, W works (the reference code asks
      for (H − 1) % 8 == 0).

    Args:
        in_channels: C_in, the stacked input maps (5: CT, Tmax, CBF, CBV, MTT, §4.3).
        num_classes: output channels (2: background, lesion).
        backbone_depth: ResNet depth; 101 is the VOC2012 PSPNet, 50 a cheaper stand-in.
        deep_stem: the Caffe three-conv stem of the released PSPNets (see ``DilatedResNet``).
        output_stride: input size / feature size, 8 in PSPNet, 16 for a faster variant.
        bins: the pyramid's pooled sizes, (1, 2, 3, 6) in arXiv 1612.01105, §3.2.
        init_layer: add the paper's initializer layer, mapping C_in maps to 3 "RGB" channels
            for the pretrained stem. Without it the stem takes C_in channels directly.
        aux_head: add the auxiliary classifier on layer3 used while training.
        dropout: Dropout2d probability before each final 1×1 conv.
        pretrained_weights: path of a local PSPNet checkpoint (``hszhao/semseg`` layout, same
            depth and stem) to initialise from; nothing is downloaded. Tensors whose shapes
            differ inside the new layers (the 21-class VOC classifiers) and the checkpoint's
            ``init.*``, if any, are skipped; ``new_modules()`` keep their initialisation.
            See ``networks.pspnet.weights.load_pretrained``. Not read inside
            ``core.pretrained.weights_from_checkpoint()`` (a trained checkpoint follows).

    Shape:
        Input (B, in_channels, H, W), any H, W. Output raw logits (B, num_classes, H, W); in
        training mode with ``aux_head`` the tuple ``(logits, aux_logits)``, both that shape.
        The pyramid's BatchNorm after the 1×1 pooling needs B ≥ 2 in training mode.

    Raises:
        ValueError: for invalid arguments, or a checkpoint that does not match this network.
        PretrainedWeightsNotFoundError: a ``FileNotFoundError``, if ``pretrained_weights`` is
            not a file.
    """

    def __init__(
        self,
        in_channels: int = 5,
        num_classes: int = 2,
        backbone_depth: Literal[18, 34, 50, 101, 152] = 101,
        deep_stem: bool = True,
        output_stride: Literal[8, 16] = 8,
        bins: Sequence[int] = (1, 2, 3, 6),
        init_layer: bool = True,
        aux_head: bool = False,
        dropout: float = 0.1,
        pretrained_weights: str | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ConfigurationError(
                f"PSPNet needs in_channels ≥ 1 and num_classes ≥ 1; got {in_channels} and "
                f"{num_classes}."
            )
        if output_stride not in (8, 16):
            raise ConfigurationError(
                f"PSPNet got output_stride={output_stride!r}; expected 8 or 16."
            )
        if not bins or any(int(b) != b or b < 1 for b in bins):
            raise ConfigurationError(
                f"PSPNet got bins={bins!r}; expected positive ints, e.g. (1, 2, 3, 6)."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigurationError(
                f"PSPNet got dropout={dropout!r}; expected a probability in [0, 1)."
            )
        self.in_channels = in_channels
        self.backbone_depth = backbone_depth
        self.deep_stem = deep_stem

        if init_layer:
            self.init: nn.Module = nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, 3, kernel_size=1)
            )
        else:
            self.init = nn.Identity()
        backbone = DilatedResNet(
            depth=backbone_depth,
            in_channels=3 if init_layer else in_channels,
            deep_stem=deep_stem,
            output_stride=output_stride,
        )
        # The stages sit directly on PSPNet, not under "backbone.", as in the checkpoint layout.
        self.layer0 = backbone.layer0
        self.layer1 = backbone.layer1
        self.layer2 = backbone.layer2
        self.layer3 = backbone.layer3
        self.layer4 = backbone.layer4
        layer3_channels, layer4_channels = backbone.out_channels

        self.ppm = _PyramidPooling(layer4_channels, tuple(int(b) for b in bins))
        # Unpacked into flat Sequentials: the checkpoint keys are cls.{0,1,4}, aux.{0,1,4}.
        self.cls = nn.Sequential(
            *ConvNormAct(2, self.ppm.out_channels, _HEAD_CHANNELS, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(_HEAD_CHANNELS, num_classes, kernel_size=1),
        )
        self.aux: nn.Sequential | None = None
        if aux_head:
            self.aux = nn.Sequential(
                *ConvNormAct(2, layer3_channels, _AUX_CHANNELS, 3),
                nn.Dropout2d(dropout),
                nn.Conv2d(_AUX_CHANNELS, num_classes, kernel_size=1),
            )

        # Built for a trained checkpoint's weights, the file is neither read nor needed.
        if pretrained_weights is not None and pretrained_initialisation_wanted():
            load_pretrained(self, pretrained_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Segment a batch of stacked maps.

        Args:
            x: (B, in_channels, H, W), any H, W.

        Returns:
            Raw logits (B, num_classes, H, W). In training mode with ``aux_head=True``, the
            tuple ``(logits, aux_logits)``, the second from layer3, of the same shape.

        Raises:
            ValueError: if ``x`` is not (B, in_channels, H, W).
        """
        check_input("PSPNet", x, self.in_channels)
        size = x.shape[-2:]
        # Shapes for the defaults (R-101, deep stem, output stride 8); H/8 stands for ⌈H/8⌉.
        x = self.init(x)  # (B, 3, H, W)
        x0 = self.layer0(x)  # (B, 128, H/4, W/4)
        x1 = self.layer1(x0)  # (B, 256, H/4, W/4)
        x2 = self.layer2(x1)  # (B, 512, H/8, W/8)
        x3 = self.layer3(x2)  # (B, 1024, H/8, W/8)
        x4 = self.layer4(x3)  # (B, 2048, H/8, W/8)
        pyramid = self.ppm(x4)  # (B, 4096, H/8, W/8) = [x4, p1, p2, p3, p6]
        logits = _resize(self.cls(pyramid), size)  # (B, num_classes, H, W)
        if self.aux is None or not self.training:
            return logits
        aux_logits = _resize(self.aux(x3), size)  # (B, num_classes, H, W)
        return logits, aux_logits

    def new_module_names(self) -> list[str]:
        """Names of the layers the paper adds to the VOC network (§4.3)."""
        names = ["init", f"cls.{len(self.cls) - 1}"]
        if self.aux is not None:
            names.append(f"aux.{len(self.aux) - 1}")
        return names

    def new_modules(self) -> nn.ModuleList:
        """The layers trained alone in the paper's first fine-tuning stage (§4.3, lr 1e-2).

        Returns:
            The initializer layer and the final 1×1 classifier conv(s). Together with
            ``pretrained_modules()`` they hold every parameter exactly once.
        """
        return nn.ModuleList(self.get_submodule(name) for name in self.new_module_names())

    def pretrained_modules(self) -> nn.ModuleList:
        """The layers that come from the VOC checkpoint, frozen in stage 1 (§4.3).

        Returns:
            The backbone, the pyramid pooling module and the hidden layers of the heads.
        """
        modules = [self.layer0, self.layer1, self.layer2, self.layer3, self.layer4, self.ppm]
        modules += list(self.cls)[:-1]
        if self.aux is not None:
            modules += list(self.aux)[:-1]
        return nn.ModuleList(modules)
