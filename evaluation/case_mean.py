"""The mean of one value per case, the same to the last digit on one process and under DDP."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics.aggregation import CatMetric


class CaseMean(CatMetric):
    """The mean of per-case values (a whole-case loss, a PSNR) that does not depend on which
    process scored which case.

    torchmetrics' ``MeanMetric`` adds each value to a running float32 sum as it comes, and DDP
    then adds the processes' sums: two processes add the cases in another order than one, and
    the mean's last digits change with the order (3 cases on 2 processes: one validation in
    four). This metric keeps every value instead (DDP concatenates them, like
    :class:`~evaluation.case_metrics.CaseMetrics`' rows) and ``compute`` adds them in ascending
    order, in float64: the same values give the same mean, bit for bit, on any number of
    processes. One float per case is kept until the epoch ends.

    Args:
        nan_strategy: ``"disable"`` (default): a NaN value makes the mean NaN (a diverged loss
            shows as one); ``"warn"``: it is left out, with a warning; as ``CatMetric``'s.
        **kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``process_group``).
    """

    def __init__(
        self,
        nan_strategy: Literal["error", "warn", "ignore", "disable"] | float = "disable",
        **kwargs: Any,
    ) -> None:
        super().__init__(nan_strategy=nan_strategy, **kwargs)

    def update(self, value: float | Tensor) -> None:
        """Add one case's value (a float or a one-element tensor, on any device)."""
        if not isinstance(value, Tensor):
            value = torch.tensor(value, dtype=self.dtype, device=self.device)
        # One dimension: CatMetric keeps a lone 0-d value as it is, and DDP cannot gather a
        # 0-d state of one process with the 1-d state of another (gloo aborts).
        super().update(value.reshape(-1))

    def compute(self) -> Tensor:
        """The mean of every process's values (float64 scalar); NaN when no process has one."""
        values = super().compute()
        if isinstance(values, list) or values.numel() == 0:
            return torch.tensor(math.nan, dtype=torch.float64, device=self.device)
        return torch.sort(values.reshape(-1).double()).values.mean()
