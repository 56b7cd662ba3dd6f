"""Damaged checkpoints are user errors that name the file; best checkpoints stay in their run."""

from __future__ import annotations

import pytest
import torch

from core.checkpoints import best_checkpoint, read_checkpoint
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
    for path, reason in ((empty, "is empty"), (cut, "not a readable checkpoint"),
                         (foreign, "not a Lightning checkpoint")):  # fmt: skip
        with pytest.raises(CheckpointError, match=reason) as raised:
            read_checkpoint(path)
        assert str(raised.value).startswith(str(path)) and isinstance(raised.value, UserError)


def test_the_best_checkpoint_is_looked_up_in_the_runs_own_folder(tmp_path):
    run = RunLayout(tmp_path / "copy" / "fold0")
    run.checkpoints.mkdir(parents=True)
    torch.save({"epoch": 1}, run.checkpoint("best-epoch001.ckpt"))
    record = {"ModelCheckpoint{'monitor': 'val/dice'}": {
        "best_model_path": str(tmp_path / "original" / "fold0" / "checkpoints" / "best-epoch001.ckpt")
    }}  # fmt: skip
    torch.save({"epoch": 2, "callbacks": record}, run.last_checkpoint)
    assert best_checkpoint(run) == run.checkpoint("best-epoch001.ckpt")
