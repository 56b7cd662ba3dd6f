"""Networks: pure ``nn.Module``s that map images to raw logits."""

from networks.blocks import ConvNormAct
from networks.pspnet import PSPNet
from networks.resnet import DilatedResNet
from networks.unet2d import UNet2D

__all__ = ["ConvNormAct", "DilatedResNet", "PSPNet", "UNet2D"]
