"""Where the commands' log messages go: the standard output of the moment.

A handler created with ``StreamHandler(sys.stdout)`` keeps the stream it was given. When a
command runs inside another process (``lightning-cv segment`` runs ``lightning predict`` in
process; the tests run the commands in process with their output captured), a later command
would write into an earlier one's stream. This handler looks ``sys.stdout`` up at every message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO


class CurrentStdout(logging.StreamHandler):
    """A ``StreamHandler`` on whatever ``sys.stdout`` is when a message is emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns one: ignored
        pass
