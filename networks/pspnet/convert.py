"""Converting the public VOC2012 PSPNet-101 checkpoints to the layer names of networks/pspnet/model.py.

Abulnaga & Rubin (arXiv 1811.01085, §4.3) fine-tune Zhao et al.'s PSPNet-101 trained on Pascal
VOC 2012. PyTorch users find it in two layouts, and ``lightning-data convert-weights`` turns
either into the state dict that ``PSPNet(pretrained_weights=...)`` loads:

* ``semseg``: hszhao/semseg's own PyTorch training (``train_epoch_50.pth``). Its names are
  already ours (``layer0`` … ``layer4``, ``ppm.features``, ``cls``, ``aux``), so the tensors pass
  through once DataParallel's ``module.`` prefix is gone.
* ``pytorch-semseg``: the Caffe ``pspnet101_VOC2012.caffemodel`` as meetps/pytorch-semseg loads
  it (``pspnet_101_pascalvoc.pth``). Its names are renamed, and two conventions that change no
  shape are translated by meaning: the pyramid's pooled maps are concatenated as
  ``[x, p6, p3, p2, p1]`` (ours ``[x, p1, p2, p3, p6]``), and the stem takes Caffe's BGR,
  mean-subtracted 0–255 input (ours, like hszhao/semseg, RGB normalised by ImageNet mean/std).

Both drop the 21-class VOC classifiers; the paper's initializer layer and 2-class head are new.
docs/pretrained_weights.md says where the files come from and what was verified.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from core.errors import ConfigurationError, PretrainedWeightsNotFoundError, WeightsError
from networks.pspnet.model import PSPNet
from networks.pspnet.weights import modules_of, show_keys, unwrap_state_dict

Layout = Literal["semseg", "pytorch-semseg"]
LAYOUTS: tuple[Layout, ...] = ("semseg", "pytorch-semseg")

# Key prefixes only one layout has: how ``detect_layout`` tells them apart.
_MARKERS: dict[Layout, tuple[str, ...]] = {
    "semseg": ("layer0.", "layer1.", "ppm.features."),
    "pytorch-semseg": ("convbnrelu1_1.", "res_block2.", "pyramid_pooling."),
}
_EXAMPLES: dict[Layout, str] = {
    "semseg": "layer0.0.weight, layer1.0.conv1.weight, ppm.features.0.1.weight, cls.0.weight",
    "pytorch-semseg": (
        "convbnrelu1_1.cbr_unit.0.weight, res_block2.layers.0.cbr1.cbr_unit.0.weight, "
        "pyramid_pooling.path_module_list.0.cbr_unit.0.weight, cbr_final.cbr_unit.0.weight"
    ),
}

# The converted file is for PSPNet's default pyramid, arXiv 1612.01105 §3.2.
_BINS = (1, 2, 3, 6)
# pytorch-semseg's pyramidPooling(2048, [6, 3, 2, 1]): path i pools to this size, and the
# paths are concatenated in this order, as conv5_3_concat in the Caffe prototxt.
_CAFFE_POOL_SIZES = (6, 3, 2, 1)
# hszhao/semseg feeds RGB images as (x − 255·mean) / (255·std) with ImageNet's mean and std
# (tool/train.py); the Caffe model takes BGR x − mean, with the same mean to within 0.5.
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# ResNet depth from the number of bottlenecks in layer3 (He et al., arXiv 1512.03385, Table 1).
_DEPTH_BY_LAYER3_BLOCKS = {6: 50, 23: 101, 36: 152}

_BOTTLENECK_PARTS = {
    "cbr1.cbr_unit": ("conv1", "bn1"),
    "cbr2.cbr_unit": ("conv2", "bn2"),
    "cb3.cb_unit": ("conv3", "bn3"),
    "cb4.cb_unit": ("downsample.0", "downsample.1"),  # the projection shortcut
}

# pytorch-semseg name → ours. Each unit is Sequential(conv, BN[, ReLU]), so ``.0`` is the conv
# and ``.1`` its BN; the last group is the tensor (weight, running_var, num_batches_tracked …).
_PYTORCH_SEMSEG_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (  # the three stem convs sit at layer0.0, layer0.3 and layer0.6, each followed by its BN
        re.compile(r"convbnrelu1_([123])\.cbr_unit\.([01])\.(\w+)"),
        lambda m: f"layer0.{3 * (int(m[1]) - 1) + int(m[2])}.{m[3]}",
    ),
    (  # res_block2 … res_block5 are layer1 … layer4; bottleNeck(Identify)PSP's parts by role
        re.compile(
            r"res_block([2-5])\.layers\.(\d+)\.(cbr[12]\.cbr_unit|cb[34]\.cb_unit)\.([01])\.(\w+)"
        ),
        lambda m: f"layer{int(m[1]) - 1}.{m[2]}.{_BOTTLENECK_PARTS[m[3]][int(m[4])]}.{m[5]}",
    ),
    (  # by pool size, not position. The saved name is path_module_list (``paths`` is an
        # unregistered list in ptsemseg/models/utils.py); ``paths`` is accepted as well.
        re.compile(
            r"pyramid_pooling\.(?:path_module_list|paths)\.([0-3])\.cbr_unit\.([01])\.(\w+)"
        ),
        lambda m: (
            f"ppm.features.{_BINS.index(_CAFFE_POOL_SIZES[int(m[1])])}.{int(m[2]) + 1}.{m[3]}"
        ),
    ),
    (re.compile(r"cbr_final\.cbr_unit\.([01])\.(\w+)"), lambda m: f"cls.{m[1]}.{m[2]}"),
    (re.compile(r"classification\.(\w+)"), lambda m: f"cls.4.{m[1]}"),
    (re.compile(r"convbnrelu4_aux\.cbr_unit\.([01])\.(\w+)"), lambda m: f"aux.{m[1]}.{m[2]}"),
    (re.compile(r"aux_cls\.(\w+)"), lambda m: f"aux.4.{m[1]}"),
)


@dataclass(frozen=True)
class ConversionResult:
    """A checkpoint in the layer names of ``networks/pspnet/model.py``, and what did not carry over.

    Attributes:
        layout: the layout of the source, detected or given.
        state_dict: the converted tensors (float32), ready for ``torch.save``.
        dropped: source keys, in the source's names, not carried over: the 21-class VOC
            classifiers (and an ``init.*`` layer, if the source has one).
        missing: keys of ``PSPNet(aux_head=True)`` that ``state_dict`` lacks and that PSPNet
            initialises itself: the paper's new layers (``init``, ``cls.4``, ``aux.4``), BN step
            counters (none in a Caffe conversion), and ``aux.*`` if the source has no aux head.
    """

    layout: Layout
    state_dict: dict[str, torch.Tensor]
    dropped: list[str]
    missing: list[str]


@functools.cache
def _reference(
    backbone_depth: Literal[50, 101, 152],
) -> tuple[dict[str, torch.Size], tuple[str, ...]]:
    """Tensor shapes of the PSPNet a converted file is for, and the prefixes of its new layers."""
    net = PSPNet(backbone_depth=backbone_depth, bins=_BINS, aux_head=True)
    shapes = {key: value.shape for key, value in net.state_dict().items()}
    return shapes, tuple(f"{name}." for name in net.new_module_names())


def _find_layout(keys: list[str]) -> list[Layout]:
    """The layouts whose marker prefixes occur among ``keys``."""
    return [layout for layout in LAYOUTS if any(key.startswith(_MARKERS[layout]) for key in keys)]


def _pyramid_blocks_to_ours(weight: torch.Tensor) -> torch.Tensor:
    """``cls.0``'s input channels from Caffe's concat ``[x, p6, p3, p2, p1]`` to ours."""
    if weight.ndim != 4 or weight.shape[1] % (2 * len(_CAFFE_POOL_SIZES)):
        return weight  # not the VOC head; reported as a shape mismatch
    x_channels = weight.shape[1] // 2  # the pooled maps together have as many as x
    width = x_channels // len(_CAFFE_POOL_SIZES)
    pooled = {
        size: weight[:, x_channels + i * width : x_channels + (i + 1) * width]
        for i, size in enumerate(_CAFFE_POOL_SIZES)
    }
    return torch.cat([weight[:, :x_channels], *(pooled[size] for size in _BINS)], dim=1)


def _caffe_stem_to_semseg(weight: torch.Tensor) -> torch.Tensor:
    """The first conv for RGB, ImageNet-normalised input instead of BGR, mean-subtracted 0–255.

    Caffe computes W·(x_bgr − mean); the same response to x_rgb = (x − mean) / (255·std) needs
    W'[:, c] = W[:, 2 − c] · 255·std[c], exact up to the 0.5 grey-level gap between the means.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        return weight  # not an RGB stem; reported as a shape mismatch
    scale = torch.tensor(_IMAGENET_STD_RGB, dtype=torch.float64) * 255
    return (weight.flip(1).double() * scale[None, :, None, None]).to(weight.dtype)


def _rename_pytorch_semseg(
    state: dict[str, torch.Tensor], keep_caffe_input: bool
) -> tuple[dict[str, tuple[str, torch.Tensor]], list[str]]:
    """Our names for pytorch-semseg's tensors (with each one's source key), and unknown keys."""
    renamed: dict[str, tuple[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        for pattern, ours in _PYTORCH_SEMSEG_RULES:
            match = pattern.fullmatch(key)
            if match:
                renamed[ours(match)] = (key, tensor)
                break
        else:
            unknown.append(key)
    if "cls.0.weight" in renamed:
        key, weight = renamed["cls.0.weight"]
        renamed["cls.0.weight"] = (key, _pyramid_blocks_to_ours(weight))
    if "layer0.0.weight" in renamed and not keep_caffe_input:
        key, weight = renamed["layer0.0.weight"]
        renamed["layer0.0.weight"] = (key, _caffe_stem_to_semseg(weight))
    return renamed, unknown


def _depth_hint(keys: list[str], backbone_depth: int) -> str:
    """Which --backbone-depth the file's layer3 suggests, if not the one asked for."""
    blocks = {int(key.split(".")[1]) for key in keys if re.match(r"layer3\.\d+\.", key)}
    depth = _DEPTH_BY_LAYER3_BLOCKS.get(max(blocks) + 1) if blocks else None
    if depth is None or depth == backbone_depth:
        return ""
    return (
        f" Its layer3 has {max(blocks) + 1} blocks, i.e. a ResNet-{depth}: set backbone_depth "
        f"(lightning-data convert-weights --backbone-depth) to {depth}."
    )


def detect_layout(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> Layout:
    """Tell which public PSPNet layout a checkpoint is in, from its key names.

    Args:
        checkpoint: a state dict, optionally with DataParallel's ``module.`` prefix and under
            ``state_dict``, ``model`` or ``model_state``, as ``torch.load`` returns it.
        source: the file it came from, for error messages.

    Returns:
        ``"semseg"`` (hszhao/semseg: ``layer0.*``, ``ppm.features.*``) or ``"pytorch-semseg"``
        (meetps/pytorch-semseg: ``convbnrelu1_1.*``, ``res_block2.*``, ``pyramid_pooling.*``).

    Raises:
        WeightsError: if the keys belong to neither layout, or to both.
    """
    keys = list(unwrap_state_dict(checkpoint, Path(source)))
    found = _find_layout(keys)
    if len(found) == 1:
        return found[0]
    what = "keys of both layouts" if found else "no PSPNet layout convert-weights knows"
    raise WeightsError(
        f"{source}: {what}; its keys are {show_keys(keys)}. Expected the VOC2012 PSPNet checkpoint "
        f"of hszhao/semseg (keys {_EXAMPLES['semseg']}, …) or of pytorch-semseg (keys "
        f"{_EXAMPLES['pytorch-semseg']}, …), optionally with a 'module.' prefix and under "
        "'state_dict', 'model' or 'model_state'. Pass that file itself; docs/pretrained_weights.md "
        "says where each comes from."
    )


def convert_state_dict(
    checkpoint: Mapping[str, Any],
    layout: Layout | Literal["auto"] = "auto",
    backbone_depth: Literal[50, 101, 152] = 101,
    *,
    keep_caffe_input: bool = False,
    source: str = "checkpoint",
) -> ConversionResult:
    """Rename a public PSPNet checkpoint to ``networks/pspnet/model.py`` and check it fits, by shape.

    Every tensor of the backbone, the pyramid and the heads' hidden layers must be there with
    PSPNet's shape; the auxiliary head is optional; the VOC classifiers are dropped. The
    pytorch-semseg mapping, read from meetps/pytorch-semseg ``ptsemseg/models/pspnet.py`` and
    ``utils.py`` (``.0`` is a unit's conv, ``.1`` its BN; docs/pretrained_weights.md):

    * ``convbnrelu1_{1,2,3}.cbr_unit.{0,1}`` → ``layer0.{0,1}``, ``{3,4}``, ``{6,7}``;
    * ``res_block{2..5}.layers.j.{cbr1,cbr2}.cbr_unit.{0,1}`` → ``layer{1..4}.j.{conv,bn}{1,2}``;
    * ``res_block{2..5}.layers.j.cb3.cb_unit.{0,1}`` → ``layer{1..4}.j.{conv3,bn3}``;
    * ``res_block{2..5}.layers.0.cb4.cb_unit.{0,1}`` → ``layer{1..4}.0.downsample.{0,1}``;
    * ``pyramid_pooling.path_module_list.i.cbr_unit.{0,1}`` (pool size 6, 3, 2, 1 for i = 0 … 3)
      → ``ppm.features.k.{1,2}`` with bins (1, 2, 3, 6)[k] that pool size;
    * ``cbr_final.cbr_unit.{0,1}`` → ``cls.{0,1}``, input channels reordered to ours;
    * ``convbnrelu4_aux.cbr_unit.{0,1}`` → ``aux.{0,1}``;
    * ``classification``, ``aux_cls`` (the 21-class ``cls.4``, ``aux.4``) → dropped.

    Args:
        checkpoint: the loaded checkpoint: a state dict, optionally with DataParallel's
            ``module.`` prefix and under ``state_dict``, ``model`` or ``model_state``.
        layout: ``"semseg"``, ``"pytorch-semseg"``, or ``"auto"`` to detect it.
        backbone_depth: ResNet depth of the checkpoint and of the PSPNet that will load it.
        keep_caffe_input: for pytorch-semseg only: leave the stem expecting Caffe's BGR,
            mean-subtracted 0–255 input instead of converting it to RGB, ImageNet-normalised.
        source: the file it came from, for error messages.

    Returns:
        The converted state dict with the dropped and missing keys.

    Raises:
        WeightsError: for an unknown or mismatching layout, or tensors that do not fit
            ``PSPNet(backbone_depth=backbone_depth)``: each named with both shapes.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ConfigurationError(f"layout={layout!r} is not one of {['auto', *LAYOUTS]}.")
    state = unwrap_state_dict(checkpoint, Path(source))
    found = detect_layout(state, source) if layout == "auto" else layout
    detected = _find_layout(list(state))
    if layout != "auto" and detected and layout not in detected:
        raise WeightsError(
            f"{source}: layout {layout!r} was asked for, but the keys are in the "
            f"{detected[0]!r} layout ({show_keys(list(state))}). Use layout {detected[0]!r} or "
            "'auto' (lightning-data convert-weights --layout)."
        )

    if found == "semseg":
        renamed = {key: (key, tensor) for key, tensor in state.items()}
        unknown: list[str] = []
    else:
        renamed, unknown = _rename_pytorch_semseg(state, keep_caffe_input)

    shapes, new_prefixes = _reference(backbone_depth)
    converted: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    mismatched: list[str] = []
    for ours, (key, tensor) in renamed.items():
        if ours.startswith(new_prefixes):
            dropped.append(key)  # the VOC classifiers; the paper's init layer is trained anew
        elif ours not in shapes:
            unknown.append(key)
        elif tensor.shape != shapes[ours]:
            name = key if key == ours else f"{key} (our {ours})"
            mismatched.append(
                f"{name} is {tuple(tensor.shape)} in the file, {tuple(shapes[ours])} in PSPNet"
            )
        else:
            # Old Caffe conversions hold float64; the network is float32.
            converted[ours] = tensor.float() if tensor.is_floating_point() else tensor
    required = [
        key
        for key in shapes
        if key not in renamed  # a tensor of another shape is reported as such, not as missing
        and not key.startswith((*new_prefixes, "aux."))
        and not key.endswith("num_batches_tracked")
    ]
    if unknown or mismatched or required:
        problems = [
            f"{len(keys)} {what}: {show_keys(keys)}"
            for what, keys in (
                ("with another shape", mismatched),
                ("not in PSPNet", unknown),
                ("missing", required),
            )
            if keys
        ]
        raise WeightsError(
            f"{source}: the {found} checkpoint does not fit PSPNet(backbone_depth="
            f"{backbone_depth}): {'; '.join(problems)}.{_depth_hint(list(renamed), backbone_depth)}"
            " Expected the VOC2012 PSPNet with a deep stem, bins (1, 2, 3, 6) and 512/256 hidden "
            "channels in the heads; see docs/pretrained_weights.md."
        )
    missing = [key for key in shapes if key not in converted]
    return ConversionResult(layout=found, state_dict=converted, dropped=dropped, missing=missing)


def _load(src: Path) -> Any:
    """What a weights-only ``torch.load`` of ``src`` returns, or a WeightsError saying why not."""
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise WeightsError(
            f"{src}: cannot be read as a weights-only torch checkpoint ({type(error).__name__}). "
            "Expected the .pth of hszhao/semseg or pytorch-semseg (a .caffemodel must first be "
            "loaded with pytorch-semseg's load_pretrained_model and saved with torch.save). If "
            "it is a trusted checkpoint holding other objects, re-save just its state_dict."
        ) from error


def convert_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    layout: Layout | Literal["auto"] = "auto",
    backbone_depth: Literal[50, 101, 152] = 101,
    *,
    keep_caffe_input: bool = False,
    overwrite: bool = False,
) -> ConversionResult:
    """Convert a public PSPNet checkpoint file into one ``PSPNet(pretrained_weights=...)`` reads.

    The result is written to a temporary file next to ``dst``, loaded into
    ``PSPNet(backbone_depth=backbone_depth, pretrained_weights=...)`` exactly as training will
    load it, and only then renamed to ``dst``: an interrupted or failed run writes nothing.

    Args:
        src: the downloaded checkpoint (see ``convert_state_dict`` for what it may hold).
        dst: the file to write, e.g. ``weights/pspnet101_voc2012.pth``; folders are created.
        layout: ``"semseg"``, ``"pytorch-semseg"``, or ``"auto"`` to detect it.
        backbone_depth: ResNet depth of the checkpoint and of the PSPNet that will load it.
        keep_caffe_input: see ``convert_state_dict``.
        overwrite: replace ``dst`` if it exists.

    Returns:
        What ``convert_state_dict`` returned; its ``state_dict`` is what was written.

    Raises:
        PretrainedWeightsNotFoundError: if ``src`` is not a file.
        ConfigurationError: if ``dst`` exists and ``overwrite`` is false, or is ``src``.
        WeightsError: if ``src`` is unreadable, in no known layout, or does not fit PSPNet.
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_file():
        raise PretrainedWeightsNotFoundError(
            f"{src.absolute()}: no such file. Expected the downloaded VOC2012 PSPNet checkpoint, "
            "e.g. hszhao/semseg's train_epoch_50.pth or pytorch-semseg's "
            "pspnet_101_pascalvoc.pth; docs/pretrained_weights.md says where to get them."
        )
    if dst.exists() and dst.resolve() == src.resolve():
        raise ConfigurationError(f"{dst}: is the source checkpoint itself; write to another file.")
    if dst.exists() and not overwrite:
        raise ConfigurationError(
            f"{dst.absolute()}: already exists. Pass --overwrite (overwrite=True) to replace it, "
            "or choose another destination."
        )
    result = convert_state_dict(
        _load(src), layout, backbone_depth, keep_caffe_input=keep_caffe_input, source=str(src)
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Next to dst, so the rename is atomic; torch.save creates it with the user's umask.
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        torch.save(result.state_dict, tmp)
        has_aux = any(key.startswith("aux.") for key in result.state_dict)
        PSPNet(backbone_depth=backbone_depth, aux_head=has_aux, pretrained_weights=str(tmp))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def summarize(result: ConversionResult) -> str:
    """What a conversion kept, dropped and left to PSPNet, by module, for a log or a terminal."""
    return (
        f"{len(result.state_dict)} tensors converted; dropped {len(result.dropped)} "
        f"({modules_of(result.dropped)}); left for PSPNet to initialise: "
        f"{modules_of([key for key in result.missing if not key.endswith('num_batches_tracked')])}"
    )
