"""Seed 002's per-epoch picture: CTP, real DWI, the generator's DWI and the segmentator's lesion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from core.run_layout import RunLayout
from evaluation.plots import pyplot, save_figure
from lightning_modules.case_evaluation import CaseEvaluationModule, CasePrediction
from lightning_modules.gan import SYNTHETIC_DWI


def _in_scanner_units(case: dict[str, Any], native: torch.Tensor) -> str:
    """Undo the cache's normalisation of the two DWIs in ``native[1:]`` (in place) where the
    case records it; the DWI's row follows the inputs' in the case's intensity table."""
    intensity = case.get("intensity")
    row = case["image"].shape[1]
    if intensity is None or not bool(torch.isfinite(intensity[row]).all()):
        return "normalised"
    offset, scale = intensity[row].tolist()
    native[1:] = native[1:] * scale + offset
    return "raw units"


def draw_dwi_sample(
    case: dict[str, Any], prediction: CasePrediction, threshold: float, epoch: int, path: Path
) -> Path:
    """Draw the case's slice with the largest lesion: the first input channel, the real DWI,
    the synthetic DWI (both in one grey window), and the synthetic DWI with the true (green)
    and predicted (red) lesion outlines, on the native grid; save it as a PNG at ``path``."""
    label = case["label"]  # native (N, H, W)
    index = int(label.flatten(1).sum(1).argmax())
    geometry, (_, height, width) = case["geometry"], case["native_shape"]
    fake = prediction.images[SYNTHETIC_DWI]
    stack = torch.cat(
        [case["image"][index : index + 1, :1], case["target"][index : index + 1],
         fake[index : index + 1]], dim=1,
    )  # fmt: skip
    native = geometry.to_native(
        stack[0].float(), (height, width), native_spacing=case["spacing"][1:]
    ).cpu()  # (3, H, W)
    units = _in_scanner_units(case, native)
    predicted = (prediction.probability[index] >= threshold).cpu()
    plt = pyplot()
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    low, high = float(native[1].min()), float(native[1].max())
    panels = [
        (native[0], "CTP (first input channel)", {}),
        (native[1], f"real DWI ({units})", {"vmin": low, "vmax": high}),
        (native[2], f"synthetic DWI, epoch {epoch}", {"vmin": low, "vmax": high}),
    ]
    for axis, (picture, title, window) in zip(axes, panels):
        axis.imshow(picture.T, cmap="gray", origin="lower", **window)
        axis.set_title(title, fontsize=9)
    axes[3].imshow(native[2].T, cmap="gray", origin="lower", vmin=low, vmax=high)
    axes[3].contour(label[index].cpu().T, levels=[0.5], colors="lime", origin="lower")
    axes[3].contour(predicted.T, levels=[0.5], colors="red", origin="lower")
    axes[3].set_title("lesion: truth (green), S(G(x)) (red)", fontsize=9)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(f"{case['case']}, slice {index}", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


class DWISampleFigure(pl.Callback):
    """Draws the first validation case of every epoch from what the module predicted for it.

    The figure (:func:`draw_dwi_sample`) goes to ``dwi_samples/epoch<k>.png`` in the run folder
    and, with a ``WandbLogger``, to W&B as ``val/dwi_sample``. It needs a module whose case
    predictions carry the synthetic DWI (``CTPToDWIGAN``) and cases with their real DWI
    (``data.init_args.targets: [DWI]``); for other cases it draws nothing.
    """

    def __init__(self) -> None:
        self._folder: Path | None = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # trainer.log_dir is a collective under DDP: every rank asks, rank 0 draws.
        log_dir = trainer.log_dir
        self._folder = None if log_dir is None else RunLayout(Path(log_dir)).dwi_samples

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self._folder is None or not isinstance(outputs, CasePrediction):
            return
        if SYNTHETIC_DWI not in outputs.images or batch.get("target") is None:
            return
        threshold = pl_module.threshold if isinstance(pl_module, CaseEvaluationModule) else 0.5
        epoch = trainer.current_epoch
        path = draw_dwi_sample(
            batch, outputs, threshold, epoch, self._folder / f"epoch{epoch:03d}.png"
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/dwi_sample", [str(path)], step=trainer.global_step)
