"""Start-up of the three commands: the wall time of ``--help`` and of argument errors, and where
``lightning fit --help`` spends its time (docs/performance.md, "Start-up of the commands").

    python benchmarks/startup.py [--repeat 5] [--source DIR] [--top 12]
    make bench-startup                                            (the same, defaults)

Every command runs ``--repeat`` times in a fresh interpreter (``python -m cli.<command>``, which
costs what the console script costs); the median is printed. ``--source DIR`` times another
checkout of the suite with this interpreter (e.g. a ``git worktree`` of an earlier commit), for
before/after comparisons. The import split comes from ``python -X importtime``: the time each
top-level package spent importing its own modules (self time, so the rows add up). A benchmark,
not a test: nothing fails on a slow machine; the target is 1.5 s for everything except
``lightning fit --help``, which must import the classes LightningCLI builds its parser from.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 1.5
_MODULES = {"lightning": "cli.lightning", "lightning-cv": "cli.crossval", "lightning-data": "cli.data"}  # fmt: skip


def _commands(missing: Path) -> list[tuple[str, list[str], bool]]:
    """(command, arguments, held to the 1.5 s target)."""
    return [
        ("lightning-cv", ["--help"], True),
        ("lightning-cv", ["fit", "--help"], True),
        ("lightning-cv", ["report", "--help"], True),
        ("lightning-cv", ["compare", "--help"], True),
        ("lightning-cv", ["predict", "--help"], True),
        ("lightning-cv", ["report", str(missing)], True),
        ("lightning-cv", ["compare", str(missing), str(missing / "b")], True),
        ("lightning-cv", ["fit", "--config", str(missing / "x.yaml")], True),
        ("lightning-data", ["--help"], True),
        ("lightning-data", ["synth", "isles2022", "--help"], True),
        ("lightning-data", ["synth", "isles2022"], True),
        ("lightning", [], True),
        ("lightning", ["fit", "--config", str(missing / "x.yaml")], True),
        ("lightning", ["--help"], False),
        ("lightning", ["fit", "--help"], False),
    ]


def _run(command: str, args: list[str], source: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", _MODULES[command], *args],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start, done.returncode


def _import_split(
    source: Path, env: dict[str, str], top: int
) -> tuple[list[tuple[str, float]], float]:
    """Seconds of import per top-level package during ``lightning fit --help`` (self times),
    and their sum."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cli.lightning", "fit", "--help"],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    totals: collections.Counter[str] = collections.Counter()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:") :].split("|"))
        totals[name.split(".")[0]] += int(self_us) / 1e6
    return totals.most_common(top), sum(totals.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    parser.add_argument("--source", type=Path, default=REPO, help="checkout to time")
    parser.add_argument("--top", type=int, default=12, help="packages of the import split")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(args.source.resolve())}
    with tempfile.TemporaryDirectory() as scratch:
        missing = Path(scratch) / "missing"
        print(f"{'command':<58} {'median':>8} {'exit':>4}  target")
        for command, arguments, held in _commands(missing):
            times, codes = [], set()
            for _ in range(args.repeat):
                seconds, code = _run(command, arguments, args.source, env)
                times.append(seconds)
                codes.add(code)
            median = statistics.median(times)
            verdict = ("ok" if median <= TARGET_S else "MISS") if held else "-"
            shown = " ".join([command, *arguments]).replace(str(missing), "<missing>")
            print(f"{shown:<58} {median:>7.2f}s {','.join(map(str, sorted(codes))):>4}  {verdict}")
    split, total = _import_split(args.source, env, args.top)
    print(
        f"\nimports of `lightning fit --help`: {total:.2f}s in all (the rest of its wall time is "
        f"LightningCLI building its parsers); by top-level package (self time, top {args.top}):"
    )
    for package, seconds in split:
        print(f"  {package:<28} {seconds:>6.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
