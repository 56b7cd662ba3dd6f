"""Where the commands' log messages go: the standard output of the moment.

A handler created with ``StreamHandler(sys.stdout)`` keeps the stream it was given. When a
command runs inside another process (``lightning-cv segment`` runs ``lightning predict`` in
process; the tests run the commands in process with their output captured), a later command
would write into an earlier one's stream. This handler looks ``sys.stdout`` up at every message.
It also names files as the user gave them, and leaves out the lines about temporary files the
user never sees (:func:`cli.errors.naming_files_as_given`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from cli.errors import as_given, names_unseen


class CurrentStdout(logging.StreamHandler):
    """A ``StreamHandler`` on whatever ``sys.stdout`` is when a message is emitted, naming files
    as the user gave them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns one: ignored
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # emit() reports a malformed message as logging does
            return bool(super().filter(record))
        return bool(super().filter(record)) and not names_unseen(as_given(message))

    def format(self, record: logging.LogRecord) -> str:
        return as_given(super().format(record))
