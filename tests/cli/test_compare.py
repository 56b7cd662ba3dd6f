"""``lightning-cv compare`` on experiment folders written by hand: as much of each fold as the
command reads (``config.yaml``, ``split.json``, the best per-case table), no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_in_process

_CASES = [f"TRAINING/case_{i:02d}" for i in range(24)]
_BASE = np.random.default_rng(42).uniform(0.2, 0.7, len(_CASES))


def _experiment(runs: Path, name: str, gain: float, split_seed: int = 0, folds: int = 3) -> Path:
    """Finished folds of an ISLES 2022-scored experiment whose Dice is the shared base plus
    ``gain`` and a little noise of its own; the folds are a shuffle by ``split_seed``."""
    noise = np.random.default_rng(len(name) + int(100 * gain)).normal(0, 0.02, len(_CASES))
    order = np.random.default_rng(split_seed).permutation(len(_CASES))
    config = {
        "data": {"init_args": {"num_folds": folds, "split_seed": split_seed}},
        "model": {"init_args": {"metrics": "isles2022"}},
    }
    for fold in range(folds):
        run = runs / name / f"fold{fold}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
        held_out = [_CASES[i] for i in sorted(order[fold::folds])]
        split = {"fold": fold, "num_folds": folds, "split_seed": split_seed, "unit": "patient"}
        (run / "split.json").write_text(json.dumps({**split, "val_cases": held_out}))
        lines = ["case,dice,volume_difference_ml,lesion_f1,lesion_count_difference"]
        for case in held_out:
            i = _CASES.index(case)
            dice = float(np.clip(_BASE[i] + gain + noise[i], 0, 1))
            lines.append(f"{case},{dice},{10 * (1 - dice)},{dice},{int(3 * (1 - dice))}")
        (run / "val_cases_best.csv").write_text("\n".join(lines) + "\n")
        (run / "fit_done.json").write_text("{}\n")
    return runs / name


@pytest.fixture
def runs(tmp_path) -> Path:
    runs = tmp_path / "runs"
    _experiment(runs, "ce", 0.0)
    _experiment(runs, "focal", 0.15)
    _experiment(runs, "dice", 0.02)
    return runs


def _first_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("error:"))


def test_compare_three_experiments_of_the_same_folds(runs, tmp_path):
    folders = [str(runs / name) for name in ("ce", "focal", "dice")]
    done = run_in_process("lightning-cv", "compare", *folders, cwd=tmp_path)
    (out,) = runs.glob("compare_ce_vs_focal_and_1_more_*")
    assert "## Tests on dice" in done.stdout and f"Comparison files: {out}" in done.stdout
    for name in ("comparison.md", "comparison.json", "comparison_metrics.csv"):
        assert (out / name).is_file(), name
    for name in ("comparison_cases.png", "comparison_ranks.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "comparison.csv").exists(), "the paired table is for two experiments"
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["experiments"] == ["ce", "focal", "dice"]
    assert summary["metrics"] == ["dice", "volume_difference_ml", "lesion_f1", "lesion_count_difference"]  # fmt: skip
    assert summary["ranking"]["order"][0] == "focal"
    assert summary["tests"]["friedman"]["p"] < 0.05 and summary["tests"]["cases"] == 24
    # --metrics: the table and the ranking on those metrics only; three folds each.
    again = run_in_process("lightning-cv", "compare", *folders, "--metrics", "lesion_f1",
                           "--out", str(tmp_path / "cmp"), cwd=tmp_path)  # fmt: skip
    summary = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert summary["metrics"] == ["lesion_f1"] and "### lesion_f1" in again.stdout
    assert len(summary["table"]["lesion_f1"]["ce"]["fold_means"]) == 3


def test_compare_refuses_experiments_of_other_folds(runs, tmp_path):
    other = _experiment(runs, "ce_seed1", 0.0, split_seed=1)
    folders = [str(runs / "ce"), str(runs / "focal"), str(other)]
    done = run_in_process("lightning-cv", "compare", *folders, cwd=tmp_path, check=False)
    assert done.returncode == 2
    line = _first_line(done)
    assert line.startswith("error: Experiments 'ce' and 'ce_seed1' were not run on the same folds:")
    assert "fold 0 holds out TRAINING/case_" in line and "--data.init_args.split_seed 0" in line
    assert "Traceback" not in done.stderr
    assert not list(runs.glob("compare_*"))


def test_compare_two_experiments_keeps_its_folder_and_paired_files(runs, tmp_path):
    done = run_in_process("lightning-cv", "compare", str(runs / "ce"), str(runs / "focal"),
                          cwd=tmp_path)  # fmt: skip
    out = runs / "compare_ce_vs_focal"
    assert "Wilcoxon" in done.stdout and "## Ranking" in done.stdout
    for name in ("comparison.csv", "comparison.png", "comparison.md", "comparison.json"):
        assert (out / name).is_file(), name
    same = run_in_process("lightning-cv", "compare", str(runs / "ce"), str(runs / "focal"),
                          str(runs / "ce"), cwd=tmp_path, check=False)  # fmt: skip
    assert same.returncode == 2 and "two different experiment folders" in _first_line(same)
    alone = run_in_process("lightning-cv", "compare", str(runs / "ce"), cwd=tmp_path, check=False)
    assert alone.returncode == 2 and "got only" in _first_line(alone)
