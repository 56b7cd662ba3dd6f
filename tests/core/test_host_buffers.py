"""HostBuffers: a case's output buffer comes back only once nothing refers to it."""

from __future__ import annotations

import copy
import pickle

import torch

from core.host_buffers import HostBuffers


def _address(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def test_a_released_buffer_is_handed_out_again_with_the_shape_and_dtype_asked():
    pool = HostBuffers()
    first = pool.empty((3, 5, 7))
    address = _address(first)
    del first
    again = pool.empty((3, 5, 7))
    assert _address(again) == address
    assert again.shape == (3, 5, 7) and again.dtype == torch.float32 and again.is_contiguous()
    del again
    smaller = pool.empty((2, 4), torch.uint8)  # a smaller request fits in the same buffer
    assert _address(smaller) == address and smaller.dtype == torch.uint8


def test_a_buffer_still_referred_to_by_a_view_or_a_numpy_array_is_not_reused():
    pool = HostBuffers(keep=4)
    whole = pool.empty((4, 6))
    whole.fill_(1.0)
    view, array = whole[1:3], whole[0].numpy()
    address = _address(whole)
    del whole
    held = pool.empty((4, 6))
    assert _address(held) != address  # the view and the array keep the first one in use
    held.fill_(2.0)
    assert torch.equal(view, torch.ones(2, 6)) and (array == 1.0).all()  # untouched
    del view
    assert _address(pool.empty((4, 6))) != address  # the NumPy array alone still holds it
    del array
    assert _address(pool.empty((4, 6))) == address


def test_the_validation_loop_pattern_two_cases_held_at_once_stay_apart():
    """Lightning keeps a step's output while the next case is predicted: two buffers."""
    pool = HostBuffers()
    previous = pool.empty((10,)).fill_(1.0)
    current = pool.empty((10,)).fill_(2.0)
    assert _address(previous) != _address(current)
    for value in range(3, 8):  # one case dropped, one predicted, all along
        previous, current = current, pool.empty((10,)).fill_(float(value))
        assert previous.eq(value - 1).all() and current.eq(value).all()
    assert len(pool._arrays) == 2


def test_a_larger_request_replaces_a_free_buffer_too_small_and_keeps_the_count():
    pool = HostBuffers(keep=2)
    a, b = pool.empty((10,)), pool.empty((10,))
    del a
    big = pool.empty((100,))  # nothing free is large enough: a new one, the free one dropped
    assert big.numel() == 100 and len(pool._arrays) == 2
    assert _address(b) in {arr.ctypes.data for arr in pool._arrays}


def test_copies_of_a_pool_start_empty():
    pool = HostBuffers(keep=3)
    kept = pool.empty((5,))
    for other in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert other.keep == 3 and other._arrays == []
    assert len(pool._arrays) == 1 and kept.numel() == 5
