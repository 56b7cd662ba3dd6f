"""Seed 002's CTP→DWI GAN with a segmentator: a two-optimizer LightningModule.

Pengbo Liu, *Stroke Lesion Segmentation with 2D Novel CNN Pipeline and Novel Loss Function*,
BrainLes 2018 (LNCS 11383); docs/papers.md §3. A generator G synthesises a DWI from the CT
perfusion maps, a discriminator D judges real and synthetic DWIs (least squares GAN), and a
segmentator S segments the lesion on the synthetic DWI, so that at test time, when there is no
DWI, the lesion is still segmented from perfusion alone.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, DEFAULT_PRESET, MonitorMode
from core.distributed import gather_objects
from core.errors import ConfigurationError
from core.protocols import HasMinimumInputSize, ServesSamples
from evaluation.case_mean import CaseMean
from evaluation.metrics import PresetName
from lightning_modules.case_evaluation import CaseEvaluationModule, CasePrediction
from lightning_modules.tta import flip_average

log = logging.getLogger(__name__)

#: The name of the synthetic DWI in a :class:`CasePrediction`'s images.
SYNTHETIC_DWI = "dwi"


def lsgan_loss(score: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss: the mean of ``(score − target)²`` (float32)."""
    score = score.float()
    return F.mse_loss(score, torch.full_like(score, target))


class CTPToDWIGAN(CaseEvaluationModule):
    """G (CTP → DWI), D (real or synthetic DWI?) and S (lesion on the synthetic DWI), trained with
    two optimizers: one for D, one for G and S jointly (manual optimisation).

    Each training step, on a batch of slices ``image`` (CTP), ``target`` (the real DWI) and
    ``label`` (the lesion):

    1. **D step** (only D's parameters require gradients): ``MSE(D(G(x)), 0) + MSE(D(DWI), 1)``
       on a detached synthetic DWI;
    2. **G + S step** (D frozen): ``mse_weight · MSE(G(x), DWI) + adversarial_weight ·
       MSE(D(G(x)), 1) + seg_weight · SegLoss(S(G(x)), label)``.

    The optimizers and their schedulers are injected like
    :class:`~lightning_modules.segmentation.SegmentationModule`'s; the paper's (§3.1: RMSprop,
    lr 1e-4, "γ = 0.9", both rates halved at epochs 100, 300 and 500) are set in
    ``experiments/liu_stage3.yaml``. The schedulers are stepped by the module at the end of
    every epoch. Validation, test and prediction segment whole cases as S(G(x)) slice by slice,
    mapped back to the native grid by the case's geometry and scored with the metrics preset;
    the synthetic DWI is part of the case's :class:`CasePrediction` (``images["dwi"]``), which
    validation scores against the real one (``val/psnr``, ``val/ssim``, on the network grid,
    over each case's DWI range) and hands to the callbacks
    (:class:`callbacks.dwi_sample.DWISampleFigure` draws it).

    Args:
        generator: CTP ``(B, C, H, W)`` → DWI ``(B, 1, H, W)`` (linear output).
        segmentator: DWI (or DWI + CTP, see ``segment_with_ctp``) → logits ``(B, 2, H, W)``.
        discriminator: DWI ``(B, 1, H, W)`` → score ``(B, 1)``.
        seg_loss: Loss on ``(logits, label (B, 1, H, W) float)``.
        optimizer_d: Optimiser factory of D.
        optimizer_gs: Optimiser factory of G and S together.
        scheduler_d: Learning-rate scheduler factory of D's optimiser, stepped every epoch, or
            ``None``.
        scheduler_gs: The same for G and S.
        mse_weight: Weight of the DWI reconstruction MSE in the G + S loss (0.002).
        adversarial_weight: Weight of the adversarial term (0.5).
        seg_weight: Weight of the segmentation loss (1).
        gradient_clip: Clip each step's gradient norm to this value (by hand; Lightning's
            clipping does not apply to manual optimisation), or ``None``.
        segment_with_ctp: S sees the CTP channels beside the synthetic DWI (a variant the paper
            does not describe; S's ``in_channels`` must then be 1 + C).
        slice_batch: Slices per forward pass when predicting a whole case.
        metrics, monitor, monitor_mode, threshold, tta: As
            :class:`~lightning_modules.case_evaluation.CaseEvaluationModule`; TTA averages
            S(G(x))'s probability over the flips, the synthetic DWI is the un-flipped pass's.
    """

    def __init__(
        self,
        generator: nn.Module,
        segmentator: nn.Module,
        discriminator: nn.Module,
        seg_loss: nn.Module,
        optimizer_d: OptimizerCallable = torch.optim.RMSprop,
        optimizer_gs: OptimizerCallable = torch.optim.RMSprop,
        scheduler_d: LRSchedulerCallable | None = None,
        scheduler_gs: LRSchedulerCallable | None = None,
        mse_weight: float = 0.002,
        adversarial_weight: float = 0.5,
        seg_weight: float = 1.0,
        gradient_clip: float | None = None,
        segment_with_ctp: bool = False,
        slice_batch: int = 16,
        metrics: PresetName = DEFAULT_PRESET,
        monitor: str = DEFAULT_MONITOR,
        monitor_mode: MonitorMode = DEFAULT_MONITOR_MODE,
        threshold: float = 0.5,
        tta: bool = False,
    ) -> None:
        super().__init__(
            metrics=metrics,
            monitor=monitor,
            monitor_mode=monitor_mode,
            threshold=threshold,
            tta=tta,
        )
        # The settings live in self.hparams (and the checkpoint); the module reads them there.
        # The factories are kept as given: under the lightning command hparams holds their
        # configuration, not the callables.
        self.save_hyperparameters(ignore=["generator", "segmentator", "discriminator", "seg_loss"])
        self.optimizer_factories = (optimizer_d, optimizer_gs)
        self.scheduler_factories = (scheduler_d, scheduler_gs)
        if min(mse_weight, adversarial_weight, seg_weight) < 0:
            raise ConfigurationError(
                f"The loss weights must be ≥ 0; got mse_weight={mse_weight}, "
                f"adversarial_weight={adversarial_weight}, seg_weight={seg_weight}."
            )
        self.automatic_optimization = False
        self.generator = generator
        self.segmentator = segmentator
        self.discriminator = discriminator
        self.seg_loss = seg_loss
        # Means over cases that do not depend on how DDP shared them; a NaN is left out, with
        # a warning.
        self.val_psnr = CaseMean(nan_strategy="warn")
        self.val_ssim = CaseMean(nan_strategy="warn")

    @classmethod
    def ddp_finds_unused_parameters(cls) -> bool:
        """Each of the two backward passes reaches one optimizer's networks only, so DDP must
        look for parameters without gradients (the ``lightning`` command turns ``ddp`` into
        ``ddp_find_unused_parameters_true`` for this module)."""
        return True

    def check_data(self, datamodule: object) -> None:
        """Also refuse a network grid smaller than the discriminator takes, before any data is
        decoded.

        Raises:
            ConfigurationError: Naming the grid, the minimum and the setting to change.
        """
        super().check_data(datamodule)
        if not (
            isinstance(datamodule, ServesSamples)
            and isinstance(self.discriminator, HasMinimumInputSize)
        ):
            return
        size, smallest = datamodule.network_size, self.discriminator.min_input_size()
        if size is not None and min(size) < smallest:
            raise ConfigurationError(
                f"The network grid is {size[0]}×{size[1]}, but the discriminator "
                f"({type(self.discriminator).__name__}) needs at least {smallest}×{smallest}: its "
                f"valid 5×5 stride-2 convolutions would shrink it to nothing. Set "
                f"data.init_args.image_size to {smallest} or more (the paper: 256)."
            )

    # -- the three networks ---------------------------------------------------------------
    def segment(self, fake_dwi: torch.Tensor, ctp: torch.Tensor) -> torch.Tensor:
        """S's logits ``(B, 2, H, W)`` for a synthetic DWI (and the CTP, if S sees it)."""
        inputs = torch.cat([fake_dwi, ctp], dim=1) if self.hparams["segment_with_ctp"] else fake_dwi
        return self.segmentator(inputs)

    def forward(self, ctp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthetic DWI ``(B, 1, H, W)`` and S's logits ``(B, 2, H, W)`` for CTP slices."""
        fake = self.generator(ctp)
        return fake, self.segment(fake, ctp)

    # -- training -------------------------------------------------------------------------
    def _clip(self, optimizer: Any) -> None:
        if self.hparams["gradient_clip"] is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams["gradient_clip"])

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
        weight = self.hparams
        g_mse = F.mse_loss(fake.float(), dwi.float())
        g_adv = lsgan_loss(self.discriminator(fake), 1.0)
        seg = self.seg_loss(self.segment(fake, ctp), label)
        loss = (
            weight["mse_weight"] * g_mse
            + weight["adversarial_weight"] * g_adv
            + weight["seg_weight"] * seg
        )
        opt_gs.zero_grad()
        self.manual_backward(loss)
        self._clip(opt_gs)
        opt_gs.step()
        self.untoggle_optimizer(opt_gs)

        values = {"d_loss": d_loss, "g_mse": g_mse, "g_adv": g_adv, "seg_loss": seg, "loss": loss}
        self.log_training(values, ctp.shape[0], prog_bar=("loss", "d_loss"))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()  # type: ignore[call-arg]

    def configure_optimizers(self) -> Any:
        optimizer_d, optimizer_gs = self.optimizer_factories
        scheduler_d, scheduler_gs = self.scheduler_factories
        discriminator = optimizer_d(self.discriminator.parameters())
        generator_segmentator = optimizer_gs(
            [*self.generator.parameters(), *self.segmentator.parameters()]
        )
        schedulers = [
            {"scheduler": factory(optimizer), "name": name}  # the learning-rate monitor's column
            for factory, optimizer, name in (
                (scheduler_d, discriminator, "lr/discriminator"),
                (scheduler_gs, generator_segmentator, "lr/generator_segmentator"),
            )
            if factory is not None
        ]
        return [discriminator, generator_segmentator], schedulers

    # -- whole cases ----------------------------------------------------------------------
    def lesion_probability(self, ctp: torch.Tensor) -> torch.Tensor:
        """Lesion probability ``(B, h, w)`` of S(G(x)) for CTP slices ``(B, C, h, w)``."""
        return torch.softmax(self(ctp)[1].float(), dim=1)[:, 1]

    def predict_case(self, case: dict[str, Any]) -> CasePrediction:
        """Lesion probability ``(N, H, W)`` of S(G(x)) on the case's native grid (averaged over
        :attr:`tta_flips` on the network grid), and the synthetic DWI ``(N, 1, h, w)`` of the
        un-flipped pass on the network grid (``images["dwi"]``)."""
        image, geometry = case["image"], case["geometry"]
        depth, height, width = case["native_shape"]
        slice_batch = self.hparams["slice_batch"]
        generated, probabilities = [], []
        for start in range(0, depth, slice_batch):
            chunk = image[start : start + slice_batch]
            fake, logits = self(chunk)
            generated.append(fake.float())
            probabilities.append(
                flip_average(
                    self.lesion_probability,
                    chunk,
                    self.tta_flips,
                    identity=torch.softmax(logits.float(), dim=1)[:, 1],
                )
            )
        # The whole case mapped at once, as SegmentationModule.predict_case does.
        out = self.case_output(image, (depth, height, width))
        geometry.to_native(
            torch.cat(probabilities), (height, width), out=out, native_spacing=case["spacing"][1:]
        )
        return CasePrediction(out, {SYNTHETIC_DWI: torch.cat(generated)})

    def validation_step(  # type: ignore[override]
        self, batch: dict[str, Any], batch_idx: int
    ) -> CasePrediction:
        prediction = super().validation_step(batch, batch_idx)
        real, fake = batch.get("target"), prediction.images[SYNTHETIC_DWI]
        if real is not None:
            self.score_synthesis(fake, real, batch["case"])
        return prediction

    def score_synthesis(self, fake: torch.Tensor, real: torch.Tensor, case: str) -> None:
        """Add one case's PSNR and SSIM of the synthetic DWI against the real one, over the real
        DWI's range. A constant real DWI (a blank file) has no range to score against: it is
        left out with a warning, instead of a NaN that would turn the epoch's means NaN."""
        low, high = float(real.min()), float(real.max())  # validation: syncs allowed
        if not high > low:
            log.warning("%s: its real DWI is constant (%g): no PSNR/SSIM for this case", case, low)
            return
        psnr = peak_signal_noise_ratio(fake, real.float(), data_range=(low, high))
        ssim = structural_similarity_index_measure(fake, real.float(), data_range=(low, high))
        assert isinstance(ssim, torch.Tensor)
        self.val_psnr.update(psnr)
        self.val_ssim.update(ssim)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        # Whether any rank scored a case (a collective: a rank whose cases all had a blank
        # DWI would otherwise skip the metrics' sync that the others wait in).
        if sum(gather_objects(self.val_psnr.update_count)) > 0:
            self.log("val/psnr", self.val_psnr)
            self.log("val/ssim", self.val_ssim)
