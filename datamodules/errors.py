"""Exceptions a user can act on: every message says what is wrong, where, and what to do.

The ``lightning`` and ``lightning-data`` commands print these as one paragraph and exit with
status 2, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors caused by the user's data or settings, not by the suite."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset root does not exist or does not have the expected layout."""


class DataValidationError(UserError, ValueError):
    """A file of the dataset is unreadable or violates the layout's invariants."""


class ConfigurationError(UserError, ValueError):
    """A setting is invalid for this dataset or machine (folds, cache folder, crop, ...)."""
