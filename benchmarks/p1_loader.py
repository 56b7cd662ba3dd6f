"""P1: training steps/s with the real DataLoader ÷ with one prebuilt batch reused (target ≥ 0.95).

Both arms run the same raw PyTorch step (forward, loss, backward, optimiser step) in this
process, with the CPU demo recipe's data, loss and optimiser (``dunet.yaml`` +
``dunet_demo.yaml``: 64×64 4-slice stacks, batch 16, EML, Adam) and the model of
:func:`benchmarks.common.model`. The loader arm pulls each batch from the DataModule's own
``train_dataloader()``: its workers (1 in the demo), sampler (half the samples from lesion
slices) and augmentation, as configured. The other arm reuses one batch taken from the same
loader beforehand. The arms alternate in blocks; the first steps of every block are not counted,
so that batches the workers prefetched while the other arm ran are not counted as free.

The ratio depends on the model: a faster model leaves the loader less time per batch, and on
a 2-core machine the workers share the cores with the model's threads. The loader's own
throughput (no model running) is printed too: it bounds the step rate of any model.

With ``--device-cache`` the data path is the device cache instead (``cache_on_device: true``):
the loader yields each batch's sample keys only, and the DataModule gathers the samples from
the fold's rows already on the device and augments them there in one resampling
(``transfer_batch_to_device`` and ``on_after_batch_transfer``, as Lightning calls them; here
the device is the CPU, so the assembly and augmentation share the cores with the model).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from benchmarks.common import (
    DUNET_DEMO,
    ONE_X,
    Options,
    Recipe,
    Result,
    Target,
    Workspace,
    model,
    seconds,
    workers_cpu_seconds,
)

MEASURE = "steps/s real loader ÷ one in-memory batch reused"


class _Batches:
    """Endless batches of a DataLoader, epoch after epoch (its workers persist)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.iterator: Iterator[Any] = iter(loader)

    def __next__(self) -> Any:
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)


class _Fetched:
    """The batches as a training step receives them, through Lightning's two batch hooks
    (with the device cache, this is where the batch is gathered and augmented)."""

    def __init__(self, dm: Any, batches: _Batches) -> None:
        self.dm, self.batches, self.device = dm, batches, torch.device("cpu")

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = self.dm.transfer_batch_to_device(next(self.batches), self.device, 0)
        return self.dm.on_after_batch_transfer(batch, 0)


def run(workspace: Workspace, options: Options) -> Result:
    blocks, steps, skipped = (2, 15, 3) if options.quick else (6, 40, 3)
    if not options.small_model:  # D-UNet's CPU steps take most of a second: fewer of them
        blocks, steps, skipped = (2, 3, 2) if options.quick else (2, 6, 2)
    recipe = Recipe(DUNET_DEMO)
    cached = {"cache_on_device": True} if options.device_cache else {}
    dm = workspace.atlas_module(ONE_X, recipe, **cached)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = _Fetched(dm, _Batches(loader))

    torch.manual_seed(0)
    net, net_name = model(recipe, options, in_channels=len(dm.geometry.context))
    net, loss = net.train(), recipe.loss()
    optimizer = recipe.optimizer()(net.parameters())

    def step(batch: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(net(batch["image"]), batch["label"].float()).backward()
        optimizer.step()

    fixed = next(batches)
    step(fixed)  # warm-up: allocator, kernels, the optimiser's state
    step(next(batches))

    timed = {"loader": 0.0, "memory": 0.0}
    worker_cpu = 0.0  # CPU seconds the workers spent while the loader arm ran
    for block in range(blocks):
        order = ("loader", "memory") if block % 2 == 0 else ("memory", "loader")
        for arm in order:
            cpu = workers_cpu_seconds()
            for k in range(skipped + steps):
                start = time.perf_counter()
                step(next(batches) if arm == "loader" else fixed)
                if k >= skipped:
                    timed[arm] += time.perf_counter() - start
            if arm == "loader":
                worker_cpu += workers_cpu_seconds() - cpu
    counted = blocks * steps
    loader_rate, memory_rate = counted / timed["loader"], counted / timed["memory"]

    # The loader alone: how many batches per second it can deliver with no model running.
    start, alone = time.perf_counter(), 4 * max(loader.num_workers, 1) * (2 if options.quick else 4)
    for _ in range(alone):
        next(batches)
    alone_rate = alone / (time.perf_counter() - start)
    workers, batch_size = loader.num_workers, loader.batch_size
    path = (
        "the device cache (batches gathered and augmented on the CPU)"
        if cached
        else (f"{workers} worker(s)")
    )
    del batches, loader

    return Result(
        "P1",
        MEASURE,
        loader_rate / memory_rate,
        Target("≥", 0.95),
        setup=(
            f"{recipe.label} data, loss and optimiser; {net_name}; "
            f"{dm.geometry.size[0]}×{dm.geometry.size[1]} "
            f"{len(dm.geometry.context)}-slice stacks, batch {batch_size}, {path}, "
            f"augmentation on; ATLAS R2.0 twin ({ONE_X} subjects); {blocks} "
            f"alternating blocks per arm, {steps} counted steps each"
        ),
        raw=[
            f"real loader: {loader_rate:.3f} steps/s ({seconds(1 / loader_rate)} per step)",
            f"one in-memory batch: {memory_rate:.3f} steps/s ({seconds(1 / memory_rate)} per step)",
        ],
        info=[
            f"the loader alone (no model): {alone_rate:.1f} batches/s = "
            f"{alone_rate * batch_size:.0f} samples/s with {path}, "
            f"{alone_rate / memory_rate:.1f}× this model's step rate",
            f"the workers' CPU time per batch while training: "
            f"{seconds(worker_cpu / (blocks * (skipped + steps)))} (on {os.cpu_count()} cores "
            f"shared with the model's {torch.get_num_threads()} threads)",
        ],
    )
