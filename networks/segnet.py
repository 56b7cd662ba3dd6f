"""The simplified SegNet baseline of the D-UNet paper (Zhou et al., arXiv 1908.05104)."""

from __future__ import annotations

import torch
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct, check_input
from networks.keras_unet import init_keras, keras_batch_norm


class SegNetDUNet(nn.Module):
    """The "SegNet" of the D-UNet comparison: a plain 5-level encoder–decoder without skips.

    Zhou et al., D-UNet, arXiv 1908.05104, Table 3 (comparison with other methods); the Keras
    function ``SegNet()`` of the authors' ``model.py`` (docs/papers.md §2 "Baselines"). This is not
    Badrinarayanan et al.'s SegNet (no VGG16 encoder, no pooling indices): the encoder is
    5 × [conv 3×3 + BN + ReLU + max-pool 2] with widths 64, 128, 256, 512, 512; the decoder is
    5 × [nearest ×2 upsampling + conv 3×3 + BN], **without ReLU**, with widths 512, 512, 256,
    128, 64; then a conv 1×1 to one map.

    Keras total 10,189,825 = 10,183,937 PyTorch parameters + 5,888 BN running mean/var (the
    paper gives no count). Every conv, the 1×1 head included, is He-initialised as in the code.
    The default follows the code and returns raw logits instead of the final sigmoid.

    Args:
        in_channels: input maps (1 in the code).
        bn_eps: BatchNorm epsilon (Keras default 1e-3).
        bn_momentum: BatchNorm momentum in PyTorch's convention (0.01 = Keras 0.99).

    Shape:
        Input (B, in_channels, H, W), H and W divisible by 32 (five poolings; 192×192 in the
        paper); output raw logits (B, 1, H, W).

    Raises:
        ValueError: for invalid arguments, or an input of the wrong shape or size.
    """

    def __init__(self, in_channels: int = 1, bn_eps: float = 1e-3, bn_momentum: float = 0.01):
        super().__init__()
        if in_channels < 1:
            raise ConfigurationError(f"SegNetDUNet needs in_channels ≥ 1; got {in_channels}.")
        self.in_channels = in_channels
        norm = keras_batch_norm(bn_eps, bn_momentum)
        encoder_widths = (in_channels, 64, 128, 256, 512, 512)
        decoder_widths = (512, 512, 512, 256, 128, 64)
        self.encoder = nn.Sequential(
            *(
                nn.Sequential(ConvNormAct(2, cin, cout, 3, bias=True, norm=norm), nn.MaxPool2d(2))
                for cin, cout in zip(encoder_widths[:-1], encoder_widths[1:])
            )
        )
        self.decoder = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    ConvNormAct(2, cin, cout, 3, bias=True, norm=norm, act=None),
                )
                for cin, cout in zip(decoder_widths[:-1], decoder_widths[1:])
            )
        )
        self.head = nn.Conv2d(decoder_widths[-1], 1, kernel_size=1)
        init_keras(self, head=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of images.

        Args:
            x: (B, in_channels, H, W), H and W divisible by 32.

        Returns:
            Raw logits (B, 1, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_channels, H, W) with H, W divisible by 32.
        """
        check_input("SegNetDUNet", x, self.in_channels, 32)
        code = self.encoder(x)  # (B, 512, H/32, W/32)
        features = self.decoder(code)  # (B, 64, H, W)
        return self.head(features)  # (B, 1, H, W) logits
