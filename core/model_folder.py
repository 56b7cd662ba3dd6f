"""The integrity of exported model folders: a manifest of every file's SHA-256, checked before
anything of the folder is loaded, so that a changed or incomplete folder is refused naming the
file instead of predicting with something else than what was exported."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from core.errors import ConfigurationError
from core.run_layout import ModelFolderLayout, fold_number

MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_of(root: Path, files: list[Path], **fields: Any) -> str:
    """The manifest's text for ``files`` (all under ``root``), with extra ``fields``."""
    listed = {path.relative_to(root).as_posix(): sha256(path) for path in sorted(files)}
    return json.dumps({"format": MANIFEST_FORMAT, **fields, "files": listed}, indent=1) + "\n"


def read_by_prediction(folder: ModelFolderLayout) -> list[Path]:
    """The files of a model folder that prediction reads: each ``fold<k>``'s configuration and
    weights (every fold folder is a member), the recipe, and the summary (its post-processing
    choice)."""
    found = [folder.recipe, folder.summary]
    for path in sorted(folder.root.glob("fold*")):
        number = fold_number(path.name)
        if number is not None:
            found += [folder.fold(number).config, folder.fold(number).weights]
    return [path for path in found if path.is_file()]


def verify_model_folder(folder: ModelFolderLayout) -> dict[str, Any]:
    """Check every file the manifest lists (present, and with its SHA-256), and that it lists
    every file prediction reads (:func:`read_by_prediction`): a fold added to the folder, or
    an entry removed from the manifest, is not loaded unchecked.

    Returns:
        The manifest.

    Raises:
        ConfigurationError: Naming the first missing, changed or unlisted file (or a bad
            manifest).
    """
    try:
        manifest = json.loads(folder.manifest.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(
            f"{folder.manifest}: not a readable model-folder manifest ({error}). Export the "
            "model again (lightning-cv export EXPERIMENT --to DIR)."
        ) from error
    for path in read_by_prediction(folder):
        if path.relative_to(folder.root).as_posix() not in files:
            raise ConfigurationError(
                f"{path}: not in the manifest of the model folder {folder.root}, which prediction "
                "would read it from (it was added, or the manifest edited, after the export). "
                "Use an unmodified copy of the folder, or export the model again."
            )
    for relative, expected in files.items():
        path = folder.root / relative
        if not path.is_file():
            raise ConfigurationError(
                f"{path}: missing from the model folder {folder.root} (its manifest lists it). "
                "Copy the whole folder again, or export the model again."
            )
        if sha256(path) != expected:
            raise ConfigurationError(
                f"{path}: changed since the model was exported (its SHA-256 differs from the "
                f"manifest's). Use an unmodified copy of {folder.root}, or export the model "
                "again."
            )
    return manifest
