"""The papers' published numbers: shipped, valid, and pinned to the printed tables."""

from __future__ import annotations

import fnmatch
import json
import statistics
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from evaluation.metrics import PRESET_METRICS
from evaluation.published import (
    PublishedValue,
    _parse_published,
    format_published,
    get_published,
    load_published,
    published_keys,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "evaluation" / "data" / "published.json"

# Keys the experiment YAMLs refer to; renaming one breaks them.
EXPERIMENT_KEYS = {
    "abulnaga/focal",
    "abulnaga/ce",
    "abulnaga/ensemble",
    "abulnaga/ensemble_test",
    "abulnaga/scratch",
    "abulnaga/weighted_ce",
    "abulnaga/unet2d",
    "zhou/dunet",
    "zhou/unet2d_original",
    "zhou/unet2d_transform",
    "zhou/unet3d_transform",
    "zhou/segnet",
    "zhou/psp",
    "zhou/deeplabv3plus",
    "zhou/add1",
    "zhou/add12",
    "zhou/add23",
    "zhou/add123",
    "zhou/seadd12",
    "zhou/seadd123",
    "zhou/dunet_fl",
    "zhou/dunet_dl",
    "vcanet/proposed",
    "vcanet/unet",
    "omarov/proposed",
    "omarov/classic",
    "omarov/proposed_training",
    "omarov/classic_training",
    "liu/stage1",
    "liu/stage2",
    "liu/stage3",
    "liu/stage4",
}

# Metrics a preset yields beyond its per-case columns: D-UNet's global Dice is pooled from the
# per-case tp/fp/fn. "jaccard" is Omarov's fourth metric; it will join the isles2018 preset
# later and is allowed here explicitly until then.
EXTRA_METRICS = {"atlas_dunet": {"global_dice"}, "isles2018": {"jaccard"}}

TABLE_1 = {  # Abulnaga & Rubin, Table 1: folds, printed mean, printed sd
    "abulnaga/focal": ([0.64, 0.42, 0.48, 0.55, 0.58], 0.54, 0.09),
    "abulnaga/ce": ([0.64, 0.37, 0.50, 0.54, 0.41], 0.49, 0.11),
}


def _entry(**overrides: object) -> dict[str, object]:
    """A valid entry, as it stands in the JSON file."""
    entry: dict[str, object] = {
        "paper": {"authors": "A & B", "title": "T", "venue": "V", "year": 2018, "arxiv": None},
        "source": "Table 1",
        "dataset": "ISLES 2018",
        "protocol": "5-fold per-subject cross-validation",
        "preset": "isles2018",
        "metrics": {"dice": {"mean": 0.54, "sd": 0.09, "folds": [0.64, 0.42, 0.48, 0.55, 0.58]}},
        "pooled": [],
        "note": None,
        "parameters": None,
    }
    entry.update(overrides)
    return entry


def test_every_entry_loads_and_formats():
    results = load_published()
    assert EXPERIMENT_KEYS <= set(results)
    assert published_keys() == sorted(results)
    for key, result in results.items():
        assert result.key == key
        line = format_published(result)
        assert line.startswith(f"{result.paper.citation}, {result.source}: ")
        if not result.metrics:
            assert result.note, f"{key}: an entry without numbers must say why in its note"


def test_metric_names_are_produced_by_the_entry_preset():
    for key, result in load_published().items():
        allowed = set(PRESET_METRICS[result.preset]) | EXTRA_METRICS.get(result.preset, set())
        assert set(result.metrics) <= allowed, key
        assert set(result.pooled) <= set(result.metrics), key


def test_printed_digits_are_kept():
    dunet = get_published("zhou/dunet")
    assert dunet.metrics["recall"] == PublishedValue(0.5243, 0.2910, None)
    assert dunet.metrics["recall"].printed == "0.5243 ± 0.2910"
    assert dunet.pooled == ("global_dice",)
    assert dunet.parameters == 8_640_163
    assert format_published(get_published("abulnaga/focal")) == (
        "Abulnaga & Rubin 2018, Table 1: dice 0.54 ± 0.09 (folds 0.64 0.42 0.48 0.55 0.58)"
    )


def test_table_2_keeps_hd_and_assd_out_of_the_numbers():
    test_set = get_published("abulnaga/ensemble_test")
    assert set(test_set.metrics) == {"dice", "precision", "recall", "avd"}
    assert test_set.note is not None and "1.62" in test_set.note


@pytest.mark.parametrize("key", sorted(TABLE_1))
def test_table_1_is_the_mean_and_sample_sd_over_folds(key):
    folds, mean, sd = TABLE_1[key]
    value = get_published(key).metrics["dice"]
    assert value.folds == tuple(folds) and value.mean == mean and value.sd == sd
    # The sample sd (ddof = 1) of the printed folds reproduces the printed sd ...
    assert round(statistics.stdev(folds), 2) == sd
    # ... and the population sd (ddof = 0) cannot, even allowing each printed fold to be off by
    # its rounding (0.005): the sd moves by at most that much, and stays below sd - 0.005.
    assert statistics.pstdev(folds) + 0.005 < sd - 0.005
    # The printed folds average within the rounding of mean and folds (±0.005 each).
    assert abs(statistics.fmean(folds) - mean) <= 0.01 + 1e-12


def test_table_1_focal_mean_is_only_within_fold_rounding():
    # Rounding the printed focal folds' average gives 0.53, not the printed 0.54; the unrounded
    # fold scores (each up to 0.005 higher) can average 0.535-0.539. CE rounds exactly.
    assert round(statistics.fmean(TABLE_1["abulnaga/focal"][0]), 2) == 0.53
    assert round(statistics.fmean(TABLE_1["abulnaga/ce"][0]), 2) == 0.49


def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(
        ConfigurationError, match=r"'abulnaga/focall'.*did you mean 'abulnaga/focal'"
    ):
        get_published("abulnaga/focall")
    with pytest.raises(ConfigurationError, match=r"published_keys") as error:
        get_published("nothing/like_it")
    assert "did you mean" not in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_field_is_refused_naming_the_key():
    text = json.dumps({"x/y": _entry(table="1")})
    with pytest.raises(ValueError, match=r"'x/y'.*unknown fields \['table'\]"):
        _parse_published(text)
    text = json.dumps({"x/y": _entry(metrics={"dice": {"mean": 0.5, "sd": None, "n": 3}})})
    with pytest.raises(ValueError, match=r"'x/y'.*metric 'dice'.*\['n'\]"):
        _parse_published(text)


def test_folds_that_cannot_round_to_the_mean_are_refused():
    ok = {"dice": {"mean": 0.54, "sd": 0.09, "folds": [0.64, 0.42, 0.48, 0.55, 0.58]}}
    assert _parse_published(json.dumps({"x/y": _entry(metrics=ok)}))["x/y"].metrics["dice"]
    bad = {"dice": {"mean": 0.55, "sd": 0.09, "folds": [0.64, 0.42, 0.48, 0.55, 0.58]}}
    with pytest.raises(ValueError, match=r"'x/y'.*average 0\.5340.*printed mean 0\.55"):
        _parse_published(json.dumps({"x/y": _entry(metrics=bad)}))


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match=r"'x/y'.*preset 'isles'"):
        _parse_published(json.dumps({"x/y": _entry(preset="isles")}))


def test_package_data_is_shipped():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the suite also supports 3.10
    assert DATA.is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["evaluation"]
    assert any(fnmatch.fnmatch("data/published.json", pattern) for pattern in patterns)
    packages = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatch("evaluation", pattern) for pattern in packages)
