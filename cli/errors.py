"""The error policy of the suite's commands (``lightning``, ``lightning-data``, ``lightning-cv``).

A user's mistake is a :class:`core.errors.UserError` somewhere in the exception's chain
(jsonargparse and Lightning may wrap it several times before it reaches the command): it is
printed as one paragraph, ``error: <what, where, what to do>``, and the command exits with
status 2, without a traceback. Anything else is a bug: it keeps its traceback (a plain
``ValueError`` raised deep inside is *not* taken for a user mistake). The ``lightning``
command's parse errors are shortened by :mod:`cli.parse_errors`.

This module imports nothing heavy: ``lightning-data`` answers without loading Lightning.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

from core.errors import ConfigurationErrorOnEveryRank, UserError

#: Exit status of a user's mistake (argparse's for usage errors).
USER_ERROR_STATUS = 2

# Temporary files a command made from the user's own (a NIfTI converted from an .mha) → the
# file the user gave, named in their place in the errors and log lines printed here.
_GIVEN_AS: dict[str, str] = {}
# Temporary folders the user never sees: a log line still naming one is left out.
_UNSEEN: list[str] = []


@contextlib.contextmanager
def naming_files_as_given(
    files: Mapping[str, str | Path], unseen: Sequence[str | Path] = ()
) -> Iterator[None]:
    """Within the block, a user error or a log line that names one of ``files`` (temporary file
    or folder → the user's own) names the user's file instead: errors and messages of a nested
    command (the ``lightning`` run of ``lightning-cv segment``) are printed here, where the
    caller cannot rename them. A log line that still names a path in one of the ``unseen``
    folders (a temporary cache, run folder or output the command deletes when it ends) is left
    out: it would name files that are gone when the user reads it."""
    saved, saved_unseen = dict(_GIVEN_AS), list(_UNSEEN)
    _GIVEN_AS.update({str(made): str(given) for made, given in files.items()})
    _UNSEEN.extend(str(folder) for folder in unseen)
    try:
        yield
    finally:
        _GIVEN_AS.clear()
        _GIVEN_AS.update(saved)
        _UNSEEN[:] = saved_unseen


def as_given(text: str) -> str:
    """``text`` naming files as the user gave them (:func:`naming_files_as_given`)."""
    for made in sorted(_GIVEN_AS, key=len, reverse=True):
        text = text.replace(made, _GIVEN_AS[made])
    return text


def names_unseen(text: str) -> bool:
    """Whether ``text`` names a path in a folder the user never sees (:func:`naming_files_as_given`)."""
    return any(folder in text for folder in _UNSEEN)


def user_message(error: BaseException) -> str:
    """A user error's message, naming files as the user gave them (:func:`naming_files_as_given`)."""
    return as_given(str(error))


def find_user_error(error: BaseException) -> BaseException | None:
    """The first user error in ``error``'s chain of causes and contexts, if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError):
            return current
        stack += [current.__context__, current.__cause__]
    return None


def _started_by_the_first_process() -> bool:
    """Whether this process is one that Lightning's DDP launcher started from the same command
    (``lightning fit … --trainer.devices 2``): a rank above 0 whose parent process, rank 0,
    runs the same arguments. Lightning's launcher alone starts ranks so; SLURM and torchrun
    start every rank themselves."""
    local_rank = os.environ.get("LOCAL_RANK", "")
    if not (local_rank.isdigit() and int(local_rank) > 0) or len(sys.argv) < 2:
        return False
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:  # not Linux: print on every rank
        return False
    ours = [os.fsencode(arg) for arg in sys.argv[1:]]
    return parent[-len(ours) :] == ours


def _parent_exited(timeout: float) -> bool:
    """Wait until this process's parent has exited (it is then adopted by another), at most
    ``timeout`` seconds; whether it did."""
    parent, deadline = os.getppid(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            return True
        time.sleep(0.05)
    return False


#: How long a rank above 0 waits for rank 0 to print an error they both raised (and exit).
_FIRST_PROCESS_GRACE_S = 30.0


def report_user_error(error: BaseException, prog: str | None = None) -> bool:
    """For a user mistake in ``error``'s chain: print it as one ``error:`` paragraph on stderr
    (``<prog>: error: …`` when ``prog`` is given) and return True; anything else: False.

    A :class:`core.errors.ConfigurationErrorOnEveryRank` in a rank that Lightning's launcher
    started (:func:`_started_by_the_first_process`) is left to rank 0 to print: the rank
    waits until rank 0 has exited, and prints it itself only if rank 0 has not within
    :data:`_FIRST_PROCESS_GRACE_S`. Leaving at once instead would let Lightning's watch over
    its ranks kill rank 0 before it printed (it kills every rank when one exits with an
    error). Ranks that SLURM or torchrun started print it each, as any other error."""
    user_error = find_user_error(error)
    if user_error is None:
        return False
    if (
        isinstance(user_error, ConfigurationErrorOnEveryRank)
        and _started_by_the_first_process()
        and _parent_exited(_FIRST_PROCESS_GRACE_S)
    ):
        return True
    sys.stderr.write(f"{prog + ': ' if prog else ''}error: {user_message(user_error)}\n")
    return True


def exit_if_user_error(error: BaseException, prog: str | None = None) -> None:
    """For a user mistake in ``error``'s chain: print it (:func:`report_user_error`) and exit
    with status 2. Anything else returns, for the caller to re-raise with its traceback."""
    if report_user_error(error, prog):
        sys.exit(USER_ERROR_STATUS)


def _close_option(given: str, options: Sequence[str]) -> str | None:
    """The option ``given`` (``--name`` or ``--name=value``) most likely meant: the one it
    abbreviates, else a close spelling; None for neither."""
    name = given.split("=", 1)[0]
    if name in options:
        return None
    abbreviated = [option for option in options if option.startswith(name)]
    if len(abbreviated) == 1:
        return abbreviated[0]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.8)
    return close[0] if close else None


class UserArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors (a missing argument, an unknown subcommand or choice)
    follow the error policy: one ``error:`` line first, the usage banner never before it, exit
    status 2. Its subcommands' parsers are of this class too (argparse makes them so).

    It takes no abbreviated option (a recipe's ``--save-prob`` would silently mean
    ``--save-probability``), and names the option an unknown one most likely meant.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _options(self) -> list[str]:
        """The long options of this parser and of its subcommands'."""
        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    if isinstance(parser, UserArgumentParser):
                        options += parser._options()
        return options

    def subcommand(self, name: str) -> UserArgumentParser:
        """The parser of subcommand ``name``."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return cast(UserArgumentParser, action.choices[name])
        raise KeyError(name)

    def refuse_misspelt(self, passed_on: Sequence[str]) -> None:
        """Refuse an option left for another command (``lightning-cv`` passes the options it does
        not know on to ``lightning``) that is this parser's own, abbreviated or misspelt; the
        other command would name it in its own terms. Dotted options (``--trainer.x``) are the
        other command's."""
        options = self._options()
        for given in passed_on:
            if given.startswith("--") and "." not in given.split("=", 1)[0]:
                meant = _close_option(given, options)
                if meant is not None:
                    self.error(f"unrecognized arguments: {given}")

    def error(self, message: str) -> NoReturn:
        unknown = re.match(r"unrecognized arguments: (--[^\s=]+)", message)
        meant = _close_option(unknown.group(1), self._options()) if unknown else None
        if meant is not None:
            message += f" (did you mean {meant}?)"
        sys.stderr.write(
            f"error: {self.prog}: {message}. `{self.prog} --help` lists the options.\n"
        )
        self.exit(USER_ERROR_STATUS)
