"""Training samplers whose every draw is a function of ``(seed, epoch)``, so a resumed run repeats
the uninterrupted one exactly.

PyTorch's own samplers and a DataLoader's persistent workers carry random state from epoch to
epoch that no checkpoint holds: after a resume the order of the slices and their augmentation
differ from those of a run that was never interrupted. :class:`EpochSampler` draws each epoch's
order from a generator seeded with ``(seed, epoch)`` and hands every sample its own seed, which
:class:`~datamodules.datasets.SliceDataset` uses for its augmentation. The epoch comes from
Lightning, which calls ``set_epoch`` on the sampler of each training dataloader.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch.utils.data import DistributedSampler

# Sample seeds are drawn below this bound (numpy's RandomState accepts [0, 2**32)).
_SEED_BOUND = 2**31 - 1


class _Length(Sized):
    """Stands in for the dataset in ``DistributedSampler``'s bookkeeping (only its length)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class EpochSampler(DistributedSampler):
    """Shuffled or weighted sampling, sharded across processes, reproducible per epoch.

    It yields ``(position, sample_seed)`` pairs: ``position`` indexes the dataset, and the
    dataset seeds the augmentation of that sample with ``sample_seed``. Epoch ``e`` of a run
    draws the same pairs whether or not the run was interrupted before it.

    A :class:`~torch.utils.data.DistributedSampler` by type, so Lightning uses it as it is
    under DDP instead of wrapping it: each process takes every ``num_replicas``-th draw of the
    same global sequence (padded by wrapping around to equal lengths).

    Args:
        length: Number of samples in the dataset.
        seed: Base seed (the run's ``seed_everything``).
        weights: Optional per-sample weights: draw ``length`` samples with replacement in
            proportion to them (foreground oversampling). ``None``: a permutation.
        num_replicas: Processes sharing the epoch; ``None``: the process group's size, or 1.
        rank: This process's rank; ``None``: from the process group, or 0.
    """

    def __init__(
        self,
        length: int,
        seed: int,
        weights: np.ndarray | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        super().__init__(
            _Length(length),  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.length = length
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The global ``(positions, sample_seeds)`` of ``epoch``, before sharding."""
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        )
        if self.weights is None:
            positions = torch.randperm(self.length, generator=generator)
        else:
            positions = torch.multinomial(
                self.weights, self.length, replacement=True, generator=generator
            )
        seeds = torch.randint(_SEED_BOUND, (self.length,), generator=generator)
        return positions.numpy(), seeds.numpy()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        positions, seeds = self.draws(self.epoch)
        padding = self.total_size - self.length
        if padding > 0:
            repeat = int(np.ceil(padding / self.length))
            positions = np.concatenate([positions, *[positions] * repeat])[: self.total_size]
            seeds = np.concatenate([seeds, *[seeds] * repeat])[: self.total_size]
        mine = slice(self.rank, self.total_size, self.num_replicas)
        return zip(positions[mine].tolist(), seeds[mine].tolist())
