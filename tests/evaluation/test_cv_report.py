"""The cross-validation report on hand-made fold folders: its numbers, and damaged folds."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from core.errors import DataValidationError
from core.run_layout import ExperimentLayout
from evaluation.cv_report import build_report, write_report
from evaluation.experiment_folds import read_experiment
from evaluation.report import write_case_table

INF = math.inf

# fold -> case -> (dice, hd): fold 0 has no empty mask, fold 1 one (hd = inf).
_SCORES = {
    0: {"c00": (0.8, 3.0), "c01": (0.6, 5.0)},
    1: {"c10": (0.4, INF), "c11": (0.5, 7.0), "c12": (0.9, 2.0)},
}


def _experiment(root: Path) -> Path:
    """Two finished folds of an ISLES 2018 experiment with hand-made per-case tables."""
    experiment = root / "exp"
    config = {
        "model": {"init_args": {"metrics": "isles2018"}},
        "data": {"init_args": {"num_folds": 2}},
    }
    for fold, cases in _SCORES.items():
        run = ExperimentLayout(experiment).fold(fold)
        run.root.mkdir(parents=True)
        run.config.write_text(yaml.safe_dump(config))
        run.split.write_text(json.dumps({"num_folds": 2, "val_cases": list(cases)}))
        run.fit_done.write_text("{}")
        rows = [
            {"case": case, "dice": dice, "hd": hd, "assd": hd / 2, "precision": dice,
             "recall": dice, "avd": 1.0, "jaccard": dice / (2 - dice)}
            for case, (dice, hd) in cases.items()
        ]  # fmt: skip
        write_case_table(run.val_cases_best, rows)
    return experiment


def test_folds_with_and_without_an_infinite_distance_are_reported(tmp_path):
    # Fold 0 has no infinite hd (no hd_inf count), fold 1 has one: folds.csv holds both.
    files = write_report(build_report(_experiment(tmp_path)))
    with files["folds"].open() as handle:
        folds = list(csv.DictReader(handle))
    assert [row["hd_inf"] for row in folds] == ["", "1.0"]
    summary = json.loads(files["summary"].read_text())["summary"]
    fold_dice = [np.mean([d for d, _ in cases.values()]) for cases in _SCORES.values()]
    assert summary["dice"]["fold_mean"] == pytest.approx(np.mean(fold_dice))
    assert summary["dice"]["fold_sd"] == pytest.approx(np.std(fold_dice, ddof=1))
    # hd: the infinite case is left out of its fold's mean and of the mean over cases.
    fold_hd = [4.0, 4.5]
    assert summary["hd"]["fold_mean"] == pytest.approx(np.mean(fold_hd))
    assert summary["hd"]["case_mean"] == pytest.approx(np.mean([3.0, 5.0, 7.0, 2.0]))
    assert summary["hd"]["case_sd"] == pytest.approx(np.std([3.0, 5.0, 7.0, 2.0]))


def test_a_metric_the_folds_tables_lack_is_not_counted_as_infinite(tmp_path):
    # Folds of a release whose isles2018 preset had no Jaccard yet (0.4): the column is absent,
    # which is no case with an empty mask; only the one infinite hd is counted.
    experiment = _experiment(tmp_path)
    for fold in _SCORES:
        table = ExperimentLayout(experiment).fold(fold).val_cases_best
        with table.open() as handle:
            rows = [
                {k: v for k, v in row.items() if k != "jaccard"} for row in csv.DictReader(handle)
            ]
        write_case_table(table, rows)
    report = build_report(experiment)
    assert "jaccard_inf" not in report.pooled and report.pooled["hd_inf"] == 1.0
    assert all("jaccard_inf" not in fold.values for fold in report.folds)
    assert math.isnan(report.pooled["jaccard"])
    markdown = write_report(report)["report"].read_text()
    assert "left out of the means): hd 1, assd 1\n" in markdown


def test_a_fold_without_its_split_is_named(tmp_path):
    experiment = _experiment(tmp_path)
    split = ExperimentLayout(experiment).fold(1).split
    split.unlink()
    with pytest.raises(DataValidationError, match=r"^\S+fold1/split\.json is missing"):
        build_report(experiment)
    with pytest.raises(DataValidationError, match=r"fold1/split\.json is missing"):
        read_experiment(experiment)
    split.write_text('{"val_cases": ["c10", ')  # cut off while copied
    with pytest.raises(DataValidationError, match=r"^\S+fold1/split\.json is not a fold's split"):
        build_report(experiment)


def test_a_fold_stopped_before_its_split_counts_as_unfinished(tmp_path):
    # Killed between writing config.yaml and split.json: no split, no table, no fit_done.
    experiment = _experiment(tmp_path)
    run = ExperimentLayout(experiment).fold(1)
    for path in (run.split, run.val_cases_best, run.fit_done):
        path.unlink()
    report = build_report(experiment)
    assert not report.complete and [len(f.cases) for f in report.folds] == [2, 0]
    rows, splits = read_experiment(experiment)
    assert len(rows) == 2 and list(splits.val_cases) == [0]


def test_a_finished_fold_whose_metrics_are_cut_off_is_reported_with_an_unknown_best_epoch(
    tmp_path, caplog
):
    # The numbers come from val_cases_best.csv; a cut-off metrics.csv loses only the best
    # epoch, which the report shows as unknown and the log names the file.
    experiment = _experiment(tmp_path)
    metrics = ExperimentLayout(experiment).fold(0).metrics
    metrics.write_text("epoch,step,val/dice\n0,9,0.5\n1,19,0.")  # cut inside a row
    ExperimentLayout(experiment).fold(1).metrics.write_text("epoch,st")
    with caplog.at_level("WARNING"):
        report = build_report(experiment)
    assert [fold.best_epoch for fold in report.folds] == [0, None]
    assert "metrics.csv: no val/dice value in it" in caplog.text and "fold 1" in caplog.text
    text = write_report(report)["report"].read_text()
    assert "| 1 | 3 | ? |" in text
