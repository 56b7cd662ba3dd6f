"""Helpers shared by the synthetic-twin writers (:mod:`.isles2018`, :mod:`.atlas`).

A twin is built in a hidden sibling of its root and renamed into place only when complete, so an
interrupted run leaves no half-written twin behind. Its root holds ``SYNTHETIC_TWIN.json``, the
marker that says the data are synthetic and that lets ``overwrite`` tell a previous twin from
other data, which is never replaced.

Attributes:
    MARKER_FILE: Name of the marker file at the root of every twin.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

MARKER_FILE = "SYNTHETIC_TWIN.json"
_TEMPLATE_NAME = "MNI152 2009a nonlinear symmetric (bundled with nilearn)"
# AppleDouble header bytes, as in the real archives' resource-fork junk
_APPLE_DOUBLE = b"\x00\x05\x16\x07" + bytes(78)


def _generator(seed: int, spawn_key: tuple[int, ...]) -> np.random.Generator:
    """A PCG64 generator for one ``(seed, spawn_key)`` stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key)))


def _check_seed_and_size(seed, size) -> None:
    """Raise ``ValueError`` unless ``seed`` is a non-negative int and ``size`` a known size."""
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")


def _check_target(root: Path, overwrite: bool) -> None:
    """Raise unless ``root`` is absent, empty, or (with ``overwrite``) a previous twin."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a directory; choose another path")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{root} exists and is not empty; rerun with --overwrite (Python: "
                "overwrite=True) to replace it, or choose another directory"
            )
        if not (root / MARKER_FILE).is_file():
            raise FileExistsError(
                f"refusing to overwrite {root}: it has no {MARKER_FILE}, so it is not a "
                "synthetic twin; delete it yourself or choose another directory"
            )


def _marker(dataset: str, generator: str, version: int) -> dict:
    """The leading, common fields of a twin's ``SYNTHETIC_TWIN.json``."""
    return {
        "synthetic": True,
        "dataset": dataset,
        "generator": generator,
        "generator_version": version,
        "template": _TEMPLATE_NAME,
    }


def _replace(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``, removing an old twin only after the new one is in place."""
    old = None
    if root.is_dir() and any(root.iterdir()):
        old = root.with_name(f".{root.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        root.rename(old)
    elif root.is_dir():
        root.rmdir()
    tmp.rename(root)
    if old is not None:
        shutil.rmtree(old)


def _write_atomically(root: Path, overwrite: bool, build: Callable[[Path], dict]) -> None:
    """Fill a hidden sibling of ``root`` with ``build``, add the marker, rename it into place."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        summary = build(tmp)
        (tmp / MARKER_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        _check_target(root, overwrite)
        _replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
