"""Keras-style L2 kernel regularisation: seed 001's ``kernel_regularizer=l2(1e-3)``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.errors import ConfigurationError

# Layers whose weight Keras calls a "kernel" in seed 001's networks (lazy variants subclass these).
_CONV_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def _conv_kernels(module: nn.Module) -> list[Tensor]:
    """Every distinct (convolution or transposed-convolution) kernel of ``module``, once."""
    kernels: list[Tensor] = []
    seen: set[int] = set()
    for layer in module.modules():
        if isinstance(layer, _CONV_TYPES) and id(layer.weight) not in seen:
            seen.add(id(layer.weight))
            kernels.append(layer.weight)
    return kernels


def kernel_l2(module: nn.Module, weight: float = 1e-3) -> Tensor:
    """Return the L2 penalty ``weight · Σ w²`` over the convolution kernels of ``module``.

    Omarov, Tursynova et al., "Modified UNet Model for Brain Stroke Lesion Segmentation on CT
    Images", CMC 71(3), 2022, train with an "L2 kernel regulariser 1e-3" and no optimiser weight
    decay (docs/papers.md §5 "Training"). Keras's ``kernel_regularizer=l2(λ)`` adds
    ``λ · Σ w²`` (no factor ½) per regularised layer to the training loss; this function returns
    the sum of that term over every ``Conv{1,2,3}d`` and ``ConvTranspose{1,2,3}d`` kernel in
    ``module``. Biases, normalisation parameters (e.g. the affine weight of ``InstanceNorm3d``) and
    ``nn.Linear`` weights are not counted: Keras regularises only the kernels it is told to, and
    the docs name only the convolution kernels (seed 001's U-Nets have no dense layers). A kernel
    shared by several layers is counted once.

    Add the result to the data loss: ``loss = criterion(logits, y) + kernel_l2(net)``.

    Gradient and PyTorch's ``weight_decay``: ``∂/∂w (λ Σ w²) = 2 λ w``. PyTorch's coupled decay
    (``torch.optim.Adam``/``SGD`` with ``weight_decay=wd``) adds ``wd · w`` to the gradient, the
    gradient of ``½ wd Σ w²``. So ``weight_decay = 2 λ`` (2e-3 for λ = 1e-3), set on a parameter
    group holding only the conv kernels, gives the same updates; set on the whole model it would
    also decay biases and norm parameters. ``AdamW``'s decoupled decay is not equivalent (it
    bypasses Adam's moment scaling). Unlike ``weight_decay``, this penalty shows up in the logged
    loss, as Keras's does.

    Args:
        module: the network; searched recursively.
        weight: λ >= 0. Default 1e-3 (docs/papers.md §5).

    Returns:
        Scalar float32 tensor on the kernels' device (a zero on the module's device, or the CPU,
        if it has no convolution); differentiable with respect to the kernels.

    Raises:
        ValueError: if ``weight`` is negative.
    """
    if weight < 0:
        raise ConfigurationError(
            f"weight must be >= 0 (docs/papers.md §5 uses 1e-3); found {weight}."
        )
    kernels = _conv_kernels(module)
    if not kernels:
        first = next(module.parameters(), None)
        return torch.zeros((), device=first.device if first is not None else None)
    # float32 sums even for half-precision kernels: Σ w² over millions of weights overflows fp16.
    squares = torch.stack([kernel.float().square().sum() for kernel in kernels])
    return weight * squares.sum()
