"""SegmentationModule on whole cases: a perfect network must score perfectly on any grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from datamodules.cache import CacheItem, DecodedCase, SliceCache
from datamodules.cache_build import build_slice_cache
from datamodules.datasets import CaseDataset
from datamodules.geometry import SliceGeometry
from evaluation.metrics import isles2018
from lightning_modules import SegmentationModule
from losses import FocalLoss


class _Oracle(nn.Module):
    """A "network" that returns the lesion its input channel holds (as two-class logits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = 20.0 * (x[:, :1] - 0.5)
        return torch.cat([-lesion, lesion], dim=1)


def _cases(tmp_path, geometry: SliceGeometry, shapes):
    rng = np.random.default_rng(0)
    labels, items = [], []
    for i, shape in enumerate(shapes):
        label = np.zeros(shape, dtype=np.uint8)
        x, y = shape[0] // 3, shape[1] // 3
        label[x : 2 * x, y : 2 * y, :] = rng.random((x, y, shape[2])) < 0.9  # a lesion block
        labels.append(label)
        path = tmp_path / f"case{i}.nii"
        nib.save(
            nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([0.8, 0.9, 5.0, 1])), str(path)
        )
        items.append(CacheItem(f"case{i}", i, i, (path,)))

    def load(item: CacheItem) -> DecodedCase:
        label = labels[int(item.name[4:])]
        return DecodedCase(label[None].astype(np.float32), label, (0.8, 0.9, 5.0))

    cache = SliceCache(
        build_slice_cache(tmp_path / "cache" / "k", items, load, ["lesion"], geometry, {})
    )
    return CaseDataset(cache, np.arange(len(items)), geometry, items), labels


@pytest.mark.parametrize("size, exact", [(None, True), ((64, 48), False)])
def test_a_perfect_network_scores_dice_one_through_crop_and_resize(tmp_path, size, exact):
    # A non-square 61×53 grid, sliced (Z, Y, X) like ATLAS, with a crop window and a resize.
    geometry = SliceGeometry.create((2, 1, 0), crop=(6, 50, 4, 40), size=size)
    dataset, labels = _cases(tmp_path, geometry, [(44, 53, 7), (44, 53, 5)])
    module = SegmentationModule(_Oracle(), FocalLoss(), metrics="isles2018").eval()
    for case, label in zip(dataset, labels):
        with torch.no_grad():
            probability = module.predict_case(case).probability
        assert probability.shape == case["native_shape"] == geometry.native_shape(label.shape)
        mask = geometry.to_source((probability >= 0.5).numpy().astype(np.uint8))
        dice = isles2018(mask, label, (0.8, 0.9, 5.0))["dice"]
        assert dice == 1.0 if exact else dice > 0.97


def test_predictions_kept_side_by_side_are_each_their_own_case(tmp_path):
    """The native-grid outputs reuse host buffers from case to case (core.host_buffers):
    a prediction still held, as Lightning holds a step's output while the next case is
    predicted or a list keeps them all, is never written over by a later case."""
    geometry = SliceGeometry.create((2, 1, 0), crop=(6, 50, 4, 40))
    shapes = [(44, 53, 7), (44, 53, 7), (44, 53, 7)]
    dataset, labels = _cases(tmp_path, geometry, shapes)
    module = SegmentationModule(_Oracle(), FocalLoss(), metrics="isles2018").eval()
    with torch.inference_mode():
        kept = [module.predict_case(case).probability for case in dataset]
        alone = [module.predict_case(case).probability.clone() for case in dataset]
    assert len({p.data_ptr() for p in kept}) == 3
    for probability, fresh, label in zip(kept, alone, labels, strict=True):
        assert torch.equal(probability, fresh)
        assert geometry.to_source((probability >= 0.5).numpy().astype(np.uint8)).sum() == (
            label.sum()
        )


def test_validation_reports_case_names_not_indices(tmp_path):
    geometry = SliceGeometry.create((2, 0, 1))
    dataset, _ = _cases(tmp_path, geometry, [(20, 16, 3), (20, 16, 4)])
    module = SegmentationModule(_Oracle(), FocalLoss(), metrics="isles2018").eval()
    module.log = lambda *args, **kwargs: None  # no trainer here
    module.log_dict = lambda *args, **kwargs: None
    for case in dataset:
        with torch.no_grad():
            module.validation_step(case, 0)
    module.on_validation_epoch_end()
    assert [row["case"] for row in module.case_table] == ["case0", "case1"]
    assert all(row["dice"] == 1.0 for row in module.case_table)
