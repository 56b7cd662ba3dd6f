"""P2: fetch one preprocessed training sample ÷ a plain copy of the same bytes (target ≤ 1.5).

The sample is ``dataset[i]`` of the training DataLoader's dataset with augmentation off: D-UNet's
4×192×192 float32 stack and its 1×192×192 uint8 label, read from the memory-mapped cache. The
reference is ``array.copy()`` of an equally large window at a random position of an in-memory
array as large as the cache's arrays: a fresh buffer, as a sample is, read from memory the CPU
caches do not hold, as a random sample's rows are (the L3 cache is tens of MB, the cache file
over a hundred). Both are timed alternately over random indices, after every page of the cache
has been touched in this process (a training worker's steady state: the file in the page cache
and mapped). A copy of the same hot window each time and ``np.copyto`` into a preallocated
buffer are shown for information.

For information it also times the ISLES 2018 sample (5×256×256, the paper's five channels) and
the decode of the NIfTI files a sample's case comes from (the old "1/500 of a decode" figure).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from benchmarks.common import (
    DUNET,
    ONE_X,
    Options,
    Recipe,
    Result,
    Target,
    Workspace,
    median,
    seconds,
)

ISLES_CASES = 6

MEASURE = "fetch one training sample ÷ copy of the same bytes"


@dataclass(frozen=True)
class _Fetch:
    shapes: str
    nbytes: int
    pool: int  # bytes of the in-memory array the reference copies from
    fetch: float  # median seconds of dataset[i]
    copy: float  # ... of array.copy() of nbytes at a random position of the pool
    hot: float  # ... of array.copy() of the same nbytes every time (CPU-cache hot)
    copyto: float  # ... of np.copyto of the same nbytes into a preallocated buffer
    rows: float  # ... of one copy of the sample's context rows straight from the memory map
    decode: float  # ... of decoding the case's source files
    sources: int

    def describe(self) -> str:
        return f"{self.shapes} = {self.nbytes:,} bytes"


def _warm(cache: Any) -> None:
    """Touch every page of the cache's memory maps, as a worker has after its first epoch."""
    for array in (cache.images, cache.labels):
        for start in range(0, len(array), 64):
            np.asarray(array[start : start + 64]).max()


def _measure(dm: Any, samples: int, decodes: int) -> _Fetch:
    """Median times of ``dataset[i]`` and of a copy of as many bytes, alternated; the decode."""
    dm.prepare_data()
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    _warm(dataset.cache)
    first = dataset[0]
    nbytes = sum(t.numel() * t.element_size() for t in first.values())
    windows = (dataset.cache.images.nbytes + dataset.cache.labels.nbytes) // nbytes
    pool = np.full(windows * nbytes, 1, dtype=np.uint8)  # every page resident
    target = np.empty(nbytes, dtype=np.uint8)
    rng = np.random.default_rng(0)
    fetch, copy, hot, copyto, rows = [], [], [], [], []
    for index, other in rng.integers(len(dataset), size=(samples, 2)):
        offset = int(rng.integers(windows)) * nbytes
        # Another random sample's rows, so that this read is as cold as the fetch's.
        first_row, stop_row = dataset.geometry.context_rows(
            int(dataset.rows[other]), int(dataset.first[other]), int(dataset.last[other])
        )
        start = time.perf_counter()
        dataset[int(index)]
        middle = time.perf_counter()
        pool[offset : offset + nbytes].copy()
        end = time.perf_counter()
        pool[:nbytes].copy()
        last = time.perf_counter()
        np.copyto(target, pool[:nbytes])
        mapped = time.perf_counter()
        np.array(dataset.cache.images[first_row:stop_row])
        rows.append(time.perf_counter() - mapped)
        fetch.append(middle - start)
        copy.append(end - middle)
        hot.append(last - end)
        copyto.append(mapped - last)

    case = int(dataset.cache.case_of_rows(dataset.rows[:1])[0])
    sources = dataset.cache.meta["sources"][case]
    decode = []
    for _ in range(decodes):
        start = time.perf_counter()
        for path in sources:
            np.asarray(nib.load(path).dataobj)
        decode.append(time.perf_counter() - start)
    shapes = " + ".join(
        f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in first.values()
    )
    return _Fetch(
        shapes,
        nbytes,
        pool.nbytes,
        median(fetch),
        median(copy),
        median(hot),
        median(copyto),
        median(rows),
        median(decode),
        len(sources),
    )


def run(workspace: Workspace, options: Options) -> Result:
    from datamodules import ISLES2018DataModule

    samples, decodes = (300, 3) if options.quick else (2000, 7)
    recipe = Recipe(DUNET)
    atlas = _measure(
        workspace.atlas_module(ONE_X, recipe, augmentation=None, num_workers=0), samples, decodes
    )
    isles_dm = ISLES2018DataModule(
        str(workspace.isles(ISLES_CASES)),
        num_workers=0,
        cache_dir=str(workspace.cache_dir),
        augmentation=None,
        num_folds=2,
    )
    isles = _measure(isles_dm, samples // 2, decodes)
    reaches = "reach" if isles.decode / isles.fetch >= 500 else "cannot reach"
    return Result(
        "P2",
        MEASURE,
        atlas.fetch / atlas.copy,
        Target("≤", 1.5),
        setup=(
            f"{recipe.label} geometry, augmentation off, ATLAS R2.0 twin ({ONE_X} subjects); "
            f"median over {samples} random indices, cache pages warm and mapped"
        ),
        raw=[
            f"sample {atlas.describe()}",
            f"dataset[i]: {seconds(atlas.fetch)}",
            f"array.copy() of as many bytes at a random position of a {atlas.pool / 2**20:.0f} MiB "
            f"in-memory array: {seconds(atlas.copy)}",
            f"(for information: the same window every time, CPU-cache hot: {seconds(atlas.hot)}; "
            f"np.copyto of it into a preallocated buffer: {seconds(atlas.copyto)}; one copy of "
            f"the sample's context rows straight out of the memory map, without stacking or "
            f"label: {seconds(atlas.rows)})",
        ],
        info=[
            f"ISLES 2018 default sample {isles.describe()}: dataset[i] {seconds(isles.fetch)}, "
            f"copy {seconds(isles.copy)}, ratio {isles.fetch / isles.copy:.2f} "
            f"(twin of {ISLES_CASES} cases)",
            f"decoding the ATLAS sample's {atlas.sources} gzipped 197×233×189 source files: "
            f"{seconds(atlas.decode)}, so a fetch is 1/{atlas.decode / atlas.fetch:,.0f} of a "
            "decode (gzipped ATLAS volumes can reach ≪ 1/500)",
            f"decoding the ISLES sample's {isles.sources} uncompressed 256×256×D source files: "
            f"{seconds(isles.decode)}, so a fetch is 1/{isles.decode / isles.fetch:,.0f} of a "
            f"decode (small uncompressed ISLES files {reaches} 1/500)",
        ],
    )
