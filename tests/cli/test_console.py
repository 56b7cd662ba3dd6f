"""The commands log to the standard output of the moment, not to the one they started with."""

from __future__ import annotations

import contextlib
import io
import logging

from cli.console import CurrentStdout


def test_a_handler_follows_stdout_when_it_is_redirected():
    log = logging.getLogger("tests.console")
    log.handlers, log.propagate = [CurrentStdout()], False
    log.setLevel(logging.INFO)
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(first):
        log.info("one")
    with contextlib.redirect_stdout(second):
        log.info("two")  # a StreamHandler(sys.stdout) made under `first` would write there
    assert (first.getvalue(), second.getvalue()) == ("one\n", "two\n")
