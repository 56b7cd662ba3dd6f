"""Exceptions a user can act on: every message says what, where, and what to do."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root does not exist or does not have the expected layout."""


class DataValidationError(ValueError):
    """A file of the dataset is unreadable or violates the layout's invariants."""
