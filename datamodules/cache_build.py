"""Building a preprocessing cache (:mod:`datamodules.cache`) safely.

A build writes into ``<name>.tmp-<host>-<pid>/`` and renames it into place when complete. The
builder holds an exclusive ``flock`` on a file inside it for as long as it runs, so a later
build can tell a dead builder's leftovers (a ``kill -9``, a node that went down) from a live
one's (another DDP rank, another fold's job) and deletes only the former. SIGTERM during a
build removes the temporary folder, like SIGINT; any error removes it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from core.errors import ConfigurationError, DataValidationError
from core.io import why_not_writable
from core.locks import try_lock
from datamodules.cache import CACHE_FORMAT_VERSION, CacheItem, DecodedCase, LoadFn
from datamodules.geometry import SliceGeometry
from datamodules.nifti import CaseOrientation, case_shape

log = logging.getLogger(__name__)

_LOCK_NAME = ".building"
_TMP_MARK = ".tmp-"


def check_cache_root(root: Path) -> None:
    """Refuse a cache folder that cannot be created or written, before anything is decoded.

    Raises:
        ConfigurationError: Naming the folder, what is wrong and what to do.
    """
    problem = why_not_writable(root)
    if problem is not None:
        raise ConfigurationError(
            f"Cannot use {root} as the preprocessing cache: {problem}. Point "
            "data.init_args.cache_dir at a writable folder (it needs room for the decoded "
            "dataset), or fix the folder's permissions."
        )


# -- stale temporary folders -------------------------------------------------------------


def _builder_is_gone(tmp: Path) -> bool:
    """Whether the process named by ``<name>.tmp-<host>-<pid>`` ran here and has exited."""
    host, _, pid = tmp.name.rsplit(_TMP_MARK, 1)[-1].rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's process, say)
        return False
    return False


def remove_stale_builds(root: Path) -> list[Path]:
    """Delete temporary build folders under ``root`` whose builder is gone.

    A live builder holds the flock of its folder's lock file, so its folder is left alone. A
    folder without a lock file belongs to a builder between ``mkdir`` and locking, or to one
    killed in that instant: it is deleted only when its name's host is this one and no process
    of its pid is alive. On a file system without locks nothing else is deleted.

    Returns:
        The folders removed.
    """
    removed = []
    for tmp in sorted(root.glob(f"*{_TMP_MARK}*")) if root.is_dir() else []:
        lock_path = tmp / _LOCK_NAME
        if not tmp.is_dir():
            continue
        if not lock_path.is_file():
            if _builder_is_gone(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
                log.info("Removed %s, left by a cache build killed as it began", tmp)
            continue
        try:
            fd = try_lock(lock_path)
        except OSError:  # no flock here: never guess
            continue
        if fd is None:
            continue
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            log.info("Removed %s, left by an interrupted cache build", tmp)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While building, SIGTERM unwinds like Ctrl-C, so the ``finally`` clean-up runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- building ---------------------------------------------------------------------------


def _plan(
    items: Sequence[CacheItem], geometry: SliceGeometry
) -> tuple[np.ndarray, tuple[int, int]]:
    """Source ``(X, Y, Z)`` of every case (from headers) and the common network grid."""
    shapes = []
    for item in items:
        source_shape = case_shape(item.sources[0])  # one 3D volume, or a DataValidationError
        geometry.check(source_shape, f"{item.name} ({item.sources[0]})")
        shapes.append(source_shape)
    grids = {geometry.network_size(geometry.native_shape(shape)[1:]) for shape in shapes}
    if len(grids) != 1:
        sizes = sorted({geometry.native_shape(shape)[1:] for shape in shapes})
        raise ConfigurationError(
            f"The cases have slices of different sizes {sizes[:6]}{' …' if len(sizes) > 6 else ''} "
            "(rows × cols), so their slices cannot be batched on one grid. Set "
            "data.init_args.image_size (e.g. 256) to resize every case to one network grid; "
            "predictions are resized back to each case's own grid."
        )
    return np.array(shapes, dtype=np.int64), grids.pop()


def _in_case_order(case: DecodedCase, reference: Path) -> DecodedCase:
    """A decoded case (in its reference file's stored voxel order) on the case's axes: the
    closest RAS order (:class:`datamodules.nifti.CaseOrientation`)."""
    orientation = CaseOrientation.of(reference)
    if orientation.is_identity:
        return case
    label = None if case.label is None else orientation.to_case(case.label)
    zooms = orientation.zooms(case.zooms)
    return replace(case, image=orientation.to_case(case.image), label=label, zooms=zooms)


def build_slice_cache(
    directory: Path,
    items: Sequence[CacheItem],
    load: LoadFn,
    channels: Sequence[str],
    geometry: SliceGeometry,
    settings: dict[str, Any],
) -> Path:
    """Decode every item once and write the cache at ``directory`` (atomically).

    Args:
        directory: Final cache folder; returned unchanged if it already exists.
        items: Cases in a fixed order.
        load: Decodes one item (see :class:`DecodedCase`).
        channels: Channel names, in the order ``load`` stacks them.
        geometry: Maps each case to the network grid.
        settings: Preprocessing settings, recorded in ``meta.json``.

    Returns:
        ``directory``.

    Raises:
        ConfigurationError: If the crop does not fit a case or the cases need a common size.
        DataValidationError: Whatever ``load`` raises for a bad file; nothing is left behind.
    """
    if (directory / "meta.json").is_file():
        return directory
    if not items:
        raise DataValidationError(f"Nothing to cache for {directory}: the case list is empty.")
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(directory.parent)
    source_shapes, grid = _plan(items, geometry)
    native = np.array([geometry.native_shape(shape) for shape in source_shapes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(native[:, 0])])
    tmp = directory.with_name(f"{directory.name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        lock = try_lock(tmp / _LOCK_NAME)
    except OSError:  # a file system without flock: the folder is still removed on failure
        lock = None
    try:
        with _sigterm_raises():
            _write(tmp, items, load, channels, geometry, settings, source_shapes, offsets, grid)
        try:
            tmp.rename(directory)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    log.info("Wrote cache %s (%d cases, %d slices)", directory, len(items), offsets[-1])
    return directory


def _write(
    tmp: Path,
    items: Sequence[CacheItem],
    load: LoadFn,
    channels: Sequence[str],
    geometry: SliceGeometry,
    settings: dict[str, Any],
    source_shapes: np.ndarray,
    offsets: np.ndarray,
    grid: tuple[int, int],
) -> None:
    rows = int(offsets[-1])
    images = np.lib.format.open_memmap(
        tmp / "images.npy", "w+", np.float32, (rows, len(channels), *grid)
    )
    labels = np.lib.format.open_memmap(tmp / "labels.npy", "w+", np.uint8, (rows, *grid))
    packed: list[np.ndarray] = []
    spacing = np.zeros((len(items), 3), dtype=np.float64)
    has_label = np.zeros(len(items), dtype=bool)
    label_voxels = np.zeros(rows, dtype=np.int64)
    intensity = np.full((len(items), len(channels), 2), np.nan)
    for n, item in enumerate(
        tqdm(items, desc=f"Caching {tmp.name.split(_TMP_MARK)[0]}", unit="case")
    ):
        case = _in_case_order(load(item), item.sources[0])
        expected = (len(channels), *(int(v) for v in source_shapes[n]))
        if case.image.shape != expected:
            raise DataValidationError(
                f"{item.name}: decoded image has shape {case.image.shape}, expected {expected} "
                f"from the header of {item.sources[0]}."
            )
        span = slice(offsets[n], offsets[n + 1])
        in_plane = geometry.spacing(case.zooms)[1:]  # (dH, dW) mm
        images[span] = geometry.image_to_network(geometry.to_slices(case.image), in_plane)
        if case.label is not None:
            native_label = geometry.to_slices(case.label)  # (D, H, W)
            labels[span] = geometry.label_to_network(native_label, in_plane)
            label_voxels[span] = np.count_nonzero(labels[span], axis=(1, 2))
            packed.append(np.packbits(native_label.astype(bool, copy=False).ravel()))
            has_label[n] = True
        else:
            packed.append(np.zeros(0, dtype=np.uint8))
        spacing[n] = geometry.spacing(case.zooms)
        if case.intensity is not None:
            intensity[n] = case.intensity
    images.flush()
    labels.flush()
    del images, labels
    np.save(tmp / "native_labels.npy", np.concatenate(packed))
    np.savez(
        tmp / "index.npz",
        case_offsets=offsets,
        native_shape=np.array([geometry.native_shape(s) for s in source_shapes], dtype=np.int64),
        native_offsets=np.concatenate([[0], np.cumsum([len(p) for p in packed])]),
        spacing=spacing,
        has_label=has_label,
        label_voxels=label_voxels,
        intensity=intensity,
        patient=np.array([item.patient for item in items], dtype=np.int64),
        case_number=np.array([item.case_number for item in items], dtype=np.int64),
    )
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "channels": list(channels),
        "settings": settings,
        "cases": [item.name for item in items],
        "sources": [[str(p) for p in item.sources] for item in items],
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
