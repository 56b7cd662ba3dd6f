"""Loading the published VOC2012 PSPNet weights into the suite's PSPNet (arXiv 1811.01085, §4.3).

Abulnaga & Rubin fine-tune Zhao et al.'s PSPNet-101 trained on Pascal VOC 2012. Nothing is
downloaded: ``PSPNet(pretrained_weights=...)`` reads a local PyTorch state dict in the layer
names of ``networks/pspnet/model.py`` (the ``hszhao/semseg`` layout), and this module matches it
against the network, skipping the layers the paper adds (docs/papers.md §4).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.errors import PretrainedWeightsNotFoundError, WeightsError, first_few

if TYPE_CHECKING:
    from networks.pspnet.model import PSPNet

logger = logging.getLogger(__name__)

# How many offending keys an error message or a log line shows.
_SHOWN_KEYS = 5

# Where every experiment YAML sets the path, so the user knows which setting to change.
_SETTING = "model.init_args.net.init_args.pretrained_weights"

_EXPECTED = (
    "a local PyTorch checkpoint of a PSPNet in the hszhao/semseg layout (keys layer0.*, "
    "layer1.* … layer4.*, ppm.*, cls.*), e.g. the VOC2012 PSPNet-101 converted to PyTorch"
)


def show_keys(keys: Sequence[str]) -> str:
    """The first few keys, and how many more there are."""
    return first_few(keys, _SHOWN_KEYS)


def modules_of(keys: Sequence[str]) -> str:
    """The distinct module names of some state-dict keys, e.g. ``init.0, cls.4``."""
    names = dict.fromkeys(key.rsplit(".", 1)[0] for key in keys)
    return ", ".join(names) or "none"


def _not_found(given: Path) -> PretrainedWeightsNotFoundError:
    """The one-paragraph error for a ``pretrained_weights`` path that names no file."""
    where = _SETTING
    if not given.is_absolute():
        where += f", resolved from the working directory {Path.cwd()}"
    is_dir = " is a directory, not a file" if given.is_dir() else ""
    return PretrainedWeightsNotFoundError(
        f"PSPNet pretrained weights not found: {given.absolute()}{is_dir} ({where}). "
        "The file must be a PyTorch state dict of the VOC2012 PSPNet-101 in the layer names of "
        "networks/pspnet/model.py (layer0…layer4, ppm.features.*, cls.*, aux.*; a 'module.' prefix "
        "and a 'state_dict'/'model' wrapper are accepted): convert the public checkpoint "
        "(hszhao/semseg's .pth, or the Caffe-converted one pytorch-semseg loads) and place it "
        'there, see the README section "Pretrained weights". Or train without it: lightning fit '
        "--config experiments/pspnet_focal.yaml --config experiments/pspnet_scratch_focal.yaml, "
        f"or set --{_SETTING} null."
    )


def unwrap_state_dict(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    """The str → Tensor mapping in a checkpoint, without a DataParallel ``module.`` prefix."""
    if isinstance(checkpoint, Mapping):
        # "model_state" is where pytorch-semseg saves its (Caffe-converted) PSPNets.
        for key in ("state_dict", "model", "model_state"):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if (
        not isinstance(checkpoint, Mapping)
        or not checkpoint
        or not all(isinstance(value, torch.Tensor) for value in checkpoint.values())
    ):
        found = type(checkpoint).__name__
        if isinstance(checkpoint, Mapping):
            found += f" with keys {show_keys([str(key) for key in checkpoint])}"
        raise WeightsError(
            f"PSPNet pretrained_weights {str(path)!r} holds a {found}; expected a state_dict "
            "(parameter name → tensor), or a dict holding one under 'state_dict', 'model' or "
            "'model_state'. "
            "Re-save just the tensors, e.g. torch.save(checkpoint['state_dict'], path)."
        )
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a weights-only torch checkpoint file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise WeightsError(
            f"PSPNet pretrained_weights {str(path)!r} cannot be read as a weights-only torch "
            f"checkpoint ({type(error).__name__}). Expected {_EXPECTED}. If it is a trusted "
            "checkpoint holding other objects, re-save just its state_dict with torch.save."
        ) from error
    return unwrap_state_dict(checkpoint, path)


def load_pretrained(net: PSPNet, pretrained_weights: str | os.PathLike[str]) -> None:
    """Copy a local PSPNet checkpoint into every layer of ``net`` except its ``new_modules()``.

    The checkpoint's ``init.*`` (the paper trains its initializer layer from scratch), the
    tensors of ``new_modules()`` whose shapes differ (the 21-class VOC classifiers) and an
    auxiliary head that either side lacks are skipped; what was loaded and skipped is logged.

    Args:
        net: the PSPNet to initialise, of the checkpoint's depth and stem.
        pretrained_weights: the checkpoint file: a state dict, optionally with DataParallel's
            ``module.`` prefix and wrapped in a dict under ``state_dict`` or ``model``.

    Raises:
        PretrainedWeightsNotFoundError: if ``pretrained_weights`` is not a file.
        ValueError: if the file is not a weights-only state dict, or does not fit ``net``.
    """
    path = Path(pretrained_weights).expanduser()
    if not path.is_file():
        raise _not_found(path)
    checkpoint_state = _read_state_dict(path)

    own_state = net.state_dict()
    new_prefixes = tuple(f"{name}." for name in net.new_module_names())
    loaded: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, tensor in checkpoint_state.items():
        if key.startswith("init."):
            skipped.append(key)  # the paper trains its initializer layer from scratch
        elif key not in own_state:
            # An auxiliary head is only used in training: either side may lack it.
            (skipped if key.startswith("aux.") else unexpected).append(key)
        elif tensor.shape == own_state[key].shape:
            loaded[key] = tensor
        elif key.startswith(new_prefixes):
            skipped.append(key)  # e.g. the 21-class VOC classifier
        else:
            mismatched.append(f"{key} {tuple(tensor.shape)} vs ours {tuple(own_state[key].shape)}")
    missing = [
        key
        for key in own_state
        if key not in checkpoint_state
        and not key.startswith((*new_prefixes, "aux."))
        and not key.endswith("num_batches_tracked")  # absent from Caffe conversions
    ]
    if missing or unexpected or mismatched:
        problems = [
            f"{len(keys)} {what}: {show_keys(keys)}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("with another shape", mismatched),
            )
            if keys
        ]
        ours = f"PSPNet(backbone_depth={net.backbone_depth}, deep_stem={net.deep_stem})"
        raise WeightsError(
            f"PSPNet pretrained_weights {str(path)!r} does not fit {ours}: "
            f"{'; '.join(problems)}. Expected {_EXPECTED}, of the same depth and stem. Set "
            "backbone_depth/deep_stem to match the checkpoint (and keep init_layer=True "
            "unless the input has 3 channels), or rename its keys to this layout."
        )

    net.load_state_dict(loaded, strict=False)
    left = [
        key for key in own_state if key not in loaded and not key.endswith("num_batches_tracked")
    ]
    logger.info(
        "PSPNet: loaded %d of %d tensors from %s. Left at initialisation: %s. "
        "Checkpoint tensors not used: %s.",
        len(loaded),
        len(own_state),
        path,
        modules_of(left),
        modules_of(skipped),
    )
