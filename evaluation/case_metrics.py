"""Per-case metric collection that gives identical summaries on one process and under DDP."""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from evaluation.metrics import (
    PRESET_METRICS,
    PRESET_STD_METRICS,
    UNBOUNDED_METRICS,
    VOXEL_COUNT_METRICS,
    get_preset,
)
from evaluation.postprocessing import (
    CANDIDATE_METRICS,
    NONE,
    apply,
    score_candidates,
    structure_for,
)

logger = logging.getLogger(__name__)


def _to_numpy_mask(mask: Tensor, name: str) -> np.ndarray:
    """Detach a mask tensor to a CPU numpy array (values are validated by the preset)."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; found {type(mask).__name__}.")
    mask = mask.detach().cpu()
    if mask.dtype in (torch.float16, torch.bfloat16):
        mask = mask.float()  # numpy has no bfloat16
    return mask.numpy()


def _as_case_id(case_id: int | Tensor) -> int:
    """Accept an int (or a one-element integer tensor, as a collated batch delivers it)."""
    if isinstance(case_id, Tensor):
        if case_id.numel() != 1 or case_id.is_floating_point():
            raise ValueError(
                f"case_id must be one integer; found a {case_id.dtype} tensor of shape "
                f"{tuple(case_id.shape)}. Update once per case."
            )
        return int(case_id.item())
    try:
        return operator.index(case_id)
    except TypeError:
        raise ValueError(f"case_id must be an integer; found {case_id!r}.") from None


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A list state before sync, or the concatenated tensor after a DDP sync, as one 1-D tensor."""
    if isinstance(state, Tensor):
        return state.reshape(-1)
    return torch.cat(state) if state else torch.zeros(0, dtype=torch.float64)


class CaseMetrics(Metric):
    """Collect per-case metrics of a preset (e.g. ISLES 2018, ATLAS) and summarise them.

    Each ``update`` is one whole case: the preset (:data:`evaluation.metrics.METRIC_PRESETS`)
    is evaluated right away on CPU numpy and one row (case id, then every metric as float64) is
    appended to list states that DDP concatenates. Summaries are computed over the rows in case
    order, so they are the same to the last digit whether one process or many saw the cases,
    as long as every case is seen exactly once. A case id seen
    twice raises: under DDP it usually means ``DistributedSampler`` padded the last batch by
    repeating cases (evaluate with a non-padding sampler such as Lightning's
    ``UnrepeatedDistributedSamplerWrapper``, or on one device).

    ``compute()`` returns, for each metric, the mean over the cases whose value is finite; for
    the distances that are +inf when exactly one mask is empty (``hd``, ``assd``), also
    ``<metric>_inf``, the number of such cases (docs/metrics.md: count them, do not average them);
    ``<metric>_std``, the population standard deviation (ddof = 0, ``np.std``'s default) over
    the finite values, for ``dice`` and any other metric the preset lists in
    :data:`evaluation.metrics.PRESET_STD_METRICS` (D-UNet's mean ± sd); and ``num_cases``.
    Per-case voxel counts (``tp``, ``fp``, ``fn``, preset ``atlas_dunet``) are not averaged:
    they are pooled into ``global_dice`` = 2ΣTP / (2ΣTP + ΣFP + ΣFN) (1.0 if every case has
    both masks empty). All values are float64 scalar tensors. With no cases, means, standard
    deviations and ``global_dice`` are NaN and counts 0. ``table()`` gives the per-case rows
    (every metric of the preset, counts included) for a report.

    Post-processing (:mod:`evaluation.postprocessing`): ``postprocessing`` is applied to each
    prediction before the preset scores it (what a writer that post-processes its masks must
    score); each of ``candidates`` is also scored, Dice and lesion-wise F1 only, on the case's
    prediction as given, and ``candidates_table()`` gives them, one row per case and candidate,
    for the cross-validation's choice.

    Example (in a LightningModule)::

        self.val_cases = CaseMetrics("isles2018")
        # validation_step, one case per call:
        self.val_cases.update(probs[0, 1] > 0.5, label[0] > 0, spacing[0], case_id[0])
        # on_validation_epoch_end, on every rank:
        self.log_dict({f"val/{k}": v for k, v in self.val_cases.compute().items()})
        rows = self.val_cases.table()
        self.val_cases.reset()

    Args:
        preset: name of a per-case metric preset: ``"isles2018"`` (default; seeds 001-003),
            ``"atlas_dunet"`` (seed 004), ``"atlas_vcanet"`` (seed 000) or
            ``"atlas2_challenge"`` (ATLAS R2.0).
        postprocessing: choice string applied before scoring (``"none"``: the mask as given).
        candidates: choice strings to score besides (validation: ``postprocessing.CANDIDATES``).
        **kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``process_group``).

    Raises:
        ValueError: if ``preset`` is unknown (the message lists the valid names).
    """

    is_differentiable = False
    higher_is_better: bool | None = None  # mixed: dice/precision/recall up, hd/avd/... down
    full_state_update = False

    def __init__(
        self,
        preset: str = "isles2018",
        postprocessing: str = NONE,
        candidates: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.preset = preset
        self._preset_fn = get_preset(preset)
        self.postprocessing = postprocessing
        self.candidates: tuple[str, ...] = tuple(candidates)
        self.structure = structure_for(preset)
        self.metric_names: tuple[str, ...] = PRESET_METRICS[preset]
        self.std_names: tuple[str, ...] = PRESET_STD_METRICS.get(preset, ("dice",))
        self.add_state("case_ids", default=[], dist_reduce_fx="cat")
        for name in self.metric_names:
            self.add_state(f"{name}_values", default=[], dist_reduce_fx="cat")
        # One row per case: (dice, lesion_f1) of each candidate, flattened.
        self.add_state("candidate_values", default=[], dist_reduce_fx="cat")

    @property
    def dtype(self) -> torch.dtype:
        # A DDP rank that saw no case contributes torch.tensor([], dtype=self.dtype); it must match
        # the other ranks' float64 rows or gloo/NCCL abort. (Metric resets _dtype to float32 on
        # .to(device).) Case ids are stored as float64 too, exact below 2**53, for the same reason.
        return torch.float64

    def update(
        self,
        pred: Tensor,
        target: Tensor,
        spacing: Tensor | Sequence[float],
        case_id: int | Tensor,
    ) -> None:
        """Evaluate one case and store its row.

        Args:
            pred: predicted mask of one case, (X, Y, Z), bool or 0/1, any device.
            target: reference mask, same shape and axis order as ``pred``.
            spacing: voxel size in mm per axis in the masks' axis order, 3 values (as a tensor,
                float64: float32 already rounds 0.8 mm to 0.800000012).
            case_id: unique integer id of the case (e.g. the ISLES case number).

        Raises:
            ValueError: on a non-integer case id, or masks/spacing the preset rejects.
        """
        case = _as_case_id(case_id)
        if isinstance(spacing, Tensor):
            spacing = spacing.detach().cpu().double().reshape(-1).tolist()
        pred_np, target_np = _to_numpy_mask(pred, "pred"), _to_numpy_mask(target, "target")
        scored = pred_np
        if self.postprocessing != NONE:
            scored = apply(pred_np, self.postprocessing, spacing, self.structure)
        values = self._preset_fn(scored, target_np, spacing)  # validates the masks
        if self.candidates:
            scores = score_candidates(pred_np, target_np, spacing, self.candidates, self.structure)
            row = [scores[c][m] for c in self.candidates for m in CANDIDATE_METRICS]
            self._values("candidate").append(
                torch.tensor(row, dtype=torch.float64, device=self.device)
            )
        logger.debug("case %d: %s", case, values)
        self._values("case_ids").append(
            torch.tensor([case], dtype=torch.float64, device=self.device)
        )
        for name in self.metric_names:
            self._values(name).append(
                torch.tensor([values[name]], dtype=torch.float64, device=self.device)
            )

    def _values(self, name: str) -> list[Tensor]:
        """A list state (``case_ids`` or ``<metric>``): a list before a DDP sync, one tensor after."""
        return cast(list[Tensor], getattr(self, name if name == "case_ids" else f"{name}_values"))

    def _columns(self) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Case ids, metric columns and candidate rows ``(cases, candidates × metrics)`` (``None``
        without candidates) of the current (possibly synced) state, in ascending case id; refuse
        duplicates.

        In case order, not the order the rows came in: DDP concatenates the ranks' rows rank by
        rank, and a mean or standard deviation over the same values in another order can differ
        in its last digits from one process's.
        """
        ids = _cat(self._values("case_ids"))
        unique, counts = torch.unique(ids, return_counts=True)
        if bool((counts > 1).any()):
            repeated = [int(i) for i in unique[counts > 1].tolist()]
            raise ValueError(
                f"Case id(s) {repeated} were evaluated more than once ({ids.numel()} rows). Under "
                "DDP this usually means DistributedSampler padded the dataset by repeating cases: "
                "evaluate with a non-padding sampler (Lightning's "
                "UnrepeatedDistributedSamplerWrapper) or on one device. Otherwise call reset() "
                "between epochs."
            )
        order = torch.argsort(ids)
        columns = {name: _cat(self._values(name))[order] for name in self.metric_names}
        width = len(self.candidates) * len(CANDIDATE_METRICS)
        candidates = _cat(self._values("candidate")).reshape(-1, width)[order] if width else None
        return ids[order], columns, candidates

    def compute(self) -> dict[str, Tensor]:
        """Summarise all cases (across ranks under DDP).

        Returns:
            ``{metric: mean over finite values, "<metric>_std": population sd over finite
            values (dice, and the preset's PRESET_STD_METRICS), "<metric>_inf": count of
            infinite values (hd, assd), "global_dice": pooled over cases (presets with tp/fp/fn),
            "num_cases": number of cases}``, float64 scalar tensors; NaN means and sds when no
            case (or no finite value) was seen.

        Raises:
            ValueError: if a case id was seen more than once.
        """
        ids, columns, _ = self._columns()
        summary: dict[str, Tensor] = {}
        for name, values in columns.items():
            if name in VOXEL_COUNT_METRICS:
                continue
            finite = values[torch.isfinite(values)]
            summary[name] = finite.mean() if finite.numel() else self._scalar(math.nan)
            if name in self.std_names:
                summary[f"{name}_std"] = (
                    finite.std(correction=0) if finite.numel() else self._scalar(math.nan)
                )
            if name in UNBOUNDED_METRICS:
                summary[f"{name}_inf"] = self._scalar(float(torch.isinf(values).sum()))
        if VOXEL_COUNT_METRICS <= columns.keys():
            summary["global_dice"] = self._global_dice(columns, ids.numel())
        summary["num_cases"] = self._scalar(float(ids.numel()))
        return summary

    def _global_dice(self, columns: dict[str, Tensor], num_cases: int) -> Tensor:
        """2ΣTP / (2ΣTP + ΣFP + ΣFN) over all cases; 1 if all masks are empty, NaN if no case."""
        tp, fp, fn = (columns[name].sum() for name in ("tp", "fp", "fn"))
        denominator = 2 * tp + fp + fn
        if num_cases == 0:
            return self._scalar(math.nan)
        return 2 * tp / denominator if denominator > 0 else self._scalar(1.0)

    def _synced(self) -> tuple[list[int], dict[str, list[float]], list[list[float]]]:
        """Case ids, metric columns and candidate rows gathered from all ranks (a collective)."""
        already_synced = self._is_synced
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync and not already_synced,
            should_unsync=self._should_unsync and not already_synced,
        ):
            ids, columns, candidates = self._columns()
            return (
                [int(i) for i in ids.tolist()],
                {name: values.tolist() for name, values in columns.items()},
                candidates.tolist() if candidates is not None else [],
            )

    def table(self) -> list[dict[str, float | int]]:
        """Per-case rows sorted by case id, gathered from all ranks under DDP.

        Under DDP this is a collective: call it on every rank (like ``compute()``).

        Returns:
            ``[{"case_id": int, "dice": float, ...}, ...]``, one row per case.

        Raises:
            ValueError: if a case id was seen more than once.
        """
        ids_list, value_lists, _ = self._synced()
        rows = [
            {"case_id": case, **{name: value_lists[name][i] for name in self.metric_names}}
            for i, case in enumerate(ids_list)
        ]
        return sorted(rows, key=operator.itemgetter("case_id"))

    def candidates_table(self) -> list[dict[str, float | int | str]]:
        """The candidates' scores, one row per case and candidate (in ``candidates``' order),
        sorted by case id; a collective under DDP, like :meth:`table`; empty without candidates.

        Returns:
            ``[{"case_id": int, "postprocessing": choice, "dice": float, "lesion_f1": float}]``.
        """
        if not self.candidates:
            return []
        ids_list, _, candidate_rows = self._synced()
        rows: list[dict[str, float | int | str]] = []
        for case, values in sorted(zip(ids_list, candidate_rows), key=operator.itemgetter(0)):
            for c, choice in enumerate(self.candidates):
                scores = values[c * len(CANDIDATE_METRICS) : (c + 1) * len(CANDIDATE_METRICS)]
                rows.append(
                    {
                        "case_id": case,
                        "postprocessing": choice,
                        **dict(zip(CANDIDATE_METRICS, scores)),
                    }
                )
        return rows

    def _scalar(self, value: float) -> Tensor:
        return torch.tensor(value, dtype=torch.float64, device=self.device)
