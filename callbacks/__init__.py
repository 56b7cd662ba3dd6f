"""Lightning callbacks of the suite: fine-tuning, per-case reports, the NIfTI writer, per-step
seeding, W&B media and the GAN's sample figure."""

from callbacks.case_report import CaseReport
from callbacks.dwi_sample import DWISampleFigure
from callbacks.finetuning import TwoStageFinetuning
from callbacks.prediction_writer import NiftiPredictionWriter
from callbacks.seeding import StepSeed

__all__ = [
    "CaseReport",
    "DWISampleFigure",
    "NiftiPredictionWriter",
    "StepSeed",
    "TwoStageFinetuning",
]
