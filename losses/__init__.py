"""Loss functions (pure ``nn.Module``s; they never import networks)."""

from losses.cross_entropy import CrossEntropyLoss
from losses.eml import EMLWithBCE, EnhancedMixingLoss
from losses.focal import FocalLoss

__all__ = ["CrossEntropyLoss", "EMLWithBCE", "EnhancedMixingLoss", "FocalLoss"]
