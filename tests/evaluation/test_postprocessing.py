"""Connected-component post-processing: choice strings, the filter, the candidates' scores and
the cross-validation's choice, on hand-made masks and hand-made fold folders."""

import json
import math

import numpy as np
import pytest
import torch
import yaml

from core.errors import ConfigurationError
from core.run_layout import ExperimentLayout, ModelFolderLayout
from evaluation import CaseMetrics
from evaluation.cv_report import build_report, write_report
from evaluation.metrics import FULL_CONNECTIVITY, atlas2_challenge, isles2022
from evaluation.postprocessing import (
    CANDIDATES,
    apply,
    chosen_postprocessing,
    format_choice,
    min_voxels,
    parse,
    report_choice,
    score_candidates,
    select,
    structure_for,
)
from evaluation.report import write_case_table

MM1 = (1.0, 1.0, 1.0)


def _cube(mask: np.ndarray, corner: tuple[int, int, int], side: tuple[int, int, int]) -> None:
    x, y, z = corner
    dx, dy, dz = side
    mask[x : x + dx, y : y + dy, z : z + dz] = True


def test_choice_strings_round_trip_and_refuse_others():
    assert CANDIDATES[0] == "none" and "largest" in CANDIDATES
    for choice in CANDIDATES:
        assert format_choice(*parse(choice)) == choice
    assert parse("min_size:0.05") == ("min_size", 0.05)
    for wrong in ("min_size", "min_size:-1", "min_size:x", "largest:1", "biggest"):
        with pytest.raises(ValueError, match="expected 'none', 'largest' or 'min_size:<ml>'"):
            parse(wrong)


def test_ml_become_voxels_at_the_cases_spacing():
    assert min_voxels(0.1, MM1) == 100
    assert min_voxels(0.1, (0.5, 0.5, 0.5)) == 800  # 0.125 mm³ voxels
    assert min_voxels(0.1, (1.0, 1.0, 3.0)) == 34  # 100 / 3 = 33.3 → 34 voxels = 0.102 ml
    assert min_voxels(0.01, (2.0, 2.0, 6.0)) == 1  # one voxel is already 0.024 ml
    # The same component, 30 voxels: 0.03 ml at 1 mm, 0.09 ml at 1×1×3 mm.
    mask = np.zeros((10, 10, 10), dtype=bool)
    _cube(mask, (0, 0, 0), (3, 5, 2))
    assert not apply(mask, "min_size:0.05", MM1).any()
    assert apply(mask, "min_size:0.05", (1.0, 1.0, 3.0)).sum() == 30


def test_min_size_removes_a_spurious_small_component_and_largest_keeps_one():
    mask = np.zeros((20, 20, 20), dtype=np.uint8)
    _cube(mask, (2, 2, 2), (5, 5, 5))  # 125 voxels
    _cube(mask, (12, 12, 12), (3, 3, 3))  # 27 voxels
    _cube(mask, (15, 2, 2), (4, 4, 4))  # 64 voxels
    assert apply(mask, "none", MM1) is mask
    out = apply(mask, "min_size:0.05", MM1)
    assert out.dtype == np.uint8 and out.sum() == 125 + 64
    assert apply(mask, "min_size:0.1", MM1).sum() == 125
    assert apply(mask, "min_size:0.5", MM1).sum() == 0
    assert apply(mask, "largest", MM1).sum() == 125
    assert apply(np.zeros_like(mask), "largest", MM1).sum() == 0


def test_the_components_are_the_presets_lesions():
    # Two cubes touching at a corner: one lesion for ISLES 2022 (26), two for ATLAS R2.0 (6).
    mask = np.zeros((8, 8, 8), dtype=bool)
    _cube(mask, (0, 0, 0), (2, 2, 2))
    _cube(mask, (2, 2, 2), (3, 3, 3))
    assert structure_for("isles2022") is FULL_CONNECTIVITY
    assert structure_for("atlas2_challenge") is None
    assert apply(mask, "largest", MM1, structure_for("isles2022")).sum() == 8 + 27
    assert apply(mask, "largest", MM1, structure_for("atlas2_challenge")).sum() == 27


@pytest.mark.parametrize(
    ("preset", "score"), [("isles2022", isles2022), ("atlas2_challenge", atlas2_challenge)]
)
def test_candidate_scores_equal_the_preset_on_the_post_processed_mask(preset, score):
    rng = np.random.default_rng(0)
    structure = structure_for(preset)
    for _ in range(20):
        pred = rng.random((12, 12, 8)) > 0.85
        target = rng.random((12, 12, 8)) > 0.88
        scores = score_candidates(pred, target, (0.4, 0.4, 1.5), CANDIDATES, structure)
        for choice in CANDIDATES:
            masked = apply(pred, choice, (0.4, 0.4, 1.5), structure)
            expected = score(masked, target, (0.4, 0.4, 1.5))
            for metric in ("dice", "lesion_f1"):
                assert scores[choice][metric] == pytest.approx(expected[metric])
    empty = np.zeros((4, 4, 4), dtype=bool)
    assert score_candidates(empty, empty, MM1)["largest"] == {"dice": 1.0, "lesion_f1": 1.0}


def _means(cases) -> dict[str, dict[str, float]]:
    """Mean candidate scores over hand-made (pred, target) cases at 1 mm."""
    per_case = [score_candidates(p, t, MM1) for p, t in cases]
    return {
        c: {m: float(np.mean([s[c][m] for s in per_case])) for m in ("dice", "lesion_f1")}
        for c in CANDIDATES
    }


def _lesion_case(fp: int = 0, small_true: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One true lesion (125 voxels) predicted exactly, plus a false positive of ``fp``
    voxels and a true small lesion of ``small_true`` voxels, predicted exactly."""
    pred = np.zeros((40, 40, 40), dtype=bool)
    target = np.zeros_like(pred)
    _cube(target, (2, 2, 2), (5, 5, 5))
    if small_true:
        target[30, 2 : 2 + small_true, 2] = True
    pred |= target
    if fp:
        pred[2 : 2 + fp, 30, 30] = True
    return pred, target


def test_a_spurious_small_component_is_filtered():
    choice, reason = select(_means([_lesion_case(fp=20), _lesion_case(fp=30)]))
    assert choice == "min_size:0.05", reason  # the smallest size that removes both


def test_a_true_small_lesion_keeps_a_smaller_size_or_none():
    # A 20-voxel false positive in one case, a 35-voxel true lesion in another: 0.05 ml would
    # delete the true lesion, 0.01 ml keeps the lesion but not the false positive either.
    cases = [_lesion_case(fp=20), _lesion_case(small_true=35)]
    means = _means(cases)
    assert means["min_size:0.05"]["dice"] < means["none"]["dice"]  # the lesion is larger
    assert select(means)[0] == "none"
    # With a 5-voxel false positive, 0.01 ml (10 voxels) removes it and keeps the lesion.
    means = _means([_lesion_case(fp=5), _lesion_case(small_true=35)])
    assert select(means)[0] == "min_size:0.01"


def test_keep_largest_is_not_chosen_when_it_loses_a_true_lesion():
    # A second true lesion (10 voxels) and a larger false positive (30 voxels): keeping the
    # largest removes both, so its Dice is higher but one true lesion of two is missed.
    means = _means([_lesion_case(fp=30, small_true=10)])
    assert means["largest"]["dice"] > means["none"]["dice"] + 0.01
    assert means["largest"]["lesion_f1"] < means["none"]["lesion_f1"]
    assert select(means)[0] == "none"


def test_selection_needs_the_margin_and_the_lesion_f1():
    means = {
        "none": {"dice": 0.60, "lesion_f1": 0.50},
        "min_size:0.1": {"dice": 0.603, "lesion_f1": 0.60},  # within the margin
        "largest": {"dice": 0.70, "lesion_f1": 0.40},  # F1 lower
    }
    assert select(means)[0] == "none"
    means["min_size:0.5"] = {"dice": 0.62, "lesion_f1": 0.50}
    assert select(means) == ("min_size:0.5", "Dice +0.0200 over none, lesion F1 not lower")
    assert select({"min_size:0.1": {"dice": 1.0}})[0] == "none"


def test_case_metrics_score_the_candidates_and_apply_a_choice():
    pred, target = (torch.from_numpy(a) for a in _lesion_case(fp=20))
    metrics = CaseMetrics("isles2022", candidates=CANDIDATES)
    metrics.update(pred, target, torch.tensor(MM1, dtype=torch.float64), 4)
    rows = metrics.candidates_table()
    assert [r["postprocessing"] for r in rows] == list(CANDIDATES)
    assert {r["case_id"] for r in rows} == {4}
    by_choice = {r["postprocessing"]: r for r in rows}
    assert by_choice["none"]["dice"] == pytest.approx(metrics.table()[0]["dice"])
    assert by_choice["min_size:0.05"] == {
        "case_id": 4,
        "postprocessing": "min_size:0.05",
        "dice": 1.0,
        "lesion_f1": 1.0,
    }
    assert CaseMetrics("isles2022").candidates_table() == []
    applied = CaseMetrics("isles2022", postprocessing="min_size:0.05")
    applied.update(pred, target, MM1, 4)
    assert applied.table()[0]["dice"] == 1.0 and applied.table()[0]["lesion_f1"] == 1.0


def _fake_experiment(root, candidate_rows: dict[int, list[dict]] | None):
    """Two folds of an ISLES 2022 experiment with hand-made per-case tables."""
    experiment = root / "exp"
    config = {
        "model": {"init_args": {"metrics": "isles2022"}},
        "data": {"init_args": {"num_folds": 2}},
    }
    for fold in (0, 1):
        run = ExperimentLayout(experiment).fold(fold)
        run.root.mkdir(parents=True)
        run.config.write_text(yaml.safe_dump(config))
        cases = [f"c{fold}{i}" for i in range(2)]
        run.split.write_text(json.dumps({"val_cases": cases}))
        write_case_table(
            run.val_cases_best,
            [
                {
                    "case": c,
                    "dice": 0.5,
                    "volume_difference_ml": 1.0,
                    "lesion_f1": 0.5,
                    "lesion_count_difference": 1.0,
                }
                for c in cases
            ],
        )
        if candidate_rows is not None:
            write_case_table(
                run.val_postprocessing_best,
                [{"case": c, **row} for c in cases for row in candidate_rows[fold]],
            )
    return experiment


def test_the_report_chooses_from_the_folds_and_predict_reads_it(tmp_path):
    rows = {
        fold: [
            {"postprocessing": "none", "dice": 0.5, "lesion_f1": 0.5},
            {"postprocessing": "min_size:0.1", "dice": 0.6, "lesion_f1": 0.5 + 0.1 * fold},
            {"postprocessing": "largest", "dice": 0.7, "lesion_f1": 0.4},
        ]
        for fold in (0, 1)
    }
    experiment = _fake_experiment(tmp_path, rows)
    report = build_report(experiment)
    files = write_report(report)
    summary = json.loads(files["summary"].read_text())["postprocessing"]
    assert summary["choice"] == "min_size:0.1" and summary["cases"] == 4
    assert summary["before"] == {"dice": 0.5, "lesion_f1": 0.5}
    assert summary["after"] == pytest.approx({"dice": 0.6, "lesion_f1": 0.55})
    assert summary["candidates"]["largest"]["lesion_f1"] == pytest.approx(0.4)
    markdown = files["report"].read_text()
    assert "## Post-processing" in markdown and "Chosen: `min_size:0.1`" in markdown
    assert "| **min_size:0.1** | 0.6000 | 0.5500 |" in markdown
    assert "| largest | 0.7000 | 0.4000 |" in markdown
    # What a predict run of a fold, of the ensemble or lightning-cv predict finds.
    assert report_choice(experiment) == ("min_size:0.1", files["summary"])
    assert chosen_postprocessing(experiment / "fold0" / "predict")[0] == "min_size:0.1"
    assert chosen_postprocessing(experiment / "ensemble" / "predict")[0] == "min_size:0.1"
    assert chosen_postprocessing(tmp_path / "elsewhere" / "predict") == ("none", None)


def test_folds_without_candidate_tables_keep_none(tmp_path):
    experiment = _fake_experiment(tmp_path, None)
    files = write_report(build_report(experiment))
    summary = json.loads(files["summary"].read_text())["postprocessing"]
    assert summary["choice"] == "none" and "no val_postprocessing_best.csv" in summary["reason"]
    assert report_choice(experiment)[0] == "none"
    assert math.isclose(json.loads(files["summary"].read_text())["pooled"]["dice"], 0.5)


def test_a_model_folder_is_no_experiment_to_report_and_keeps_its_own_choice(tmp_path):
    import shutil

    experiment = _fake_experiment(tmp_path, None)
    model = ModelFolderLayout(tmp_path / "model")
    shutil.copytree(experiment, model.root)  # folds holding a config.yaml, as an export's
    model.manifest.write_text("{}")
    model.summary.write_text(json.dumps({"postprocessing": {"choice": "none"}}))
    # lightning-cv report wrote a report/ into it (which prediction then read, past the manifest).
    with pytest.raises(
        ConfigurationError, match=r"model is a model folder \(lightning-cv export\)"
    ):
        build_report(model.root)
    assert not ExperimentLayout(model.root).report.root.exists()
    with pytest.raises(
        ConfigurationError, match=r"fold0 is one fold's folder: give its experiment"
    ):
        build_report(experiment / "fold0")
    # A report/ put into a model folder by other means is still not what prediction reads.
    stray = ExperimentLayout(model.root).report.summary
    stray.parent.mkdir()
    stray.write_text(json.dumps({"postprocessing": {"choice": "largest"}}))
    assert report_choice(model.root) == ("none", model.summary)
    assert chosen_postprocessing(model.root / "fold0" / "predict")[0] == "none"
