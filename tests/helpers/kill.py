"""A callback that kills its own process with SIGKILL, to test recovery from a hard crash."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAtEpochStart(pl.Callback):
    """``kill -9`` this process when training epoch ``epoch`` starts, i.e. right after the
    checkpoints of epoch ``epoch - 1`` were written, as a crash or an OOM killer would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
