"""Atomic writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` for this process: ``.<name>.tmp-<pid>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` at ``path`` (parents created) through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def replace_folder(staging: Path, target: Path) -> Path:
    """Put the finished folder ``staging`` in the place of ``target``.

    The old ``target`` is renamed aside first and deleted last, so at every moment either the
    old or the new folder is complete under ``target``'s name (one rename apart).
    """
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.replace(old)
    staging.replace(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def why_not_writable(folder: Path) -> str | None:
    """Why ``folder`` cannot be created (with its missing parents) or written to, or ``None``
    when it can: asked before long work that will write there."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} exists and is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None
