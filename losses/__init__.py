"""Loss functions (pure ``nn.Module``s) and weight penalties; they never import networks."""

from losses.cross_entropy import CrossEntropyLoss
from losses.eml import EMLWithBCE, EnhancedMixingLoss
from losses.focal import FocalLoss
from losses.generalized_dice import CEGeneralizedDiceLoss
from losses.jaccard import SoftJaccardLoss
from losses.regularization import kernel_l2

__all__ = [
    "CEGeneralizedDiceLoss",
    "CrossEntropyLoss",
    "EMLWithBCE",
    "EnhancedMixingLoss",
    "FocalLoss",
    "SoftJaccardLoss",
    "kernel_l2",
]
