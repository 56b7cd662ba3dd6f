"""CaseMean: the mean of per-case values, the same bit for bit however DDP shares the cases."""

import itertools
import math

import pytest
import torch
from torchmetrics import MeanMetric

from evaluation import CaseMean
from tests.conftest import run_gloo

# Added in this order, float32 sums differ in the last digit: (0.6 + 0.7) + 0.1 on one process,
# (0.6 + 0.1) + 0.7 on two (DistributedSampler gives rank 0 cases 0 and 2, rank 1 case 1).
VALUES = (0.6, 0.7, 0.1)


def _mean(metric, values) -> torch.Tensor:
    for value in values:
        metric.update(torch.tensor(value, dtype=torch.float32))
    return metric.compute()


def test_the_mean_by_hand_and_without_cases():
    assert _mean(CaseMean(), [0.25, 0.5, 1.0]).item() == 1.75 / 3
    assert _mean(CaseMean(), [0.25]).dtype == torch.float64
    assert math.isnan(CaseMean().compute().item())


def test_a_nan_makes_the_mean_nan_unless_left_out():
    assert math.isnan(_mean(CaseMean(), [0.5, math.nan]).item())
    with pytest.warns(UserWarning, match="nan"):
        assert _mean(CaseMean(nan_strategy="warn"), [0.5, math.nan]).item() == 0.5


def test_the_order_the_cases_come_in_does_not_change_a_digit():
    orders = list(itertools.permutations(VALUES))
    running = {_mean(MeanMetric(), order).item() for order in orders}
    assert len(running) > 1, "the values no longer show MeanMetric's order dependence"
    assert len({_mean(CaseMean(), order).item() for order in orders}) == 1


def _ddp_worker(rank: int, shards: list[list[float]]) -> float:
    return _mean(CaseMean(), shards[rank]).item()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_ddp_gives_one_process_mean_bit_for_bit():
    single = _mean(CaseMean(), VALUES).item()
    for shards in ([[0.6, 0.1], [0.7]], [[0.1], [], [0.7, 0.6]]):  # uneven; a rank without cases
        outcomes = run_gloo(_ddp_worker, len(shards), shards)
        assert {rank: kind for rank, (kind, _) in outcomes.items()} == dict.fromkeys(
            range(len(shards)), "returned"
        ), outcomes
        assert {value for _, value in outcomes.values()} == {single}
