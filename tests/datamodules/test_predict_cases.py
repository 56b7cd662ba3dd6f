"""A case given as files (``predict_cases``, what ``lightning-cv segment`` passes) decodes to
exactly what the dataset's own reader gives for the same files, for each dataset; wrong names
are listed."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigurationError
from datamodules import ATLASDataModule, ISLES2018DataModule, ISLES2022DataModule


def _decoded(dm, split: str):
    item = dm.items(split)[0]
    return item, dm._load(item, channels=dm.split_channels(split))


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    assert a.zooms == b.zooms


def test_isles2018_case_from_files(tiny_twin, tmp_path):
    settings = {"data_dir": str(tiny_twin), "cache_dir": str(tmp_path), "num_workers": 0}
    dm = ISLES2018DataModule(**settings)
    item, reference = _decoded(dm, "TESTING")
    files = {
        k: str(v) for k, v in dm._cases[item.name].files.items() if k not in ("OT", "DWI", "PWI")
    }
    given = ISLES2018DataModule(**settings, predict_cases={"p": files})
    (one,) = given.items("TESTING")
    assert one.sources[0] == Path(files["CT"])
    _same(_decoded(given, "TESTING")[1], reference)


def test_atlas_case_from_files(tiny_atlas, tmp_path):
    settings = {"data_dir": str(tiny_atlas), "cache_dir": str(tmp_path), "release": "R1.1",
                "predict_split": "Training", "num_workers": 0}  # fmt: skip
    dm = ATLASDataModule(**settings)
    item, reference = _decoded(dm, "Training")
    given = ATLASDataModule(**settings, predict_cases={"p": {"T1": str(item.sources[0])}})
    _same(_decoded(given, "Training")[1], reference)


def test_isles2022_case_from_files_and_wrong_names(tiny_isles22, tmp_path):
    settings = {"data_dir": str(tiny_isles22), "cache_dir": str(tmp_path), "num_workers": 0}
    dm = ISLES2022DataModule(**settings)
    item, reference = _decoded(dm, "all")
    files = {k: str(v) for k, v in dm._cases[item.name].files.items() if k != "mask"}
    _same(
        _decoded(ISLES2022DataModule(**settings, predict_cases={"p": files}), "all")[1], reference
    )
    # A DWI-only model still needs the DWI (its grid); FLAIR is not read, so it is refused.
    dwi_only = partial(ISLES2022DataModule, **settings, channels=("ADC",))
    with pytest.raises(
        ConfigurationError, match=r"p: this model .* Missing: DWI\. Not used: FLAIR"
    ):
        dwi_only(predict_cases={"p": {"ADC": files["ADC"], "FLAIR": files["FLAIR"]}}).items("all")
