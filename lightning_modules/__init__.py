"""Training logic: LightningModules that compose a network, a loss and an optimiser."""

from lightning_modules.callbacks import CaseReport, TwoStageFinetuning
from lightning_modules.case_evaluation import CaseEvaluationModule
from lightning_modules.ensemble import EnsembleModule
from lightning_modules.gan import CTPToDWIGAN
from lightning_modules.segmentation import SegmentationModule
from lightning_modules.volume_segmentation import VolumeSegmentationModule
from lightning_modules.writer import NiftiPredictionWriter

__all__ = [
    "CTPToDWIGAN",
    "CaseEvaluationModule",
    "CaseReport",
    "EnsembleModule",
    "NiftiPredictionWriter",
    "SegmentationModule",
    "TwoStageFinetuning",
    "VolumeSegmentationModule",
]
