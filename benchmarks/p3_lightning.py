"""P3: a Lightning training step ÷ a raw PyTorch step (target ≤ 1.03, weights bit-identical).

Both arms train the same initial weights on the same prebuilt batches (taken from the CPU demo's
DataLoader: 64×64 4-slice stacks, batch 16, augmented) with the recipe's loss and optimiser,
the same seed and ``torch.use_deterministic_algorithms(True)``. The Lightning arm is
``Trainer.fit`` of the recipe's ``SegmentationModule`` with the recipe's precision and
``log_every_n_steps``, a CSV logger, no progress bar, no checkpointing and no validation. The
raw arm is a plain PyTorch loop: ``zero_grad``, forward, loss, ``backward``, ``step``. (Lightning's
automatic optimisation zeroes the gradients after the forward instead, so the previous step's
gradients are still allocated during the forward; that difference is part of what is measured.)

The two arms are interleaved step by step, because on a shared 2-core machine a step's time
jitters by ±20 % and drifts by 10 % between runs, more than the 3 % to be measured: a callback
runs one raw step (on its own copy of the network and optimiser, with its own random stream)
inside every Lightning step, alternately at its start and at its end. A Lightning step's time is
the period between the starts of consecutive steps (so Lightning's work between steps, logging
included, counts) minus the callback's time; a raw step's time is its fetch and step. The
first steps are not counted. The ratio is 1 + the mean paired difference ÷ the mean raw step,
both means without the 5 % largest and smallest values (a spike from another process lands in
either arm; a cost Lightning pays every few steps, such as logging, is kept). Afterwards every
parameter and buffer of the two copies is compared bit for bit.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import (
    DUNET_DEMO,
    ONE_X,
    Options,
    Recipe,
    Result,
    Target,
    Workspace,
    median,
    model,
    seconds,
    trimmed_mean,
)

SEED = 0
WARM_STEPS = 3

MEASURE = "Lightning step ÷ raw PyTorch step"


class _Prebuilt(Dataset):
    """``steps`` batches cycling through a prebuilt list (the same tensors, no copies)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batches[index % len(self.batches)]


def _loader(batches: list[dict[str, torch.Tensor]], steps: int) -> DataLoader:
    # Its own generator: creating an iterator must not draw from the global random stream.
    return DataLoader(
        _Prebuilt(batches, steps),
        batch_size=None,
        shuffle=False,
        generator=torch.Generator().manual_seed(SEED),
    )


class _RawAlongside(pl.Callback):
    """One raw PyTorch step per Lightning step, on its own copies, timed apart from Lightning's.

    Args:
        net: The raw arm's copy of the initial network.
        recipe: Gives the loss and the optimiser.
        loader: The raw arm's loader (same batches, same order as Lightning's).
    """

    def __init__(self, net: torch.nn.Module, recipe: Recipe, loader: DataLoader) -> None:
        self.net = net.train()
        self.loss = recipe.loss()
        self.optimizer = recipe.optimizer()([p for p in net.parameters() if p.requires_grad])
        self.batches = iter(loader)
        self.rng = torch.get_rng_state()
        self.starts: list[float] = []  # start of every Lightning step
        self.hooks: list[float] = []  # this callback's time within every Lightning step
        self.raw: list[float] = []  # every raw step: fetch, zero_grad, forward, backward, step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.manual_seed(SEED)
        self.rng = torch.get_rng_state()

    def _raw_step(self) -> None:
        hook = time.perf_counter()
        lightning_rng = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        start = time.perf_counter()
        batch = next(self.batches)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.net(batch["image"]), batch["label"].float()).backward()
        self.optimizer.step()
        self.raw.append(time.perf_counter() - start)
        self.rng = torch.get_rng_state()
        torch.set_rng_state(lightning_rng)
        self.hooks[-1] += time.perf_counter() - hook

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.starts.append(time.perf_counter())
        self.hooks.append(0.0)
        if batch_idx % 2 == 0:
            self._raw_step()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx % 2 == 1:
            self._raw_step()

    def lightning_steps(self) -> list[float]:
        periods = [b - a for a, b in zip(self.starts[:-1], self.starts[1:])]
        return [p - h for p, h in zip(periods, self.hooks)][WARM_STEPS:]

    def raw_steps(self) -> list[float]:
        return self.raw[WARM_STEPS : len(self.starts) - 1]


def _identical(a: torch.nn.Module, b: torch.nn.Module) -> tuple[bool, float]:
    worst, same = 0.0, True
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        if not torch.equal(x, y):
            same = False
            worst = max(worst, float((x.double() - y.double()).abs().max()))
    return same, worst


def run(workspace: Workspace, options: Options) -> Result:
    steps = 150 if options.quick else 1000
    if not options.small_model:
        steps = 8 if options.quick else 16
    recipe = Recipe(DUNET_DEMO)
    dm = workspace.atlas_module(ONE_X, recipe)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(min(steps, 20))]
    del iterator, loader

    torch.manual_seed(SEED)
    initial, net_name = model(recipe, options, in_channels=len(dm.geometry.context))
    raw_net, lightning_net = copy.deepcopy(initial), copy.deepcopy(initial)
    alongside = _RawAlongside(raw_net, recipe, _loader(batches, steps))
    trainer = pl.Trainer(
        **recipe.trainer_kwargs(),
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=CSVLogger(workspace.root / "p3-logs", name="p3"),
        callbacks=[alongside],
        deterministic=True,
    )
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        trainer.fit(recipe.module(lightning_net, recipe.loss()), _loader(batches, steps))
    finally:
        torch.use_deterministic_algorithms(deterministic)

    lightning, raw = alongside.lightning_steps(), alongside.raw_steps()
    differences = [a - b for a, b in zip(lightning, raw)]
    cost, raw_step = trimmed_mean(differences), trimmed_mean(raw)
    identical, worst = _identical(raw_net, lightning_net)
    verdict = "bit-identical" if identical else f"differ (max |Δ| {worst:.2e})"
    return Result(
        "P3",
        MEASURE,
        1 + cost / raw_step,
        Target("≤", 1.03),
        setup=(
            f"{recipe.label} data, loss and optimiser; {net_name}; {steps} steps of "
            f"{dm.geometry.size[0]}×{dm.geometry.size[1]} batches of "
            f"{batches[0]['image'].shape[0]}, arms interleaved step by step, first "
            f"{WARM_STEPS} not counted; precision {recipe.trainer_kwargs().get('precision')}, "
            f"CSV logger, log_every_n_steps {recipe.trainer_kwargs().get('log_every_n_steps')}, "
            "no progress bar, deterministic"
        ),
        raw=[
            f"raw PyTorch step: {seconds(raw_step)} (trimmed mean of {len(raw)}; mean "
            f"{seconds(sum(raw) / len(raw))}, median {seconds(median(raw))})",
            f"Lightning step: {seconds(trimmed_mean(lightning))} (trimmed mean of "
            f"{len(lightning)}; mean {seconds(sum(lightning) / len(lightning))}, median "
            f"{seconds(median(lightning))})",
            f"Lightning's cost per step: {seconds(cost)} (trimmed mean of the paired differences; "
            f"mean {seconds(sum(differences) / len(differences))}, median "
            f"{seconds(median(differences))})",
            f"weights and buffers after {steps} steps: {verdict}",
        ],
        also_required=(identical, f"weights {verdict}"),
    )
