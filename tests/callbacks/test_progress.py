"""The progress bar shows the logged training loss without reading the device at every step."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from callbacks.progress import LoggedValuesBar
from lightning_modules import SegmentationModule
from losses import FocalLoss


class _Slices(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        image = torch.randn(2, 8, 8, generator=generator)
        return {"image": image, "label": (image[:1] > 0).to(torch.uint8)}


def test_each_logged_value_is_read_back_once_and_shown(tmp_path, monkeypatch):
    reads: list[float] = []
    to_float = torch.Tensor.__float__

    def counted(tensor: torch.Tensor) -> float:
        reads.append(to_float(tensor))
        return reads[-1]

    monkeypatch.setattr(torch.Tensor, "__float__", counted)
    module = SegmentationModule(nn.Conv2d(2, 1, 1), FocalLoss())
    bar = LoggedValuesBar()
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, log_every_n_steps=2, logger=False, callbacks=[bar],
        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, DataLoader(_Slices(), batch_size=2))  # 6 steps: 3 of them logged
    assert len(reads) == 3  # at the logged steps only, not at each of the 6 refreshes
    shown = bar.get_metrics(trainer, module)
    assert shown["train/loss_step"] == float(trainer.logged_metrics["train/loss_step"])
    assert "train/loss_epoch" in trainer.logged_metrics
    # Nothing is logged with prog_bar=True during training: Lightning would read it back from
    # the device at every refresh.
    assert not [key for key in trainer.progress_bar_metrics if key.endswith("_step")]
