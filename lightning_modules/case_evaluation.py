"""Whole-case validation, test and prediction, shared by every module that predicts cases.

A module of the suite learns however it likes (slices, volumes, a GAN); what it shares is how a
case is judged. :class:`CaseEvaluationModule` takes one self-describing case per step (see
:class:`datamodules.datasets.CaseDataset`), asks the subclass for the lesion probability on the
case's native grid (:meth:`CaseEvaluationModule.predict_case`), thresholds it and scores it
with the metrics preset per case. Validation and test log the summary (``val/dice`` …) and keep
the per-case rows in ``case_table`` for the reports; prediction returns the probability and
mask for a writer and, when a case has a label, scores it too, so labelled cases predicted by
an ensemble get the same table.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch

from evaluation.case_metrics import CaseMetrics
from evaluation.metrics import PresetName


def _gather_names(names: dict[int, str]) -> dict[int, str]:
    """The case-index → name maps of every rank, merged (identity on one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return names
    gathered: list[dict[int, str] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, names)
    return {index: name for part in gathered if part for index, name in part.items()}


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
    """

    def __init__(
        self,
        metrics: PresetName = "isles2018",
        monitor: str = "val/dice",
        monitor_mode: Literal["max", "min"] = "max",
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.threshold = threshold
        self.val_metrics = CaseMetrics(metrics)
        self.test_metrics = CaseMetrics(metrics)
        self.predict_metrics = CaseMetrics(metrics)
        self.case_table: list[dict[str, Any]] = []
        self._case_names: dict[int, str] = {}

    # -- to implement ---------------------------------------------------------------------
    def predict_case(self, case: dict[str, Any]) -> torch.Tensor:
        """Lesion probability ``(N, H, W)`` float32 of one case on its native grid."""
        raise NotImplementedError

    def case_loss(self, probability: torch.Tensor, label: torch.Tensor) -> torch.Tensor | None:
        """The training loss of a whole case, logged as ``<stage>/loss``; ``None``: not logged."""
        return None

    # -- evaluation -----------------------------------------------------------------------
    def _score(self, case: dict[str, Any], probability: torch.Tensor, metrics: CaseMetrics) -> None:
        label = case["label"]
        metrics.update(
            probability >= self.threshold, label.bool(), case["spacing"], case["case_index"]
        )
        self._case_names[int(case["case_index"])] = case["case"]

    def _evaluate_case(self, case: dict[str, Any], metrics: CaseMetrics, stage: str) -> None:
        if case["label"] is None:
            raise ValueError(
                f"{case['case']} has no label, so it cannot be {stage}d; predict it instead."
            )
        probability = self.predict_case(case)
        loss = self.case_loss(probability, case["label"])
        if loss is not None:
            self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=1, sync_dist=True)
        self._score(case, probability, metrics)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_case(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_case(batch, self.test_metrics, "test")

    def _case_rows(self, metrics: CaseMetrics) -> dict[str, float]:
        """Summarise ``metrics`` into ``case_table`` (named rows); return the summary."""
        summary = metrics.compute()
        names = _gather_names(self._case_names)
        self.case_table = [
            {"case": names.get(int(row.pop("case_id")), "?"), **row} for row in metrics.table()
        ]
        metrics.reset()
        self._case_names = {}
        return {name: float(value) for name, value in summary.items()}

    def _log_case_metrics(self, metrics: CaseMetrics, stage: str) -> None:
        values = {f"{stage}/{k}": v for k, v in self._case_rows(metrics).items()}
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
        """The case's lesion probability and mask ``(N, H, W)`` on its native grid (CPU).

        A writer callback takes the rest (geometry, source, prediction target) from the batch.
        A labelled case is also scored; the rows are in ``case_table`` after the epoch.
        """
        probability = self.predict_case(batch)
        if batch["label"] is not None:
            self._score(batch, probability, self.predict_metrics)
        probability = probability.cpu()
        mask = (probability >= self.threshold).to(torch.uint8)
        return {"case": batch["case"], "probability": probability, "mask": mask}

    def on_predict_epoch_end(self) -> None:
        scored = torch.tensor(float(self.predict_metrics.update_count))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(scored)  # collective: every rank summarises, or none
        if scored.item() > 0:
            self._case_rows(self.predict_metrics)
