"""Peak memory of one ISLES 2018 case in 3D: a training step and a whole-case inference.

Each measurement runs in a fresh process (``ru_maxrss`` is a process-wide high-water mark) and
prints the peak resident set size above the process's baseline after importing torch and
building the network, so the figure is what one case costs: activations, gradients and the
sliding-window buffers. The input is seed 001's volume, (1, 5, 32, 128, 128), for the modified
3D U-Net at a chosen base width; inference returns the native (32, 256, 256) probability, as
validation does.

Usage:
    python -m benchmarks.volume_memory [--widths 8 16 32 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(width: int, mode: str, threads: int) -> dict[str, float]:
    """One measurement in this process: ``mode`` is ``"train"`` or ``"infer"``."""
    import torch

    from datamodules.geometry import VolumeGeometry
    from lightning_modules import VolumeSegmentationModule
    from losses import SoftJaccardLoss
    from networks import OmarovUNet3D

    torch.set_num_threads(threads)
    net = OmarovUNet3D(base_width=width)
    module = VolumeSegmentationModule(net, SoftJaccardLoss(), kernel_l2=1e-3)
    geometry = VolumeGeometry.create_volume((2, 0, 1), size=128, depth=32)
    image = torch.randn(20, 5, 128, 128)  # a 20-slice case on the network grid
    baseline = _peak_mb()
    start = time.perf_counter()
    if mode == "train":
        volume = geometry.pad_depth(geometry.volume(image))[None]
        label = (torch.rand(1, 1, 32, 128, 128) > 0.9).to(torch.uint8)
        loss = module.training_step({"image": volume, "label": label}, 0)
        loss.backward()
    else:
        module.eval()
        case = {
            "image": image,
            "native_shape": (20, 256, 256),
            "geometry": geometry,
            "spacing": torch.tensor([5.0, 0.9, 0.9], dtype=torch.float64),  # mm along (D, H, W)
            "case": "case",
        }
        with torch.no_grad():
            module.predict_case(case)
    seconds = time.perf_counter() - start
    return {"peak_mb": _peak_mb() - baseline, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("WIDTH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1], args.threads)))
        return
    print(
        "| base width F | parameters | training step peak RSS (MB) | s | inference peak RSS (MB) | s |"
    )
    print("|---|---|---|---|---|---|")
    from networks import OmarovUNet3D

    for width in args.widths:
        row = []
        for mode in ("train", "infer"):
            command = [sys.executable, "-m", "benchmarks.volume_memory", "--child", str(width),
                       mode, "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            row += [f"{result['peak_mb']:.0f}", f"{result['seconds']:.1f}"]
        count = sum(p.numel() for p in OmarovUNet3D(base_width=width).parameters())
        print(f"| {width} | {count:,} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
