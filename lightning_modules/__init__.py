"""Training logic: LightningModules that compose a network, a loss and an optimiser."""

from lightning_modules.callbacks import CaseReport, NiftiPredictionWriter, TwoStageFinetuning
from lightning_modules.segmentation import SegmentationModule

__all__ = ["CaseReport", "NiftiPredictionWriter", "SegmentationModule", "TwoStageFinetuning"]
