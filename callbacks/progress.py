"""A progress bar that never waits for the device.

Lightning's TQDM bar shows the values logged with ``prog_bar=True`` by converting them to
numbers at every refresh (by default every step): on a GPU each conversion waits for every
kernel queued so far, so the host cannot run ahead of the device. :class:`LoggedValuesBar`
shows a module's training values (:class:`~core.protocols.ShowsTrainingValues`) as last logged
for the loggers instead: a value is converted once, when it is new, and that happens only on
the steps the loggers write (``log_every_n_steps``), where Lightning reads it back anyway.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from core.protocols import ShowsTrainingValues


class LoggedValuesBar(TQDMProgressBar):
    """Lightning's TQDM bar, plus the module's last logged training values.

    Args:
        refresh_rate: As :class:`~pytorch_lightning.callbacks.TQDMProgressBar`.
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._shown: dict[str, tuple[Any, float]] = {}  # key → (logged value, its number)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        if not isinstance(pl_module, ShowsTrainingValues):
            return items
        for key, value in pl_module.progress_bar_values().items():
            shown = self._shown.get(key)
            if shown is None or shown[0] is not value:  # new: logged in the step just ended
                shown = self._shown[key] = (value, float(value))
            items[key] = shown[1]
        return items
