"""Loading published PSPNet weights (arXiv 1811.01085, §4.3); docs/papers.md §4."""

import logging
import re
from pathlib import Path

import pytest
import torch

from networks import PretrainedWeightsNotFoundError, PSPNet

SMALL = {"backbone_depth": 18}  # same layout as R-101, fast enough to save and load
SETTING = "model.init_args.net.init_args.pretrained_weights"


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
    with caplog.at_level(logging.INFO, logger="networks.pspnet.weights"):
        net = PSPNet(aux_head=aux_head, pretrained_weights=str(path), **SMALL)
    new = ("init.", "cls.4.", "aux.4.")
    for key, value in net.state_dict().items():
        expected = initial[key] if key.startswith(new) else source[key]
        assert torch.equal(value, expected), key
    assert "Left at initialisation: init.0, init.1, cls.4" in caplog.text


def test_missing_file_is_a_file_not_found_error_naming_path_setting_and_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainedWeightsNotFoundError) as raised:
        PSPNet(pretrained_weights="weights/pspnet101_voc2012.pth", **SMALL)
    message, cwd = str(raised.value), Path.cwd()
    assert isinstance(raised.value, FileNotFoundError)
    assert message.startswith(
        f"PSPNet pretrained weights not found: {cwd / 'weights' / 'pspnet101_voc2012.pth'} "
        f"({SETTING}, resolved from the working directory {cwd}). "
    )
    assert "\n" not in message  # one paragraph
    for fix in (
        "layer0…layer4, ppm.features.*, cls.*, aux.*",
        'README section "Pretrained weights"',
        "--config experiments/pspnet_scratch_focal.yaml",
        # The lightning command hands this nested null to PSPNet as None
        # (tests/cli/test_nested_values.py).
        f"--{SETTING} null.",
    ):
        assert fix in message


def test_absolute_path_and_directory_are_reported_as_not_found(tmp_path):
    expected = f"not found: {tmp_path / 'nope.pth'} ({SETTING})."
    with pytest.raises(FileNotFoundError, match=re.escape(expected)):
        PSPNet(pretrained_weights=str(tmp_path / "nope.pth"), **SMALL)
    with pytest.raises(PretrainedWeightsNotFoundError, match="is a directory, not a file"):
        PSPNet(pretrained_weights=str(tmp_path), **SMALL)


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
