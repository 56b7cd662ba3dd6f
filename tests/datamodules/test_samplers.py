"""EpochSampler: every epoch's order and augmentation seeds are a function of (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.datasets import SliceDataset
from datamodules.samplers import EpochSampler


def test_an_epoch_is_drawn_the_same_whatever_came_before():
    first = EpochSampler(50, seed=3)
    first.set_epoch(4)
    fresh = EpochSampler(50, seed=3)  # e.g. after a resume: epochs 0-3 never drawn here
    for epoch in range(4):
        first.set_epoch(epoch)
        list(first)
    first.set_epoch(4)
    fresh.set_epoch(4)
    assert list(first) == list(fresh)
    fresh.set_epoch(5)
    assert list(first) != list(fresh)
    assert list(EpochSampler(50, seed=4)) != list(EpochSampler(50, seed=3))


def test_the_shards_of_two_processes_cover_one_permutation():
    shards = [EpochSampler(11, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    for shard in shards:
        shard.set_epoch(2)
    zero, one = (list(s) for s in shards)
    assert len(zero) == len(one) == len(shards[0]) == 6  # padded by wrapping around
    positions, seeds = shards[0].draws(2)
    assert sorted(positions) == list(range(11))
    merged = [p for pair in zip(zero, one) for p in pair][:11]
    assert merged == list(zip(positions.tolist(), seeds.tolist()))


def test_weights_draw_with_replacement_in_proportion():
    weights = np.array([0.9, 0.1 / 9, *[0.1 / 9] * 8])
    sampler = EpochSampler(10, seed=1, weights=weights)
    drawn = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        drawn += [p for p, _ in sampler]
    assert np.mean(np.asarray(drawn) == 0) == pytest.approx(0.9, abs=0.02)


class _Cache:
    """The slice-cache surface SliceDataset reads: 4 slices of one case."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.random((4, 1, 8, 8), dtype=np.float32)
        self.labels = (rng.random((4, 8, 8)) > 0.7).astype(np.uint8)
        self.case_offsets = np.array([0, 4])

    def case_of_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.zeros(len(rows), dtype=np.int64)


def test_a_seeded_sample_is_augmented_the_same_in_any_worker_and_order():
    from datamodules.geometry import SliceGeometry
    from datamodules.transforms import Augmentation

    geometry = SliceGeometry.create(axes=(2, 0, 1), crop=None, size=None, context=(0,))
    dataset = SliceDataset(_Cache(), np.arange(4), geometry, Augmentation().transform())
    first = dataset[(2, 1234)]
    for key in [(0, 7), 1, (3, 99)]:  # other samples drawn in between (another worker's state)
        dataset[key]
    again = dataset[(2, 1234)]
    other = dataset[(2, 4321)]
    torch.testing.assert_close(first["image"], again["image"])
    torch.testing.assert_close(first["label"], again["label"])
    assert not torch.equal(first["image"], other["image"])
