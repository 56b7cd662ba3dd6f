"""The cache build leaves nothing behind: failures, SIGTERM, and builders killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from datamodules.cache_build import remove_stale_builds

# A builder whose cases take long to decode, so a test can catch it mid-build.
_SLOW_BUILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import nibabel as nib
    import numpy as np
    from datamodules.cache import CacheItem, DecodedCase
    from datamodules.cache_build import build_slice_cache
    from datamodules.geometry import SliceGeometry

    root, key = Path(sys.argv[1]), sys.argv[2]
    root.mkdir(parents=True, exist_ok=True)
    source = root / f"{key}.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), str(source))

    def load(item):
        time.sleep(0.5)
        return DecodedCase(np.zeros((1, 8, 8, 4), np.float32), None, (1.0, 1.0, 1.0))

    items = [CacheItem(f"case_{i}", i, i, (source,)) for i in range(60)]
    build_slice_cache(root / "cache" / key, items, load, ["x"],
                      SliceGeometry.create((2, 0, 1)), {})
    """
)


def _start_builder(root: Path, key: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_BUILD, str(root), key],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_tmp(root: Path, key: str, process: subprocess.Popen, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((root / "cache").glob(f"{key}.tmp-*"))
        if found and (found[0] / ".building").is_file():
            return found[0]
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.02)
    raise AssertionError("the builder never started")


@pytest.mark.slow
def test_a_killed_builder_leaves_a_folder_that_the_next_build_removes(tmp_path):
    builder = _start_builder(tmp_path, "killed")
    tmp = _wait_for_tmp(tmp_path, "killed", builder)
    live = _start_builder(tmp_path, "live")  # another rank or fold building in the same folder
    live_tmp = _wait_for_tmp(tmp_path, "live", live)
    try:
        builder.send_signal(signal.SIGKILL)
        builder.wait(timeout=30)
        assert tmp.is_dir(), "SIGKILL cannot clean up: the folder stays until the next build"
        assert remove_stale_builds(tmp_path / "cache") == [tmp]
        assert not tmp.exists()
        assert live_tmp.is_dir()  # a live builder's folder is left alone
    finally:
        live.kill()
        live.wait(timeout=30)


def test_a_builder_killed_before_it_locked_leaves_a_folder_that_the_next_build_removes(tmp_path):
    """Killed between ``mkdir`` and taking its lock: no lock file, so its pid decides."""
    import socket

    dead = subprocess.Popen(["true"])
    dead.wait()
    cache = tmp_path / "cache"
    host = socket.gethostname()
    gone = cache / f"isles2018-TRAINING-0123.tmp-{host}-{dead.pid}"
    alive = cache / f"isles2018-TRAINING-4567.tmp-{host}-{os.getpid()}"  # starting up
    elsewhere = cache / f"isles2018-TRAINING-89ab.tmp-other-host-{dead.pid}"  # not ours to judge
    for folder in (gone, alive, elsewhere):
        folder.mkdir(parents=True)
    assert remove_stale_builds(cache) == [gone]
    assert alive.is_dir() and elsewhere.is_dir()


@pytest.mark.slow
def test_sigterm_during_a_build_removes_its_folder(tmp_path):
    builder = _start_builder(tmp_path, "terminated")
    tmp = _wait_for_tmp(tmp_path, "terminated", builder)
    builder.send_signal(signal.SIGTERM)
    assert builder.wait(timeout=30) == 128 + signal.SIGTERM
    assert not tmp.exists()
    assert not any((tmp_path / "cache").iterdir())


def test_native_labels_round_trip_through_bit_packing(tmp_path):
    import nibabel as nib

    from datamodules.cache import CacheItem, DecodedCase, SliceCache
    from datamodules.cache_build import build_slice_cache
    from datamodules.geometry import SliceGeometry

    rng = np.random.default_rng(0)
    shapes = [(7, 5, 3), (7, 5, 4), (7, 5, 1)]
    labels = [(rng.random(s) < 0.4).astype(np.uint8) for s in shapes]
    items = []
    for i, shape in enumerate(shapes):
        path = tmp_path / f"case{i}.nii"
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
        items.append(CacheItem(f"case{i}", i, i, (path,)))

    def load(item: CacheItem) -> DecodedCase:
        i = int(item.name[-1])
        label = None if i == 1 else labels[i]  # one case without a label
        return DecodedCase(np.zeros((1, *shapes[i]), np.float32), label, (1.0, 2.0, 3.0))

    geometry = SliceGeometry.create((2, 0, 1))
    cache = SliceCache(
        build_slice_cache(tmp_path / "cache" / "k", items, load, ["x"], geometry, {})
    )
    assert np.array_equal(cache.native_label(0), geometry.to_slices(labels[0]))
    assert np.array_equal(cache.native_label(2), geometry.to_slices(labels[2]))
    assert not cache.has_label[1] and not cache.native_label(1).any()
    assert cache.native_label(1).shape == (4, 7, 5)
    assert cache.spacing[0].tolist() == [3.0, 1.0, 2.0]
