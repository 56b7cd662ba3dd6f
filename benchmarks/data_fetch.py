"""P2 of shared/specs/performance.md: fetch one training sample vs. decode its NIfTI sources.

    python benchmarks/data_fetch.py [--data data/isles2018_twin] [--repeats 200]

Prints the median time to (a) fetch one cached training slice from ``SliceDataset`` (what the
training loop does), (b) the same with the paper's augmentation, and (c) decode the case's
source ``.nii`` files with nibabel (what a loader without a cache would do per sample), and
the ratios. Needs an ISLES 2018 tree (e.g. the synthetic twin written by ``make twin``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from datamodules import ISLES2018DataModule


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/isles2018_twin")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker

    with tempfile.TemporaryDirectory() as cache_dir:
        dm = ISLES2018DataModule(args.data, cache_dir=cache_dir, num_workers=0)
        dm.prepare_data()
        dm.setup("fit")
        loader = dm.train_dataloader()
        plain = type(loader.dataset)(loader.dataset.cache, loader.dataset.rows)
        augmented = loader.dataset
        rng = np.random.default_rng(0)
        index = lambda: int(rng.integers(len(plain)))  # noqa: E731
        plain[0]  # open the memory maps once, as a worker does
        fetch = _median_seconds(lambda: plain[index()], args.repeats)
        fetch_aug = _median_seconds(lambda: augmented[index()], max(args.repeats // 4, 10))
        cache = dm.caches["TRAINING"]
        sources = [Path(p) for p in cache.meta["sources"][0]]
        channel_files = sources[: len(dm.hparams.channels)]
        decode = _median_seconds(
            lambda: [np.asarray(nib.load(str(p), mmap=False).dataobj) for p in channel_files],
            max(args.repeats // 20, 5),
        )
    print(f"{'fetch one cached training slice (5 channels)':<52}{fetch * 1e6:10.1f} µs")
    print(f"{'  ... with the paper augmentation':<52}{fetch_aug * 1e6:10.1f} µs")
    print(f"{'decode the case NIfTI files it comes from':<52}{decode * 1e6:10.1f} µs")
    print(f"P2 ratio fetch / decode: 1/{decode / fetch:.0f}   (target ≤ 1/500)")
    print(f"   with augmentation:    1/{decode / fetch_aug:.0f}")


if __name__ == "__main__":
    main()
