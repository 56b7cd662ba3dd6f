"""How every synthetic twin is built: checks, a hidden build directory, the marker, the swap.

Each writer (:mod:`.isles2018`, :mod:`.atlas`) describes its dataset as a :class:`Twin` (which
arguments it takes, what it plans to write, how it writes one unit) and hands it to
:func:`write_twin`, which runs the same ceremony for all of them:

1. check the arguments (the dataset's counts, then seed and size) and the target directory, so a
   mistake is reported before anything is created;
2. plan the twin and build it in a hidden sibling of its root, with a progress bar over units;
3. write ``SYNTHETIC_TWIN.json``: common fields (synthetic, dataset, generator, template), then
   the dataset's summary;
4. rename the sibling into place, removing a previous twin only once the new one is there.

An interrupted run therefore leaves no half-written twin behind. The marker says that the data
are synthetic and lets ``overwrite`` tell a previous twin from other data, which is never
replaced.

Attributes:
    MARKER_FILE: Name of the marker file at the root of every twin.
    APPLE_DOUBLE: AppleDouble header bytes, as in the real archives' resource-fork junk.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from tqdm.auto import tqdm

from core.errors import ConfigurationError, OutputExistsError

logger = logging.getLogger(__name__)

Size = Literal["full", "tiny"]

MARKER_FILE = "SYNTHETIC_TWIN.json"
APPLE_DOUBLE = b"\x00\x05\x16\x07" + bytes(78)
_TEMPLATE_NAME = "MNI152 2009a nonlinear symmetric (bundled with nilearn)"


def _check_seed_and_size(seed: object, size: object) -> None:
    """Raise ``ConfigurationError`` unless ``seed`` is a non-negative int and ``size`` known."""
    if not (isinstance(seed, int) and seed >= 0):
        raise ConfigurationError(f"seed must be a non-negative integer, got {seed!r}")
    if size not in ("full", "tiny"):
        raise ConfigurationError(f"size must be 'full' or 'tiny', got {size!r}")


def _check_target(root: Path, overwrite: bool) -> None:
    """Raise unless ``root`` is absent, empty, or (with ``overwrite``) a previous twin."""
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root} exists and is not a directory; choose another path")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{root} exists and is not empty; rerun with --overwrite (Python: "
                "overwrite=True) to replace it, or choose another directory"
            )
        if not (root / MARKER_FILE).is_file():
            raise OutputExistsError(
                f"refusing to overwrite {root}: it has no {MARKER_FILE}, so it is not a "
                "synthetic twin; delete it yourself or choose another directory"
            )


def _hidden_sibling(root: Path, purpose: str) -> Path:
    """A fresh hidden path next to ``root`` that no other run can pick."""
    return root.with_name(f".{root.name}.{purpose}-{os.getpid()}-{secrets.token_hex(4)}")


def _replace(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``, removing an old twin only after the new one is in place."""
    old = None
    if root.is_dir() and any(root.iterdir()):
        old = _hidden_sibling(root, "old")
        root.rename(old)
    elif root.is_dir():
        root.rmdir()
    tmp.rename(root)
    if old is not None:
        shutil.rmtree(old)


def generator(seed: int, spawn_key: tuple[int, ...]) -> np.random.Generator:
    """A PCG64 generator for one ``(seed, spawn_key)`` stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key)))


class Twin(ABC):
    """What one dataset's twin holds and how it is written; :func:`write_twin` does the rest.

    A twin is written in *units* (ISLES 2018 cases, ATLAS scans), one progress-bar step each,
    then the extras (tables, dot-files, folders that may stay empty).

    Args:
        title: The dataset's name in the marker and the log, e.g. ``"ATLAS R2.0"``.
        seed: Seed for everything random in the twin.
        size: ``"full"`` (the real layout) or ``"tiny"`` (tests only).

    Attributes:
        generator: Module named in the marker as the twin's generator.
        version: Generator version recorded in the marker.
        unit: What one unit is, for the progress bar and the log (``"case"``, ``"scan"``).
    """

    generator: ClassVar[str]
    version: ClassVar[int]
    unit: ClassVar[str]

    def __init__(self, title: str, seed: int, size: Size) -> None:
        self.title = title
        self.seed = seed
        self.size = size

    @abstractmethod
    def check_arguments(self) -> None:
        """Raise ``ValueError`` if a dataset-specific argument is out of range."""

    @abstractmethod
    def plan_units(self) -> int:
        """Decide what the twin holds; return the number of units."""

    @abstractmethod
    def write_units(self, build: Path) -> Iterator[int]:
        """Write the units into ``build`` one at a time, yielding the bytes of each."""

    def write_extras(self, build: Path) -> int:
        """Write everything that is not a unit into ``build``; return the bytes to count."""
        return 0

    @abstractmethod
    def summary(self, nifti_bytes: int) -> dict[str, Any]:
        """The dataset's fields of the marker, after the common ones."""


def write_twin(twin: Twin, root: Path, overwrite: bool, progress: bool) -> Path:
    """Check, plan and build ``twin`` in a hidden sibling of ``root``, then rename it into place.

    Args:
        twin: The dataset's twin, not yet checked or planned.
        root: Directory to create (its parents are created too). It may exist if empty.
        overwrite: Replace an existing non-empty ``root``; only a previous twin (one holding
            ``SYNTHETIC_TWIN.json``) is ever replaced.
        progress: Show a tqdm bar over units on stderr.

    Returns:
        ``root`` as an absolute path.

    Raises:
        ValueError: If a dataset argument, the seed or the size is out of range.
        FileExistsError: If ``root`` is not empty and ``overwrite`` is false, or is not a twin.
        NotADirectoryError: If ``root`` is a file.
    """
    root = Path(os.path.abspath(root))  # abspath, not resolve: keep the user's symlinks
    twin.check_arguments()
    _check_seed_and_size(twin.seed, twin.size)
    _check_target(root, overwrite)
    units = twin.plan_units()
    what = f"{units} {twin.unit}s, seed {twin.seed}, size {twin.size}"
    logger.info("writing a synthetic %s twin (%s) to %s", twin.title, what, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    build = _hidden_sibling(root, "partial")
    build.mkdir()
    try:
        nifti_bytes = 0
        with tqdm(total=units, unit=twin.unit, disable=not progress) as bar:
            for unit_bytes in twin.write_units(build):
                nifti_bytes += unit_bytes
                bar.update(1)
        nifti_bytes += twin.write_extras(build)
        marker = {
            "synthetic": True,
            "dataset": f"{twin.title} (synthetic twin; no real patient data)",
            "generator": twin.generator,
            "generator_version": twin.version,
            "template": _TEMPLATE_NAME,
            **twin.summary(nifti_bytes),
        }
        (build / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        _check_target(root, overwrite)  # again: another run may have filled it meanwhile
        _replace(build, root)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    logger.info("wrote %s", root)
    return root


# -- pieces the twins' writers and lesion renderers share ---------------------------------
def nifti_gz_bytes(
    data: np.ndarray, affine: np.ndarray, code: int, description: bytes, level: int
) -> bytes:
    """A ``.nii.gz`` file's bytes: qform and sform = ``affine`` with ``code``, mm units, and
    gzip with mtime 0 (nibabel's own writer stamps the time, so reruns would differ)."""
    import gzip

    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=code)
    image.header.set_sform(affine, code=code)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = description
    return gzip.compress(image.to_bytes(), compresslevel=level, mtime=0)


def write_file(path: Path, payload: bytes) -> int:
    """Write ``payload`` at ``path`` (parents created); its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return len(payload)


def box_offsets(
    lo: np.ndarray, hi: np.ndarray, centre: np.ndarray, step: int = 1
) -> list[np.ndarray]:
    """Per axis, the voxel offsets from ``centre`` of a box ``[lo, hi)`` (every ``step``-th),
    float32 and shaped to broadcast over the box."""
    return [
        (np.arange(a, b, step, dtype=np.float32) - np.float32(c)).reshape(
            [-1 if i == axis else 1 for i in range(3)]
        )
        for axis, (a, b, c) in enumerate(zip(lo, hi, centre, strict=True))
    ]


def rippled_radius_parts(
    offsets: list[np.ndarray], inverse_axes: np.ndarray, waves: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A lesion's squared ellipsoidal radius (``inverse_axes`` maps offsets to unit radius)
    and the sum of its sine ``waves`` ``(K, 4)``, over the box of ``offsets``."""
    inverse = inverse_axes.astype(np.float32)
    radius2 = sum(
        (inverse[row, 0] * offsets[0] + inverse[row, 1] * offsets[1] + inverse[row, 2] * offsets[2])
        ** 2
        for row in range(3)
    )
    ripple = sum(
        np.sin(w[0] * offsets[0] + w[1] * offsets[1] + w[2] * offsets[2] + w[3])
        for w in waves.astype(np.float32)
    )
    return np.asarray(radius2), np.asarray(ripple)
