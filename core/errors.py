"""The user errors of the suite: each message says what is wrong, where, and what to do.

The commands (``lightning``, ``lightning-data``, ``lightning-cv``) print a :class:`UserError`
as one paragraph and exit with status 2, without a traceback. Any other exception is a bug and
keeps its traceback; raising a plain ``ValueError`` for a user's mistake therefore shows the
user a traceback, so library code raises one of the classes below.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_few(items: Sequence[str], shown: int) -> str:
    """The first ``shown`` of ``items`` joined for a message, and how many more there are."""
    more = len(items) - shown
    joined = ", ".join(items[:shown])
    return f"{joined}, … ({more} more)" if more > 0 else joined


class UserError(Exception):
    """Base of the errors caused by the user's data, files or settings, not by the suite."""


class ConfigurationError(UserError, ValueError):
    """A setting is invalid for this dataset, run folder or machine (folds, cache folder, ...)."""


class ConfigurationErrorOnEveryRank(ConfigurationError):
    """A :class:`ConfigurationError` that every DDP process raises alike, decided from the same
    information (the split, the process count, a shared folder), so none is left waiting in a
    collective. Where Lightning's launcher started the processes, the commands print it from
    the first process only, instead of once a process (:func:`cli.errors.report_user_error`)."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset root does not exist or does not have the expected layout."""


class OutputExistsError(UserError, FileExistsError):
    """An output file or folder exists, and replacing it was not asked for (or is not safe)."""


class DataValidationError(UserError, ValueError):
    """A file of the dataset, or a table a run wrote, is unreadable or violates its layout."""


class WeightsError(UserError, ValueError):
    """A weights file (pretrained weights, a checkpoint) is missing, unreadable or does not fit."""


class PretrainedWeightsNotFoundError(WeightsError, FileNotFoundError):
    """The pretrained weights a network was asked to load are not on disk (never downloaded)."""


class CheckpointError(WeightsError):
    """A Lightning checkpoint is empty, truncated, or not a checkpoint."""


class FoldFailedError(UserError):
    """A fold of a cross-validation exited with an error (its own message was printed above)."""
