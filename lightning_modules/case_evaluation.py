"""Whole-case validation, test and prediction, shared by every module that predicts cases.

A module of the suite learns however it likes (slices, volumes, a GAN); what it shares is how a
case is judged. :class:`CaseEvaluationModule` takes one self-describing case per step (see
:class:`datamodules.datasets.CaseDataset`), asks the subclass for the lesion probability on the
case's native grid (:meth:`CaseEvaluationModule.predict_case`, which returns a
:class:`CasePrediction`), thresholds it and scores it with the metrics preset per case.
Validation and test log the summary (``val/dice`` …), keep the per-case rows in ``case_table``
for the reports and return the case's prediction to the callbacks (a figure callback draws
from it); prediction returns the probability and mask for a writer and, when a case has a
label, scores it too, so labelled cases predicted by an ensemble get the same table.

Training losses go through :meth:`CaseEvaluationModule.log_training`, which costs no host
synchronisation and almost nothing per step: each value is added to a running sum on the
device, Lightning's ``log`` is called only on the steps the loggers write
(``log_every_n_steps``) as ``train/<name>_step``, and the epoch's mean is logged once at its end
as ``train/<name>_epoch`` (the names Lightning gives a value logged ``on_step`` and
``on_epoch``). The progress bar shows the step values the loggers last wrote
(:class:`callbacks.progress.LoggedValuesBar`): Lightning's own bar would read a device tensor
back at every refresh, that is every step. A ``self.log`` per step costs about 1 ms of Python on these machines, a fifth of
a GPU's step for the small networks (docs/performance.md, P3).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, DEFAULT_PRESET, MonitorMode
from core.distributed import gather_objects
from core.errors import ConfigurationError
from core.host_buffers import HostBuffers
from core.protocols import ServesSamples
from evaluation.case_mean import CaseMean
from evaluation.case_metrics import CaseMetrics
from evaluation.metrics import PresetName
from evaluation.postprocessing import CANDIDATES
from lightning_modules.tta import IDENTITY, Flip, mirror_flips


def _quiet_sync_dist_advice(keys: Collection[str]) -> None:
    """Silence Lightning's advice to log ``keys`` with ``sync_dist=True``, for these keys only.

    Under DDP Lightning advises it for every plain value logged per epoch without
    ``sync_dist``; it takes only a torchmetrics ``Metric`` handed to ``log`` for synchronised
    (Lightning issue 20153). The case summaries are computed from the rows
    :class:`~evaluation.case_metrics.CaseMetrics` gathered from every process: the same on
    each, and the same as on one process: ``sync_dist`` would average equal values, at one
    collective per key.
    """
    names = "|".join(re.escape(key) for key in keys)
    advice = rf"It is recommended to use `self\.log\('({names})', \.\.\., sync_dist=True\)`"
    warnings.filterwarnings("ignore", message=advice, category=PossibleUserWarning)


def _gather_names(names: dict[int, str]) -> dict[int, str]:
    """The case-index → name maps of every rank, merged (identity on one process)."""
    return {index: name for part in gather_objects(names) for index, name in part.items()}


@dataclass
class CasePrediction:
    """What a module predicts for one case.

    Attributes:
        probability: Lesion probability ``(N, H, W)`` float32 on the case's native grid.
        images: Other outputs on the network grid, by name, for callbacks and extra metrics
            (seed 002's generator: ``"dwi"``, the synthetic DWI ``(N, 1, h, w)``).
    """

    probability: torch.Tensor
    images: dict[str, torch.Tensor] = field(default_factory=dict)


class CaseEvaluationModule(pl.LightningModule):
    """Base of the modules that validate, test and predict whole cases.

    Per-case rows are gathered across processes without duplicates, so ``val/dice`` is the
    same on one process and under DDP.

    Args:
        metrics: Metrics preset (``evaluation.metrics.METRIC_PRESETS``).
        monitor: Metric that schedulers, checkpoints, early stopping and reports follow (the
            ``lightning`` command links it to its callbacks).
        monitor_mode: Whether ``monitor`` is better when ``"max"`` or ``"min"``.
        threshold: Lesion-probability threshold for the binary prediction.
        tta: Mirroring test-time augmentation: the lesion probability is the mean over flips of
            the network-grid input (2D: none, H, W, both; 3D: also depth, 8 passes), each
            flipped back before averaging, then mapped to the native grid once
            (:mod:`lightning_modules.tta`). Off by default. It is a property of the module, not
            of a stage: on, it applies wherever a case is predicted — ``predict``, but also
            ``validate``, ``test`` and the validation epochs of a fit. Checkpoints of earlier
            releases have no such setting and load with it off.
    """

    #: The samples it trains on: 2, slices; 3, volumes (the DataModule's must agree).
    spatial_dims: ClassVar[int] = 2

    def __init__(
        self,
        metrics: PresetName = DEFAULT_PRESET,
        monitor: str = DEFAULT_MONITOR,
        monitor_mode: MonitorMode = DEFAULT_MONITOR_MODE,
        threshold: float = 0.5,
        tta: bool = False,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.threshold = threshold
        self.use_tta(tta)
        # Validation also scores the post-processing candidates, for the cross-validation's choice.
        self.val_metrics = CaseMetrics(metrics, candidates=CANDIDATES)
        self.test_metrics = CaseMetrics(metrics)
        self.predict_metrics = CaseMetrics(metrics)
        # The whole-case loss of each stage (not saved in checkpoints: metric states are not).
        self.case_losses = torch.nn.ModuleDict({stage: CaseMean() for stage in ("val", "test")})
        self.case_table: list[dict[str, Any]] = []
        self.postprocessing_table: list[dict[str, Any]] = []
        self._case_names: dict[int, str] = {}
        self._train_sums: dict[str, torch.Tensor] = {}  # Σ value × batch size, on the device
        self._train_samples = 0
        self._train_epoch_only: set[str] = set()
        self._train_prog_bar: set[str] = set()
        self._train_shown: dict[str, torch.Tensor] = {}  # the last logged, for progress bars
        self._host_buffers = HostBuffers()  # the native-grid outputs of cases on the CPU

    # -- test-time augmentation -----------------------------------------------------------
    def use_tta(self, on: bool) -> None:
        """Turn mirroring TTA on or off: :attr:`tta_flips` becomes every flip of the module's
        ``spatial_dims`` axes, or the identity alone."""
        #: The flips :meth:`predict_case` averages over (a test may set any set of them).
        self.tta_flips: tuple[Flip, ...] = mirror_flips(self.spatial_dims) if on else IDENTITY

    # -- to implement ---------------------------------------------------------------------
    def predict_case(self, case: dict[str, Any]) -> CasePrediction:
        """The lesion probability ``(N, H, W)`` of one case on its native grid (and any other
        outputs the module makes of it)."""
        raise NotImplementedError

    def case_output(self, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised float32 tensor of ``shape`` on ``like``'s device for a case's
        native-grid output. On the CPU it comes from buffers reused from case to case once
        their earlier case is let go (:class:`core.host_buffers.HostBuffers`: a fresh 35 MB
        ATLAS output costs more in page faults than mapping the slices into it); a GPU's
        caching allocator does that already."""
        if like.device.type == "cpu":
            return self._host_buffers.empty(shape, torch.float32)
        return like.new_empty(shape, dtype=torch.float32)

    def case_loss(self, probability: torch.Tensor, label: torch.Tensor) -> torch.Tensor | None:
        """The training loss of a whole case, logged as ``<stage>/loss``; ``None``: not logged."""
        return None

    # -- training log ---------------------------------------------------------------------
    def log_training(
        self,
        values: Mapping[str, torch.Tensor],
        batch_size: int,
        prog_bar: Collection[str] = (),
        epoch_only: Collection[str] = (),
    ) -> None:
        """Log a training step's values as ``train/<name>_step`` (on the steps the loggers
        write) and ``train/<name>_epoch`` (the epoch's mean, weighted by batch size); a name in
        ``epoch_only`` gets its epoch mean only, as ``train/<name>``. Nothing here reads a value
        back to the host."""
        self._train_samples += batch_size
        self._train_epoch_only.update(epoch_only)
        self._train_prog_bar.update(prog_bar)
        for name, value in values.items():
            weighted = value.detach().float() * batch_size
            total = self._train_sums.get(name)
            self._train_sums[name] = weighted if total is None else total + weighted
        # Lightning's own test of whether this step's values reach the loggers (it is meant
        # to be asked before the step ends: "checked before a step is executed"). No trainer:
        # a training_step called directly, as Lightning's log then does, logs nothing.
        trainer = self._trainer
        if trainer is None or not trainer._logger_connector.should_update_logs:
            return
        for name, value in values.items():
            if name not in epoch_only:
                key, logged = f"train/{name}_step", value.detach()
                self.log(key, logged, on_step=True, on_epoch=False, batch_size=batch_size)
                if name in self._train_prog_bar:
                    self._train_shown[key] = logged

    def progress_bar_values(self) -> dict[str, torch.Tensor]:
        """The training values a progress bar shows, as last logged (``train/<name>_step``)."""
        return dict(self._train_shown)

    def on_train_epoch_end(self) -> None:
        """Log the epoch's means of :meth:`log_training`'s values (averaged across processes)."""
        count, sums = self._train_samples, self._train_sums
        self._train_sums, self._train_samples = {}, 0
        for name, total in sums.items():
            key = f"train/{name}" if name in self._train_epoch_only else f"train/{name}_epoch"
            self.log(
                key,
                total / count,
                on_step=False,
                on_epoch=True,
                prog_bar=name in self._train_prog_bar,
                sync_dist=True,
            )

    # -- checks ---------------------------------------------------------------------------
    def check_data(self, datamodule: object) -> None:
        """Refuse a DataModule that serves samples of another dimensionality (the ``lightning``
        command asks before the trainer exists, so before any data is decoded; :meth:`setup`
        asks again).

        Raises:
            ConfigurationError: Naming both and the setting to change.
        """
        if not isinstance(datamodule, ServesSamples):
            return
        served = datamodule.spatial_dims
        if served != self.spatial_dims:
            module = {2: "SegmentationModule", 3: "VolumeSegmentationModule"}.get(served, "?")
            raise ConfigurationError(
                f"{type(self).__name__} trains on {self.spatial_dims}D samples but the data "
                f"module serves {served}D ones. Set data.init_args.spatial_dims: "
                f"{self.spatial_dims}, or use lightning_modules.{module} for this data."
            )

    def setup(self, stage: str) -> None:
        # Lightning's data connector sets trainer.datamodule; the Trainer does not declare it.
        self.check_data(self.trainer.datamodule)  # type: ignore[attr-defined]

    # -- evaluation -----------------------------------------------------------------------
    def _score(self, case: dict[str, Any], probability: torch.Tensor, metrics: CaseMetrics) -> None:
        label = case["label"]
        metrics.update(
            probability >= self.threshold, label.bool(), case["spacing"], case["case_index"]
        )
        self._case_names[int(case["case_index"])] = case["case"]

    def _evaluate_case(
        self, case: dict[str, Any], metrics: CaseMetrics, stage: str
    ) -> CasePrediction:
        if case["label"] is None:
            raise ConfigurationError(
                f"{case['case']} has no label, so it cannot be {stage}d; predict it instead."
            )
        prediction = self.predict_case(case)
        loss = self.case_loss(prediction.probability, case["label"])
        if loss is not None:
            # The mean over every case of every rank, added in one order however the ranks
            # shared the cases (CaseMean). (sync_dist averaged the ranks' means, each rank's
            # count truncated to an integer: 3 cases on 2 ranks logged 1.5 times the loss.)
            case_loss = self.case_losses[stage]
            assert isinstance(case_loss, CaseMean), "made in __init__"
            case_loss.update(loss.detach().float())
            self.log(f"{stage}/loss", case_loss, on_step=False, on_epoch=True, batch_size=1)
        self._score(case, prediction.probability, metrics)
        return prediction

    # The case's prediction goes to the callbacks as the step's output (Lightning passes any
    # object through; its annotation names only tensors and mappings).
    def validation_step(  # type: ignore[override]
        self, batch: dict[str, Any], batch_idx: int
    ) -> CasePrediction:
        return self._evaluate_case(batch, self.val_metrics, "val")

    def test_step(  # type: ignore[override]
        self, batch: dict[str, Any], batch_idx: int
    ) -> CasePrediction:
        return self._evaluate_case(batch, self.test_metrics, "test")

    def _case_rows(self, metrics: CaseMetrics) -> dict[str, float]:
        """Summarise ``metrics`` into ``case_table`` (named rows); return the summary."""
        summary = metrics.compute()
        names = _gather_names(self._case_names)
        self.case_table = [
            {"case": names.get(int(row.pop("case_id")), "?"), **row} for row in metrics.table()
        ]
        self.postprocessing_table = [
            {"case": names.get(int(row.pop("case_id")), "?"), **row}
            for row in metrics.candidates_table()
        ]
        metrics.reset()
        self._case_names = {}
        return {name: float(value) for name, value in summary.items()}

    def _log_case_metrics(self, metrics: CaseMetrics, stage: str) -> None:
        values = {f"{stage}/{k}": v for k, v in self._case_rows(metrics).items()}
        _quiet_sync_dist_advice(values)
        # Already gathered across processes by CaseMetrics: identical on every rank.
        self.log(f"{stage}/dice", values.pop(f"{stage}/dice"), prog_bar=True)
        self.log_dict(values)

    def on_validation_epoch_end(self) -> None:
        self._log_case_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_case_metrics(self.test_metrics, "test")

    def on_predict_epoch_start(self) -> None:
        self.case_table = []

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The case's mask ``(N, H, W)`` uint8 on the host and its lesion probability on the
        module's device, both on the case's native grid.

        The mapping back to the native grid and the threshold run where the network ran; only
        the uint8 mask crosses to the host here (a quarter of the probability's bytes). A writer
        that saves the probability too moves it then. A writer callback takes the rest
        (geometry, source, prediction target) from the batch. A labelled case is also scored;
        the rows are in ``case_table`` after the epoch.
        """
        probability = self.predict_case(batch).probability
        if batch["label"] is not None:
            self._score(batch, probability, self.predict_metrics)
        mask = (probability >= self.threshold).to(torch.uint8).cpu()
        return {"case": batch["case"], "probability": probability, "mask": mask}

    def on_predict_epoch_end(self) -> None:
        # A collective (every rank summarises, or none), on Python objects: NCCL cannot reduce
        # a CPU tensor.
        if sum(gather_objects(self.predict_metrics.update_count)) > 0:
            self._case_rows(self.predict_metrics)
