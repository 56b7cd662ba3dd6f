"""The files of a comparison of experiments (:class:`core.run_layout.ComparisonLayout`): the
Markdown a researcher reads, the numbers as JSON and CSV, the figures."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.io import write_text
from core.run_layout import ComparisonLayout
from evaluation.compare import ZERO_METHOD, format_comparison, listed_cases, write_comparison
from evaluation.compare_many import ALPHA, MultiComparison
from evaluation.plots import plot_case_strips, plot_rank_axis
from evaluation.ranking import direction_of
from evaluation.report import write_case_table


def _cell(value: float, digits: int = 4) -> str:
    if math.isnan(value):
        return "–"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _p_cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def _metric_list(metrics: Sequence[str], shown: int = 4) -> str:
    return ", ".join(metrics[:shown]) + (", …" if len(metrics) > shown else "")


def _metric_sections(result: MultiComparison) -> list[str]:
    num_folds = max(
        (len(s.fold_means) for m in result.summaries.values() for s in m.values()), default=0
    )
    lines = [
        "## Per metric",
        "",
        f"Over the {len(result.cases)} cases every experiment scored. *Folds*: the mean of each "
        f"fold's cases, then mean ± sd (ddof = 1) over the {num_folds} folds. *Out of fold*: "
        "the mean over all cases at once. Non-finite values (an `inf` distance) are left out "
        "and counted. *Rank*: on the out-of-fold mean, 1 = best, ties share the average rank.",
    ]
    if not result.metrics:
        return [*lines, "", "No column that every table carries has a declared direction."]
    for metric in result.metrics:
        lines += [
            "",
            f"### {metric} ({direction_of(metric)} is better)",
            "",
            "| experiment | folds: mean ± sd | out of fold | cases | rank |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in result.names:
            s = result.summaries[metric][name]
            cases = f"{s.cases}" + (f" (+{s.nonfinite} non-finite)" if s.nonfinite else "")
            lines.append(
                f"| {name} | {_cell(s.fold_mean)} ± {_cell(s.fold_sd)} | {_cell(s.mean)} | "
                f"{cases} | {_cell(result.ranking.ranks[name][metric], 1)} |"
            )
    return lines


def _ranking_section(result: MultiComparison) -> list[str]:
    metrics = result.metrics
    if not metrics:
        return []
    lines = [
        "## Ranking",
        "",
        "As the ISLES 2022 challenge ranks teams: each metric ranks the experiments by their "
        "out-of-fold mean in its better direction (1 = best; ties share the average rank), and "
        f"the place follows the mean of these ranks over {_metric_list(metrics)}. *Per case*: "
        "the experiments ranked on every case, averaged over cases and metrics; a few extreme "
        "cases move it less than they move a mean, and an `inf` distance ranks last.",
        "",
        f"| place | experiment | mean rank | {' | '.join(metrics)} | per-case mean rank |",
        f"|---:|---|---:|{'---:|' * len(metrics)}---:|",
    ]
    for place, name in enumerate(result.ranking.order, start=1):
        ranks = " | ".join(_cell(result.ranking.ranks[name][m], 1) for m in metrics)
        lines.append(
            f"| {place} | {name} | {_cell(result.ranking.mean_rank[name], 2)} | {ranks} | "
            f"{_cell(result.case_rank[name], 2)} |"
        )
    return lines


def _friedman_text(result: MultiComparison) -> str:
    if result.friedman_reason is not None:
        return f"not run: {result.friedman_reason}"
    return f"χ² = {result.friedman_statistic:.3g}, p = {result.friedman_p:.3g}"


def _tests_section(result: MultiComparison) -> list[str]:
    m, n, k = result.metric, len(result.tested_cases), len(result.names)
    lines = [
        f"## Tests on {m}",
        "",
        f"Over the {n} cases whose {m} is finite for every experiment.",
        "",
        f"- Friedman test over the {k} experiments (`scipy.stats.friedmanchisquare`, "
        f"chi-square approximation, ties corrected): {_friedman_text(result)}.",
        f"- Every pair: two-sided Wilcoxon signed-rank test (zero_method={ZERO_METHOD}: ties "
        f"dropped before ranking), p adjusted with Holm's step-down over the {len(result.pairs)} "
        "pairs. Read the pairs after a small Friedman p; an adjusted p < 0.05 tells a pair apart "
        "with a family-wise error rate of 5 %.",
        "",
        "| a | b | n | mean b − a | median b − a | b higher / a higher / ties | W | p | p (Holm) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in result.pairs:
        lines.append(
            f"| {t.a} | {t.b} | {t.n} | {t.mean_difference:+.4f} | {t.median_difference:+.4f} | "
            f"{t.b_greater} / {t.a_greater} / {t.ties} | {_cell(t.statistic, 1)} | "
            f"{_p_cell(t.p_value)} | {_p_cell(t.p_holm)} |"
        )
    reasons = sorted({t.p_reason for t in result.pairs if t.p_reason})
    return lines + [f"- Not run: {reason}." for reason in reasons]


def _notes(result: MultiComparison) -> list[str]:
    notes = []
    if result.nonfinite:
        notes.append(
            f"- {len(result.nonfinite)} case(s) left out of the tests for a non-finite "
            f"{result.metric}: {listed_cases(list(result.nonfinite))}."
        )
    for name, dropped in result.only.items():
        if dropped:
            notes.append(
                f"- {len(dropped)} case(s) only in {name}, dropped: {listed_cases(list(dropped))}."
            )
    return ["## Notes", "", *notes] if notes else []


def _multi_markdown(result: MultiComparison, figures: Sequence[tuple[str, Path]]) -> str:
    """The comparison as Markdown: the paired report (two experiments) or the tests (more),
    the per-metric tables, the ranking, the notes and the figures."""
    if result.paired is not None:
        head = [format_comparison(result.paired).rstrip("\n")]
        tests: list[str] = []
        notes: list[str] = []
    else:
        head = [
            f"# {result.metric}: {len(result.names)} experiments",
            "",
            f"{', '.join(result.names)}: out-of-fold per-case tables of the same folds, "
            f"compared on the {len(result.cases)} cases every experiment scored.",
        ]
        tests, notes = _tests_section(result), _notes(result)
    sections = [head, _metric_sections(result), _ranking_section(result), tests, notes]
    sections.append(
        ["## Figures", "", *(f"![{caption}]({path.name})" for caption, path in figures)]
    )
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _as_json(result: MultiComparison) -> dict[str, Any]:
    summaries = {
        metric: {name: vars(summary) for name, summary in by_name.items()}
        for metric, by_name in result.summaries.items()
    }
    return {
        "experiments": list(result.names),
        "metric": result.metric,
        "metrics": list(result.metrics),
        "directions": {m: direction_of(m) for m in result.metrics},
        "cases": len(result.cases),
        "only": {name: list(cases) for name, cases in result.only.items()},
        "table": summaries,
        "ranking": {
            "order": list(result.ranking.order),
            "mean_rank": result.ranking.mean_rank,
            "ranks": result.ranking.ranks,
            "case_mean_rank": result.case_rank,
        },
        "tests": {
            "metric": result.metric,
            "cases": len(result.tested_cases),
            "nonfinite": list(result.nonfinite),
            "case_mean_rank": result.tested_rank,
            "friedman": {
                "statistic": result.friedman_statistic,
                "p": result.friedman_p,
                "reason": result.friedman_reason,
            },
            "pairs": [vars(t) for t in result.pairs],
            "holm_alpha": ALPHA,
            "not_told_apart": [list(g) for g in result.indistinct_groups()],
        },
    }


def _metric_rows(result: MultiComparison) -> list[dict[str, Any]]:
    return [
        {
            "metric": metric,
            "direction": direction_of(metric),
            "experiment": name,
            "folds": len(s.fold_means),
            "fold_mean": s.fold_mean,
            "fold_sd": s.fold_sd,
            "mean": s.mean,
            "cases": s.cases,
            "nonfinite": s.nonfinite,
            "rank": result.ranking.ranks[name][metric],
            "mean_rank": result.ranking.mean_rank[name],
            "case_mean_rank": result.case_rank[name],
        }
        for metric in result.metrics
        for name in result.names
        for s in (result.summaries[metric][name],)
    ]


def _rank_plot(result: MultiComparison, path: Path) -> Path | None:
    over = _metric_list(result.metrics)
    tested = f"{result.metric}, per case (bars: not told apart, Holm α = {ALPHA})"
    rows: dict[str, Mapping[str, float]] = {}
    if result.metrics:
        rows[f"mean rank of the means ({over})"] = result.ranking.mean_rank
        if result.metrics != (result.metric,):  # else the same as the tested row
            rows[f"per-case mean rank ({over})"] = result.case_rank
    if not all(math.isnan(r) for r in result.tested_rank.values()):
        rows[tested] = result.tested_rank
    if not rows:
        return None
    title = f"{len(result.names)} experiments on {len(result.cases)} cases"
    return plot_rank_axis(rows, path, title, groups={tested: result.indistinct_groups()})


def write_multi_comparison(result: MultiComparison, out_dir: str | Path) -> dict[str, Path]:
    """Write a comparison of experiments (:class:`core.run_layout.ComparisonLayout`).

    ``markdown`` (the tables, ranking, tests and figures), ``summary`` (every number, JSON;
    NaN as null), ``metrics`` (one CSV row per metric and experiment), ``cases`` (the tested
    metric per tested case, one column per experiment), ``cases_plot`` and ``ranks_plot``;
    for two experiments also :func:`write_comparison`'s ``paired`` table and figure. Every
    file is written under a temporary name and renamed.

    Returns:
        The written files by the layout's names (``markdown``, ``summary``, ``metrics``,
        ``cases``, ``cases_plot``, ``ranks_plot``, ``paired``, ``paired_plot``); a figure
        without anything to draw is left out.
    """
    layout = ComparisonLayout(Path(out_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if result.paired is not None:
        paired = write_comparison(result.paired, layout.root)  # its Markdown is replaced below
        files["paired"], files["paired_plot"] = paired["csv"], paired["png"]
    test = (
        f"Wilcoxon p = {_p_cell(result.paired.p_value)}"
        if result.paired is not None
        else f"Friedman p = {_p_cell(result.friedman_p)}"
    )
    title = f"{result.metric} per case (n = {len(result.tested_cases)}; triangle: mean; {test})"
    strips = plot_case_strips(result.values, layout.cases_plot, result.metric, title)
    ranks = _rank_plot(result, layout.ranks_plot)
    files.update({k: v for k, v in (("cases_plot", strips), ("ranks_plot", ranks)) if v})
    metric_rows = _metric_rows(result)
    if write_case_table(layout.metrics, metric_rows) is None:
        write_text(layout.metrics, "metric,direction,experiment\n")
    files["metrics"] = layout.metrics
    case_rows = [
        {
            "case": case,
            "fold": result.folds.get(case),
            **{n: result.values[n][i] for n in result.names},
        }
        for i, case in enumerate(result.tested_cases)
    ]
    if write_case_table(layout.cases, case_rows) is None:
        write_text(layout.cases, ",".join(["case", "fold", *result.names]) + "\n")
    files["cases"] = layout.cases
    files["summary"] = write_text(
        layout.summary, json.dumps(_json_safe(_as_json(result)), indent=1) + "\n"
    )
    captions = {
        "cases_plot": f"{result.metric} per case",
        "ranks_plot": "mean ranks",
        "paired_plot": "paired cases and sorted differences",
    }
    figures = [(caption, files[k]) for k, caption in captions.items() if k in files]
    files["markdown"] = write_text(layout.markdown, _multi_markdown(result, figures))
    return files
