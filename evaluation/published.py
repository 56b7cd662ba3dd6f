"""The five papers' published numbers, shipped as ``evaluation/data/published.json``.

One entry per paper result, keyed ``"<paper>/<variant>"`` (``"abulnaga/focal"``,
``"zhou/dunet"``, ...): the figures exactly as printed, the table they come from, the dataset
and protocol they were measured on, and the metric preset (:mod:`evaluation.metrics`) whose
column names the metrics use, so a report can put a run beside the paper. docs/metrics.md,
"Reported paper numbers", is the human-readable copy; this module is what code reads.

The file is read with ``parse_float=Decimal`` so that the number of printed digits survives:
``0.50`` stays two decimals, which sets the rounding tolerance of the fold check below.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from core.errors import ConfigurationError
from evaluation.metrics import PRESET_METRICS

DATA_FILE = "data/published.json"

_KEY = re.compile(r"^[a-z0-9]+/[a-z0-9_]+$")
_ENTRY_FIELDS = frozenset(
    {"paper", "source", "dataset", "protocol", "preset", "metrics", "pooled", "note", "parameters"}
)
_PAPER_FIELDS = frozenset({"authors", "title", "venue", "year", "arxiv"})
_VALUE_FIELDS = frozenset({"mean", "sd", "folds"})


@dataclass(frozen=True)
class PublishedPaper:
    """The paper a result comes from.

    Attributes:
        authors: Short citation form, e.g. ``"Abulnaga & Rubin"`` or ``"Zhou et al."``.
        title: The paper's title.
        venue: Journal or proceedings.
        year: Year of publication.
        arxiv: arXiv identifier (``"1811.01085"``), or ``None`` if there is none.
    """

    authors: str
    title: str
    venue: str
    year: int
    arxiv: str | None

    @property
    def citation(self) -> str:
        """``"Abulnaga & Rubin 2018"``."""
        return f"{self.authors} {self.year}"


@dataclass(frozen=True)
class PublishedValue:
    """One printed metric: a mean, its standard deviation and per-fold values where printed.

    Attributes:
        mean: The printed value (a mean over cases or folds, or a pooled figure).
        sd: The printed ± standard deviation, or ``None``.
        folds: The printed per-fold values, in fold order, or ``None``.
        printed: The value with its printed digits (``"0.5243 ± 0.2910"``, trailing zeros
            kept); empty when built by hand.
    """

    mean: float
    sd: float | None
    folds: tuple[float, ...] | None
    printed: str = field(default="", compare=False)


@dataclass(frozen=True)
class PublishedResult:
    """One published result of one of the reproduced papers.

    Attributes:
        key: ``"<paper>/<variant>"``, e.g. ``"abulnaga/focal"``; experiment YAMLs refer to it.
        paper: The paper.
        source: Where in the paper the numbers are printed (``"Table 1"``, ``"§5.1"``).
        dataset: The dataset and release, e.g. ``"ISLES 2018"``, ``"ATLAS R1.1"``.
        protocol: How the numbers were obtained, e.g. ``"5-fold per-subject
            cross-validation"``, ``"183/46 split"``, ``"ISLES 2018 test set"``.
        preset: The suite's metric preset whose column names ``metrics`` uses.
        metrics: Metric name → printed value; empty when the paper prints no number (a result
            shown only in a bar chart or described in prose).
        pooled: Names of the metrics pooled over all cases rather than averaged per case
            (D-UNet's ``global_dice``).
        note: What a reader must know before comparing (inconsistencies, approximations,
            another split), or ``None``.
        parameters: Total number of parameters where the paper's table prints it.
    """

    key: str
    paper: PublishedPaper
    source: str
    dataset: str
    protocol: str
    preset: str
    metrics: Mapping[str, PublishedValue]
    pooled: tuple[str, ...]
    note: str | None
    parameters: int | None


def _fail(key: str, problem: str) -> ValueError:
    """The error for an invalid entry of the shipped file (a bug in the suite, not user input)."""
    return ValueError(f"evaluation/{DATA_FILE}, entry {key!r}: {problem}. Fix the entry.")


def _check_fields(key: str, what: str, found: Any, expected: frozenset[str]) -> None:
    """Refuse a JSON object whose fields are not exactly ``expected``."""
    if not isinstance(found, dict):
        raise _fail(key, f"{what} must be an object, found {type(found).__name__}")
    unknown, missing = sorted(set(found) - expected), sorted(expected - set(found))
    if unknown or missing:
        raise _fail(
            key,
            f"{what} has unknown fields {unknown} and missing fields {missing}; "
            f"expected exactly {sorted(expected)}",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, Decimal | int) and not isinstance(value, bool)


def _decimals(value: Decimal | int) -> int:
    """Number of printed decimals (``Decimal("0.50")`` → 2, ``10`` → 0)."""
    if isinstance(value, int):
        return 0
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _half_unit(decimals: int) -> Decimal:
    return Decimal(5).scaleb(-decimals - 1)


def _check_folds(key: str, name: str, mean: Decimal | int, folds: list[Decimal | int]) -> None:
    """Refuse fold values whose average cannot round to the printed mean.

    Both the mean and the folds are rounded when printed, so the average of the printed folds
    may sit up to half a unit of the mean's last digit plus half a unit of the folds' last
    digit away from the printed mean (Abulnaga Table 1: folds average 0.534, printed 0.54).
    """
    average = sum((Decimal(f) for f in folds), Decimal(0)) / len(folds)
    tolerance = _half_unit(_decimals(mean)) + _half_unit(max(_decimals(f) for f in folds))
    if abs(average - Decimal(mean)) > tolerance:
        raise _fail(
            key,
            f"metric {name!r}: the folds {[str(f) for f in folds]} average {average:.4f}, which "
            f"cannot round to the printed mean {mean} (tolerance ±{tolerance})",
        )


def _parse_value(key: str, name: str, raw: Any) -> PublishedValue:
    _check_fields(key, f"metric {name!r}", raw, _VALUE_FIELDS)
    mean, sd, folds = raw["mean"], raw["sd"], raw["folds"]
    if not _is_number(mean):
        raise _fail(key, f"metric {name!r}: mean must be a number, found {mean!r}")
    if sd is not None and not (_is_number(sd) and sd >= 0):
        raise _fail(key, f"metric {name!r}: sd must be a non-negative number or null, found {sd!r}")
    if folds is not None:
        if not (isinstance(folds, list) and folds and all(_is_number(f) for f in folds)):
            raise _fail(key, f"metric {name!r}: folds must be a non-empty list of numbers or null")
        _check_folds(key, name, mean, folds)
    printed = str(mean) + ("" if sd is None else f" ± {sd}")
    if folds is not None:
        printed += " (folds " + " ".join(str(f) for f in folds) + ")"
    return PublishedValue(
        mean=float(mean),
        sd=None if sd is None else float(sd),
        folds=None if folds is None else tuple(float(f) for f in folds),
        printed=printed,
    )


def _parse_entry(key: str, raw: Any) -> PublishedResult:
    if not _KEY.match(key):
        raise _fail(key, "keys must read '<paper>/<variant>' in lower case, e.g. 'abulnaga/focal'")
    _check_fields(key, "the entry", raw, _ENTRY_FIELDS)
    _check_fields(key, "paper", raw["paper"], _PAPER_FIELDS)
    paper = raw["paper"]
    if not all(isinstance(paper[f], str) and paper[f] for f in ("authors", "title", "venue")):
        raise _fail(key, "paper authors, title and venue must be non-empty strings")
    if not isinstance(paper["year"], int) or not isinstance(paper["arxiv"], str | None):
        raise _fail(key, "paper year must be an integer and arxiv a string or null")
    for text_field in ("source", "dataset", "protocol"):
        if not isinstance(raw[text_field], str) or not raw[text_field]:
            raise _fail(key, f"{text_field} must be a non-empty string")
    if raw["preset"] not in PRESET_METRICS:
        raise _fail(key, f"preset {raw['preset']!r} is not one of {sorted(PRESET_METRICS)}")
    if not isinstance(raw["metrics"], dict):
        raise _fail(key, "metrics must be an object of metric name → value")
    metrics = {name: _parse_value(key, name, value) for name, value in raw["metrics"].items()}
    pooled = raw["pooled"]
    if not isinstance(pooled, list) or any(name not in metrics for name in pooled):
        raise _fail(key, f"pooled must list metric names of this entry, found {pooled!r}")
    if raw["note"] is not None and not isinstance(raw["note"], str):
        raise _fail(key, "note must be a string or null")
    parameters = raw["parameters"]
    if parameters is not None and not (isinstance(parameters, int) and parameters > 0):
        raise _fail(key, f"parameters must be a positive integer or null, found {parameters!r}")
    return PublishedResult(
        key=key,
        paper=PublishedPaper(
            authors=paper["authors"],
            title=paper["title"],
            venue=paper["venue"],
            year=paper["year"],
            arxiv=paper["arxiv"],
        ),
        source=raw["source"],
        dataset=raw["dataset"],
        protocol=raw["protocol"],
        preset=raw["preset"],
        metrics=MappingProxyType(metrics),
        pooled=tuple(pooled),
        note=raw["note"],
        parameters=parameters,
    )


def _parse_published(text: str) -> dict[str, PublishedResult]:
    """Validate and parse the JSON text of the published-numbers file."""
    raw = json.loads(text, parse_float=Decimal)
    if not isinstance(raw, dict):
        raise ValueError(f"evaluation/{DATA_FILE} must hold one JSON object keyed by result.")
    return {key: _parse_entry(key, entry) for key, entry in raw.items()}


@lru_cache(maxsize=1)
def _load() -> tuple[PublishedResult, ...]:
    text = resources.files("evaluation").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return tuple(_parse_published(text).values())


def load_published() -> dict[str, PublishedResult]:
    """All published results, keyed ``"<paper>/<variant>"``, in file order.

    The file is read and validated once; every call returns a fresh dict of the same frozen
    results.

    Raises:
        ValueError: If an entry has unknown or missing fields, an unknown preset, or a fold
            list whose average cannot round to the printed mean; the message names the key.
    """
    return {result.key: result for result in _load()}


def published_keys() -> list[str]:
    """The keys of all published results, sorted."""
    return sorted(result.key for result in _load())


def get_published(key: str) -> PublishedResult:
    """Look up one published result.

    Args:
        key: ``"<paper>/<variant>"``, e.g. ``"abulnaga/focal"``.

    Returns:
        The result.

    Raises:
        ConfigurationError: If ``key`` is unknown; the message suggests the closest key.
    """
    results = load_published()
    if key in results:
        return results[key]
    close = difflib.get_close_matches(key, list(results), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigurationError(
        f"Unknown published result {key!r}{hint}; the keys are listed in "
        f"evaluation/{DATA_FILE} and by evaluation.published.published_keys()."
    )


def _format_value(name: str, value: PublishedValue, pooled: bool) -> str:
    text = value.printed
    if not text:
        text = repr(value.mean) + ("" if value.sd is None else f" ± {value.sd!r}")
        if value.folds is not None:
            text += " (folds " + " ".join(repr(f) for f in value.folds) + ")"
    return f"{name} {text}" + (" (pooled)" if pooled else "")


def format_published(result: PublishedResult) -> str:
    """One line for a report.

    Example: ``"Abulnaga & Rubin 2018, Table 1: dice 0.54 ± 0.09 (folds 0.64 0.42 0.48 0.55
    0.58)"``.
    """
    head = f"{result.paper.citation}, {result.source}"
    if not result.metrics:
        return f"{head}: no number printed (see the entry's note)"
    values = "; ".join(
        _format_value(name, value, name in result.pooled) for name, value in result.metrics.items()
    )
    if result.parameters is not None:
        values += f"; {result.parameters:,} parameters"
    return f"{head}: {values}"
