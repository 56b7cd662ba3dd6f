"""Measure the ratios P1–P6 and P8 of docs/performance.md in one run and print them as a table.

    python benchmarks/run.py [--only P2,P5] [--quick] [--small-model] [--device-cache]
                             [--workdir DIR]
    python -m benchmarks ...                                      (the same)

Every ratio divides two measurements taken in the same run, on synthetic twins written into a
temporary folder (ATLAS R2.0 at 197×233×189, ISLES 2018 at 256×256; no real data; ~2.5 GB of
disk). On 2 idle cores the full run takes about 3 minutes and ``--quick`` under 1.5, the twins
included; expect two to three times that on a busy machine. P1, P3 and P6 run the recipe's
D-UNet; ``--small-model`` runs them with a small stand-in whose steps are as short as a GPU's
(a stress test of the fixed per-step costs; the ratios are then harsher). ``--device-cache``
runs P1's data path through the device cache (``cache_on_device: true``) instead of the loader's
workers.
These are benchmarks, not tests: a missed target prints MISS and the exit status stays 0 (it
is 1 only if a benchmark crashed, 2 for a wrong option).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TQDM_DISABLE", "1")  # the cache builder's progress bars

from benchmarks import (  # noqa: E402
    p1_loader,
    p2_fetch,
    p3_lightning,
    p4_memory,
    p5_first_batch,
    p6_inference,
    p8_batched_augmentation,
)
from benchmarks.common import CpuMeter, Options, Result, Workspace, seconds  # noqa: E402

BENCHMARKS = {
    "P1": p1_loader,
    "P2": p2_fetch,
    "P3": p3_lightning,
    "P4": p4_memory,
    "P5": p5_first_batch,
    "P6": p6_inference,
    "P8": p8_batched_augmentation,
}
BUSY = 0.25  # cores used by other processes above which a ratio is flagged as noisy


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="comma-separated subset, e.g. P2,P5 (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~3 min)")
    parser.add_argument(
        "--small-model",
        action="store_true",
        help="P1, P3, P6 with a small stand-in net instead of the recipe's "
        "D-UNet: GPU-short steps, a stress test of fixed costs",
    )
    parser.add_argument(
        "--device-cache",
        action="store_true",
        help="P1 through the device cache (cache_on_device: true) instead of the workers",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the twins and caches here and reuse them (default: a "
        "temporary folder, deleted afterwards)",
    )
    args = parser.parse_args(argv)
    keys = [key.strip().upper() for key in args.only.split(",") if key.strip()]
    unknown = [key for key in keys if key not in BENCHMARKS]
    if unknown or not keys:
        print(
            f"benchmarks/run.py: --only {args.only!r}: unknown benchmark "
            f"{', '.join(unknown) or '(none given)'}; use a comma-separated subset of "
            f"{','.join(BENCHMARKS)}, e.g. --only P2,P5.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return args, keys


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _header(options: Options) -> str:
    import torch

    load = os.getloadavg()
    cores = os.cpu_count() or 1
    with CpuMeter() as now:  # the load average also counts work that has just finished
        time.sleep(1.0)
    lines = [
        "# strokeseg benchmarks: the ratios of docs/performance.md",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads "
        f"({torch.get_num_interop_threads()} inter-op), {cores} CPUs, CUDA "
        f"{'available' if torch.cuda.is_available() else 'not available'}; load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min); other processes "
        f"are using {now.others:.2f} cores right now"
        f"{'; --quick' if options.quick else ''}"
        f"{'; --small-model' if options.small_model else ''}"
        f"{'; --device-cache' if options.device_cache else ''}",
    ]
    if now.others > BUSY:
        lines.append(
            f"NOTE: other processes are using {now.others:.2f} of {cores} cores (load "
            f"average {load[0]:.2f}): absolute times are inflated and ratios noisier "
            "than on an idle machine (see 'other processes' under each benchmark)."
        )
    elif load[0] > 0.5:
        lines.append(
            f"NOTE: the load average ({load[0]:.2f} on {cores} cores) suggests other "
            "work, but nothing else is using the CPU right now (the load average also "
            "counts work that has just ended); see 'other processes' under each "
            "benchmark."
        )
    return "\n".join(lines)


def _p7() -> Result:
    import torch

    text = "n/a (no GPU)" if not torch.cuda.is_available() else "not measured here (by hand)"
    return Result(
        "P7",
        "GPU: AMP ÷ fp32 speedup, DDP weak scaling, MFU",
        None,
        "2D ≥ 1.3×, 3D ≥ 2×, scaling ≥ 0.95/GPU",
        text=text,
    )


def _table(results: list[Result]) -> str:
    rows = ["| # | measure | value | target | pass |", "|---|---|---|---|---|"]
    rows += [
        f"| {r.key} | {r.measure} | {r.value_text()} | {r.target_text()} | {r.pass_text()} |"
        for r in results
    ]
    return "\n".join(rows)


def _details(result: Result, others: float | None) -> str:
    lines = [f"**{result.key}**: {result.setup}" if result.setup else f"**{result.key}**"]
    lines += [f"- {line}" for line in result.raw]
    lines += [f"- (info) {line}" for line in result.info]
    if others is not None:
        flag = " (noisy)" if others > BUSY else ""
        lines.append(f"- other processes used {others:.2f} cores on average meanwhile{flag}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, keys = _parse(argv)
    options = Options(
        quick=args.quick, small_model=args.small_model, device_cache=args.device_cache
    )
    _quiet()
    print(_header(options), flush=True)
    started = time.perf_counter()
    results: list[Result] = []
    others: dict[str, float] = {}
    crashed = False
    with tempfile.TemporaryDirectory(prefix="strokeseg-bench-") as scratch, CpuMeter() as whole:
        root = args.workdir if args.workdir is not None else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        workspace = Workspace(root)
        for key in keys:
            print(f"running {key} ...", file=sys.stderr, flush=True)
            with CpuMeter() as meter:
                try:
                    result = BENCHMARKS[key].run(workspace, options)
                except Exception as error:  # a crash is reported, the other benchmarks still run
                    traceback.print_exc()
                    crashed = True
                    text = f"ERROR: {type(error).__name__}: {error}".splitlines()[0][:100]
                    result = Result(key, BENCHMARKS[key].MEASURE, None, None, text=text)
            others[key] = meter.others
            results.append(result)
    results.sort(key=lambda r: r.key)
    results.append(_p7())

    print()
    print(_table(results))
    print("\n## Where the numbers come from\n")
    print("\n\n".join(_details(r, others.get(r.key)) for r in results if r.key in others))
    if workspace.setup_seconds:
        made = "; ".join(f"{what}: {seconds(s)}" for what, s in workspace.setup_seconds.items())
        print(f"\nTwins and caches (untimed by the ratios): {made}")
    load = os.getloadavg()
    print(
        f"\nTotal {time.perf_counter() - started:.0f} s; load average at the end {load[0]:.2f} / "
        f"{load[1]:.2f} / {load[2]:.2f}; other processes used {whole.others:.2f} cores on "
        f"average during the run{' (noisy run)' if whole.others > BUSY else ''}."
    )
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
