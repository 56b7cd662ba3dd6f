"""The 2D U-Net of Ronneberger et al. (arXiv 1505.04597), the 2D baseline of arXiv 1811.01085."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.errors import ConfigurationError
from networks.blocks import ConvNormAct, check_input, pad_to_multiples


class _DoubleConv(nn.Sequential):
    """[conv 3×3 ('same') + ReLU] × 2, with biases and no normalisation, as in the paper."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvNormAct(2, in_channels, out_channels, 3, bias=True, norm=None),
            ConvNormAct(2, out_channels, out_channels, 3, bias=True, norm=None),
        )


class _Up(nn.Module):
    """Up-convolution 2×2 stride 2 halving the channels, concat with the skip, double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = _DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([skip, self.up(x)], dim=1)  # (B, 2·out_channels, 2h, 2w)
        return self.conv(x)


class UNet2D(nn.Module):
    """U-Net: a contracting and an expanding path of 3×3 convs joined by skip connections.

    Ronneberger et al., *U-Net: Convolutional Networks for Biomedical Image Segmentation*,
    arXiv 1505.04597, §2 and Fig. 1 (architecture), §3 (initialisation) and §3.1 (dropout), as
    the 2D baseline of Abulnaga & Rubin, arXiv 1811.01085, §4.4 ("the base model … modified
    for the 5-channel images").

    Four levels of [conv 3×3 + ReLU] × 2 with 64, 128, 256, 512 channels, each followed by
    max-pool 2×2; a 1024-channel bottleneck; four levels of up-conv 2×2 (halving the channels),
    concat with the skip, [conv 3×3 + ReLU] × 2; conv 1×1 to the classes. 23 convolutions.

    Deliberate deviations from the paper, shared by the usual PyTorch ports:

    * 'same' padding instead of 'valid', so no skip cropping and output size = input size;
    * inputs whose H or W is not a multiple of 16 are zero-padded (centred) to the next
      multiple of 16 and the logits are cropped back, so any H, W works;
    * the paper's dropout "at the end of the contracting path" acts on the bottleneck output.

    Args:
        in_channels: input maps (5 for the CTP stack of arXiv 1811.01085; 1 in the paper).
        num_classes: output channels (2, softmax, as in the paper).
        channels: widths of the four levels and the bottleneck (64, 128, 256, 512, 1024).
        dropout: dropout probability on the bottleneck output; the paper gives no value, 0.5
            is the one of the common ports.

    Shape:
        Input (B, in_channels, H, W), any H, W; output raw logits (B, num_classes, H, W).

    Raises:
        ValueError: for invalid arguments, or an input that is not (B, in_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int = 5,
        num_classes: int = 2,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ConfigurationError(
                f"UNet2D needs in_channels ≥ 1 and num_classes ≥ 1; got {in_channels} and "
                f"{num_classes}."
            )
        if len(channels) != 5:
            raise ConfigurationError(
                f"UNet2D got channels={channels!r}; expected 5 widths (four levels and the "
                "bottleneck), e.g. (64, 128, 256, 512, 1024)."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigurationError(
                f"UNet2D got dropout={dropout!r}; expected a probability in [0, 1)."
            )
        self.in_channels = in_channels
        c1, c2, c3, c4, c5 = channels

        self.enc1 = _DoubleConv(in_channels, c1)
        self.enc2 = _DoubleConv(c1, c2)
        self.enc3 = _DoubleConv(c2, c3)
        self.enc4 = _DoubleConv(c3, c4)
        self.bottleneck = _DoubleConv(c4, c5)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.dropout = nn.Dropout(dropout)
        self.up4 = _Up(c5, c4)
        self.up3 = _Up(c4, c3)
        self.up2 = _Up(c3, c2)
        self.up1 = _Up(c2, c1)
        self.head = nn.Conv2d(c1, num_classes, kernel_size=1)

        # §3: Gaussian weights with std sqrt(2 / fan-in) (He initialisation).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of images.

        Args:
            x: (B, in_channels, H, W), any H, W.

        Returns:
            Raw logits (B, num_classes, H, W).

        Raises:
            ValueError: if ``x`` is not (B, in_channels, H, W).
        """
        check_input("UNet2D", x, self.in_channels)
        x, crop = pad_to_multiples(x, (16, 16))  # (B, C, H', W'): four 2×2 poolings, 16k

        x1 = self.enc1(x)  # (B, 64, H', W')
        x2 = self.enc2(self.pool(x1))  # (B, 128, H'/2, W'/2)
        x3 = self.enc3(self.pool(x2))  # (B, 256, H'/4, W'/4)
        x4 = self.enc4(self.pool(x3))  # (B, 512, H'/8, W'/8)
        x5 = self.dropout(self.bottleneck(self.pool(x4)))  # (B, 1024, H'/16, W'/16)
        u4 = self.up4(x5, x4)  # (B, 512, H'/8, W'/8)
        u3 = self.up3(u4, x3)  # (B, 256, H'/4, W'/4)
        u2 = self.up2(u3, x2)  # (B, 128, H'/2, W'/2)
        u1 = self.up1(u2, x1)  # (B, 64, H', W')
        logits = self.head(u1)  # (B, num_classes, H', W')
        return logits[(..., *crop)]  # (B, num_classes, H, W)
