"""Exclusive file locks a process holds while it writes somewhere no other process may.

A lock is an ``flock`` on a lock file: the kernel releases it when the process ends, however it
ends (``kill -9`` included), so a lock file left behind by a killed process blocks nothing; only
whether a live process holds its lock counts, never whether the file exists. A holder that ends
normally removes the file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from pathlib import Path

from core.errors import ConfigurationError
from core.run_layout import RunLayout

log = logging.getLogger(__name__)


def try_lock(path: Path) -> int | None:
    """An exclusive non-blocking flock on ``path`` (created if needed): its fd, or ``None`` if
    another process (or another open of the file) holds it.

    Raises:
        OSError: When the file cannot be opened, or the file system has no locks.
    """
    import fcntl  # not on Windows

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _holder(path: Path) -> tuple[str, str]:
    """Who holds the lock, as the holder wrote it into the file: ``PID <pid>[ on <host>]``, and
    the command that stops it."""
    try:
        pid, _, host = path.read_text(encoding="utf-8").strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid.isdigit():
        return "PID not yet written: it is starting", "kill <its PID>"
    elsewhere = bool(host) and host != socket.gethostname()
    return f"PID {pid}" + (f" on {host}" if elsewhere else ""), f"kill {pid}"


def _is_file_of(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder may have
    removed it between our open and our lock)."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


class RunLock:
    """The run folder's lock, held by the one ``lightning fit`` that trains it.

    Two trainers of one run would both write its checkpoints and ``metrics.csv`` (an orphaned
    fold still training while the same command resumes it, two terminals, a SLURM requeue that
    races a task still running). The lock file lies beside the run folder
    (:attr:`RunLayout.fit_lock`), so that ``--overwrite``, which renames the folder aside, keeps
    it; it holds the holder's PID and host for the message of the fit refused.

    Args:
        run: The run folder a ``fit`` is about to train.
    """

    def __init__(self, run: RunLayout) -> None:
        self.run = run
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> RunLock:
        """Take the lock, or refuse at once.

        On a file system without locks (some cluster file systems), a warning, and no lock.

        Raises:
            ConfigurationError: Another process holds it: names the folder, that process and
                what to do.
        """
        path = self.run.fit_lock
        self._created = _missing_folders(path.parent)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = try_lock(path)
            while fd is not None and not _is_file_of(fd, path):
                os.close(fd)
                fd = try_lock(path)
        except OSError as error:
            log.warning(
                "Cannot lock %s (%s): nothing stops a second lightning fit of this run from "
                "writing it at the same time.",
                path,
                error.strerror or error,
            )
            return self
        if fd is None:
            holder, stop = _holder(path)
            raise ConfigurationError(
                f"{self.run.root} is being trained by another lightning fit ({holder}; its lock: "
                f"{path}): wait for it to finish, or stop that process ({stop}: it stops at the "
                "end of its step and keeps its checkpoints) and run this command again. Two "
                "trainers would write the same checkpoints and metrics.csv."
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (again: nothing)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Removed while still locked (a fit that waits for it checks it locked the file that
        # the path names); with the folders made for it, if the fit wrote nothing beside it.
        with contextlib.suppress(OSError):
            self.run.fit_lock.unlink()
        os.close(fd)
        for folder in self._created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def __del__(self) -> None:
        # A plan dropped without its command's end (a CLI built with run=False in a test).
        self.release()

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None
