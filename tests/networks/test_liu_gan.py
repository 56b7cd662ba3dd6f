"""Seed 002's networks: the GroupNorm U-Net (G and S, linear or maxout head) and the LSGAN
discriminator; docs/papers.md §3."""

import pytest
import torch
from torch import nn

from networks.liu_gan import LiuUNet, LSGANDiscriminator, MaxoutHead


def _unet_count(cin: int, widths: tuple[int, ...], head_out: int, norm: bool = True) -> int:
    """Parameters of the U-Net by hand: 3×3 convs without bias (a norm follows), 2 per norm
    channel, transposed 2×2 convs with bias, a 1×1 head with bias."""
    total, previous = 0, cin
    for width in widths:
        total += 9 * previous * width + 9 * width * width + (4 * width if norm else 0)
        previous = width
    for width in reversed(widths[:-1]):
        total += 4 * previous * width + width  # up-conv
        total += 9 * 2 * width * width + 9 * width * width + (4 * width if norm else 0)
        previous = width
    return total + previous * head_out + head_out


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"in_channels": 5, "out_channels": 1}, _unet_count(5, (64, 128, 256, 512, 1024), 1)),
        ({"in_channels": 1, "head": "maxout"}, _unet_count(1, (64, 128, 256, 512, 1024), 4)),
        ({"in_channels": 5, "widths": (16, 32, 64), "norm": "batch", "out_channels": 2},
         _unet_count(5, (16, 32, 64), 2)),
    ],
)  # fmt: skip
def test_unet_parameter_counts_by_hand(tester, kwargs, expected):
    assert tester.count_parameters(LiuUNet(**kwargs)) == expected


def test_classic_widths_give_these_counts(tester):
    # The figures quoted in the README and the closing note, pinned.
    assert tester.count_parameters(LiuUNet(5, 1)) == 31_038_785
    assert tester.count_parameters(LiuUNet(1, head="maxout")) == 31_036_676
    assert tester.count_parameters(LSGANDiscriminator()) == 10_859_457


def test_groupnorm_has_16_channels_per_group():
    net = LiuUNet(5, 1, widths=(32, 64, 128))
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels == 16 * m.num_groups for m in norms)
    with pytest.raises(ValueError, match="divisible by 16"):
        LiuUNet(5, 1, widths=(24, 48))


@pytest.mark.parametrize("input_shape", [(2, 5, 37, 45), (2, 5, 32, 48)])
def test_generator_forward_backward_for_any_size(tester, input_shape):
    tester.check_segmentation(LiuUNet(5, 1, widths=(16, 32, 64)), input_shape, num_classes=1)


def test_maxout_head_takes_the_background_as_the_max_of_three_maps():
    head = MaxoutHead(8)
    x = torch.randn(2, 8, 5, 6)
    maps = head.conv(x)
    logits = head(x)
    assert logits.shape == (2, 2, 5, 6)
    assert torch.equal(logits[:, 0], maps[:, :3].max(dim=1).values)
    assert torch.equal(logits[:, 1], maps[:, 3])
    segmentator = LiuUNet(1, head="maxout", widths=(16, 32))
    assert segmentator(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_segmentator_is_pure_in_eval_mode(tester):
    tester.check_pure(LiuUNet(1, head="maxout", widths=(16, 32, 64)), (1, 1, 24, 20))


def test_discriminator_shrinks_256_to_5_then_one_score(tester):
    net = LSGANDiscriminator()
    sizes = []
    x = torch.randn(2, 1, 256, 256)
    for layer in net.features:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            sizes.append(x.shape[-1])
    assert sizes == [126, 61, 29, 13, 5]
    assert net(torch.randn(2, 1, 256, 256)).shape == (2, 1)
    widths = (64, 128, 256, 512, 512)
    expected = sum(25 * a * b + 2 * b for a, b in zip((1, *widths[:-1]), widths)) + 512 + 1
    assert tester.count_parameters(net) == expected
    mean_head = LSGANDiscriminator(head="mean", widths=(16, 16, 32, 32, 32))
    assert mean_head(torch.randn(3, 1, 128, 128)).shape == (3, 1)
    with pytest.raises(ValueError, match="H, W ≥ 125"):
        net(torch.randn(1, 1, 96, 96))
