"""Binary focal loss of Abulnaga & Rubin (2018), eq. 5, averaged over pixels as in eq. 3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ConfigurationError


def _binary_log_probs(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate a binary pair; return float32 ``(log p, log(1 - p), y)``, each (B, *spatial)."""
    if logits.ndim < 3 or logits.shape[1] not in (1, 2):
        raise ValueError(
            "Expected logits of shape (B, C, *spatial) with C == 2 (softmax, lesion = channel 1) "
            f"or C == 1 (sigmoid) and at least one spatial axis; found shape {tuple(logits.shape)}."
        )
    batch, spatial = logits.shape[0], tuple(logits.shape[2:])
    found = tuple(target.shape)
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target.squeeze(1)
    if tuple(target.shape) != (batch, *spatial):
        raise ValueError(
            f"Expected target of shape (B, 1, *spatial) or (B, *spatial) = {(batch, 1, *spatial)} "
            f"or {(batch, *spatial)} to match logits {tuple(logits.shape)}; "
            f"found {found}. Pass the 0/1 label map, not a one-hot or class-index volume "
            "of another size."
        )
    # float32 even under bf16/fp16 autocast: confident pixels' log-probabilities underflow in bf16.
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        if logits.shape[1] == 2:
            log_probs = F.log_softmax(logits, dim=1)  # (B, 2, *spatial)
            log_p, log_q = log_probs[:, 1], log_probs[:, 0]
        else:
            log_p, log_q = F.logsigmoid(logits[:, 0]), F.logsigmoid(-logits[:, 0])
    return log_p, log_q, target.float()


class FocalLoss(nn.Module):
    """Binary focal loss without class balancing (alpha), mean over all pixels.

    Implements eq. 5 of Abulnaga & Rubin, "Ischemic Stroke Lesion Segmentation in CT Perfusion
    Scans using Pyramid Pooling and Focal Loss", BrainLes 2018 (arXiv:1811.01085), §4.5::

        FL(p, y) = -y (1 - p)^gamma log p - (1 - y) p^gamma log(1 - p)

    averaged over the N = B x prod(spatial) pixels of the batch (the 1/N of eq. 3). Unlike Lin et
    al. (arXiv:1708.02002) the paper uses no alpha weight; gamma = 1 is its setting. With
    ``gamma = 0`` the loss is the plain cross entropy of eq. 2-3.

    ``p`` is the lesion probability: softmax channel 1 for two-channel logits (the paper's
    "binary output channels"), or the sigmoid of a one-channel logit. Both are evaluated in log
    space (``log_softmax`` / ``logsigmoid``) and in float32, also under autocast, so logits of
    +-100 give finite values and gradients. ``(1 - p)^gamma`` is computed as
    ``exp(gamma * log(1 - p))``.

    Relation to MONAI (pinned in ``tests/losses/test_focal.py``): for two-channel logits this equals
    ``monai.losses.FocalLoss(gamma=gamma, use_softmax=True, to_onehot_y=True, alpha=None)`` with
    ``reduction="mean"`` multiplied by 2 (MONAI averages over B x C x spatial, and with a one-hot
    target only the true class's channel is non-zero), or with ``reduction="sum"`` divided by B
    (MONAI averages each (b, c) map over space, then sums). For one-channel logits it equals
    MONAI's sigmoid ``FocalLoss(gamma=gamma, reduction="mean")``.

    Args:
        gamma: focusing parameter, >= 0. Default 1.0 ("focal loss with γ = 1", paper §5).

    Shapes:
        logits: (B, C, *spatial) raw network output, C in {1, 2}.
        target: (B, 1, *spatial) or (B, *spatial), values in {0, 1} (bool, int or float).
        output: scalar float32 tensor.

    Raises:
        ValueError: if ``gamma`` is negative, or the logits/target shapes do not match the
            contract above.
    """

    def __init__(self, gamma: float = 1.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigurationError(f"gamma must be >= 0 (the paper uses 1.0); found {gamma}.")
        self.gamma = float(gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the mean focal loss over all B x prod(spatial) pixels.

        Args:
            logits: (B, C, *spatial) raw scores, C == 2 (softmax) or C == 1 (sigmoid).
            target: (B, 1, *spatial) or (B, *spatial) lesion mask with values in {0, 1}.

        Returns:
            Scalar float32 loss.

        Raises:
            ValueError: on a shape mismatch (see the class docstring).
        """
        log_p, log_q, y = _binary_log_probs(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            lesion_term = y * torch.exp(self.gamma * log_q) * log_p  # y (1-p)^g log p
            background_term = (
                (1.0 - y) * torch.exp(self.gamma * log_p) * log_q
            )  # (1-y) p^g log(1-p)
            return -(lesion_term + background_term).mean()
