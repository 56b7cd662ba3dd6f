"""Seed 002's segmentation loss: weighted cross entropy − log(generalised Dice coefficient)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import GeneralizedDiceLoss
from torch import Tensor, nn

from core.errors import ConfigurationError


class CEGeneralizedDiceLoss(nn.Module):
    """``SegLoss = CE_w − log(GD)`` (Pengbo Liu, BrainLes 2018; docs/papers.md §3 "Losses").

    * ``CE_w``: class-weighted cross entropy over the two softmax classes, PyTorch's
      normalisation (the sum of the per-pixel weights), background weight 1 and lesion weight
      ``lesion_weight``. The paper only says the weights "highlight the lesion".
    * ``GD``: Sudre et al.'s generalised Dice coefficient over both classes,
      ``GD = 2 Σ_l w_l Σ_i r_li p_li / Σ_l w_l Σ_i (r_li + p_li)`` with ``w_l = 1 / (Σ_i r_li)²``,
      sums over the whole batch; it is ``1 −`` MONAI's ``GeneralizedDiceLoss(w_type="square",
      batch=True)``, which this class calls (its smoothing 1e-5 in numerator and denominator;
      a class absent from the batch gets the largest finite weight, as MONAI does). The paper
      writes "−log(generalized dice loss)"; −log of the *coefficient* is the reading that makes
      a loss (as D-UNet's EML does).

    Args:
        lesion_weight: Weight of the lesion class in the cross entropy (background: 1).
        dice_weight: Factor of the ``−log(GD)`` term (1 in the paper).

    Shapes:
        logits: (B, 2, *spatial) raw scores (softmax over the two channels), or (B, 1, *spatial)
            lesion logits ``l``, taken as the pair ``(0, l)`` (softmax channel 1 = sigmoid(l)),
            like the suite's other losses.
        target: (B, 1, *spatial) or (B, *spatial) lesion mask in {0, 1}.
        output: scalar float32 tensor.
    """

    def __init__(self, lesion_weight: float = 10.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        if lesion_weight <= 0 or dice_weight < 0:
            raise ConfigurationError(
                f"lesion_weight must be > 0 and dice_weight ≥ 0; got {lesion_weight} and "
                f"{dice_weight}."
            )
        self.lesion_weight, self.dice_weight = float(lesion_weight), float(dice_weight)
        # A buffer moves with the module: building it per call on the GPU would copy it from
        # the host and wait (not saved in checkpoints, so older ones load unchanged).
        self.class_weight: Tensor
        self.register_buffer(
            "class_weight", torch.tensor([1.0, self.lesion_weight]), persistent=False
        )
        self.generalized_dice = GeneralizedDiceLoss(
            include_background=True, to_onehot_y=True, softmax=True, w_type="square", batch=True
        )

    def extra_repr(self) -> str:
        return f"lesion_weight={self.lesion_weight}, dice_weight={self.dice_weight}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.ndim < 3 or logits.shape[1] not in (1, 2):
            raise ValueError(
                f"CEGeneralizedDiceLoss expects logits (B, 2, *spatial) or (B, 1, *spatial); got "
                f"{tuple(logits.shape)}."
            )
        logits = logits.float()
        if logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        labels = target.reshape(logits.shape[0], *logits.shape[2:]).long()  # (B, *spatial)
        weight: Tensor = self.class_weight
        if weight.device != logits.device:  # the loss called on its own, not inside a module
            weight = weight.to(logits.device, non_blocking=True)
        cross_entropy = F.cross_entropy(logits, labels, weight=weight)
        coefficient = 1.0 - self.generalized_dice(logits, labels[:, None])
        return cross_entropy - self.dice_weight * torch.log(coefficient.clamp_min(1e-7))
