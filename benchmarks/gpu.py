"""GPU training benchmark of three recipes: the data path, bf16, memory layout, busy share.

    python benchmarks/gpu.py [--tiny] [--device cuda|cpu] [--only dunet,pspnet,unet3d]
                             [--compile] [--steps N] [--json FILE] [--workdir DIR]
    make bench-gpu                                                   (the same, defaults)

Three networks, each built from its recipe in ``experiments/`` with the recipe's data settings,
loss and optimiser: D-UNet (``dunet.yaml``: 4-slice stacks of 192², batch 16), PSPNet-101
(``pspnet_focal.yaml``: 5 maps of 256², batch 8; no VOC weights file is read, so the whole
network trains from random initialisation, as in ``pspnet_scratch_focal.yaml``) and the
modified 3D U-Net (``unet3d_omarov.yaml``: F = 64, one 5×32×128² volume per batch). The data
are synthetic twins (:class:`benchmarks.common.Workspace`): ATLAS R2.0 at 197×233×189 (5
subjects, the fewest that fill the recipe's 5 folds) and ISLES 2018 at 256² (12 cases of 8
patients).

A step is :class:`~lightning_modules.SegmentationModule`'s training step without a Trainer:
forward, the recipe's loss (with an auxiliary head's term and the kernel L2 where the recipe
has them), backward, the recipe's optimiser. Per network:

- **P1g**: steps/s with the real data path ÷ steps/s reusing one batch already on the device.
  The real path is the DataModule's own ``train_dataloader()`` → ``transfer_batch_to_device`` →
  ``on_after_batch_transfer``, in two variants: (a) the loader's workers (the recipe's
  ``num_workers``; ``augment_on_device: true`` on a GPU, so the random affine runs batched on
  the device; on the CPU the workers augment), (b) ``cache_on_device: true`` (the fold's rows
  copied to the device once, batches gathered and augmented there from keys). Target ≥ 0.95,
  docs/performance.md's P1.
- **P7**: bf16-mixed ÷ fp32 step time (``torch.autocast`` bf16 around forward and loss, as
  Lightning's ``bf16-mixed``; target ≤ 0.77 in 2D and ≤ 0.5 in 3D, docs/performance.md's AMP
  speed-ups of 1.3× and 2×); ``channels_last`` ÷ default for the 2D networks (fp32, the
  recipes' precision; bf16 beside it); ``torch.compile`` ÷ eager with ``--compile`` (the
  compilation's time printed apart). All on one batch on the device.
- images per second in training (2D: slices, 3D: volumes; fp32, real data through the workers),
  the peak GPU memory of fp32 training (``torch.cuda.max_memory_allocated`` over the P1g arms,
  the device cache included) and the share of the step the GPU was busy: the union of the CUDA
  kernels' intervals in a ``torch.profiler`` trace of a few real-data steps ÷ their wall time
  (profiling adds a little host time: a slight underestimate).

The arms of a measurement alternate in blocks; the first steps of a block are not counted (the
batches the workers prefetched meanwhile, the allocator), and the device is synchronised before
every clock read. ``--tiny`` runs the same code on tiny twins with narrow networks (32² slices,
one step per arm, one thread on the CPU): a check that every arm runs, not a measurement
(tests/benchmarks/test_bench_gpu.py runs it on the CPU). The full run takes about 2 minutes on
one H200, twins included; ``--compile`` adds the three compilations (a few minutes). On the
CPU the full sizes take hours. A missed target prints MISS and the exit status stays 0 (1 if a
network's benchmark crashed, 2 for a wrong option).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__":  # tqdm reads it when imported; a process importing this keeps its own
    os.environ.setdefault("TQDM_DISABLE", "1")  # the cache builder's progress bars

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ONE_X,
    Recipe,
    Result,
    Target,
    TwinSize,
    Workspace,
    alternate,
    atlas_module,
    gpu_busy_share,
    seconds,
    synchronize,
)

PROGRAM = "benchmarks/gpu.py"
ISLES_CASES = 12  # 8 patients for the recipes' 5 folds: ~55 training slices, ~10 volumes
GIB = 2**30
DataPath = Literal["workers", "device cache"]


# -- what is measured ---------------------------------------------------------------------
@dataclass(frozen=True)
class Network:
    """One benchmarked recipe and how ``--tiny`` shrinks it.

    Attributes:
        label: The name printed in the table.
        recipe: The experiment files, composed as ``lightning fit --config …`` would.
        dataset: The twin its DataModule reads.
        spatial_dims: 2 (slices or slice stacks) or 3 (volumes).
        amp_target: The bound of bf16-mixed ÷ fp32 step time.
        net: ``init_args`` of the network that differ from the recipe in every run.
        data: ``init_args`` of the DataModule that differ from the recipe in every run.
        tiny_net: Further ``init_args`` of the network with ``--tiny``.
        tiny_data: ``init_args`` of the DataModule with ``--tiny``.
    """

    label: str
    recipe: tuple[str, ...]
    dataset: Literal["atlas", "isles"]
    spatial_dims: Literal[2, 3]
    amp_target: float
    net: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    tiny_net: dict[str, Any] = field(default_factory=dict)
    tiny_data: dict[str, Any] = field(default_factory=dict)


NETWORKS: dict[str, Network] = {
    "dunet": Network(
        "D-UNet",
        ("dunet.yaml",),
        "atlas",
        2,
        0.77,
        data={"batch_size": 16},  # P8's D-UNet batch, as Issue 16 sizes it (the recipe: 36)
        # The tiny R2.0 twin's slices are 47×40: no crop, resized to 32² (D-UNet needs ÷16).
        tiny_data={"crop": None, "image_size": 32, "batch_size": 2},
    ),
    "pspnet": Network(
        "PSPNet-101",
        ("pspnet_focal.yaml",),
        "isles",
        2,
        0.77,
        net={"pretrained_weights": None},  # no VOC weights file: random initialisation
        tiny_net={"backbone_depth": 18},
        tiny_data={"batch_size": 2},  # ≥ 2: the pyramid's 1×1 bin has BatchNorm
    ),
    "unet3d": Network(
        "modified 3D U-Net",
        ("unet3d_omarov.yaml",),
        "isles",
        3,
        0.5,
        tiny_net={"base_width": 4},
        tiny_data={"image_size": 32, "depth": 16},
    ),
}
P1G_TARGET = Target("≥", 0.95)


@dataclass(frozen=True)
class Timing:
    """How many steps each measurement takes.

    Attributes:
        steps: Counted steps per arm and block.
        blocks: Blocks per arm (the arms alternate, in reverse order every other block).
        data_warmup: Uncounted steps at the start of a real-data block: more than the batches
            the workers prefetched while another arm ran (2 per worker).
        warmup: Uncounted steps at the start of a one-batch block.
        profiled: Real-data steps in the profiler trace (GPU only).
        max_workers: Cap on the recipe's ``num_workers`` (``None``: the recipe's).
    """

    steps: int
    blocks: int
    data_warmup: int
    warmup: int
    profiled: int
    max_workers: int | None


def timing(tiny: bool, steps: int | None) -> Timing:
    """The full run's timing, or ``--tiny``'s (one step per arm, one worker: a check that
    every arm runs, in seconds on 2 CPU cores)."""
    if tiny:
        return Timing(steps or 1, 1, 0, 0, 2, max_workers=1)
    return Timing(steps or 20, 2, 5, 2, 5, max_workers=None)


# -- the real data paths ------------------------------------------------------------------
class _Batches:
    """Endless batches of a DataLoader, the sampler told each new epoch as Lightning tells it
    (the workers persist)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epoch = 0
        self.iterator: Iterator[Any] = iter(loader)

    def __next__(self) -> Any:
        try:
            return next(self.iterator)
        except StopIteration:
            self.epoch += 1
            self.loader.sampler.set_epoch(self.epoch)
            self.iterator = iter(self.loader)
            return next(self.iterator)


class DataPaths:
    """A recipe's two real data paths to one device, each its own DataModule on the twin.

    ``"workers"``: the loader's worker processes read (and, off a GPU, augment) the samples;
    ``"device cache"``: the loader yields keys, the batch is gathered and augmented on the
    device. Both give batches as the training step receives them.

    Args:
        network: The benchmarked recipe.
        workspace: Where the twin and the cache are (written the first time).
        size: The twin's size.
        device: The training device.
        max_workers: Cap on the recipe's ``num_workers`` (``None``: the recipe's).
    """

    def __init__(
        self,
        network: Network,
        workspace: Workspace,
        size: TwinSize,
        device: torch.device,
        max_workers: int | None,
    ) -> None:
        recipe = Recipe(network.recipe)
        self.device = device
        self.workers = int(recipe.data_kwargs()["num_workers"])
        if max_workers is not None:
            self.workers = min(self.workers, max_workers)
        on_gpu = device.type == "cuda"
        self.modules: dict[DataPath, Any] = {
            "workers": _datamodule(
                network, workspace, size, num_workers=self.workers, augment_on_device=on_gpu
            ),
            "device cache": _datamodule(network, workspace, size, cache_on_device=True),
        }
        # The device cache goes where transfer_batch_to_device sends the first batch, in
        # float32 without a Trainer (the fp32 arms' dtype).
        self._batches = {path: _Batches(dm.train_dataloader()) for path, dm in self.modules.items()}

    def next(self, path: DataPath) -> dict[str, torch.Tensor]:
        """The next training batch of ``path``, on the device and augmented."""
        dm = self.modules[path]
        batch = dm.transfer_batch_to_device(next(self._batches[path]), self.device, 0)
        return cast(dict[str, torch.Tensor], dm.on_after_batch_transfer(batch, 0))

    def close(self) -> None:
        """Stop the workers (none of their processes runs beside the next measurements) and
        free the device cache."""
        self._batches.clear()
        self.modules.clear()
        gc.collect()


def _datamodule(network: Network, workspace: Workspace, size: TwinSize, **overrides: Any) -> Any:
    """The recipe's DataModule on its twin, its cache built and its fold split."""
    from datamodules import ISLES2018DataModule

    recipe = Recipe(network.recipe)
    data = {**network.data, **(network.tiny_data if size == "tiny" else {}), **overrides}
    if network.dataset == "atlas":
        dm = atlas_module(workspace.atlas(ONE_X, size), workspace.cache_dir, recipe, **data)
    else:
        dm = ISLES2018DataModule(
            data_dir=str(workspace.isles(ISLES_CASES, size)),
            cache_dir=str(workspace.cache_dir),
            **recipe.data_kwargs(**data),
        )
    start = time.perf_counter()
    dm.prepare_data()
    spent = time.perf_counter() - start
    if spent > 0.5:  # a build, not the check of an existing cache
        workspace.setup_seconds[f"cache, {network.label}"] = spent
    dm.setup("fit")
    return dm


# -- the step -----------------------------------------------------------------------------
class _Step:
    """One training step of the recipe's ``SegmentationModule`` (its ``training_losses``: main
    and auxiliary loss, kernel L2; then the optimiser) without logging; ``bf16`` autocasts
    forward and loss, as ``bf16-mixed`` does.

    Args:
        module: The module, its network on the device, in train mode.
        optimizer: The recipe's optimiser factory.
        channels_last: Hand the network its input in ``channels_last`` layout.
    """

    def __init__(
        self,
        module: Any,
        optimizer: Callable[..., torch.optim.Optimizer],
        channels_last: bool = False,
    ) -> None:
        self.module = module
        self.optimizer = optimizer([p for p in module.parameters() if p.requires_grad])
        self.channels_last = channels_last
        self.device_type = next(module.parameters()).device.type

    def __call__(self, batch: dict[str, torch.Tensor], bf16: bool = False) -> None:
        if self.channels_last:
            image = batch["image"].contiguous(memory_format=torch.channels_last)
            batch = {**batch, "image": image}
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = self.module.training_losses(batch)["loss"]
        loss.backward()
        self.optimizer.step()


def _channels_last(net: nn.Module) -> nn.Module:
    """The 2D layers' weights in ``channels_last`` (D-UNet's 3D stream keeps its 5-D kernels,
    for which ``Module.to(memory_format=torch.channels_last)`` raises)."""
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return net


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


# -- one network --------------------------------------------------------------------------
@dataclass
class Times:
    """What one network's measurements gave (seconds per step unless said otherwise)."""

    batch_size: int
    workers: int
    data: dict[str, float]
    variants: dict[str, float]
    busy: dict[str, float | None]
    peak_gib: dict[str, float | None]
    compile_seconds: float | None


@dataclass
class Measured:
    """One network's rows, and the numbers behind them (for ``--json``)."""

    key: str
    label: str
    setup: str
    results: list[Result]
    numbers: dict[str, Any]
    error: str | None = None


def measure(
    key: str, workspace: Workspace, device: torch.device, plan: Timing, tiny: bool, compile_: bool
) -> Measured:
    """Every figure of one network (see the module docstring)."""
    network = NETWORKS[key]
    recipe = Recipe(network.recipe)
    paths = DataPaths(network, workspace, "tiny" if tiny else "full", device, plan.max_workers)
    torch.manual_seed(0)
    net = recipe.network(**network.net, **(network.tiny_net if tiny else {})).to(device).train()
    loss, optimizer = recipe.loss().to(device), recipe.optimizer()

    def stepper(network_: nn.Module, channels_last: bool = False) -> _Step:
        return _Step(recipe.module(network_, loss).to(device), optimizer, channels_last)

    step = stepper(net)
    fixed = paths.next("workers")
    peak: dict[str, float | None] = {}

    # P1g: the real data paths against one batch on the device (fp32, the recipes' precision).
    _reset_peak(device)
    step(fixed)  # the first step: the allocator, the kernels' setup, the optimiser's state

    def real(path: DataPath) -> Callable[[], None]:
        return lambda: step(paths.next(path))

    arms = {"one batch": lambda: step(fixed), "workers": real("workers")}
    arms["device cache"] = real("device cache")
    data = alternate(arms, plan.blocks, plan.data_warmup, plan.steps, device)
    peak["fp32 training"] = _peak_gib(device)
    busy: dict[str, float | None] = {"workers": None, "device cache": None}
    if device.type == "cuda":
        for path in busy:
            for _ in range(plan.data_warmup):
                arms[path]()
            busy[path] = gpu_busy_share(arms[path], plan.profiled, device)
    paths.close()

    # P7: precision, memory layout and compilation, on the one batch.
    _reset_peak(device)
    arms = {"fp32": lambda: step(fixed), "bf16-mixed": lambda: step(fixed, bf16=True)}
    if network.spatial_dims == 2:
        laid_out = stepper(_channels_last(copy.deepcopy(net)), channels_last=True)
        arms["channels_last fp32"] = lambda: laid_out(fixed)
        arms["channels_last bf16-mixed"] = lambda: laid_out(fixed, bf16=True)
    compile_seconds = None
    if compile_:
        compiled = stepper(cast(nn.Module, torch.compile(copy.deepcopy(net))))
        synchronize(device)
        start = time.perf_counter()
        compiled(fixed)  # compiles forward and backward
        synchronize(device)
        compile_seconds = time.perf_counter() - start
        arms["compiled fp32"] = lambda: compiled(fixed)
    variants = alternate(arms, plan.blocks, plan.warmup, plan.steps, device)
    peak["precision, layout, compile arms"] = _peak_gib(device)

    times = Times(
        int(fixed["image"].shape[0]), paths.workers, data, variants, busy, peak, compile_seconds
    )
    twin = (
        f"ATLAS R2.0 twin, {ONE_X} subjects"
        if network.dataset == "atlas"
        else f"ISLES 2018 twin, {ISLES_CASES} cases"
    )
    parameters = sum(p.numel() for p in net.parameters())
    shape = "×".join(str(n) for n in fixed["image"].shape[1:])
    setup = (
        f"{recipe.label}; {type(net).__name__}, {parameters:,} parameters; {shape} "
        f"{_unit(network)}, batch {times.batch_size}; {twin}{' (tiny)' if tiny else ''}; "
        f"{plan.blocks} block(s) per arm of {plan.steps} counted step(s)"
    )
    if tiny:
        setup += (
            f"; --tiny: network {network.tiny_net or 'as the recipe'}, data {network.tiny_data}"
        )
    numbers = {"parameters": parameters, **vars(times)}
    return Measured(key, network.label, setup, rows(network, times, device), numbers)


def _unit(network: Network) -> str:
    return "slices" if network.spatial_dims == 2 else "volumes"


def _share(value: float | None) -> str:
    return "n/a (no kernel traced)" if value is None else f"{value:.3f}"


def rows(network: Network, times: Times, device: torch.device) -> list[Result]:
    """The table's rows of one network."""
    data, variants, unit = times.data, times.variants, _unit(network)
    on_gpu = device.type == "cuda"
    augmented = "on the device" if on_gpu else "in the workers"
    results = [
        Result(
            "P1g.a",
            "steps/s real data, workers ÷ one batch on the device",
            data["one batch"] / data["workers"],
            P1G_TARGET,
            raw=[
                f"one batch on the device: {seconds(data['one batch'])} per step",
                f"real data through {times.workers} worker(s), augmented {augmented}: "
                f"{seconds(data['workers'])} per step",
            ],
        ),
        Result(
            "P1g.b",
            "steps/s real data, device cache ÷ one batch on the device",
            data["one batch"] / data["device cache"],
            P1G_TARGET,
            raw=[
                f"real data from the device cache, augmented on the device: "
                f"{seconds(data['device cache'])} per step"
            ],
        ),
        Result(
            "P7.amp",
            "bf16-mixed ÷ fp32 step time",
            variants["bf16-mixed"] / variants["fp32"],
            Target("≤", network.amp_target),
            raw=[f"{name}: {seconds(variants[name])} per step" for name in ("fp32", "bf16-mixed")],
        ),
    ]
    if network.spatial_dims == 2:
        bf16 = variants["channels_last bf16-mixed"] / variants["bf16-mixed"]
        results.append(
            Result(
                "P7.cl",
                "channels_last ÷ default step time (fp32)",
                variants["channels_last fp32"] / variants["fp32"],
                None,
                raw=[
                    f"{name}: {seconds(variants[name])} per step"
                    for name in ("channels_last fp32", "channels_last bf16-mixed")
                ],
                info=[f"channels_last ÷ default under bf16-mixed: {bf16:.3f}"],
            )
        )
    if times.compile_seconds is not None:
        results.append(
            Result(
                "P7.compile",
                "torch.compile ÷ eager step time (fp32)",
                variants["compiled fp32"] / variants["fp32"],
                None,
                raw=[f"compiled fp32: {seconds(variants['compiled fp32'])} per step"],
                info=[
                    f"compiling (the first step's forward and backward): {times.compile_seconds:.1f} s"
                ],
            )
        )
    rate = times.batch_size / data["workers"]
    results.append(
        Result(
            "img/s",
            f"{unit}/s in training (fp32, real data, workers)",
            rate,
            None,
            text=f"{rate:,.1f}",
            info=[
                f"device cache: {times.batch_size / data['device cache']:,.1f} {unit}/s; one "
                f"batch, bf16-mixed: {times.batch_size / variants['bf16-mixed']:,.1f} {unit}/s"
            ],
        )
    )
    memory, others = (
        times.peak_gib["fp32 training"],
        times.peak_gib["precision, layout, compile arms"],
    )
    results.append(
        Result(
            "memory",
            "peak GPU memory, fp32 training (GiB)",
            memory,
            None,
            text="n/a" if memory is None else f"{memory:.2f} GiB",
            info=[
                f"the bf16 / layout / compile arms (with copies of the network): {others:.2f} GiB"
            ]
            if others is not None
            else [],
        )
    )
    share = times.busy["workers"]
    results.append(
        Result(
            "busy",
            "share of the step the GPU ran kernels (real data, workers)",
            share,
            None,
            text=None if share is not None else _share(share) if on_gpu else "n/a",
            info=[f"device cache: {_share(times.busy['device cache'])}"] if on_gpu else [],
        )
    )
    return results


# -- the command --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the problem (no usage banner before it)."""

    def error(self, message: str) -> NoReturn:
        print(f"{PROGRAM}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _fail(message: str) -> NoReturn:
    print(f"{PROGRAM}: {message}", file=sys.stderr)
    raise SystemExit(2)


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], torch.device]:
    parser = _Parser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny twins and networks (a check)")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available"
    )
    parser.add_argument(
        "--only", default=",".join(NETWORKS), help=f"comma-separated subset of {','.join(NETWORKS)}"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--steps", type=int, default=None, help="counted steps per arm and block")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the twins and caches here and reuse them (default: a temporary folder)",
    )
    args = parser.parse_args(argv)
    keys = [key.strip().lower() for key in args.only.split(",") if key.strip()]
    unknown = [key for key in keys if key not in NETWORKS]
    if unknown or not keys:
        _fail(
            f"--only {args.only!r}: unknown network {', '.join(unknown) or '(none given)'}; use "
            f"a comma-separated subset of {','.join(NETWORKS)}, e.g. --only dunet,unet3d."
        )
    if args.steps is not None and args.steps < 1:
        _fail(f"--steps {args.steps}: give at least 1 counted step per arm.")
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        _fail(
            f"--device cuda: torch {torch.__version__} sees no CUDA device (a CPU build, or "
            "no GPU visible); use --device cpu."
        )
    return args, list(dict.fromkeys(keys)), torch.device(name)


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def setup_lines(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on: GPU, torch, CUDA, cuDNN and the fp32 math settings."""
    lines = {"device": str(device), "torch": torch.__version__}
    lines["cpus"] = f"{os.cpu_count()}, {torch.get_num_threads()} intra-op threads"
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        lines["gpu"] = (
            f"{properties.name}, {properties.total_memory / GIB:.1f} GiB, compute capability "
            f"{properties.major}.{properties.minor}"
        )
        lines["cuda"] = str(torch.version.cuda)
        lines["cudnn"] = str(torch.backends.cudnn.version())
        lines["fp32 math"] = (
            f"TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, TF32 "
            f"matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, "
            f"cudnn.benchmark {'on' if torch.backends.cudnn.benchmark else 'off'}"
        )
    else:
        lines["gpu"] = "none (CPU run: no GPU memory or busy share)"
        lines["cuda"] = str(torch.version.cuda) if torch.version.cuda else "none (CPU build)"
    return lines


def _table(measured: list[Measured]) -> str:
    lines = ["| network | # | measure | value | target | pass |", "|---|---|---|---|---|---|"]
    for m in measured:
        lines += [
            f"| {m.label} | {r.key} | {r.measure} | {r.value_text()} | {r.target_text()} | "
            f"{r.pass_text()} |"
            for r in m.results
        ]
    return "\n".join(lines)


def _details(m: Measured) -> str:
    lines = [f"**{m.label}**: {m.setup}"]
    for r in m.results:
        lines += [f"- {r.key}: {line}" for line in r.raw]
        lines += [f"- (info) {r.key}: {line}" for line in r.info]
    return "\n".join(lines)


def _crashed(key: str, error: Exception) -> Measured:
    text = f"ERROR: {type(error).__name__}: {error}".splitlines()[0][:100]
    result = Result("—", "the benchmark of this network", None, None, text=text)
    return Measured(key, NETWORKS[key].label, "", [result], {}, error=text)


def _json(measured: list[Measured], setup: dict[str, str], args: argparse.Namespace) -> str:
    networks = {
        m.key: {
            "label": m.label,
            "setup": m.setup,
            "error": m.error,
            "rows": {
                r.key: {
                    "measure": r.measure,
                    "value": r.value,
                    "target": r.target_text(),
                    "pass": r.passed,
                    "text": r.value_text(),
                }
                for r in m.results
            },
            "numbers": m.numbers,
        }
        for m in measured
    }
    options = {"tiny": args.tiny, "compile": args.compile, "steps": args.steps}
    return json.dumps({"setup": setup, "options": options, "networks": networks}, indent=1)


def main(argv: list[str] | None = None) -> int:
    args, keys, device = _parse(argv)
    _quiet()
    if args.tiny and device.type == "cpu":
        # A check, not a measurement: tiny tensors gain nothing from a second thread, which on
        # a busy machine only waits at every barrier (5× slower steps on 2 shared cores).
        torch.set_num_threads(1)
    started = time.perf_counter()
    setup = setup_lines(device)
    print(
        f"# strokeseg GPU benchmark{' (--tiny: a check, not a measurement)' if args.tiny else ''}"
    )
    print()
    for name, line in setup.items():
        print(f"{name}: {line}", flush=True)
    plan = timing(args.tiny, args.steps)
    if device.type == "cpu" and not args.tiny:
        print(
            f"{PROGRAM}: NOTE: full sizes on the CPU take hours (D-UNet's batch of 16 stacks "
            "of 4×192² alone takes seconds a step); --tiny checks that the benchmark runs.",
            file=sys.stderr,
            flush=True,
        )
    measured: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="strokeseg-bench-gpu-") as scratch:
        root = args.workdir if args.workdir is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        workspace = Workspace(root)
        for key in keys:
            print(f"running {key} ...", file=sys.stderr, flush=True)
            try:
                measured.append(measure(key, workspace, device, plan, args.tiny, args.compile))
            except Exception as error:  # reported; the other networks still run
                traceback.print_exc()
                measured.append(_crashed(key, error))
            gc.collect()  # the network, its optimiser state and the device cache
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print()
    print(_table(measured))
    print("\n## Where the numbers come from\n")
    print("\n\n".join(_details(m) for m in measured if m.error is None))
    if workspace.setup_seconds:
        made = "; ".join(f"{what}: {seconds(s)}" for what, s in workspace.setup_seconds.items())
        print(f"\nTwins and caches (untimed by the ratios): {made}")
    print(f"\nTotal {time.perf_counter() - started:.0f} s.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(_json(measured, setup, args))
    return 1 if any(m.error for m in measured) else 0


if __name__ == "__main__":
    raise SystemExit(main())
