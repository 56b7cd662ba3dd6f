"""Command-line values of nested classes reach them as typed: ``null`` is ``None``, not "None".

jsonargparse 4.53 (and the earlier releases that share the code) reads a command-line value
given two or more keys below a class (``--model.init_args.net.init_args.pretrained_weights null``:
the network inside the module) in two steps. The module's option reads the text first: ``null``
becomes ``None``, a list or a dict a Python one (every other text stays as typed). It then hands
the rest of the key to the network's own parser as ``f"--{key}={value}"``
(``_typehints.adapt_class_type``), that is as Python's ``str()`` of what it read: ``None`` becomes
the text "None", which a ``str | None`` argument takes as a string (a ``Path | None`` as a file
called None, an ``int | None`` refuses it), and a ``None`` inside a list or a dict becomes "None"
too. In a config file, and one key below a class (``--data.init_args.augmentation null``), the
value is not re-read and is right.

:func:`nested_values_as_read` hands the network's parser that value as YAML (``null``,
``[1, null]``), the text it is read back from unchanged, while a command line is parsed.
jsonargparse offers no setting for it, so this wraps a private function (and reads the private
``NestedArg``); if a release moves either, the command line parses as jsonargparse alone does
and ``tests/cli/test_nested_values.py`` fails.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import yaml
from jsonargparse import Namespace, _typehints

try:
    from jsonargparse._util import NestedArg

    _ADAPT_CLASS_TYPE = _typehints.adapt_class_type
    #: Whether this jsonargparse has the two private names the fix needs. Without them (a later
    #: release) the command line parses as jsonargparse does; the tests fail, not the command.
    AVAILABLE = True
except (ImportError, AttributeError):  # pragma: no cover - another jsonargparse
    AVAILABLE = False


def _as_text(value: Any) -> str:
    """YAML that reads back as ``value`` (``null``, ``[1, null]``, ``{a: null}``), on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    return text.removesuffix("...\n").strip()  # a lone scalar ends its document


def _adapt_class_type_as_read(value: Any, *args: Any, **kwargs: Any) -> Any:
    """jsonargparse's ``adapt_class_type``, handed a read nested value as text it reads back."""
    init_args = value.get("init_args") if isinstance(value, Namespace) else None
    if isinstance(init_args, NestedArg) and not isinstance(init_args.val, str):
        value["init_args"] = init_args._replace(val=_as_text(init_args.val))
    return _ADAPT_CLASS_TYPE(value, *args, **kwargs)


@contextlib.contextmanager
def nested_values_as_read() -> Iterator[None]:
    """Within the block, jsonargparse passes a command line's nested values on as they were read.

    Re-entrant: a class's own parser parses inside its parent's parse.
    """
    if not AVAILABLE or _typehints.adapt_class_type is _adapt_class_type_as_read:
        yield
        return
    _typehints.adapt_class_type = _adapt_class_type_as_read
    try:
        yield
    finally:
        _typehints.adapt_class_type = _ADAPT_CLASS_TYPE
