"""Networks: pure ``nn.Module``s that map images to raw logits."""

from networks.blocks import ConvNormAct
from networks.deeplabv3plus import DeepLabV3Plus
from networks.dunet import DUNet
from networks.dunet_baselines import UNet3DTransform, UNetOriginal, UNetTransform
from networks.liu_gan import LiuUNet, LSGANDiscriminator, MaxoutHead
from networks.pspnet import PSPNet
from networks.pspnet.weights import PretrainedWeightsNotFoundError
from networks.resnet import DilatedResNet
from networks.segnet import SegNetDUNet
from networks.unet2d import UNet2D
from networks.unet3d_cicek import UNet3DCicek
from networks.unet3d_omarov import OmarovUNet3D, classic_unet3d
from networks.vcanet import VCANet
from networks.vnet import VNet

__all__ = [
    "ConvNormAct",
    "DUNet",
    "DeepLabV3Plus",
    "DilatedResNet",
    "LSGANDiscriminator",
    "LiuUNet",
    "MaxoutHead",
    "OmarovUNet3D",
    "PSPNet",
    "PretrainedWeightsNotFoundError",
    "SegNetDUNet",
    "UNet2D",
    "UNet3DCicek",
    "UNet3DTransform",
    "UNetOriginal",
    "UNetTransform",
    "VCANet",
    "VNet",
    "classic_unet3d",
]
