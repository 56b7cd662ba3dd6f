"""Forward + backward time of the arXiv 1811.01085 networks on CPU, to size a CPU demo.

Times one training step without the optimizer (train mode, cross-entropy on random
5-channel inputs and labels) per network and input size, and prints a Markdown table of
the median seconds per batch. Other processes on the machine inflate the numbers; the load
average is printed first for that reason.

Usage:
    python benchmarks/networks_speed.py [--batch-size 8] [--sizes 128 256] [--threads 2]
        [--repeats 3] [--networks "PSPNet R-18" UNet2D]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from networks import PSPNet, UNet2D

NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "PSPNet R-18": lambda: PSPNet(backbone_depth=18),
    "PSPNet R-50": lambda: PSPNet(backbone_depth=50),
    "PSPNet R-101": lambda: PSPNet(backbone_depth=101),
    "UNet2D": lambda: UNet2D(),
}


def seconds_per_step(net: nn.Module, batch_size: int, size: int, repeats: int) -> float:
    """Median wall time of forward + backward on one (batch_size, 5, size, size) batch."""
    x = torch.randn(batch_size, 5, size, size)
    target = torch.randint(0, 2, (batch_size, size, size))
    times = []
    for step in range(repeats + 1):  # step 0 warms up the allocator and kernels
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        F.cross_entropy(net(x), target).backward()
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)  # arXiv 1811.01085, §4.6
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load}")
    print(f"median seconds per forward + backward of a batch of {args.batch_size}\n")
    sizes = " | ".join(f"{size}×{size}" for size in args.sizes)
    print(f"| network | parameters | {sizes} |")
    print(f"|---|---:|{'---:|' * len(args.sizes)}")
    for name in args.networks:
        net = NETWORKS[name]().train()
        parameters = sum(parameter.numel() for parameter in net.parameters())
        seconds = [seconds_per_step(net, args.batch_size, s, args.repeats) for s in args.sizes]
        cells = " | ".join(f"{value:.2f}" for value in seconds)
        print(f"| {name} | {parameters:,} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
