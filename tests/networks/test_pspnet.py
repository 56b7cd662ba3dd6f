"""PSPNet of Abulnaga & Rubin, arXiv 1811.01085; docs/papers.md §4.

Loading pretrained weights is tested in test_pspnet_weights.py.
"""

import pytest
import torch

from networks import PSPNet

SMALL = {"backbone_depth": 18}  # same layout as R-101, fast enough for forward/backward
INPUT_SHAPE = (2, 5, 65, 49)  # odd sizes: logits are resized to exactly H × W


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [  # docs/papers.md §4: 3-channel VOC network with a 2-class classifier, no init layer
        ({"backbone_depth": 101}, 65_698_754),
        ({"backbone_depth": 101, "aux_head": True}, 68_059_076),
        ({"backbone_depth": 50}, 46_706_626),
    ],
)
def test_parameter_count_matches_the_paper(tester, kwargs, expected):
    net = PSPNet(in_channels=3, num_classes=2, init_layer=False, **kwargs)
    assert tester.count_parameters(net) == expected


def test_init_layer_adds_28_parameters(tester):
    # BN(5) γ, β = 10; conv 1×1 5→3 with bias = 18.
    plain = PSPNet(in_channels=3, init_layer=False, **SMALL)
    assert tester.count_parameters(PSPNet(**SMALL)) - tester.count_parameters(plain) == 28


@pytest.mark.parametrize("aux_head", [False, True])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_forward_backward_for_odd_sizes(tester, aux_head, output_stride):
    net = PSPNet(aux_head=aux_head, output_stride=output_stride, **SMALL)
    outputs = tester.check_segmentation(net, INPUT_SHAPE, num_classes=2)
    assert len(outputs) == (2 if aux_head else 1)  # (logits, aux_logits) in training mode


def test_eval_mode_returns_logits_only_and_is_pure(tester):
    tester.check_pure(PSPNet(aux_head=True, **SMALL), (1, 5, 37, 29))


@pytest.mark.parametrize("aux_head", [False, True])
def test_new_and_pretrained_modules_partition_the_parameters(aux_head):
    net = PSPNet(aux_head=aux_head, **SMALL)
    new = [id(p) for p in net.new_modules().parameters()]
    pretrained = [id(p) for p in net.pretrained_modules().parameters()]
    assert len(set(new)) == len(new) == 4 + 2 + (2 if aux_head else 0)  # init, cls.4, aux.4
    assert set(new).isdisjoint(pretrained)
    assert sorted(new + pretrained) == sorted(id(p) for p in net.parameters())


def test_invalid_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="output_stride=32; expected 8 or 16"):
        PSPNet(output_stride=32, **SMALL)
    with pytest.raises(ValueError, match="bins=()"):
        PSPNet(bins=(), **SMALL)
    with pytest.raises(ValueError, match=r"expects input \(B, 5, H, W\); got \(2, 3, 33, 33\)"):
        PSPNet(**SMALL)(torch.zeros(2, 3, 33, 33))
