"""P8: the batched random affine ÷ the per-sample one, on one batch on one device (target ≤ 0.5).

The batch is D-UNet's (``dunet.yaml``): 16 stacks of 4 × 192² slices with their labels, the
paper's ranges (rotation ±20°, shift 10 %, zoom 0.8–1.2, left-right flips, Keras' fixed order).
The per-sample path is what the loader's workers do today, one MONAI ``Affine`` per image and
label (:class:`datamodules.transforms.RandomOrderAffined`); the batched path draws the same
matrices from the same seeds and resamples the batch at once
(:class:`datamodules.batched_augmentation.BatchedAffine`). Both run in this process on the CPU
with the same threads; no data is read (the cost is the resampling, not the loading).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Options, Result, Target, Workspace, median, seconds
from datamodules.batched_augmentation import BatchedAffine
from datamodules.datasets import augment
from datamodules.transforms import Augmentation

MEASURE = "batched random affine ÷ per-sample, one batch"
BATCH, CHANNELS, SIZE = 16, 4, 192
DUNET_AUGMENTATION = Augmentation(20.0, 0.1, (0.8, 1.2), (1,), random_order=False)


def _batch() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(BATCH, CHANNELS, SIZE, SIZE, generator=generator)
    label = (image[:, :1] > 1.0).to(torch.uint8)
    return image, label, list(range(100, 100 + BATCH))


def per_sample(image: torch.Tensor, label: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    transform = DUNET_AUGMENTATION.transform()
    samples = [
        augment({"image": i, "label": m}, transform, seed)
        for i, m, seed in zip(image, label, seeds)
    ]
    return torch.stack([s["image"] for s in samples])


def _time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return median(times)


def run(workspace: Workspace, options: Options) -> Result:
    repeats = 5 if options.quick else 15
    image, label, seeds = _batch()
    batched = BatchedAffine(DUNET_AUGMENTATION)
    alone = _time(lambda: per_sample(image, label, seeds), repeats)
    together = _time(lambda: batched(image, label, seeds), repeats)
    return Result(
        "P8",
        MEASURE,
        together / alone,
        Target("≤", 0.5),
        setup=(
            f"D-UNet's augmentation on {BATCH} stacks of {CHANNELS}×{SIZE}² + labels, CPU, "
            f"{torch.get_num_threads()} threads; median of {repeats}"
        ),
        raw=[f"per-sample: {seconds(alone)}", f"batched: {seconds(together)}"],
    )
