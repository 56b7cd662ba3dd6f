"""P5: time to the first training batch at 10× the dataset ÷ at 1× (target ≤ 1.2).

The time runs from constructing the DataModule, through ``prepare_data`` and ``setup``, to the
first batch out of ``train_dataloader()`` (its workers started), with D-UNet's own settings
(``dunet.yaml``: 192×192 4-slice stacks, batch 36, 2 workers, augmentation) on ATLAS R2.0 twins
of 5 and 50 subjects. The caches are built beforehand (untimed), as on every run after the first;
each measurement is a fresh process (imports done before the clock starts), alternating sizes,
and the medians are compared.

    python -m benchmarks.p5_first_batch --child DATA_DIR CACHE_DIR   # one measurement, JSON out
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks.common import (
    DUNET,
    ONE_X,
    TEN_X,
    Options,
    Recipe,
    Result,
    Target,
    Workspace,
    atlas_module,
    median,
    seconds,
    spawn,
)

PHASES = ("construct", "prepare_data", "setup", "first batch")

MEASURE = "time to first batch, 10× dataset ÷ 1×"


def _child(data_dir: str, cache_dir: str) -> dict[str, float]:
    import datamodules.atlas  # noqa: F401  (Lightning, MONAI: imported before the clock, as by the CLI)

    recipe = Recipe(DUNET)
    recipe.data_kwargs()
    stamps = [time.perf_counter()]
    dm = atlas_module(Path(data_dir), Path(cache_dir), recipe)
    stamps.append(time.perf_counter())
    dm.prepare_data()
    stamps.append(time.perf_counter())
    dm.setup("fit")
    stamps.append(time.perf_counter())
    batches = iter(dm.train_dataloader())
    next(batches)
    stamps.append(time.perf_counter())
    del batches
    return {phase: b - a for phase, a, b in zip(PHASES, stamps[:-1], stamps[1:])}


def run(workspace: Workspace, options: Options) -> Result:
    repeats = 3 if options.quick else 6
    sizes = (ONE_X, TEN_X)
    for subjects in sizes:  # build the caches (untimed)
        workspace.atlas_module(subjects, Recipe(DUNET))
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for repeat in range(repeats):
        for subjects in sizes if repeat % 2 == 0 else sizes[::-1]:
            runs[subjects].append(
                spawn(__name__, str(workspace.atlas(subjects)), str(workspace.cache_dir))
            )
    totals = {n: median([sum(r.values()) for r in runs[n]]) for n in sizes}

    def phases(n: int) -> str:
        return ", ".join(f"{p} {seconds(median([r[p] for r in runs[n]]))}" for p in PHASES)

    return Result(
        "P5",
        MEASURE,
        totals[TEN_X] / totals[ONE_X],
        Target("≤", 1.2),
        setup=(
            f"{Recipe(DUNET).label} settings; ATLAS R2.0 twins of {ONE_X} and {TEN_X} "
            f"subjects, caches built; median of {repeats} fresh processes per size"
        ),
        raw=[f"{n} subjects: {seconds(totals[n])} ({phases(n)})" for n in sizes],
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(_child(*sys.argv[2:4])))
