"""Seed 002's CTP→DWI GAN with a segmentator: a two-optimizer LightningModule.

Pengbo Liu, *Stroke Lesion Segmentation with 2D Novel CNN Pipeline and Novel Loss Function*,
BrainLes 2018 (LNCS 11383); docs/papers.md §3. A generator G synthesises a DWI from the CT
perfusion maps, a discriminator D judges real and synthetic DWIs (least squares GAN), and a
segmentator S segments the lesion on the synthetic DWI, so that at test time, when there is no
DWI, the lesion is still segmented from perfusion alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from datamodules.errors import ConfigurationError
from evaluation.metrics import PresetName
from evaluation.plots import pyplot, save_figure
from lightning_modules.case_evaluation import CaseEvaluationModule

log = logging.getLogger(__name__)


def lsgan_loss(score: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss: the mean of ``(score − target)²`` (float32)."""
    score = score.float()
    return F.mse_loss(score, torch.full_like(score, target))


class CTPToDWIGAN(CaseEvaluationModule):
    """G (CTP → DWI), D (real or synthetic DWI?) and S (lesion on the synthetic DWI), trained with
    two RMSprop optimizers: one for D, one for G and S jointly (manual optimisation).

    Each training step, on a batch of slices ``image`` (CTP), ``target`` (the real DWI) and
    ``label`` (the lesion):

    1. **D step** (only D's parameters require gradients): ``MSE(D(G(x)), 0) + MSE(D(DWI), 1)``
       on a detached synthetic DWI;
    2. **G + S step** (D frozen): ``mse_weight · MSE(G(x), DWI) + adversarial_weight ·
       MSE(D(G(x)), 1) + seg_weight · SegLoss(S(G(x)), label)``.

    Both learning rates are multiplied by ``gamma`` at each of ``milestones`` (epochs), the
    schedulers stepped by the module at the end of every epoch. Validation, test and prediction
    segment whole cases as S(G(x)) slice by slice, mapped back to the native grid by the case's
    geometry and scored with the metrics preset; validation also scores the synthetic DWI
    against the real one (``val/psnr``, ``val/ssim``, on the network grid, over each case's DWI
    range) and draws the first validation case every epoch (``dwi_samples/epoch<k>.png`` in the
    run folder, and as an image in W&B).

    Args:
        generator: CTP ``(B, C, H, W)`` → DWI ``(B, 1, H, W)`` (linear output).
        segmentator: DWI (or DWI + CTP, see ``segment_with_ctp``) → logits ``(B, 2, H, W)``.
        discriminator: DWI ``(B, 1, H, W)`` → score ``(B, 1)``.
        seg_loss: Loss on ``(logits, label (B, 1, H, W) float)``.
        lr: Learning rate of both RMSprop optimizers (1e-4).
        rmsprop_alpha: RMSprop's smoothing constant (the paper's "γ = 0.9").
        mse_weight: Weight of the DWI reconstruction MSE in the G + S loss (0.002).
        adversarial_weight: Weight of the adversarial term (0.5).
        seg_weight: Weight of the segmentation loss (1).
        milestones: Epochs at which both learning rates are multiplied by ``gamma``.
        gamma: The factor (0.5: halved).
        gradient_clip: Clip each step's gradient norm to this value (by hand; Lightning's
            clipping does not apply to manual optimisation), or ``None``.
        segment_with_ctp: S sees the CTP channels beside the synthetic DWI (a variant the paper
            does not describe; S's ``in_channels`` must then be 1 + C).
        slice_batch: Slices per forward pass when predicting a whole case.
        metrics, monitor, monitor_mode, threshold: As
            :class:`~lightning_modules.case_evaluation.CaseEvaluationModule`.
    """

    # Each of the two backward passes reaches one optimizer's networks only: DDP must look for
    # parameters without gradients (the lightning command turns "ddp" into
    # "ddp_find_unused_parameters_true" for this module).
    ddp_find_unused_parameters: ClassVar[bool] = True

    def __init__(
        self,
        generator: nn.Module,
        segmentator: nn.Module,
        discriminator: nn.Module,
        seg_loss: nn.Module,
        lr: float = 1e-4,
        rmsprop_alpha: float = 0.9,
        mse_weight: float = 0.002,
        adversarial_weight: float = 0.5,
        seg_weight: float = 1.0,
        milestones: tuple[int, ...] = (100, 300, 500),
        gamma: float = 0.5,
        gradient_clip: float | None = None,
        segment_with_ctp: bool = False,
        slice_batch: int = 16,
        metrics: PresetName = "isles2018",
        monitor: str = "val/dice",
        monitor_mode: Literal["max", "min"] = "max",
        threshold: float = 0.5,
    ) -> None:
        super().__init__(metrics, monitor, monitor_mode, threshold)
        self.save_hyperparameters(ignore=["generator", "segmentator", "discriminator", "seg_loss"])
        if lr <= 0 or gamma <= 0 or min(mse_weight, adversarial_weight, seg_weight) < 0:
            raise ConfigurationError(
                f"lr and gamma must be > 0 and the loss weights ≥ 0; got lr={lr}, gamma={gamma}, "
                f"weights {mse_weight}, {adversarial_weight}, {seg_weight}."
            )
        self.automatic_optimization = False
        self.generator = generator
        self.segmentator = segmentator
        self.discriminator = discriminator
        self.seg_loss = seg_loss
        self.lr, self.rmsprop_alpha = lr, rmsprop_alpha
        self.mse_weight, self.adversarial_weight = mse_weight, adversarial_weight
        self.seg_weight = seg_weight
        self.milestones, self.gamma = tuple(milestones), gamma
        self.gradient_clip = gradient_clip
        self.segment_with_ctp = segment_with_ctp
        self.slice_batch = slice_batch
        self.val_psnr = MeanMetric()
        self.val_ssim = MeanMetric()
        # The last predicted case's synthetic DWI and probability, for the validation extras.
        self._generated: torch.Tensor | None = None
        self._probability: torch.Tensor | None = None
        self._sample_dir: Path | None = None

    def on_validation_start(self) -> None:
        # trainer.log_dir is a collective under DDP: every rank asks, rank 0 draws.
        log_dir = self.trainer.log_dir
        self._sample_dir = None if log_dir is None else Path(log_dir) / "dwi_samples"

    # -- the three networks ---------------------------------------------------------------
    def segment(self, fake_dwi: torch.Tensor, ctp: torch.Tensor) -> torch.Tensor:
        """S's logits ``(B, 2, H, W)`` for a synthetic DWI (and the CTP, if S sees it)."""
        inputs = torch.cat([fake_dwi, ctp], dim=1) if self.segment_with_ctp else fake_dwi
        return self.segmentator(inputs)

    def forward(self, ctp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthetic DWI ``(B, 1, H, W)`` and S's logits ``(B, 2, H, W)`` for CTP slices."""
        fake = self.generator(ctp)
        return fake, self.segment(fake, ctp)

    # -- training -------------------------------------------------------------------------
    def _clip(self, optimizer: Any) -> None:
        if self.gradient_clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        ctp, dwi = batch["image"], batch.get("target")
        if dwi is None:
            raise ConfigurationError(
                "The GAN trains on the real DWI as a second target; set "
                "data.init_args.targets: [DWI] (training cases need an MR_DWI folder)."
            )
        label = batch["label"].float()
        optimizers = self.optimizers()
        assert isinstance(optimizers, list), "configure_optimizers returns two optimizers"
        opt_d, opt_gs = optimizers
        fake = self.generator(ctp)

        # 1. D: real DWIs towards 1, synthetic ones (detached: G is not trained here) towards 0.
        self.toggle_optimizer(opt_d)
        d_loss = lsgan_loss(self.discriminator(fake.detach()), 0.0) + lsgan_loss(
            self.discriminator(dwi), 1.0
        )
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        self._clip(opt_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        # 2. G + S: reconstruct the DWI, fool D, segment the lesion on the synthetic DWI.
        self.toggle_optimizer(opt_gs)
        g_mse = F.mse_loss(fake.float(), dwi.float())
        g_adv = lsgan_loss(self.discriminator(fake), 1.0)
        seg = self.seg_loss(self.segment(fake, ctp), label)
        loss = self.mse_weight * g_mse + self.adversarial_weight * g_adv + self.seg_weight * seg
        opt_gs.zero_grad()
        self.manual_backward(loss)
        self._clip(opt_gs)
        opt_gs.step()
        self.untoggle_optimizer(opt_gs)

        size = ctp.shape[0]
        values = {"d_loss": d_loss, "g_mse": g_mse, "g_adv": g_adv, "seg_loss": seg, "loss": loss}
        for name, value in values.items():
            self.log(
                f"train/{name}",
                value.detach(),
                on_step=True,
                on_epoch=True,
                prog_bar=name in ("loss", "d_loss"),
                batch_size=size,
            )

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():  # type: ignore[union-attr]
            scheduler.step()

    def configure_optimizers(self) -> Any:
        discriminator = torch.optim.RMSprop(
            self.discriminator.parameters(), lr=self.lr, alpha=self.rmsprop_alpha
        )
        generator_segmentator = torch.optim.RMSprop(
            [*self.generator.parameters(), *self.segmentator.parameters()],
            lr=self.lr,
            alpha=self.rmsprop_alpha,
        )
        schedulers = [
            {
                "scheduler": torch.optim.lr_scheduler.MultiStepLR(
                    optimizer, list(self.milestones), gamma=self.gamma
                ),
                "name": name,  # the learning-rate monitor's column
            }
            for optimizer, name in (
                (discriminator, "lr/discriminator"),
                (generator_segmentator, "lr/generator_segmentator"),
            )
        ]
        return [discriminator, generator_segmentator], schedulers

    # -- whole cases ----------------------------------------------------------------------
    def predict_case(self, case: dict[str, Any]) -> torch.Tensor:
        """Lesion probability ``(N, H, W)`` of S(G(x)) on the case's native grid; the synthetic
        DWI ``(N, 1, h, w)`` of the same call stays available to the validation step."""
        image, geometry = case["image"], case["geometry"]
        depth, height, width = case["native_shape"]
        out = image.new_empty((depth, height, width), dtype=torch.float32)
        generated = []
        for start in range(0, depth, self.slice_batch):
            fake, logits = self(image[start : start + self.slice_batch])
            generated.append(fake.float())
            probability = torch.softmax(logits.float(), dim=1)[:, 1]
            geometry.to_native(
                probability, (height, width), out=out[start : start + self.slice_batch]
            )
        self._generated, self._probability = torch.cat(generated), out
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        real, fake = batch.get("target"), self._generated
        if real is None or fake is None:
            return
        low, high = float(real.min()), float(real.max())
        self.val_psnr.update(peak_signal_noise_ratio(fake, real.float(), data_range=(low, high)))
        ssim = structural_similarity_index_measure(fake, real.float(), data_range=(low, high))
        assert isinstance(ssim, torch.Tensor)
        self.val_ssim.update(ssim)
        if batch_idx == 0 and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._draw_sample(batch, fake)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.val_psnr.update_count:
            self.log("val/psnr", self.val_psnr)
            self.log("val/ssim", self.val_ssim)

    def _draw_sample(self, case: dict[str, Any], fake: torch.Tensor) -> None:
        """CTP / real DWI / synthetic DWI / lesion overlay of the case's largest-lesion slice."""
        if self._sample_dir is None:
            return
        label = case["label"]  # native (N, H, W)
        index = int(label.flatten(1).sum(1).argmax())
        geometry, (_, height, width) = case["geometry"], case["native_shape"]
        native = geometry.to_native(
            torch.cat([case["image"][index : index + 1, :1], case["target"][index : index + 1],
                       fake[index : index + 1]], dim=1)[0].float(),
            (height, width),
        ).cpu()  # fmt: skip
        assert self._probability is not None
        predicted = (self._probability[index] >= self.threshold).cpu()
        # The DWIs in the scanner's units: the cache's normalisation undone (the target's row
        # follows the inputs' in the case's intensity table).
        intensity = case.get("intensity")
        units = "normalised"
        if intensity is not None and bool(torch.isfinite(intensity[case["image"].shape[1]]).all()):
            offset, scale = intensity[case["image"].shape[1]].tolist()
            native[1:] = native[1:] * scale + offset
            units = "raw units"
        plt = pyplot()
        figure, axes = plt.subplots(1, 4, figsize=(12, 3.4))
        low, high = float(native[1].min()), float(native[1].max())
        panels = [
            (native[0], "CTP (first input channel)", None),
            (native[1], f"real DWI ({units})", (low, high)),
            (native[2], f"synthetic DWI, epoch {self.current_epoch}", (low, high)),
        ]
        for axis, (picture, title, window) in zip(axes, panels):
            axis.imshow(picture.T, cmap="gray", origin="lower", **(
                {"vmin": window[0], "vmax": window[1]} if window else {}))  # fmt: skip
            axis.set_title(title, fontsize=9)
        axes[3].imshow(native[2].T, cmap="gray", origin="lower", vmin=low, vmax=high)
        axes[3].contour(label[index].cpu().T, levels=[0.5], colors="lime", origin="lower")
        axes[3].contour(predicted.T, levels=[0.5], colors="red", origin="lower")
        axes[3].set_title("lesion: truth (green), S(G(x)) (red)", fontsize=9)
        for axis in axes:
            axis.axis("off")
        figure.suptitle(f"{case['case']}, slice {index}", fontsize=10)
        figure.tight_layout()
        self._sample_dir.mkdir(parents=True, exist_ok=True)
        path = save_figure(figure, self._sample_dir / f"epoch{self.current_epoch:03d}.png")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/dwi_sample", [str(path)], step=self.global_step)
