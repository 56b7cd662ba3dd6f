"""P4: memory at 10× the dataset ÷ at 1× (target ≤ 1.05).

The memory is ``RssAnon`` (anonymous pages: what a process owns, not the pages of the
memory-mapped cache that ``VmRSS`` also counts) of the main process plus every DataLoader
worker, read from ``/proc/<pid>/status`` after a number of training batches, with D-UNet's own
settings (``dunet.yaml``: 192×192 4-slice stacks, batch 36, 2 persistent workers, augmentation)
on ATLAS R2.0 twins of 5 and 50 subjects. Each measurement is a fresh process with the cache
built beforehand.

    python -m benchmarks.p4_memory --child DATA_DIR CACHE_DIR BATCHES   # one measurement, JSON out
"""

from __future__ import annotations

import json
import os
import sys
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
    children,
    median,
    pss_anon_kib,
    rss_anon_kib,
    spawn,
)

MEASURE = "RssAnon main + workers, 10× dataset ÷ 1×"


def _child(data_dir: str, cache_dir: str, batches: str) -> dict[str, object]:
    dm = atlas_module(Path(data_dir), Path(cache_dir), Recipe(DUNET))
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    iterator = iter(loader)
    for _ in range(int(batches)):
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(loader)
            next(iterator)
    processes = [os.getpid(), *children(os.getpid())]
    pss = [pss_anon_kib(p) for p in processes]
    memory = {
        "main": rss_anon_kib(processes[0]),
        "workers": [rss_anon_kib(p) for p in processes[1:]],
        "pss_anon": None if None in pss else sum(pss),  # type: ignore[arg-type]
        "slices": len(dm.train_rows),
    }
    del iterator
    return memory


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def run(workspace: Workspace, options: Options) -> Result:
    repeats, batches = (1, 10) if options.quick else (3, 25)
    sizes = (ONE_X, TEN_X)
    for subjects in sizes:  # build the caches (untimed)
        workspace.atlas_module(subjects, Recipe(DUNET))
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for repeat in range(repeats):
        for subjects in sizes if repeat % 2 == 0 else sizes[::-1]:
            runs[subjects].append(
                spawn(
                    __name__, str(workspace.atlas(subjects)), str(workspace.cache_dir), str(batches)
                )
            )
    totals = {n: median([r["main"] + sum(r["workers"]) for r in runs[n]]) for n in sizes}

    def detail(n: int) -> str:
        last = runs[n][-1]
        workers = " + ".join(_mib(w) for w in last["workers"])
        return (
            f"{n} subjects ({last['slices']:,} training slices): {_mib(totals[n])} "
            f"(last run: main {_mib(last['main'])} + workers {workers or 'none'})"
        )

    return Result(
        "P4",
        MEASURE,
        totals[TEN_X] / totals[ONE_X],
        Target("≤", 1.05),
        setup=(
            f"{Recipe(DUNET).label} settings; ATLAS R2.0 twins of {ONE_X} and {TEN_X} "
            f"subjects; after {batches} batches; median of {repeats} fresh process(es) per size"
        ),
        raw=[detail(n) for n in sizes]
        + [f"growth from 1× to 10×: {_mib(totals[TEN_X] - totals[ONE_X])}"],
        info=[_pss(runs)],
    )


def _pss(runs: dict[int, list[dict]]) -> str:
    """The same comparison in Pss_Anon, which counts the pages workers share with the parent once."""
    pss = {n: [r["pss_anon"] for r in rs] for n, rs in runs.items()}
    if any(v is None for values in pss.values() for v in values):
        return "Pss_Anon: not available on this kernel"
    totals = {n: median(values) for n, values in pss.items()}
    return (
        f"Pss_Anon summed over the same processes (copy-on-write pages shared with the "
        f"parent counted once): {_mib(totals[ONE_X])} at 1×, {_mib(totals[TEN_X])} at 10×, "
        f"ratio {totals[TEN_X] / totals[ONE_X]:.3f}"
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(_child(*sys.argv[2:5])))
