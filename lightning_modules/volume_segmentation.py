"""Supervised 3D segmentation: trains on whole-case volumes, evaluates cases with a sliding window."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from monai.inferers import sliding_window_inference
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, DEFAULT_PRESET, MonitorMode
from core.errors import ConfigurationError
from datamodules.geometry import VolumeGeometry
from evaluation.metrics import PresetName
from lightning_modules.case_evaluation import CasePrediction
from lightning_modules.segmentation import SegmentationModule
from lightning_modules.tta import flip_average


class VolumeSegmentationModule(SegmentationModule):
    """Train a 3D segmentation network on volumes; validate, test and predict whole cases.

    Training batches are volumes ``(B, C, D, h, w)`` with labels ``(B, 1, D, h, w)`` from a data
    module with ``spatial_dims: 3``; the step, the loss, the optional kernel L2 term and the
    optimiser are :class:`~lightning_modules.segmentation.SegmentationModule`'s.

    A case arrives as its network-grid slices with the
    :class:`~datamodules.geometry.VolumeGeometry` that produced them. :meth:`predict_case`
    stacks them into a volume, pads its depth as in training, runs MONAI's
    :func:`~monai.inferers.sliding_window_inference` with a window of the geometry's depth (the
    case's own depth if it has none) and the full in-plane grid, Gaussian-weighted where
    windows overlap, then lets the geometry cut the padding off and map the probability back to
    the native grid. A case no deeper than the window is one forward pass.

    Args:
        net: 3D network mapping ``(B, C, D, H, W)`` to logits ``(B, K, D, H, W)`` (K = 1: sigmoid;
            K = 2: softmax, lesion = channel 1).
        loss: Loss on ``(logits, target (B, 1, D, H, W) float)``.
        optimizer: Optimiser factory (seed 001: Adam, lr 2e-4).
        scheduler: Optional scheduler factory; ``ReduceLROnPlateau`` is stepped on ``monitor``.
        metrics: Metrics preset (``evaluation.metrics.METRIC_PRESETS``).
        monitor: Metric that schedulers, checkpoints, early stopping and reports follow.
        monitor_mode: Whether ``monitor`` is better when ``"max"`` or ``"min"``.
        threshold: Lesion-probability threshold for the binary prediction.
        kernel_l2: λ of the L2 penalty on convolution kernels (seed 001: 1e-3); 0 for none.
        overlap: Fraction by which neighbouring windows overlap along depth (cases deeper than
            the window only).
        sw_batch_size: Windows per forward pass.
        blend: How overlapping windows are merged: ``"gaussian"`` (weights falling off towards
            a window's border) or ``"constant"`` (plain mean).
        tta: Mirroring test-time augmentation: each window is predicted under the 8 flips of
            its (D, h, w) axes and the flipped-back probabilities averaged before the windows
            are blended (as nnU-Net mirrors each tile); see
            :class:`~lightning_modules.case_evaluation.CaseEvaluationModule`.
    """

    spatial_dims: ClassVar[int] = 3

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        metrics: PresetName = DEFAULT_PRESET,
        monitor: str = DEFAULT_MONITOR,
        monitor_mode: MonitorMode = DEFAULT_MONITOR_MODE,
        threshold: float = 0.5,
        kernel_l2: float = 0.0,
        overlap: float = 0.5,
        sw_batch_size: int = 1,
        blend: Literal["gaussian", "constant"] = "gaussian",
        tta: bool = False,
    ) -> None:
        super().__init__(
            net=net,
            loss=loss,
            optimizer=optimizer,
            scheduler=scheduler,
            metrics=metrics,
            monitor=monitor,
            monitor_mode=monitor_mode,
            threshold=threshold,
            kernel_l2=kernel_l2,
            tta=tta,
        )
        if not 0.0 <= overlap < 1.0 or sw_batch_size < 1:
            raise ConfigurationError(
                f"overlap must be in [0, 1) and sw_batch_size ≥ 1, got {overlap} and "
                f"{sw_batch_size}."
            )
        self.overlap, self.sw_batch_size, self.blend = overlap, sw_batch_size, blend

    def _window_probability(self, volume: torch.Tensor) -> torch.Tensor:
        """Lesion probability ``(B, 1, D, h, w)`` of windows ``(B, C, D, h, w)``, averaged
        over :attr:`tta_flips`."""
        # Mirrored here, per window, rather than around the whole sliding window: one
        # sliding_window_inference (one padding, one Gaussian map, one blend buffer) whatever
        # the flips. A case no deeper than the window is the same either way; deeper ones
        # differ only in where the depth-flipped windows fall.
        return flip_average(self.lesion_probability, volume, self.tta_flips)[:, None]

    def predict_case(self, case: dict[str, Any]) -> CasePrediction:
        """Lesion probability ``(D, H, W)`` of one case on its native grid.

        Args:
            case: A case item (see :class:`datamodules.datasets.CaseDataset`): ``image``
                ``(D, C, h, w)`` network-grid slices, ``native_shape`` ``(D, H, W)`` and the
                ``geometry``.
        """
        geometry = case["geometry"]
        if not isinstance(geometry, VolumeGeometry):
            raise ConfigurationError(
                f"{case['case']}: a 3D module needs volumes; set data.init_args.spatial_dims: 3."
            )
        depth, height, width = case["native_shape"]
        volume = geometry.pad_depth(geometry.volume(case["image"]))[None]  # (1, C, D', h, w)
        window = (geometry.depth or volume.shape[2], *volume.shape[-2:])
        probability = sliding_window_inference(
            volume,
            window,
            self.sw_batch_size,
            self._window_probability,
            overlap=self.overlap,
            mode=self.blend,
        )
        assert isinstance(probability, torch.Tensor)
        probability = geometry.crop_depth(probability[0, 0].float(), depth)  # (D, h, w)
        out = self.case_output(probability, (depth, height, width))
        geometry.to_native(
            probability, (height, width), out=out, native_spacing=case["spacing"][1:]
        )
        return CasePrediction(out)

    def case_loss(self, probability: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The training loss on the whole case as one volume, from its native-grid probability."""
        logit = torch.logit(probability.clamp(1e-6, 1 - 1e-6))[None, None]
        return self.loss(logit, label.float()[None, None])
