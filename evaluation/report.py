"""Per-case tables of a run: written as CSV (atomically), read back, and shown as text.

A row is one case: ``{"case": name, <metric>: value, ...}`` with the metrics of a preset
(:mod:`evaluation.metrics`). The fold workflow reads these tables back to pool folds.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` at ``path`` (parents created) through a temporary file and a rename, so a
    reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_case_table(path: Path, rows: Sequence[Row]) -> Path | None:
    """Write ``rows`` as CSV at ``path`` (temporary file, then rename); nothing for no rows."""
    if not rows:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def read_case_table(path: Path) -> list[Row]:
    """Rows of a table written by :func:`write_case_table`, numbers as floats."""
    with path.open(newline="") as handle:
        return [
            {key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)
        ]


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def format_case_table(rows: Sequence[Row], title: str = "") -> str:
    """Fixed-width text table of per-case rows, with a mean row over the finite values.

    Infinite values (a Hausdorff distance with one empty mask) are counted in the mean row,
    ``(2×inf)``, not averaged.
    """
    if not rows:
        return f"{title}\n(no cases)"
    columns = list(rows[0])
    cells = [[_format(_number(row[c])) for c in columns] for row in rows]
    means = ["mean"]
    for column in columns[1:]:
        values = [_number(row[column]) for row in rows]
        finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
        infinite = sum(isinstance(v, float) and math.isinf(v) for v in values)
        mean = _format(float(np.mean(finite))) if finite else "-"
        means.append(mean + (f" ({infinite}×inf)" if infinite else ""))
    widths = [max(len(c), *(len(r[i]) for r in [*cells, means])) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    footer = "  ".join(v.rjust(w) for v, w in zip(means, widths))
    rule = "-" * len(line)
    return "\n".join([title, line, rule, *body, rule, footer]).strip("\n")
