"""Defaults shared by the modules, callbacks, reports and commands (one place to change them).

The metrics preset and the monitored metric are those of the suite's first paper (seed 003,
ISLES 2018: best validation Dice selects the checkpoint).
"""

from __future__ import annotations

from typing import Final, Literal

MonitorMode = Literal["max", "min"]

#: The metrics preset of a module that names none (``evaluation.metrics.METRIC_PRESETS``).
DEFAULT_PRESET: Final = "isles2018"
#: The metric that checkpoints, schedulers, early stopping and reports follow.
DEFAULT_MONITOR: Final = "val/dice"
#: Whether :data:`DEFAULT_MONITOR` is better higher or lower.
DEFAULT_MONITOR_MODE: Final = "max"
