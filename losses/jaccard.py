"""Soft Jaccard (IoU) loss of Omarov et al. (seed 001), a thin wrapper around MONAI's DiceLoss."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import Tensor, nn

# One validation/probability path for every binary loss of the suite.
from core.errors import ConfigurationError
from losses.focal import _binary_log_probs


def _check_probabilities(probs: Tensor, target: Tensor) -> Tensor:
    """Validate a (probabilities, target) pair; return the target as (B, 1, *spatial)."""
    if probs.ndim < 3 or probs.shape[1] != 1:
        raise ValueError(
            "With sigmoid=False expected lesion probabilities of shape (B, 1, *spatial) with at "
            f"least one spatial axis; found shape {tuple(probs.shape)}. Pass raw logits with "
            "sigmoid=True for one- or two-channel network output."
        )
    found = tuple(target.shape)
    if target.ndim == probs.ndim - 1:
        target = target.unsqueeze(1)
    if target.shape != probs.shape:
        raise ValueError(
            f"Expected target of shape (B, 1, *spatial) or (B, *spatial) to match the "
            f"probabilities {tuple(probs.shape)}; found {found}."
        )
    return target


class SoftJaccardLoss(nn.Module):
    """Soft Jaccard (intersection-over-union) loss, ``1 - J``, with additive smoothing.

    Omarov, Tursynova et al., "Modified UNet Model for Brain Stroke Lesion Segmentation on CT
    Images", CMC 71(3), 2022: the "intersection over union loss" of seed 001 (docs/papers.md §5
    "Loss"). With ``p`` the lesion probability, ``t`` the label and ``s`` the smoothing::

        J = (Σ p·t + s) / (Σ p + Σ t - Σ p·t + s)
        L = 1 - J

    The paper gives no code and no value of ``s``; docs/papers.md §5 fixes ``s = 1`` and the
    loss as ``1 - J`` (not ``-J``; the two differ by a constant and have the same gradient).
    Its sums carry no sample index: with ``batch=True`` (default) they run over the whole batch,
    B x prod(spatial) pixels, as a Keras loss on flattened ``y_true``/``y_pred`` computes them
    (the suite's EML does the same). ``batch=False`` computes one ``J`` per sample and returns
    the mean of the B losses. Soft labels (0 < t < 1) enter the sums as they are.

    Limiting cases: ``p == t`` gives exactly 0; an empty target with ``p == 0`` everywhere gives
    ``J = s / s = 1``, i.e. 0 as well (the smoothing makes empty masks well defined).

    Relation to MONAI (pinned in ``tests/losses/test_jaccard.py``): ``monai.losses.DiceLoss``
    with ``jaccard=True`` computes ``1 - (2 Σpt + smooth_nr) / (2 (Σp + Σt - Σpt) + smooth_dr)``,
    i.e. ``1 - (Σpt + smooth_nr / 2) / (Σp + Σt - Σpt + smooth_dr / 2)``: the formula above with
    the smoothing halved. This class therefore delegates to
    ``DiceLoss(jaccard=True, smooth_nr=2 s, smooth_dr=2 s, batch=batch, soft_label=False)``;
    ``DiceLoss(jaccard=True, smooth_nr=1, smooth_dr=1)`` would be this loss with ``s = 0.5``.
    (``soft_label=True`` would switch MONAI to a norm-based formula that differs for soft targets.)

    Numerics: the probabilities and the sums are float32, also under autocast.

    Args:
        smooth: ``s > 0``, added to the intersection and to the union. Default 1.0
            (docs/papers.md §5).
        sigmoid: ``True`` (default, the suite's convention: networks return raw logits) takes
            ``p`` from logits, the sigmoid of a one-channel logit or softmax channel 1 of
            two-channel logits; ``False`` takes the input as lesion probabilities already
            (one channel, values in [0, 1]), e.g. the output of a sigmoid head.
        batch: sum over the whole batch before dividing (default ``True``) or compute the loss
            per sample and average over B (``False``).

    Shapes:
        logits: (B, C, *spatial); C in {1, 2} if ``sigmoid`` else C = 1.
        target: (B, 1, *spatial) or (B, *spatial), values in [0, 1] (bool, int or float).
        output: scalar float32 tensor.

    Raises:
        ValueError: if ``smooth`` is not positive, or the input/target shapes do not match the
            contract above.
    """

    def __init__(self, smooth: float = 1.0, sigmoid: bool = True, batch: bool = True) -> None:
        super().__init__()
        if smooth <= 0:
            raise ConfigurationError(
                f"smooth must be > 0 (docs/papers.md §5 uses 1.0; 0 makes empty masks 0/0); "
                f"found {smooth}."
            )
        self.smooth, self.sigmoid, self.batch = float(smooth), sigmoid, batch
        # MONAI's Jaccard doubles intersection and union, so its smoothing terms are 2 s.
        self._jaccard = DiceLoss(
            sigmoid=False,
            jaccard=True,
            smooth_nr=2.0 * self.smooth,
            smooth_dr=2.0 * self.smooth,
            batch=batch,
            soft_label=False,
            reduction="mean",
        )

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, sigmoid={self.sigmoid}, batch={self.batch}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return ``1 - J`` for the batch (pooled, or the mean over samples if not ``batch``).

        Args:
            logits: (B, C, *spatial) raw scores (C in {1, 2}), or (B, 1, *spatial) lesion
                probabilities if ``sigmoid`` is ``False``.
            target: (B, 1, *spatial) or (B, *spatial) lesion mask, values in [0, 1].

        Returns:
            Scalar float32 loss.

        Raises:
            ValueError: on a shape mismatch (see the class docstring).
        """
        if self.sigmoid:
            log_p, _, y = _binary_log_probs(logits, target)  # float32, (B, *spatial)
            p, y = log_p.unsqueeze(1), y.unsqueeze(1)  # (B, 1, *spatial)
            with torch.autocast(device_type=logits.device.type, enabled=False):
                p = p.exp()
        else:
            p, y = logits, _check_probabilities(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            loss: Tensor = self._jaccard(p.float(), y.float())
        return loss
