"""Lightning callbacks of the suite: fine-tuning, per-case reports, the NIfTI writer, per-step
seeding, W&B media, the GAN's sample figure and a progress bar that never waits for the GPU."""

from callbacks.case_report import CaseReport
from callbacks.dwi_sample import DWISampleFigure
from callbacks.finetuning import TwoStageFinetuning
from callbacks.prediction_writer import NiftiPredictionWriter
from callbacks.progress import LoggedValuesBar
from callbacks.seeding import StepSeed

__all__ = [
    "CaseReport",
    "DWISampleFigure",
    "LoggedValuesBar",
    "NiftiPredictionWriter",
    "StepSeed",
    "TwoStageFinetuning",
]
