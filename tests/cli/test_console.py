"""The commands log to the standard output of the moment, not to the one they started with."""

from __future__ import annotations

import contextlib
import io
import logging

from cli.console import CurrentStdout
from cli.errors import naming_files_as_given


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


def test_a_log_line_names_the_users_files_and_leaves_out_the_temporary_ones():
    # lightning-cv segment: its nested run writes into a temporary folder deleted at the end.
    log = logging.getLogger("tests.console.given")
    log.handlers, log.propagate = [CurrentStdout()], False
    log.setLevel(logging.INFO)
    out = io.StringIO()
    given = {"/tmp/strokeseg-segment-x/out/patient.nii.gz": "mask.mha"}
    with contextlib.redirect_stdout(out):
        with naming_files_as_given(given, unseen=["/tmp/strokeseg-segment-x"]):
            log.info("%s -> %s", "patient", "/tmp/strokeseg-segment-x/out/patient.nii.gz")
            log.info("Wrote cache %s", "/tmp/strokeseg-segment-x/cache/isles2022-all")
        log.info("after: %s", "/tmp/strokeseg-segment-x/out/patient.nii.gz")  # renamed no more
    assert out.getvalue().splitlines() == [
        "patient -> mask.mha",
        "after: /tmp/strokeseg-segment-x/out/patient.nii.gz",
    ]
