"""Damaged checkpoints are user errors that name the file; best checkpoints stay in their run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.checkpoints import (
    AtomicCheckpointIO,
    best_checkpoint,
    check_weights_fit,
    read_checkpoint,
)
from core.errors import CheckpointError, UserError
from core.run_layout import RunLayout


def test_empty_truncated_and_foreign_files_are_refused_naming_the_file(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"epoch": 3, "state_dict": {"w": torch.ones(1000)}}, good)
    assert read_checkpoint(good)["epoch"] == 3
    empty, cut, foreign = tmp_path / "empty.ckpt", tmp_path / "cut.ckpt", tmp_path / "x.ckpt"
    empty.write_bytes(b"")
    cut.write_bytes(good.read_bytes()[:300])
    torch.save([1, 2, 3], foreign)
    junk = tmp_path / "junk.ckpt"  # not a zip archive at all (a copy of something else)
    junk.write_bytes(bytes(range(256)) * 20)
    for path, reason in ((empty, "is empty"), (cut, "not a readable checkpoint"),
                         (junk, "not the zip archive torch.save writes"),
                         (foreign, "not a Lightning checkpoint")):  # fmt: skip
        with pytest.raises(CheckpointError, match=reason) as raised:
            read_checkpoint(path)
        assert str(raised.value).startswith(str(path)) and isinstance(raised.value, UserError)
        assert "mmap" not in str(raised.value)  # torch's advice on saving, not the user's problem


def test_the_best_checkpoint_is_looked_up_in_the_runs_own_folder(tmp_path):
    run = RunLayout(tmp_path / "copy" / "fold0")
    run.checkpoints.mkdir(parents=True)
    torch.save({"epoch": 1}, run.checkpoint("best-epoch001.ckpt"))
    record = {"ModelCheckpoint{'monitor': 'val/dice'}": {
        "best_model_path": str(tmp_path / "original" / "fold0" / "checkpoints" / "best-epoch001.ckpt")
    }}  # fmt: skip
    torch.save({"epoch": 2, "callbacks": record}, run.last_checkpoint)
    assert best_checkpoint(run) == run.checkpoint("best-epoch001.ckpt")


def test_weights_of_another_network_are_refused_naming_the_file_and_the_parameters(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "other.ckpt"
    state = {"epoch": 0, "state_dict": net.state_dict()}
    check_weights_fit(state, net, path)  # its own weights fit
    wider = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    with pytest.raises(CheckpointError) as raised:
        check_weights_fit(state, wider, path)
    message = str(raised.value)
    assert message.startswith(f"{path} holds the weights of another network than")
    assert "6 of another shape (0.weight (4, 3, 3, 3) instead of (8, 3, 3, 3)" in message
    assert "--ckpt_path last or best" in message
    other = torch.nn.ModuleDict({"fc": torch.nn.Linear(2, 2)})
    with pytest.raises(CheckpointError, match=r"2 missing \(fc.weight, fc.bias\); 7 unexpected"):
        check_weights_fit(state, other, path)
    check_weights_fit(state, other, path, strict=False)  # a module loading non-strictly
    with pytest.raises(CheckpointError, match="holds no weights"):
        check_weights_fit({"epoch": 0}, net, path)


def test_an_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"epoch": 0, "state_dict": {"w": torch.zeros(100)}}, path)
    assert read_checkpoint(path)["epoch"] == 0

    def cut_off(obj, file):  # Ctrl-C halfway through writing the next epoch's checkpoint
        Path(file).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_off)
    with pytest.raises(KeyboardInterrupt):
        writer.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(100)}}, path)
    assert read_checkpoint(path)["epoch"] == 0  # the previous complete checkpoint
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # nothing half-written
