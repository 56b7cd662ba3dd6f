"""Loss functions (pure ``nn.Module``s; they never import networks)."""

from losses.cross_entropy import CrossEntropyLoss
from losses.focal import FocalLoss

__all__ = ["CrossEntropyLoss", "FocalLoss"]
