"""Collectives on Python objects that also run on one process (where they do nothing)."""

from __future__ import annotations

from typing import TypeVar, cast

import torch

T = TypeVar("T")


def gather_objects(value: T) -> list[T]:
    """Every process's ``value``, in rank order: ``[value]`` without a process group.

    A collective: under DDP every rank must call it, in the same order as the others.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    gathered: list[T | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return cast(list[T], gathered)  # every entry filled by the collective
