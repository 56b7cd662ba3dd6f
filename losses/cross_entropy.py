"""Plain and lesion-weighted binary cross entropy of Abulnaga & Rubin (2018), eqs. 2-4."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# One validation/log-probability path for both of the paper's losses.
from core.errors import ConfigurationError
from losses.focal import _binary_log_probs


class CrossEntropyLoss(nn.Module):
    """Binary cross entropy, optionally with the paper's lesion weight, mean over all pixels.

    Implements §4.5 of Abulnaga & Rubin, "Ischemic Stroke Lesion Segmentation in CT Perfusion
    Scans using Pyramid Pooling and Focal Loss", BrainLes 2018 (arXiv:1811.01085):

    * ``lesion_weight=None``: eq. 2-3, ``-(1/N) sum_i [y log p + (1 - y) log(1 - p)]``.
    * ``lesion_weight=w``: eq. 4 averaged as in eq. 3,
      ``-(1/N) sum_i [w y log p + (1 - w)(1 - y) log(1 - p)]``.

    N is the number of pixels (B x prod(spatial)). This is **not** the normalisation of
    ``torch.nn.functional.cross_entropy(weight=[1 - w, w])``, which divides by the sum of the
    per-pixel weights; the two differ by the factor ``N / sum_i weight_i``. Note also that
    ``w = 0.5`` gives half the plain loss, not the plain loss.

    Which w? The paper says w is "the empirical measure of lesions in the training dataset".
    Read literally (w = lesion fraction, a few percent) that *down-weights* the rare lesion
    class, the opposite of the stated aim ("since our labels are imbalanced"); ``w = 1 - lesion
    fraction`` is the more plausible reading. The default here is the unweighted loss and the
    experiment YAML chooses w, with a comment saying which reading it takes.

    ``p`` is the lesion probability (softmax channel 1 for two-channel logits, the sigmoid of a
    one-channel logit), evaluated in log space and float32 as in
    :class:`losses.focal.FocalLoss`.

    Args:
        lesion_weight: w in [0, 1] multiplying the lesion term (background gets 1 - w), or
            ``None`` for the unweighted loss. Default ``None``.

    Shapes:
        logits: (B, C, *spatial) raw network output, C in {1, 2}.
        target: (B, 1, *spatial) or (B, *spatial), values in {0, 1} (bool, int or float).
        output: scalar float32 tensor.

    Raises:
        ValueError: if ``lesion_weight`` is outside [0, 1], or on a logits/target shape mismatch.
    """

    def __init__(self, lesion_weight: float | None = None) -> None:
        super().__init__()
        if lesion_weight is not None and not 0.0 <= lesion_weight <= 1.0:
            raise ConfigurationError(
                f"lesion_weight must be in [0, 1] or None (unweighted); found {lesion_weight}."
            )
        self.lesion_weight = None if lesion_weight is None else float(lesion_weight)

    def extra_repr(self) -> str:
        return f"lesion_weight={self.lesion_weight}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the (weighted) cross entropy averaged over all B x prod(spatial) pixels.

        Args:
            logits: (B, C, *spatial) raw scores, C == 2 (softmax) or C == 1 (sigmoid).
            target: (B, 1, *spatial) or (B, *spatial) lesion mask with values in {0, 1}.

        Returns:
            Scalar float32 loss.

        Raises:
            ValueError: on a shape mismatch (see the class docstring).
        """
        log_p, log_q, y = _binary_log_probs(logits, target)
        w_lesion, w_background = (
            (1.0, 1.0)
            if self.lesion_weight is None
            else (self.lesion_weight, 1.0 - self.lesion_weight)
        )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return -(w_lesion * y * log_p + w_background * (1.0 - y) * log_q).mean()
