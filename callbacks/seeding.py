"""Per-step seeding of the training process, so a resumed fold repeats the uninterrupted one.

Lightning's checkpoints hold the weights, optimisers, schedulers and callbacks, but not the
random generators, and a resumed run creates its data iterators at other moments than an
uninterrupted one (each creation draws from the global generator): after ``--ckpt_path last``
a dropout mask would differ from the run that was never stopped. :class:`StepSeed` reseeds
PyTorch's, NumPy's and Python's global generators before every training step from
``(seed, epoch, batch, rank)``, so each step's draws depend on nothing that came before. The
order and augmentation of the training samples are drawn from ``(seed, epoch)`` by
:class:`~datamodules.samplers.EpochSampler`. Together they make a fold killed after epoch *k*
and resumed end with the weights of an uninterrupted run (on CPU; on GPU also set
``trainer.deterministic``).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def step_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A 32-bit seed for one process in one training step, from the run's seed."""
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1)[0])


class StepSeed(pl.Callback):
    """Reseeds the global random generators before each training step.

    Args:
        seed: Base seed; ``None``: the run's ``seed_everything`` (``PL_GLOBAL_SEED``). Without
            either, nothing is reseeded (the run is not meant to be reproducible).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed = self.seed
        if seed is None and os.environ.get("PL_GLOBAL_SEED") is not None:
            seed = int(os.environ["PL_GLOBAL_SEED"])
        if seed is None:
            return
        value = step_seed(seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)
