"""Per-case tables of a run: written as CSV (atomically), read back, and shown as text.

A row is one case: ``{"case": name, <metric>: value, ...}`` with the metrics of a preset
(:mod:`evaluation.metrics`). The fold workflow reads these tables back to pool folds. Voxel
counts (``tp``, ``fp``, ``fn``, preset ``atlas_dunet``) are pooled over cases, never averaged:
:func:`global_dice`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataValidationError
from core.io import temporary_sibling
from core.protocols import Row
from evaluation.metrics import VOXEL_COUNT_METRICS


def write_case_table(path: Path, rows: Sequence[Row]) -> Path | None:
    """Write ``rows`` as CSV at ``path`` (temporary file, then rename); nothing for no rows.

    The columns are every key of the rows, in the order they first appear: rows need not
    carry the same keys (a fold's ``hd_inf`` count exists only where a distance was
    infinite); a row's cell of a key it lacks is empty.
    """
    if not rows:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def read_case_table(path: Path) -> list[Row]:
    """Rows of a table written by :func:`write_case_table`, numbers as floats.

    Raises:
        DataValidationError: For a file without a header, or a row with fewer or more cells
            than the header (a table cut off while being written or copied), naming the file
            and the line.
    """
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise DataValidationError(
                f"{path} is empty: a per-case table starts with a header line (case,<metric>,…). "
                "It was cut off while being written or copied; copy it again, or re-run the "
                "fold's validation (lightning validate --config <fold>/config.yaml --ckpt_path best)."
            )
        rows = []
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                raise DataValidationError(
                    f"{path}, line {reader.line_num}: the row does not have the header's "
                    f"{len(reader.fieldnames)} cells ({', '.join(reader.fieldnames)}). The "
                    "table was cut off or edited; copy it again, or re-run the fold's validation "
                    "(lightning validate --config <fold>/config.yaml --ckpt_path best)."
                )
            rows.append({key: _number(value) for key, value in row.items()})
        return rows


def global_dice(rows: Sequence[Row]) -> float:
    """D-UNet's global Dice of per-case rows with voxel counts: 2ΣTP / (2ΣTP + ΣFP + ΣFN) over
    the cases (1.0 when every mask is empty; NaN without rows)."""
    if not rows:
        return math.nan
    tp, fp, fn = (sum(float(r[k]) for r in rows) for k in ("tp", "fp", "fn"))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def _count(value: Any) -> str:
    number = _number(value)
    return f"{number:.0f}" if isinstance(number, float) and math.isfinite(number) else str(value)


def format_case_table(rows: Sequence[Row], title: str = "") -> str:
    """Fixed-width text table of per-case rows, with a mean row over the finite values.

    Infinite values (a Hausdorff distance with one empty mask) are counted in the mean row,
    ``(2×inf)``, not averaged. Voxel counts (``tp``, ``fp``, ``fn``) are summed there
    (``Σ 1234``), and a last line gives their :func:`global_dice`.
    """
    if not rows:
        return f"{title}\n(no cases)"
    columns = list(rows[0])
    cells = [
        [_count(row[c]) if c in VOXEL_COUNT_METRICS else _format(_number(row[c])) for c in columns]
        for row in rows
    ]
    means = ["mean"]
    for column in columns[1:]:
        values = [_number(row[column]) for row in rows]
        finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
        if column in VOXEL_COUNT_METRICS:
            means.append(f"Σ {sum(finite):.0f}")
            continue
        infinite = sum(isinstance(v, float) and math.isinf(v) for v in values)
        mean = _format(float(np.mean(finite))) if finite else "-"
        means.append(mean + (f" ({infinite}×inf)" if infinite else ""))
    widths = [max(len(c), *(len(r[i]) for r in [*cells, means])) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    footer = "  ".join(v.rjust(w) for v, w in zip(means, widths))
    rule = "-" * len(line)
    pooled = []
    if VOXEL_COUNT_METRICS <= set(columns):
        pooled.append(
            f"global_dice {_format(global_dice(rows))} (2ΣTP / (2ΣTP + ΣFP + ΣFN) over "
            f"{len(rows)} cases)"
        )
    return "\n".join([title, line, rule, *body, rule, footer, *pooled]).strip("\n")
