"""Evaluation: per-case metric presets and their collection across processes."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluation.case_mean import CaseMean
    from evaluation.case_metrics import CaseMetrics
    from evaluation.metrics import (
        ATLAS2_CHALLENGE_METRICS,
        ATLAS_DUNET_METRICS,
        ATLAS_VCANET_METRICS,
        ISLES2018_METRICS,
        ISLES2022_METRICS,
        METRIC_DIRECTIONS,
        METRIC_PRESETS,
        PRESET_METRICS,
        PRESET_STD_METRICS,
        UNBOUNDED_METRICS,
        VOXEL_COUNT_METRICS,
        atlas2_challenge,
        atlas_dunet,
        atlas_vcanet,
        get_preset,
        isles2018,
        isles2022,
    )

__all__ = [
    "ATLAS2_CHALLENGE_METRICS",
    "ATLAS_DUNET_METRICS",
    "ATLAS_VCANET_METRICS",
    "ISLES2018_METRICS",
    "ISLES2022_METRICS",
    "METRIC_DIRECTIONS",
    "METRIC_PRESETS",
    "PRESET_METRICS",
    "PRESET_STD_METRICS",
    "UNBOUNDED_METRICS",
    "VOXEL_COUNT_METRICS",
    "CaseMean",
    "CaseMetrics",
    "atlas2_challenge",
    "atlas_dunet",
    "atlas_vcanet",
    "get_preset",
    "isles2018",
    "isles2022",
]


def __getattr__(name: str) -> Any:
    # Lazy: the metrics import torch, torchmetrics and MONAI, and `lightning-cv --help` or a
    # report of finished folds (evaluation.cv_report) must not wait for them.
    if name not in __all__:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    module = {"CaseMean": "evaluation.case_mean", "CaseMetrics": "evaluation.case_metrics"}.get(
        name, "evaluation.metrics"
    )
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
