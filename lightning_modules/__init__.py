"""Training logic: LightningModules that compose networks, losses and optimisers."""

from lightning_modules.case_evaluation import CaseEvaluationModule, CasePrediction
from lightning_modules.ensemble import EnsembleModule
from lightning_modules.gan import CTPToDWIGAN
from lightning_modules.segmentation import SegmentationModule
from lightning_modules.volume_segmentation import VolumeSegmentationModule

__all__ = [
    "CTPToDWIGAN",
    "CaseEvaluationModule",
    "CasePrediction",
    "EnsembleModule",
    "SegmentationModule",
    "VolumeSegmentationModule",
]
