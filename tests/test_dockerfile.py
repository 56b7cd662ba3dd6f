"""The Dockerfile installs what the package is made of and runs a real entry point (no Docker
here: its text is checked against the project it builds)."""

from __future__ import annotations

import re

import tomllib

from cli.challenge import add_parser
from tests.conftest import REPO


def test_the_dockerfile_copies_every_package_and_calls_the_challenge_command():
    text = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, flags=re.MULTILINE))
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    assert copied == {pattern.rstrip("*") for pattern in include}
    assert "-c ${CONSTRAINTS}" in text  # the CPU pin unless CONSTRAINTS= is given
    entry = re.search(r"lightning-cv challenge \\\"\$CHALLENGE\\\" --model /opt/model", text)
    assert entry is not None
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    challenge = re.search(r"ARG CHALLENGE=(\w+)", text)
    assert challenge is not None
    parsed = parser.parse_args(["challenge", challenge.group(1), "--model", "/opt/model"])
    assert (parsed.input, parsed.output) == ("/input", "/output")
