"""PSPNet of Abulnaga & Rubin, arXiv 1811.01085; papers.md §4."""

import logging

import pytest
import torch

from networks import PSPNet

SMALL = {"backbone_depth": 18}  # same layout as R-101, fast enough for forward/backward
INPUT_SHAPE = (2, 5, 65, 49)  # odd sizes: logits are resized to exactly H × W


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [  # papers.md §4: 3-channel VOC network with a 2-class classifier, no init layer
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


def _save_voc_checkpoint(path, wrap, depth=18, aux_head=True):
    """A 3-channel, 21-class PSPNet with random values everywhere, saved from DataParallel."""
    voc = PSPNet(
        in_channels=3, num_classes=21, backbone_depth=depth, init_layer=False, aux_head=aux_head
    )
    with torch.no_grad():
        for tensor in voc.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    state = {  # without BN step counters, like a checkpoint converted from Caffe
        f"module.{key}": value
        for key, value in voc.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    torch.save(state if wrap is None else {"epoch": 50, wrap: state}, path)
    return voc.state_dict()


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
@pytest.mark.parametrize("aux_head", [False, True])
def test_loads_a_voc_checkpoint_except_the_new_layers(tmp_path, caplog, wrap, aux_head):
    path = tmp_path / "pspnet18_voc.pth"
    source = _save_voc_checkpoint(path, wrap)
    torch.manual_seed(0)
    initial = PSPNet(aux_head=aux_head, **SMALL).state_dict()
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="networks.pspnet"):
        net = PSPNet(aux_head=aux_head, pretrained_weights=str(path), **SMALL)
    new = ("init.", "cls.4.", "aux.4.")
    for key, value in net.state_dict().items():
        expected = initial[key] if key.startswith(new) else source[key]
        assert torch.equal(value, expected), key
    assert "Left at initialisation: init.0, init.1, cls.4" in caplog.text


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"nope\.pth' is not a file.*pretrained_weights=None"
    ):
        PSPNet(pretrained_weights=str(tmp_path / "nope.pth"), **SMALL)


@pytest.mark.parametrize(
    ("saved_depth", "our_depth", "problem"),
    [(18, 34, r"\d+ missing: layer1\.2\.conv1\.weight"), (34, 18, r"\d+ unexpected: layer1\.2")],
)
def test_checkpoint_of_another_depth_is_rejected(tmp_path, saved_depth, our_depth, problem):
    path = tmp_path / "other_depth.pth"
    _save_voc_checkpoint(path, "state_dict", depth=saved_depth, aux_head=False)
    with pytest.raises(
        ValueError, match=rf"backbone_depth={our_depth}, deep_stem=True\): {problem}"
    ):
        PSPNet(backbone_depth=our_depth, pretrained_weights=str(path))


def test_checkpoint_of_another_stem_is_rejected(tmp_path):
    path = tmp_path / "classic_stem.pth"
    _save_voc_checkpoint(path, None, aux_head=False)
    with pytest.raises(
        ValueError, match=r"layer0\.0\.weight \(64, 3, 3, 3\) vs ours \(64, 3, 7, 7\)"
    ):
        PSPNet(deep_stem=False, pretrained_weights=str(path), **SMALL)


def test_unreadable_checkpoints_are_rejected(tmp_path):
    garbage, nested = tmp_path / "garbage.pth", tmp_path / "nested.pth"
    garbage.write_bytes(b"not a checkpoint")
    torch.save({"epoch": 3, "weights": {"a": torch.zeros(1)}}, nested)
    with pytest.raises(ValueError, match="cannot be read as a weights-only torch checkpoint"):
        PSPNet(pretrained_weights=str(garbage), **SMALL)
    with pytest.raises(
        ValueError, match=r"holds a dict with keys epoch, weights; expected a state"
    ):
        PSPNet(pretrained_weights=str(nested), **SMALL)


def test_invalid_arguments_and_inputs_are_reported():
    with pytest.raises(ValueError, match="output_stride=32; expected 8 or 16"):
        PSPNet(output_stride=32, **SMALL)
    with pytest.raises(ValueError, match="bins=()"):
        PSPNet(bins=(), **SMALL)
    with pytest.raises(ValueError, match=r"expects input \(B, 5, H, W\); got \(2, 3, 33, 33\)"):
        PSPNet(**SMALL)(torch.zeros(2, 3, 33, 33))
