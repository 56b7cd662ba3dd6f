"""jsonargparse's parse errors (a typo in a key or a class path) as one line.

jsonargparse's messages repeat every alternative of every union type; :class:`SuiteArgumentParser`
reduces them to the key path, the failing class and the reason, with a "did you mean" where a
close name exists (for a key of a config file and for an option of the command line alike),
and never prints the usage banner before it (the error policy of :mod:`cli.errors`). It takes
no abbreviated option (``--trainer.max_epoch`` for ``--trainer.max_epochs``). It also parses a
nested class's command-line values as typed (:mod:`cli.nested_values`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from typing import Any, NoReturn

from pytorch_lightning.cli import LightningArgumentParser

from cli.errors import USER_ERROR_STATUS
from cli.nested_values import nested_values_as_read

_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS = re.compile(r"Problem with given class_path '([^']+)'")
_OPTION = re.compile(r"Option '([^']+)' is not accepted")
_SUBCOMMAND_OPTION = re.compile(r"does not accept option '([^']+)'")
_ATTRIBUTE = re.compile(r"module '([^']+)' has no attribute '([^']+)'")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: --([^\s=]+)")
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
    "either not accessible or invalid",
)


def _close(word: str, candidates: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _close_section(key: str, candidates: list[str]) -> str | None:
    """``model.class_path`` for ``modle.class_path``: a typo in the first part of a dotted key
    (a section of a config file), matched against the first parts of the accepted keys."""
    head, dot, rest = key.partition(".")
    if not dot:
        return None
    match = _close(head, sorted({candidate.split(".", 1)[0] for candidate in candidates}))
    return f"{match}.{rest}" if match and match != head else None


def _parameters(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
        return [
            p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")
        ]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


def _suggestion(leaf: str, class_path: str | None, options: list[str]) -> str:
    option = _OPTION.search(leaf) or _SUBCOMMAND_OPTION.search(leaf)
    if option is not None:
        candidates = _parameters(class_path) if class_path and _OPTION.search(leaf) else options
        match = _close(option.group(1), candidates) or _close_section(option.group(1), candidates)
        return f" (did you mean '{match}'?)" if match else ""
    unrecognized = _UNRECOGNIZED.search(leaf)
    if unrecognized is not None:  # a command-line option: the file's keys, as options
        key = unrecognized.group(1)
        match = _close(key, options) or _close_section(key, options)
        return f" (did you mean '--{match}'?)" if match else ""
    attribute = _ATTRIBUTE.search(leaf)
    if attribute is not None:
        module, name = attribute.groups()
        try:
            names = [n for n in dir(importlib.import_module(module)) if not n.startswith("_")]
        except ImportError:
            return ""
        match = _close(name, names)
        return f" (did you mean '{module}.{match}'?)" if match else ""
    return ""


def summarize_parse_error(message: str, options: list[str] | None = None) -> str:
    """One line from a jsonargparse error: the key path, the failing class and the reason.

    Args:
        message: jsonargparse's message (nested union alternatives and all).
        options: The parser's accepted keys, for suggestions on unknown top-level options.
    """
    keys = _KEY.findall(message)
    classes = _CLASS.findall(message)
    leaves = []
    for raw in message.splitlines():
        line = raw.strip().lstrip("- ").strip()
        if not line or _KEY.fullmatch(line.rstrip(":")) or _CLASS.search(line):
            continue
        if any(noise in line for noise in _NOISE):
            continue
        leaves.append(_KEY.sub("", line).strip(" :") or line)
    leaves = list(dict.fromkeys(leaves)) or [message.strip().splitlines()[0]]
    where = ".".join(keys)
    if classes:
        where = f"{where} ({classes[-1]})" if where else classes[-1]
    text = "; ".join(leaves) + _suggestion(
        leaves[0], classes[-1] if classes else None, options or []
    )
    return f"{where}: {text}" if where else text


def _keys_of(parser: Any) -> list[str]:
    keys = []
    try:
        keys += list(parser.get_defaults().keys())
    except Exception:  # a parser that cannot build its defaults offers no suggestions
        pass
    # Options that are no key of a configuration (--print_config, --config).
    keys += [o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")]
    action = getattr(parser, "_subcommands_action", None)
    for subparser in getattr(action, "_name_parser_map", {}).values():
        keys += _keys_of(subparser)
    return keys


class SuiteArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are one line first, the usage never before it, and
    whose nested command-line values reach their class as typed (``null`` as ``None``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The command's own name, whichever way it was started (`python -m cli.lightning`, as
        # lightning-cv does, would name `lightning.py`). No abbreviated options: a recipe's
        # `--trainer.max_epoch 3` taken as max_epochs hides a typo (jsonargparse 5's default).
        kwargs.setdefault("prog", "lightning")
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, *args: Any, **kwargs: Any) -> Any:
        with nested_values_as_read():
            return super().parse_args(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # nested parsing: the caller handles the exception
            super().error(message, ex)
        summary = summarize_parse_error(message, _keys_of(self))
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(
            f"error: {summary}\n"
            f"`{prog} --help` lists the accepted options; `--print_config` shows the composed "
            "configuration.\n"
        )
        self.exit(USER_ERROR_STATUS)
