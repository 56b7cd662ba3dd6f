"""Enhanced Mixing Loss (focal + log soft Dice) of D-UNet, and VCA-Net's EML + BCE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# One validation/log-probability path for every binary loss of the suite.
from core.errors import ConfigurationError
from losses.focal import _binary_log_probs

# D-UNet's Statistics.EML values; the paper prints them swapped (alpha = 1.1, gamma = 0.48).
_CODE_ALPHA, _CODE_GAMMA = 0.48, 1.1
_PAPER_ALPHA, _PAPER_GAMMA = 1.1, 0.48


def _eml(
    log_p: Tensor, log_q: Tensor, y: Tensor, alpha: float, gamma: float, smooth: float, eps: float
) -> Tensor:
    """EML of float32 ``log p``, ``log(1 - p)`` and labels ``y`` (all (B, *spatial)); a scalar."""
    p = log_p.exp()
    # Soft Dice on the unclamped p, pooled over the whole batch (Keras flattens y_true/y_pred).
    dice = (2.0 * (y * p).sum() + smooth) / ((y * y).sum() + (p * p).sum() + smooth)
    # p <- max(p, eps), in log space; the clamp stops the gradient below eps as K.clip does.
    log_eps = math.log(eps)
    below = log_p < log_eps
    log_pc = log_p.clamp(min=log_eps)  # log max(p, eps)
    # log(1 - max(p, eps)) from the logit, never from 1 - p: finite even where p rounds to 1.
    log_1m_pc = torch.where(below, torch.full_like(log_q, math.log1p(-eps)), log_q)
    # Exact equality: soft-label boundary pixels (0 < y < 1) drop out of both focal terms.
    lesion = torch.where(y == 1, alpha * torch.exp(gamma * log_1m_pc) * log_pc, 0.0)
    background = torch.where(y == 0, (1.0 - alpha) * torch.exp(gamma * log_pc) * log_1m_pc, 0.0)
    focal = -(lesion.mean() + background.mean())  # both means over all N pixels
    return focal - torch.log(dice)


class EnhancedMixingLoss(nn.Module):
    """D-UNet's Enhanced Mixing Loss (EML) as implemented in its reference code.

    Zhou et al., "D-UNet: a dimension-fusion U shape network for chronic stroke lesion
    segmentation", IEEE/ACM TCBB 2019 (arXiv:1908.05104), §III-C eqs. (2)-(5); the reference
    Keras code ``Statistics.EML`` (docs/papers.md §2 "EML loss: code vs paper"). VCA-Net's
    ``EMLLoss`` is a port of the same code (docs/papers.md §1). With ``p`` the lesion probability
    and ``y`` the label, flattened over the whole batch (N = B x prod(spatial)):

    * ``dice = (2 Σ y p + smooth) / (Σ y² + Σ p² + smooth)`` on the **unclamped** p;
    * ``p <- max(p, epsilon)`` (no upper clamp);
    * ``pt1 = p where y == 1 else 1``; ``pt0 = p where y == 0 else 0``;
    * ``FL = -mean(α (1 - pt1)^γ log pt1) - mean((1 - α) pt0^γ log(1 - pt0))``, means over N;
    * ``EML = FL - log(dice)``.

    Boundary pixels of antialiased (soft) masks, 0 < y < 1, fail both exact tests and so add
    nothing to the focal terms (but still count in N and in the Dice).

    Code vs paper: the paper prints α = 1.1, γ = 0.48; the code uses γ = 1.1, α = 0.48. The
    paper itself restricts α to (0, 1], and with α = 1.1 the background term's weight 1 - α is
    negative, making the loss unbounded below (a background pixel with p -> 1 sends it to -∞):
    the code's values are the consistent ones and are the default. ``paper_parameters=True``
    uses the printed values. The paper's "-log(DL)" with DL = 1 - Dice is read, as in the code,
    as -log of the Dice coefficient.

    Numerics (a deliberate deviation only where Keras fails): everything is float32, also under
    autocast, and ``log p`` / ``log(1 - p)`` come from the logits (``logsigmoid`` /
    ``log_softmax``), as in :class:`losses.focal.FocalLoss`. Keras computes ``log(1 - pt0)`` from
    the sigmoid output, which rounds to exactly 1.0 in float32 once the logit exceeds ~16.6; a
    background pixel that confident makes Keras's loss +inf and its gradients NaN (there is no
    upper clamp to prevent it). Here ``log(1 - p)`` stays finite (≈ -logit) and so do the
    gradients. Wherever the Keras value is finite the two agree to float32 rounding (pinned in
    ``tests/losses/test_eml.py`` against a float64 probability-space transcription).

    Args:
        alpha: α, weight of the lesion focal term (background gets 1 - α), in [0, 1].
            Default 0.48 (code).
        gamma: γ >= 0, focusing exponent. Default 1.1 (code).
        smooth: δ > 0 added to the Dice numerator and denominator. Default 1.0 (code, eq. 4).
        epsilon: lower clamp of p in the focal terms, in (0, 1). Default 1e-7 (Keras epsilon).
        paper_parameters: use α = 1.1, γ = 0.48 as the paper prints them (leave ``alpha`` and
            ``gamma`` at their defaults). Default ``False``.

    Shapes:
        logits: (B, C, *spatial) raw network output; C = 1 (sigmoid) or C = 2 (softmax,
            lesion = channel 1).
        target: (B, 1, *spatial) or (B, *spatial) with values in [0, 1] (soft labels allowed).
        output: scalar float32 tensor.

    Raises:
        ValueError: on out-of-range hyperparameters, ``paper_parameters`` combined with explicit
            ``alpha``/``gamma``, or a logits/target shape mismatch.
    """

    def __init__(
        self,
        alpha: float = _CODE_ALPHA,
        gamma: float = _CODE_GAMMA,
        smooth: float = 1.0,
        epsilon: float = 1e-7,
        paper_parameters: bool = False,
    ) -> None:
        super().__init__()
        if paper_parameters:
            if (alpha, gamma) != (_CODE_ALPHA, _CODE_GAMMA):
                raise ConfigurationError(
                    "paper_parameters=True sets alpha=1.1, gamma=0.48 (as the paper prints them); "
                    f"found explicit alpha={alpha}, gamma={gamma} as well. Pass one or the other."
                )
            alpha, gamma = _PAPER_ALPHA, _PAPER_GAMMA
        elif not 0.0 <= alpha <= 1.0:
            raise ConfigurationError(
                f"alpha must be in [0, 1] (the code uses 0.48); found {alpha}. For the paper's "
                "printed alpha=1.1, gamma=0.48 pass paper_parameters=True."
            )
        if gamma < 0:
            raise ConfigurationError(f"gamma must be >= 0 (the code uses 1.1); found {gamma}.")
        if smooth <= 0:
            raise ConfigurationError(f"smooth must be > 0 (the code uses 1.0); found {smooth}.")
        if not 0.0 < epsilon < 1.0:
            raise ConfigurationError(
                f"epsilon must be in (0, 1) (Keras uses 1e-7); found {epsilon}."
            )
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.smooth, self.epsilon = float(smooth), float(epsilon)
        self.paper_parameters = paper_parameters

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, gamma={self.gamma}, smooth={self.smooth}, epsilon={self.epsilon}"
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the batch EML.

        Args:
            logits: (B, C, *spatial) raw scores, C == 1 (sigmoid) or C == 2 (softmax).
            target: (B, 1, *spatial) or (B, *spatial) lesion mask, values in [0, 1].

        Returns:
            Scalar float32 loss.

        Raises:
            ValueError: on a shape mismatch (see the class docstring).
        """
        log_p, log_q, y = _binary_log_probs(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return _eml(log_p, log_q, y, self.alpha, self.gamma, self.smooth, self.epsilon)


class EMLWithBCE(EnhancedMixingLoss):
    """VCA-Net's training loss: D-UNet's EML plus binary cross entropy.

    VCA-Net's ``train.py`` (docs/papers.md §1 "Loss as implemented") computes
    ``EMLLoss(out, mask) + BCEWithLogitsLoss(out, mask)`` where ``out`` is already the sigmoid
    output, so the BCE applies a second sigmoid. The paper's eq. (2) intends plain BCE.

    * ``double_sigmoid=False`` (default, the paper's intent): ``EML + BCE(p, y)`` with
      ``BCE = -mean(y log p + (1 - y) log(1 - p))`` over all N pixels, evaluated from the logits
      in float32 (exact; ``torch.nn.BCELoss`` would clamp each log at -100, which only differs for
      |logit| > 100).
    * ``double_sigmoid=True`` (reproduces the code): ``EML + BCEWithLogits(p, y)``, i.e.
      ``BCE(sigmoid(p), y)``. Since p is in [0, 1], sigmoid(p) is in [0.5, 0.73]: this term is
      bounded and its gradient weak, so it barely trains; use it only to reproduce the code.

    The network still returns raw logits (C = 1 sigmoid or C = 2 softmax, lesion = channel 1);
    p is taken from them here.

    Args:
        double_sigmoid: apply BCE-with-logits to the probabilities, as the reference code does.
            Default ``False``.
        alpha, gamma, smooth, epsilon, paper_parameters: passed to
            :class:`EnhancedMixingLoss` (defaults: the D-UNet code's values).

    Shapes:
        logits: (B, C, *spatial), C in {1, 2}; target: (B, 1, *spatial) or (B, *spatial).
        output: scalar float32 tensor.

    Raises:
        ValueError: as :class:`EnhancedMixingLoss`.
    """

    def __init__(
        self,
        double_sigmoid: bool = False,
        alpha: float = _CODE_ALPHA,
        gamma: float = _CODE_GAMMA,
        smooth: float = 1.0,
        epsilon: float = 1e-7,
        paper_parameters: bool = False,
    ) -> None:
        super().__init__(alpha, gamma, smooth, epsilon, paper_parameters)
        self.double_sigmoid = double_sigmoid

    def extra_repr(self) -> str:
        return f"double_sigmoid={self.double_sigmoid}, {super().extra_repr()}"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return EML + BCE for the batch.

        Args:
            logits: (B, C, *spatial) raw scores, C == 1 (sigmoid) or C == 2 (softmax).
            target: (B, 1, *spatial) or (B, *spatial) lesion mask, values in [0, 1].

        Returns:
            Scalar float32 loss.

        Raises:
            ValueError: on a shape mismatch.
        """
        log_p, log_q, y = _binary_log_probs(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            eml = _eml(log_p, log_q, y, self.alpha, self.gamma, self.smooth, self.epsilon)
            if self.double_sigmoid:
                bce = F.binary_cross_entropy_with_logits(log_p.exp(), y)
            else:
                bce = -(y * log_p + (1.0 - y) * log_q).mean()
            return eml + bce
