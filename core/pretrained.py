"""Whether a network being built should read its pretrained initialisation from disk.

A network built to receive a trained checkpoint's weights (``validate``/``test``/``predict`` with
``--ckpt_path``, a resumed fit, an ensemble member, a model folder) gets every tensor from that
checkpoint, so the pretrained file it was first initialised from (the VOC PSPNet of seed 003) is
not needed: a model handed to someone else, or run from another working folder, or in a
challenge container, does not ship it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("weights_from_checkpoint", default=False)


@contextlib.contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Within the block, networks skip their pretrained initialisation: a checkpoint's weights
    are assigned over every tensor once they are built."""
    token = _FROM_CHECKPOINT.set(True)
    try:
        yield
    finally:
        _FROM_CHECKPOINT.reset(token)


def pretrained_initialisation_wanted() -> bool:
    """``False`` inside :func:`weights_from_checkpoint`; a network reads its pretrained file
    only when this is ``True``."""
    return not _FROM_CHECKPOINT.get()
