import numpy as np
import pytest

from datamodules.splits import grouped_kfold, slice_kfold


def test_folds_partition_items_and_never_split_a_patient():
    patients = np.array([1, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9])
    seen = []
    for fold in range(3):
        train, val = grouped_kfold(patients, num_folds=3, fold=fold, seed=4)
        assert set(patients[train]).isdisjoint(patients[val])
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(patients)))
        seen.extend(val.tolist())
    assert sorted(seen) == list(range(len(patients)))  # every case validated exactly once


def test_split_is_deterministic_per_seed():
    patients = np.arange(20) // 2
    first = grouped_kfold(patients, 5, 1, seed=0)[1]
    assert np.array_equal(first, grouped_kfold(patients, 5, 1, seed=0)[1])
    assert not np.array_equal(first, grouped_kfold(patients, 5, 1, seed=1)[1])


@pytest.mark.parametrize(
    ("num_folds", "fold", "match"),
    [(1, 0, "at least 2"), (5, 5, r"fold must be in \[0, 4\]"), (9, 0, "Cannot make 9 folds")],
)
def test_bad_arguments_raise(num_folds, fold, match):
    with pytest.raises(ValueError, match=match):
        grouped_kfold(np.arange(6), num_folds, fold)


def test_slice_kfold_partitions_the_slices_into_disjoint_folds():
    rows = np.arange(100, 203)
    held_out = [slice_kfold(rows, 10, k, seed=3)[1] for k in range(10)]
    assert np.array_equal(np.sort(np.concatenate(held_out)), rows)
    train, val = slice_kfold(rows, 10, 4, seed=3)
    assert np.array_equal(np.union1d(train, val), rows) and np.intersect1d(train, val).size == 0
    assert len(val) in (10, 11)
    with pytest.raises(ValueError, match="3 slices"):
        slice_kfold(np.arange(3), 10, 0)
