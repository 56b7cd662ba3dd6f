"""Converting the public VOC2012 PSPNet-101 checkpoints (arXiv 1811.01085, §4.3).

Nothing is downloaded: each public layout is rebuilt from a random VOC PSPNet-101 of ours by
renaming its tensors as the public files name them (hszhao/semseg ``model/pspnet.py``;
meetps/pytorch-semseg ``ptsemseg/models/pspnet.py`` and ``utils.py``), with their shapes.
See docs/pretrained_weights.md.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from cli import data as cli
from networks import PSPNet
from networks.pspnet.convert import convert_file, convert_state_dict, detect_layout

# pytorch-semseg's pyramidPooling(2048, [6, 3, 2, 1]): path i pools to CAFFE_POOL_SIZES[i], and
# the Caffe prototxt concatenates [x, p6, p3, p2, p1]; ours pools to OUR_BINS, in that order.
CAFFE_POOL_SIZES = (6, 3, 2, 1)
OUR_BINS = (1, 2, 3, 6)
IMAGENET_STD_RGB = torch.tensor([0.229, 0.224, 0.225])
R101_BLOCKS = (3, 4, 23, 3)
VOC_HEADS = ["cls.4.weight", "cls.4.bias", "aux.4.weight", "aux.4.bias"]


def _pytorch_semseg_modules() -> dict[str, str]:
    """Our module name → pytorch-semseg's, for pspnet(version="pascal")."""
    names = {
        "layer0.0": "convbnrelu1_1.cbr_unit.0",
        "layer0.1": "convbnrelu1_1.cbr_unit.1",
        "layer0.3": "convbnrelu1_2.cbr_unit.0",
        "layer0.4": "convbnrelu1_2.cbr_unit.1",
        "layer0.6": "convbnrelu1_3.cbr_unit.0",
        "layer0.7": "convbnrelu1_3.cbr_unit.1",
        "cls.0": "cbr_final.cbr_unit.0",
        "cls.1": "cbr_final.cbr_unit.1",
        "cls.4": "classification",
        "aux.0": "convbnrelu4_aux.cbr_unit.0",
        "aux.1": "convbnrelu4_aux.cbr_unit.1",
        "aux.4": "aux_cls",
    }
    bottleneck = {
        "conv1": "cbr1.cbr_unit.0",
        "bn1": "cbr1.cbr_unit.1",
        "conv2": "cbr2.cbr_unit.0",
        "bn2": "cbr2.cbr_unit.1",
        "conv3": "cb3.cb_unit.0",
        "bn3": "cb3.cb_unit.1",
        "downsample.0": "cb4.cb_unit.0",  # bottleNeckPSP only: the first block of each stage
        "downsample.1": "cb4.cb_unit.1",
    }
    for stage, blocks in enumerate(R101_BLOCKS, start=1):
        for block in range(blocks):
            for ours, theirs in bottleneck.items():
                if block == 0 or not ours.startswith("downsample"):
                    names[f"layer{stage}.{block}.{ours}"] = (
                        f"res_block{stage + 1}.layers.{block}.{theirs}"
                    )
    for k, size in enumerate(OUR_BINS):
        path = f"pyramid_pooling.path_module_list.{CAFFE_POOL_SIZES.index(size)}.cbr_unit"
        names[f"ppm.features.{k}.1"] = f"{path}.0"
        names[f"ppm.features.{k}.2"] = f"{path}.1"
    return names


@pytest.fixture(scope="module")
def voc() -> dict[str, torch.Tensor]:
    """A VOC PSPNet-101 (3 channels, 21 classes, aux head) with random values, in our names."""
    torch.manual_seed(0)
    net = PSPNet(in_channels=3, num_classes=21, backbone_depth=101, init_layer=False, aux_head=True)
    with torch.no_grad():
        for key, tensor in net.state_dict().items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)  # a valid variance, for the forward comparison
            elif tensor.is_floating_point():
                tensor.normal_()
            else:
                tensor.fill_(1000)  # num_batches_tracked
    return net.state_dict()


@pytest.fixture(scope="module")
def semseg(voc) -> dict:
    """hszhao/semseg's train_epoch_50.pth: DataParallel keys under 'state_dict'."""
    return {
        "epoch": 50,
        "state_dict": {f"module.{key}": value for key, value in voc.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-2, "params": [0, 1]}]},
    }


@pytest.fixture(scope="module")
def caffe(voc) -> dict[str, torch.Tensor]:
    """pytorch-semseg's state dict of the Caffe VOC model, with the Caffe conventions."""
    modules = _pytorch_semseg_modules()
    state = {}
    for key, value in voc.items():
        module, tensor = key.rsplit(".", 1)
        state[f"{modules[module]}.{tensor}"] = value
    weight = voc["cls.0.weight"]  # (512, 4096, 3, 3): [x, p1, p2, p3, p6] in ours
    pooled = dict(zip(OUR_BINS, weight[:, 2048:].split(512, dim=1), strict=True))
    state["cbr_final.cbr_unit.0.weight"] = torch.cat(
        [weight[:, :2048], *(pooled[size] for size in CAFFE_POOL_SIZES)], dim=1
    )
    # Caffe's stem reads BGR x − mean on 0–255, ours RGB (x − mean) / (255·std).
    stem = voc["layer0.0.weight"] / (255 * IMAGENET_STD_RGB)[None, :, None, None]
    state["convbnrelu1_1.cbr_unit.0.weight"] = stem.flip(1)
    return state


@pytest.fixture(scope="module")
def net101() -> PSPNet:
    """The network the converted files are for (loaded into by several tests)."""
    return PSPNet(backbone_depth=101, aux_head=True)


def _pretrained(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a converted checkpoint must hold: all but the 21-class classifiers."""
    return {key: value for key, value in state.items() if key not in VOC_HEADS}


def test_public_key_names_and_shapes_are_the_ones_rebuilt(semseg, caffe):
    # A few keys as the public code names them, to anchor the renaming in the tests.
    expected_semseg = {
        "module.layer0.3.weight": (64, 64, 3, 3),
        "module.layer3.22.bn3.running_var": (1024,),
        "module.ppm.features.3.1.weight": (512, 2048, 1, 1),
        "module.cls.4.weight": (21, 512, 1, 1),
        "module.aux.0.weight": (256, 1024, 3, 3),
    }
    expected_caffe = {
        "convbnrelu1_3.cbr_unit.0.weight": (128, 64, 3, 3),
        "res_block3.layers.0.cb4.cb_unit.0.weight": (512, 256, 1, 1),
        "res_block4.layers.22.cb3.cb_unit.1.running_var": (1024,),
        "pyramid_pooling.path_module_list.0.cbr_unit.0.weight": (512, 2048, 1, 1),
        "cbr_final.cbr_unit.0.weight": (512, 4096, 3, 3),
        "classification.bias": (21,),
        "aux_cls.weight": (21, 256, 1, 1),
    }
    for state, expected in ((semseg["state_dict"], expected_semseg), (caffe, expected_caffe)):
        assert {key: tuple(state[key].shape) for key in expected} == expected
    assert "res_block4.layers.1.cb4.cb_unit.0.weight" not in caffe  # identity shortcut


def test_semseg_checkpoint_passes_through(semseg, voc, net101):
    result = convert_state_dict(semseg)
    assert result.layout == "semseg"
    assert result.dropped == VOC_HEADS
    assert result.state_dict.keys() == _pretrained(voc).keys()
    for key, value in result.state_dict.items():
        assert torch.equal(value, voc[key]), key
    assert not net101.load_state_dict(result.state_dict, strict=False).unexpected_keys
    assert torch.equal(net101.layer0[0].weight, voc["layer0.0.weight"])
    assert torch.equal(net101.layer3[5].conv2.weight, voc["layer3.5.conv2.weight"])
    assert torch.equal(net101.layer4[2].bn3.running_var, voc["layer4.2.bn3.running_var"])


@pytest.fixture(scope="module")
def from_caffe(caffe):
    """pytorch-semseg's checkpoint as its __main__ saves it, converted."""
    return convert_state_dict({"model_state": {f"module.{k}": v for k, v in caffe.items()}})


def test_pytorch_semseg_checkpoint_is_renamed_by_role(from_caffe, caffe, voc, net101):
    result = from_caffe
    assert result.layout == "pytorch-semseg"
    heads = ["classification.weight", "classification.bias", "aux_cls.weight", "aux_cls.bias"]
    assert result.dropped == heads
    assert result.state_dict.keys() == _pretrained(voc).keys()
    for key, value in result.state_dict.items():
        if key == "layer0.0.weight":  # scaled by 255·std and back
            torch.testing.assert_close(value, voc[key])
        else:
            assert torch.equal(value, voc[key]), key
    net101.load_state_dict(result.state_dict, strict=False)
    landed = {
        "res_block4.layers.5.cbr2.cbr_unit.0.weight": net101.layer3[5].conv2.weight,
        "res_block2.layers.0.cb4.cb_unit.1.running_mean": net101.layer1[0]
        .downsample[1]
        .running_mean,
        "res_block5.layers.2.cb3.cb_unit.1.running_var": net101.layer4[2].bn3.running_var,
        "convbnrelu1_3.cbr_unit.1.weight": net101.layer0[7].weight,
        "convbnrelu4_aux.cbr_unit.0.weight": net101.aux[0].weight,
    }
    for key, tensor in landed.items():
        assert torch.equal(tensor, caffe[key]), key


@pytest.mark.parametrize(("path", "pool_size"), list(enumerate(CAFFE_POOL_SIZES)))
def test_each_pyramid_path_lands_at_its_pool_size(from_caffe, caffe, net101, path, pool_size):
    net101.load_state_dict(from_caffe.state_dict, strict=False)
    branch = net101.ppm.features[OUR_BINS.index(pool_size)]
    assert branch[0].output_size == pool_size
    source = f"pyramid_pooling.path_module_list.{path}.cbr_unit"
    assert torch.equal(branch[1].weight, caffe[f"{source}.0.weight"])
    assert torch.equal(branch[2].running_mean, caffe[f"{source}.1.running_mean"])


def _conv_bn_relu(state: dict, prefix: str, x: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """pytorch-semseg's conv2DBatchNormRelu in eval mode, on its saved tensors."""
    x = F.conv2d(x, state[f"{prefix}.0.weight"], padding=padding)
    bn = [state[f"{prefix}.1.{name}"] for name in ("running_mean", "running_var", "weight", "bias")]
    return F.relu(F.batch_norm(x, *bn, training=False))


def test_pyramid_and_head_compute_what_the_caffe_model_computes(from_caffe, caffe, net101):
    # pytorch-semseg's pyramidPooling + cbr_final on a 12² map, where its avg_pool2d with
    # kernel = stride = 12 / size equals our adaptive pooling. A path moved by position, or
    # cbr_final's input channels left in Caffe's concat order, changes the result.
    torch.manual_seed(1)
    x = torch.randn(1, 2048, 12, 12)
    pooled = [x]
    for path, size in enumerate(CAFFE_POOL_SIZES):
        p = F.avg_pool2d(x, 12 // size)
        p = _conv_bn_relu(caffe, f"pyramid_pooling.path_module_list.{path}.cbr_unit", p)
        pooled.append(F.interpolate(p, size=(12, 12), mode="bilinear", align_corners=True))
    expected = _conv_bn_relu(caffe, "cbr_final.cbr_unit", torch.cat(pooled, dim=1), padding=1)

    net101.load_state_dict(from_caffe.state_dict, strict=False)
    net101.eval()
    with torch.no_grad():
        ours = net101.cls[:3](net101.ppm(x))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-2)


def test_stem_takes_rgb_imagenet_input_or_keeps_caffe_input(from_caffe, caffe):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 9, 9)  # RGB, normalised as hszhao/semseg does
    caffe_input = (x * 255 * IMAGENET_STD_RGB[None, :, None, None]).flip(1)  # BGR x − mean
    caffe_stem = caffe["convbnrelu1_1.cbr_unit.0.weight"]
    converted = from_caffe.state_dict["layer0.0.weight"]
    torch.testing.assert_close(
        F.conv2d(x, converted, stride=2, padding=1),
        F.conv2d(caffe_input, caffe_stem, stride=2, padding=1),
        rtol=1e-4,
        atol=1e-3,
    )
    kept = convert_state_dict(caffe, keep_caffe_input=True).state_dict["layer0.0.weight"]
    assert torch.equal(kept, caffe_stem)


def test_caffe_conversion_without_aux_head_or_step_counters_converts(caffe, net101):
    old = {
        key: value
        for key, value in caffe.items()
        if not key.startswith(("convbnrelu4_aux.", "aux_cls.")) and "num_batches" not in key
    }
    for key in (
        "convbnrelu1_1.cbr_unit.0.weight",
        "res_block2.layers.0.cbr1.cbr_unit.1.running_var",
    ):
        old[key] = old[key].double()  # older pytorch-semseg assigned float64 numpy arrays
    result = convert_state_dict(old, layout="pytorch-semseg")
    assert result.dropped == ["classification.weight", "classification.bias"]
    assert {key.rsplit(".", 1)[0] for key in result.missing if key.startswith("aux.")} == {
        "aux.0",
        "aux.1",
        "aux.4",
    }
    assert "layer2.0.bn1.num_batches_tracked" in result.missing
    assert all(value.dtype == torch.float32 for value in result.state_dict.values())
    assert net101.load_state_dict(result.state_dict, strict=False).unexpected_keys == []


def test_layout_is_detected_from_key_names(semseg, caffe):
    assert detect_layout(semseg) == "semseg"
    assert detect_layout(semseg["state_dict"]) == "semseg"
    assert detect_layout({"model_state": caffe}) == "pytorch-semseg"
    with pytest.raises(ValueError, match=r"^weights\.pth: keys of both layouts"):
        detect_layout({**semseg["state_dict"], **caffe}, source="weights.pth")


def test_unknown_layout_names_the_file_what_was_found_and_what_is_expected():
    unknown = {"backbone.conv1.weight": torch.zeros(1), "decode_head.conv_seg.bias": torch.zeros(1)}
    with pytest.raises(ValueError) as raised:
        convert_state_dict(unknown, source="mmseg.pth")
    message = str(raised.value)
    assert message.startswith(
        "mmseg.pth: no PSPNet layout convert-weights knows; its keys are "
        "backbone.conv1.weight, decode_head.conv_seg.bias. Expected the VOC2012 PSPNet "
    )
    assert "layer0.0.weight" in message and "convbnrelu1_1.cbr_unit.0.weight" in message
    assert "\n" not in message


def test_explicit_layout_that_contradicts_the_keys_is_rejected(semseg):
    with pytest.raises(
        ValueError, match=r"layout 'pytorch-semseg' was asked for, but the keys are in the 'semseg'"
    ):
        convert_state_dict(semseg, layout="pytorch-semseg")
    with pytest.raises(ValueError, match=r"layout='caffe' is not one of \['auto', 'semseg'"):
        convert_state_dict(semseg, layout="caffe")  # type: ignore[arg-type]


def test_shape_mismatch_names_the_key_and_both_shapes(caffe):
    wrong = dict(caffe)
    wrong["res_block4.layers.5.cbr2.cbr_unit.0.weight"] = torch.zeros(256, 256, 1, 1)
    with pytest.raises(ValueError) as raised:
        convert_state_dict(wrong, source="pspnet_101_pascalvoc.pth")
    assert str(raised.value).startswith(
        "pspnet_101_pascalvoc.pth: the pytorch-semseg checkpoint does not fit "
        "PSPNet(backbone_depth=101): 1 with another shape: res_block4.layers.5.cbr2.cbr_unit.0."
        "weight (our layer3.5.conv2.weight) is (256, 256, 1, 1) in the file, (256, 256, 3, 3) "
        "in PSPNet."
    )


def test_checkpoint_of_another_depth_says_which_depth_to_pass(voc):
    # ResNet-50 has the same layout with 6 blocks in layer3 (He et al., Table 1).
    r50 = {
        key: value
        for key, value in voc.items()
        if not (key.startswith("layer3.") and int(key.split(".")[1]) >= 6)
    }
    with pytest.raises(ValueError) as raised:
        convert_state_dict(r50, source="train_epoch_50.pth")
    message = str(raised.value)
    assert "missing: layer3.6.conv1.weight" in message
    assert "Its layer3 has 6 blocks, i.e. a ResNet-50: set backbone_depth" in message
    assert "--backbone-depth) to 50." in message


@pytest.mark.slow  # writes and reads PSPNet-101 files (≈ 270 MB each), 5–10 s per layout
@pytest.mark.parametrize("layout", ["semseg", "pytorch-semseg"])
def test_cli_round_trip_loads_into_pspnet(tmp_path, capsys, caplog, semseg, caffe, voc, layout):
    src, dst = tmp_path / "voc.pth", tmp_path / "weights" / "pspnet101_voc2012.pth"
    torch.save(semseg if layout == "semseg" else {"epoch": 9, "model_state": caffe}, src)
    dst.parent.mkdir()
    dst.write_bytes(b"an older conversion")

    assert cli.main(["convert-weights", str(src), str(dst), "--overwrite"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"read {src}: {layout} layout, PSPNet-101"
    assert lines[-2].startswith(f"{len(_pretrained(voc))} tensors converted; dropped 4 (")
    assert lines[-2].endswith("left for PSPNet to initialise: init.0, init.1, cls.4, aux.4")
    assert lines[-1] == f"wrote {dst}"
    assert [path.name for path in dst.parent.iterdir()] == [dst.name]  # no temporary file left

    torch.manual_seed(3)
    initial = PSPNet(backbone_depth=101).state_dict()
    torch.manual_seed(3)
    with caplog.at_level(logging.INFO, logger="networks.pspnet.weights"):
        net = PSPNet(backbone_depth=101, pretrained_weights=str(dst))
    assert "Left at initialisation: init.0, init.1, cls.4." in caplog.text
    for key, value in net.state_dict().items():
        if key.startswith(("init.", "cls.4.")):
            assert torch.equal(value, initial[key]), key
        else:
            torch.testing.assert_close(value, voc[key], msg=key)


def test_cli_unknown_layout_exits_2_naming_the_file(tmp_path, capsys):
    src = tmp_path / "deeplab.pth"
    torch.save({"state_dict": {"module.backbone.conv1.weight": torch.zeros(2)}}, src)
    assert cli.main(["convert-weights", str(src), str(tmp_path / "out.pth")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"lightning-data: error: {src}: no PSPNet layout convert-weights knows; its keys are "
        "backbone.conv1.weight."
    )
    assert len(captured.err.splitlines()) == 1  # one paragraph, no traceback
    assert not (tmp_path / "out.pth").exists()


def test_cli_missing_or_unreadable_source_or_existing_destination_exits_2(tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    existing = tmp_path / "pspnet101_voc2012.pth"
    existing.write_bytes(b"an older conversion")
    assert cli.main(["convert-weights", str(garbage), str(existing)]) == 2
    assert capsys.readouterr().err.startswith(
        f"lightning-data: error: {existing}: already exists. Pass --overwrite"
    )
    assert existing.read_bytes() == b"an older conversion"
    assert cli.main(["convert-weights", str(tmp_path / "nope.pth"), str(tmp_path / "o.pth")]) == 2
    assert capsys.readouterr().err.startswith(
        f"lightning-data: error: {tmp_path / 'nope.pth'}: no such file. Expected the downloaded"
    )
    assert cli.main(["convert-weights", str(garbage), str(tmp_path / "o.pth")]) == 2
    assert capsys.readouterr().err.startswith(
        f"lightning-data: error: {garbage}: cannot be read as a weights-only torch checkpoint"
    )


def test_failed_load_check_leaves_nothing_behind(tmp_path, monkeypatch, semseg):
    src, dst = tmp_path / "train_epoch_50.pth", tmp_path / "out" / "converted.pth"
    torch.save(semseg["state_dict"], src)

    def refuse(net, pretrained_weights):
        raise ValueError("PSPNet refused the file")

    monkeypatch.setattr("networks.pspnet.model.load_pretrained", refuse)
    with pytest.raises(ValueError, match="PSPNet refused the file"):
        convert_file(src, dst)
    assert list(dst.parent.iterdir()) == []
