"""UNet2D: Ronneberger et al., arXiv 1505.04597; docs/papers.md §6."""

import pytest
import torch

from networks import UNet2D


@pytest.mark.parametrize(
    ("in_channels", "expected"),
    [(5, 31_032_962), (1, 31_030_658)],  # docs/papers.md §6, 'same' padding, 2 classes
)
def test_parameter_count_matches_the_paper(tester, in_channels, expected):
    assert tester.count_parameters(UNet2D(in_channels=in_channels, num_classes=2)) == expected


@pytest.mark.parametrize("input_shape", [(2, 5, 37, 45), (2, 5, 32, 48)])
def test_forward_backward_for_any_size(tester, input_shape):
    tester.check_segmentation(UNet2D(), input_shape, num_classes=2)


def test_forward_is_pure_in_eval_mode(tester):
    tester.check_pure(UNet2D(in_channels=1, num_classes=3), (1, 1, 23, 17))


def test_invalid_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="expected 5 widths"):
        UNet2D(channels=(64, 128, 256))
    with pytest.raises(ValueError, match=r"expects input \(B, 5, H, W\); got \(1, 3, 32, 32\)"):
        UNet2D()(torch.zeros(1, 3, 32, 32))
