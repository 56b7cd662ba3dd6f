"""Evaluation: per-case metric presets and their collection across processes."""

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
    "CaseMetrics",
    "atlas2_challenge",
    "atlas_dunet",
    "atlas_vcanet",
    "get_preset",
    "isles2018",
    "isles2022",
]
