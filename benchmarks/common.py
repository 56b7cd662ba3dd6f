"""What every P-benchmark shares: the recipes, the synthetic twins, timing, memory and results.

Each ``benchmarks/p*.py`` exposes ``run(workspace, options) -> Result``; ``benchmarks/run.py``
calls them and prints the table. The recipes are read from ``experiments/`` (``dunet.yaml``,
with ``dunet_demo.yaml`` on top for the CPU-sized runs) so that the benchmarks measure what the
suite ships, not a copy of it. ``benchmarks/gpu.py`` uses the recipes, the twins, the results
and the device timing (synchronised clocks, the GPU's busy share from a profiler trace).

P1, P3 and P6 divide a fixed overhead by a step's length, so their ratio depends on the model.
By default they run the recipe's own network (the "same model" of docs/performance.md).
``--small-model`` runs a small stand-in (:func:`model`) instead, whose training step on a
2-core CPU lasts about as long as a GPU's D-UNet step (15–30 ms; docs/performance.md: 1,240
img/s, i.e. ~29 ms per batch of 36): a stress test of the fixed costs, far harsher than D-UNet
on a CPU, whose 64×64 steps take most of a second.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

# Dataset sizes of P4 and P5, in ATLAS R2.0 subjects: 5 is the fewest that fill D-UNet's 5 folds.
ONE_X = 5
TEN_X = 10 * ONE_X
DUNET = ("dunet.yaml",)  # D-UNet's own geometry: 192×192, 4-slice stacks, batch 36, 2 workers
DUNET_DEMO = ("dunet.yaml", "dunet_demo.yaml")  # the CPU demo: 64×64, batch 16, 1 worker
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- recipes ------------------------------------------------------------------------------
def _merge(base: Any, overlay: Any) -> Any:
    """LightningCLI's composition of two ``--config`` files (a new ``class_path`` replaces)."""
    if not (isinstance(base, dict) and isinstance(overlay, dict)):
        return overlay
    if "class_path" in overlay and overlay["class_path"] != base.get("class_path"):
        return overlay
    return {**base, **{k: _merge(base[k], v) if k in base else v for k, v in overlay.items()}}


def _class(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Recipe:
    """One experiment as ``lightning fit --config a.yaml --config b.yaml`` would compose it."""

    names: tuple[str, ...]

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for name in self.names:
            merged = _merge(merged, yaml.safe_load((EXPERIMENTS / name).read_text()))
        return merged

    @property
    def label(self) -> str:
        return " + ".join(self.names)

    def data_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The DataModule's ``init_args`` without ``data_dir``/``release`` (the twin's)."""
        from datamodules.transforms import Augmentation

        args = dict(self.config["data"]["init_args"])
        args.pop("data_dir", None)
        args.pop("release", None)
        if isinstance(args.get("augmentation"), dict):
            augmentation: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in args["augmentation"].items()
            }
            args["augmentation"] = Augmentation(**augmentation)
        return {**args, **overrides}

    def network(self, **overrides: Any) -> Any:
        """The recipe's network, with ``overrides`` of its ``init_args`` (e.g. no weights file)."""
        spec = self.config["model"]["init_args"]["net"]
        return _class(spec["class_path"])(**{**spec.get("init_args", {}), **overrides})

    def loss(self) -> Any:
        spec = self.config["model"]["init_args"]["loss"]
        return _class(spec["class_path"])(**spec.get("init_args", {}))

    def optimizer(self) -> Callable[..., Any]:
        spec = self.config["model"]["init_args"]["optimizer"]
        return functools.partial(_class(spec["class_path"]), **spec.get("init_args", {}))

    def module(self, net: Any, loss: Any) -> Any:
        """The recipe's module (``SegmentationModule`` or a subclass) around ``net`` and ``loss``."""
        args = {
            k: v
            for k, v in self.config["model"]["init_args"].items()
            if k not in ("net", "loss", "optimizer", "scheduler")
        }
        module = _class(self.config["model"]["class_path"])
        return module(net, loss, optimizer=self.optimizer(), scheduler=None, **args)

    def trainer_kwargs(self) -> dict[str, Any]:
        keep = ("precision", "log_every_n_steps", "accelerator", "devices")
        return {k: v for k, v in self.config.get("trainer", {}).items() if k in keep}


@dataclass(frozen=True)
class Options:
    """How the runner was asked to run.

    Attributes:
        quick: Fewer repetitions (about half the full run's time).
        small_model: P1, P3, P6 with a small stand-in instead of the recipe's network.
        device_cache: P1's data path is the device cache (``cache_on_device: true``: batches
            gathered and augmented where the model runs, no workers) instead of the workers.
    """

    quick: bool = False
    small_model: bool = False
    device_cache: bool = False


STANDIN_WIDTH = 16


def model(recipe: Recipe, options: Options, in_channels: int) -> tuple[nn.Module, str]:
    """The network of P1, P3 and P6 and how to name it in the output.

    The stand-in has the recipe network's contract (a K·C-channel stack in, lesion logits out)
    and is built from the suite's ``ConvNormAct``, with BatchNorm and dropout, so that buffers
    and the random stream are exercised like D-UNet's.
    """
    if not options.small_model:
        net = recipe.network()
        name = recipe.config["model"]["init_args"]["net"]["class_path"].rsplit(".", 1)[-1]
    else:
        from networks import ConvNormAct

        width = STANDIN_WIDTH
        net = nn.Sequential(
            ConvNormAct(2, in_channels, width),
            ConvNormAct(2, width, width),
            nn.Dropout2d(0.1),
            ConvNormAct(2, width, width),
            nn.Conv2d(width, 1, 1),
        )
        name = f"small stand-in net (3 conv-BN-ReLU layers of width {width}, dropout)"
    parameters = sum(p.numel() for p in net.parameters())
    return net, f"{name}, {parameters:,} parameters"


# -- synthetic twins and their caches ------------------------------------------------------
def atlas_module(data_dir: Path, cache_dir: Path, recipe: Recipe, **overrides: Any) -> Any:
    """The recipe's ``ATLASDataModule`` on an R2.0 twin (nothing is read or built yet)."""
    from datamodules import ATLASDataModule

    return ATLASDataModule(
        data_dir=str(data_dir),
        release="R2.0",
        cache_dir=str(cache_dir),
        **recipe.data_kwargs(**overrides),
    )


TwinSize = Literal["full", "tiny"]
# Full-size twins keep the folder names and labels they had before tiny ones existed.
_TWIN_SUFFIX: dict[TwinSize, str] = {"full": "", "tiny": "-tiny"}
_TWIN_LABEL: dict[TwinSize, str] = {"full": "", "tiny": " (tiny)"}


class Workspace:
    """Synthetic twins and caches in one folder, each written the first time it is asked for.

    Args:
        root: The folder (reused as is: a twin already there is not written again).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache_dir = root / "cache"
        self.setup_seconds: dict[str, float] = {}

    def atlas(self, subjects: int, size: TwinSize = "full") -> Path:
        """An ATLAS R2.0 twin with ``subjects`` training subjects (197×233×189 T1, gzipped;
        ``size="tiny"``: 40×47×38, for tests)."""
        root = self.root / f"atlas-{subjects}{_TWIN_SUFFIX[size]}"
        if not root.is_dir():
            from datamodules.synth.atlas import write_atlas_twin

            start = time.perf_counter()
            write_atlas_twin(root, "R2.0", subjects=subjects, seed=0, size=size)
            os.sync()  # no writeback of it while something is timed
            self.setup_seconds[f"ATLAS twin, {subjects} subjects{_TWIN_LABEL[size]}"] = (
                time.perf_counter() - start
            )
        return root

    def isles(self, cases: int, size: TwinSize = "full") -> Path:
        """An ISLES 2018 twin with ``cases`` training cases (256×256 slices, plain ``.nii``;
        ``size="tiny"``: 32×32, at most 4 slices a case, for tests)."""
        root = self.root / f"isles-{cases}{_TWIN_SUFFIX[size]}"
        if not root.is_dir():
            from datamodules.synth.isles2018 import write_isles2018_twin

            start = time.perf_counter()
            write_isles2018_twin(root, cases=cases, testing_cases=0, seed=0, size=size)
            os.sync()
            self.setup_seconds[f"ISLES twin, {cases} cases{_TWIN_LABEL[size]}"] = (
                time.perf_counter() - start
            )
        return root

    def atlas_module(self, subjects: int, recipe: Recipe, **overrides: Any) -> Any:
        """A fresh ``ATLASDataModule`` of the recipe on the twin, its cache built (untimed here)."""
        dm = atlas_module(self.atlas(subjects), self.cache_dir, recipe, **overrides)
        if not (dm.cache_path(dm.train_split) / "meta.json").is_file():
            start = time.perf_counter()
            dm.prepare_data()
            os.sync()
            self.setup_seconds[f"cache, {subjects} subjects, {recipe.label}"] = (
                time.perf_counter() - start
            )
        return dm


# -- timing -------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values)


def trimmed_mean(values: list[float], share: float = 0.05) -> float:
    """Mean without the ``share`` smallest and largest values (spikes from other processes)."""
    ordered = sorted(values)
    cut = int(len(ordered) * share)
    kept = ordered[cut : len(ordered) - cut] or ordered
    return sum(kept) / len(kept)


def seconds(value: float) -> str:
    """``12.3 µs``, ``4.56 ms`` or ``1.23 s``."""
    if abs(value) < 1e-3:
        return f"{value * 1e6:.1f} µs"
    if abs(value) < 1.0:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"


def _busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, steal excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


def workers_cpu_seconds() -> float:
    """CPU time of this process's live descendants (e.g. DataLoader workers), from /proc."""
    total = 0.0
    for pid in descendants(os.getpid()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / CLK_TCK  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def _own_seconds() -> float:
    """CPU time of this process and its children (reaped ones via ``os.times``, live ones via /proc)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + workers_cpu_seconds()


class CpuMeter:
    """Average number of cores used by *other* processes while the block runs."""

    def __enter__(self) -> CpuMeter:
        self._wall, self._busy, self._own = time.monotonic(), _busy_seconds(), _own_seconds()
        self.others = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.monotonic() - self._wall, 1e-9)
        others = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        self.others = max(others, 0.0) / wall


# -- device timing (benchmarks/gpu.py) ------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's kernels run after the host returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(
    arms: dict[str, Callable[[], None]], blocks: int, warmup: int, steps: int, device: torch.device
) -> dict[str, float]:
    """Seconds per step of each arm, in ``blocks`` alternating blocks (every other one in reverse
    order) of ``warmup`` uncounted and ``steps`` counted steps; the device is synchronised
    before every clock read."""
    totals = dict.fromkeys(arms, 0.0)
    names = list(arms)
    for block in range(blocks):
        for name in names if block % 2 == 0 else names[::-1]:
            for _ in range(warmup):
                arms[name]()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                arms[name]()
            synchronize(device)
            totals[name] += time.perf_counter() - start
    return {name: total / (blocks * steps) for name, total in totals.items()}


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end)`` intervals (overlapping ones counted once)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def kernel_seconds(trace: dict[str, Any]) -> float:
    """Seconds in which some CUDA kernel ran, from a ``torch.profiler`` Chrome trace (``ts``
    and ``dur`` in µs; kernels of several streams overlap)."""
    intervals = [
        (float(e["ts"]), float(e["ts"]) + float(e["dur"]))
        for e in trace.get("traceEvents", [])
        if str(e.get("cat", "")).lower() == "kernel" and "dur" in e
    ]
    return union_seconds(intervals) / 1e6


def gpu_busy_share(step: Callable[[], None], steps: int, device: torch.device) -> float | None:
    """The share of ``steps`` steps' wall time in which the GPU ran a kernel: the union of the
    kernels' intervals in a ``torch.profiler`` trace (CUDA activity only, the least host
    overhead) ÷ the synchronised wall time of the steps; ``None`` if the trace holds no kernel
    (a profiler without CUPTI)."""
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="strokeseg-trace-") as folder:
        path = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
    busy = kernel_seconds(trace)
    return busy / wall if busy > 0 else None


# -- fresh processes -------------------------------------------------------------------
def spawn(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m <module> --child ARGS`` in a fresh process; its last stdout line as JSON."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- memory -------------------------------------------------------------------------------
def rss_anon_kib(pid: int) -> int:
    """``RssAnon`` of a process in KiB (anonymous pages only: no mapped files, unlike VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no RssAnon line (kernel older than 4.5?)")


def pss_anon_kib(pid: int) -> int | None:
    """``Pss_Anon`` in KiB: anonymous pages, each shared one divided among its sharers (so the
    copy-on-write pages a worker shares with its parent are counted once over the processes)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith("Pss_Anon:")), None)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (e.g. DataLoader workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        try:
            found += descendants(child)
        except OSError:
            continue
    return found


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    op: Literal["≥", "≤"]
    bound: float

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == "≥" else value <= self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass
class Result:
    """One row of the table, with the numbers it came from.

    Attributes:
        key: ``"P1"`` … ``"P7"``.
        measure: What the ratio is, in a few words.
        value: The ratio, or ``None`` when not measured (``text`` then says why).
        target: The committed bound (``docs/performance.md``), or ``None``.
        setup: What it was measured on (recipe, grid, model, dataset sizes).
        raw: The measurements the ratio came from.
        info: Related figures printed for information (not part of the ratio).
        also_required: A second condition of the target (P3's bit-identical weights).
        text: Overrides the value column.
    """

    key: str
    measure: str
    value: float | None
    target: Target | str | None
    setup: str = ""
    raw: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    also_required: tuple[bool, str] | None = None
    text: str | None = None

    @property
    def passed(self) -> bool | None:
        if self.value is None or not isinstance(self.target, Target):
            return None
        ok = self.target.met(self.value)
        return ok and (self.also_required is None or self.also_required[0])

    def value_text(self) -> str:
        if self.text is not None:
            return self.text
        value = "—" if self.value is None else f"{self.value:.3f}"
        return value if self.also_required is None else f"{value}, {self.also_required[1]}"

    def target_text(self) -> str:
        if isinstance(self.target, Target) and self.also_required is not None:
            return f"{self.target}, weights bit-identical"
        return "—" if self.target is None else str(self.target)

    def pass_text(self) -> str:
        return {True: "pass", False: "MISS", None: "—"}[self.passed]
