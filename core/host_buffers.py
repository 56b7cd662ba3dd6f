"""Reusable host memory for whole-case outputs: on the CPU what CUDA's caching allocator does.

A case's native-grid output is large (an ATLAS scan in float32: 197 × 233 × 189 × 4 B =
35 MB) and made once per case. glibc serves an allocation that large with a fresh ``mmap``
(above its 32 MB threshold it never reuses one), so every case pays the kernel for faulting in
and zeroing each of its pages again, 55 µs per ATLAS slice on these machines: more than the
bilinear mapping to the native grid it holds (docs/performance.md, P6). On a GPU the caching
allocator hands back the block freed by the previous case; :class:`HostBuffers` does the same
for the host.

A buffer is handed out again only once nothing refers to it any more: the tensors it backs
hold a reference to its NumPy array (``torch.from_numpy``), and so do their views and
``.numpy()`` arrays, so the array's reference count says whether any of them is alive. A
caller that keeps a case's output (a list of predictions, a writer queue, an ensemble's sum)
keeps its buffer to itself: the next case gets another.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np
import torch

#: How many buffers a pool keeps: the case being predicted and the one before it, which a
#: validation loop still holds while the next is predicted.
KEEP = 2


def _references(arrays: list[np.ndarray], index: int) -> int:
    return sys.getrefcount(arrays[index])


# What ``_references`` reads for an array only its list refers to, measured rather than
# assumed (2 on CPython 3.11: the list and the call's argument; interpreters that borrow
# references, as 3.14 does, count fewer).
_UNREFERENCED = _references([np.empty(1, dtype=np.uint8)], 0)


class HostBuffers:
    """A small pool of CPU buffers for outputs that would otherwise be allocated per case.

    Args:
        keep: Buffers kept for reuse; a new one takes the place of a free one too small, else of
            the oldest (which stays valid: whoever holds it keeps it alive).
    """

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._arrays: list[np.ndarray] = []

    def empty(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An uninitialised CPU tensor of ``shape`` and ``dtype`` (one NumPy has), in a buffer
        nothing else refers to: a pooled one large enough, or a new one, kept for next time."""
        numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
        nbytes = math.prod(int(n) for n in shape) * numpy_dtype.itemsize
        for index in range(len(self._arrays)):
            # Indexing, not a loop variable: a name bound to the array would count as a holder.
            if self._arrays[index].nbytes >= nbytes and self._is_free(index):
                return self._view(self._arrays[index], nbytes, numpy_dtype, shape)
        if len(self._arrays) >= self.keep:  # make room: a free (too small) one, else the oldest
            free = [i for i in range(len(self._arrays)) if self._is_free(i)]
            self._arrays.pop(free[0] if free else 0)
        array = np.empty(max(nbytes, 1), dtype=np.uint8)
        self._arrays.append(array)
        return self._view(array, nbytes, numpy_dtype, shape)

    def _is_free(self, index: int) -> bool:
        return _references(self._arrays, index) <= _UNREFERENCED

    @staticmethod
    def _view(
        array: np.ndarray, nbytes: int, dtype: np.dtype, shape: Sequence[int]
    ) -> torch.Tensor:
        return torch.from_numpy(array[:nbytes].view(dtype).reshape(tuple(int(n) for n in shape)))

    def clear(self) -> None:
        """Forget every pooled buffer (those in use stay valid for their holders)."""
        self._arrays = []

    # A copy of a module (DDP's spawn, ``copy.deepcopy``) starts with an empty pool of its own:
    # sharing or pickling a buffer would only carry stale memory along.
    def __getstate__(self) -> dict[str, object]:
        return {"keep": self.keep, "_arrays": []}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.keep = int(state["keep"])  # type: ignore[call-overload]
        self._arrays = []

    def __deepcopy__(self, memo: dict[int, object]) -> HostBuffers:
        return HostBuffers(self.keep)
