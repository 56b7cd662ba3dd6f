"""Evaluation: per-case metric presets and their collection across processes."""

from evaluation.case_metrics import CaseMetrics
from evaluation.metrics import (
    ISLES2018_METRICS,
    METRIC_PRESETS,
    PRESET_METRICS,
    UNBOUNDED_METRICS,
    get_preset,
    isles2018,
)

__all__ = [
    "ISLES2018_METRICS",
    "METRIC_PRESETS",
    "PRESET_METRICS",
    "UNBOUNDED_METRICS",
    "CaseMetrics",
    "get_preset",
    "isles2018",
]
