"""PSPNet (Zhao et al., CVPR 2017) as seed 003 fine-tunes it: the network, loading its published
VOC2012 weights from a local file, and converting the public checkpoints to its layer names."""

from networks.pspnet.convert import ConversionResult, convert_file, convert_state_dict
from networks.pspnet.model import PSPNet
from networks.pspnet.weights import load_pretrained

__all__ = ["ConversionResult", "PSPNet", "convert_file", "convert_state_dict", "load_pretrained"]
