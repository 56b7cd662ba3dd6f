"""Reading Lightning checkpoints with an error a user can act on; writing them atomically."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from core.errors import CheckpointError, first_few
from core.io import temporary_sibling
from core.run_layout import RunLayout


def read_checkpoint(path: Path, *, mmap: bool = True) -> dict[str, Any]:
    """The content of a Lightning checkpoint, memory-mapped (the weights stay on disk).

    Raises:
        CheckpointError: For a missing, empty or truncated file, or one that is not a
            checkpoint, naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file. Pass an existing .ckpt file.")
    size = path.stat().st_size
    advice = (
        "It was probably cut off while being written or copied (a full disk, a killed copy): "
        "copy it again, or use another checkpoint of the run (--ckpt_path last or best)."
    )
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint. {advice}")
    if mmap and not zipfile.is_zipfile(path):  # torch.load would blame the memory-mapping
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable checkpoint (not the zip archive torch.save "
            f"writes, or one cut off before its end). {advice}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except (
        RuntimeError,
        EOFError,
        OSError,  # memory-mapping a truncated file: EINVAL
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
    ) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable checkpoint ({reason}). {advice}"
        ) from error
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (it holds a {type(state).__name__}"
            f"{' without an epoch' if isinstance(state, dict) else ''}). Pass a .ckpt file "
            "written by lightning fit."
        )
    return state


def check_weights_fit(
    state: dict[str, Any], module: torch.nn.Module, path: Path, *, strict: bool = True
) -> None:
    """Refuse a checkpoint whose weights are not those of ``module`` (another network, or the
    same one with other widths), before Lightning fails on them with a traceback.

    Args:
        strict: Whether the module loads its weights strictly (a ``LightningModule``'s
            ``strict_loading``); a module that does not is not checked.

    Raises:
        CheckpointError: Naming the file, the parameters it lacks, those it has in excess and
            those of another shape, and what to do.
    """
    if not strict:
        return
    saved = state.get("state_dict")
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{path} holds no weights (no state_dict). Pass a .ckpt file written by lightning fit."
        )
    expected = module.state_dict()
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    reshaped = [
        f"{key} {tuple(saved[key].shape)} instead of {tuple(value.shape)}"
        for key, value in expected.items()
        if isinstance(value, torch.Tensor)
        and isinstance(saved.get(key), torch.Tensor)
        and saved[key].shape != value.shape
    ]
    if not (missing or unexpected or reshaped):
        return

    def listed(what: str, keys: list[str]) -> str:
        return f"{len(keys)} {what} ({first_few(keys, 3)})"

    found = [
        listed(what, keys)
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", reshaped),
        )
        if keys
    ]
    raise CheckpointError(
        f"{path} holds the weights of another network than this configuration's "
        f"{type(module).__name__}: {'; '.join(found)}. Pass a checkpoint of this experiment "
        "(--ckpt_path last or best of its fold), or run with the configuration the checkpoint "
        "was trained with (--config runs/<experiment>/fold<k>/config.yaml)."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic beside the checkpoint.

    Lightning writes a checkpoint to a file of the system's temporary folder and moves it into
    place; when that folder is on another filesystem than the run (a node-local ``/tmp``, a
    tmpfs), the move is a copy, and a Ctrl-C or a kill during it leaves a cut-off
    ``last.ckpt`` where the previous complete one was. Here the checkpoint is written to a
    hidden sibling (``.last.ckpt.tmp-<pid>``, removed if the write fails) and renamed over the
    old one: the file under the checkpoint's name is always a complete checkpoint. Remote
    paths (``s3://…``) keep Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(path)
        try:
            torch.save(checkpoint, tmp)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def read_weights(path: Path) -> dict[str, Any]:
    """An exported fold's ``weights.pt``: ``{"state_dict": …, "signature": …}`` of tensors and
    plain values only, loaded with ``weights_only=True`` (nothing is unpickled).

    Raises:
        CheckpointError: For a missing or unreadable file, or one without a state dict.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable weights file ({reason}). Export the model again "
            "(lightning-cv export EXPERIMENT --to DIR)."
        ) from error
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path} holds no state_dict; export the model again.")
    return state


def best_checkpoint(run: RunLayout) -> Path | None:
    """The best checkpoint of a run, as ``ModelCheckpoint`` recorded it in ``last.ckpt``.

    Only the file's name is taken from the record, and it is looked up in this run's own
    ``checkpoints/`` folder: the record holds the absolute path the run was trained at, so a
    copied or moved run folder would otherwise use the original's weights.

    Returns:
        The checkpoint in ``run.checkpoints``, or ``None`` when the run has no ``last.ckpt``,
        records no best checkpoint, or does not hold the recorded file.

    Raises:
        CheckpointError: For an unreadable ``last.ckpt``.
    """
    if not run.last_checkpoint.is_file():
        return None
    state = read_checkpoint(run.last_checkpoint)
    for key, value in state.get("callbacks", {}).items():
        monitored = "'monitor': None" not in key  # not the every-epoch last.ckpt writer
        if key.startswith("ModelCheckpoint") and monitored and value.get("best_model_path"):
            best = run.checkpoint(Path(value["best_model_path"]).name)
            return best if best.is_file() else None
    return None


def checkpoint_epoch(path: Path) -> int:
    """The epoch a Lightning checkpoint was saved in.

    Raises:
        CheckpointError: For an unreadable checkpoint.
    """
    return int(read_checkpoint(path)["epoch"])
