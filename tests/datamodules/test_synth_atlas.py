"""The synthetic ATLAS twins: layouts, CSVs, dtypes, mask-value quirks, lesions, determinism, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli import data as cli
from datamodules.synth.atlas import (
    MARKER_FILE,
    NEAR_ONE,
    R11_HEADER,
    lesion_volume_mm3,
    write_atlas_twin,
)

# Regexes of docs/datasets.md §1.2, §2 and §3.2, on paths relative to DIR.
R11_FILE = re.compile(
    r"^ATLAS_R1\.1/Site(?P<site>[1-9])/(?P<sid>\d{6})/(?P<ses>t0[12])/"
    r"(?P=sid)_(?:t1w_deface|LesionSmooth(?:_(?P<k>\d+))?)_stx\.nii\.gz$"
)
R12_FILE = re.compile(
    r"^atlas_standard/c(?P<c>\d{4})/c(?P=c)s(?P<s>\d{4})t(?P<t>\d{2})/"
    r"c(?P=c)s(?P=s)t(?P=t)_(?:t1w|LesionSmooth(?:_\d+)?)_stx\.nii\.gz$"
)
R20_FILE = re.compile(
    r"^ATLAS_2/(?P<split>Training|Testing)/R(?P<site>\d{3})/sub-r(?P=site)s(?P<n>\d{3})/ses-1/"
    r"anat/sub-r(?P=site)s(?P=n)_ses-1_space-MNI152NLin2009aSym_"
    r"(?:T1w|label-L_desc-T1lesion_mask)\.nii\.gz$"
)
EXTRAS = {
    "R1.1": {"ATLAS_R1.1/ATLAS_Meta-Data_Release_1.1_standard_mni.csv"},
    "R1.2": set(),
    "R2.0": {
        "ATLAS_2/20211112_ATLAS_2.0_SupplementaryInfo.csv",
        "ATLAS_2/20220425_ATLAS_2.0_MetaData.csv",
        "ATLAS_2/MNI152NLin2009aSym.nii.gz",
    },
}
PATTERNS = {"R1.1": R11_FILE, "R1.2": R12_FILE, "R2.0": R20_FILE}


def _write(root: Path, release: str, **kwargs) -> Path:
    defaults = {"subjects": 5, "testing_subjects": 2 if release == "R2.0" else 0}
    return write_atlas_twin(
        root, release, seed=kwargs.pop("seed", 0), size="tiny", **{**defaults, **kwargs}
    )


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth_atlas")
    return {release: _write(base / release, release) for release in PATTERNS}


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.nii.gz") if not p.name.startswith("."))


def _data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("release", PATTERNS)
def test_every_file_follows_the_release_layout(twins, release):
    root = twins[release]
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() or path.name.startswith(".") or relative == MARKER_FILE:
            continue
        if release == "R2.0" and path.name == "dataset_description.json":
            assert re.fullmatch(
                r"ATLAS_2/(Training|Testing)/R\d{3}/dataset_description\.json", relative
            )
            continue
        assert PATTERNS[release].match(relative) or relative in EXTRAS[release], relative
    assert all((root / extra).is_file() for extra in EXTRAS[release])
    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker["synthetic"] is True and marker["release"] == release
    assert not list(root.parent.glob(".*partial*")), "temporary directory left behind"


def test_r11_metadata_csv_quirks(twins):
    root = twins["R1.1"] / "ATLAS_R1.1"
    text = (root / "ATLAS_Meta-Data_Release_1.1_standard_mni.csv").read_text()
    assert text.splitlines()[0] == ",".join(R11_HEADER) and len(R11_HEADER) == 15
    rows = list(csv.DictReader(text.splitlines()))
    folders = {p.relative_to(root).as_posix() for p in root.glob("Site*/*/t0*")}
    assert len(rows) == len(folders)
    for row in rows:
        subject_id, session = row["INDI Subject ID"], row["Session"]
        assert not subject_id.startswith("0") and session.startswith(" t0")
        assert f"{row['INDI Site ID']}/{int(subject_id):06d}/{session[1:]}" in folders
    assert '"' in text, "fields holding commas should be quoted"
    assert {"ATLAS_R1.1/Site8/031948/t01", "ATLAS_R1.1/Site8/031948/t02"} <= {
        f"ATLAS_R1.1/{folder}" for folder in folders
    }


@pytest.mark.parametrize("release", ["R1.1", "R1.2"])
def test_r1_dtypes_and_mask_value_styles(twins, release):
    styles, files_per_scan = set(), {}
    for path in _images(twins[release]):
        image = nib.load(path)
        data = np.asarray(image.dataobj)
        assert image.header.get_zooms() == (5.0, 5.0, 5.0) and data.shape == (40, 47, 38)
        np.testing.assert_allclose(image.affine[:3, 3], (-98, -134, -72))
        if "_t1w" in path.name:
            assert data.dtype == np.float32 and 0 <= data.min() and data.max() <= 100
            continue
        assert data.dtype == np.float64
        files_per_scan[path.parent] = files_per_scan.get(path.parent, 0) + 1
        values = np.unique(data)
        assert values[0] == 0 and len(values) > 1
        styles.add(tuple(np.round(values[1:] / NEAR_ONE, 6)))
        assert np.all(values[1:] != np.round(values[1:])), "values are ≈1/≈255, not exact"
    assert {(1.0,), (255.0,), (1.0, 2.0, 253.0, 254.0, 255.0)} <= styles
    assert {2, 3} <= set(files_per_scan.values())


def test_r20_dtypes_masks_and_the_hundredth_subject(twins):
    root = twins["R2.0"] / "ATLAS_2"
    for path in _images(root / "Training"):
        data = _data(path)
        if path.name.endswith("_T1w.nii.gz"):
            assert data.dtype == np.float32 and data.min() >= 0 and 100 < data.max() < 160
        elif path.name.startswith("sub-r039s002"):
            assert data.dtype == np.float64 and set(np.unique(data)) == {0.0, 0.01}
        else:
            assert set(np.unique(data)) == {0, 1}
    assert not list((root / "Testing").rglob("*_mask.nii.gz"))
    descriptions = {p.read_text() for p in root.glob("*/R*/dataset_description.json")}
    assert len(descriptions) == 1 and "BIDSVersion" in descriptions.pop()
    metadata = list(csv.reader((root / "20220425_ATLAS_2.0_MetaData.csv").read_text().splitlines()))
    assert metadata[0][0] == "Subject ID" and all(row[23].startswith("R0") for row in metadata[1:])


def test_testing_folder_only_when_asked(tmp_path):
    root = _write(tmp_path / "t", "R2.0", subjects=2, testing_subjects=0)
    assert not (root / "ATLAS_2" / "Testing").exists()
    with pytest.raises(ValueError, match="no Testing split"):
        _write(tmp_path / "u", "R1.2", testing_subjects=1)


@pytest.mark.parametrize("release", PATTERNS)
def test_every_training_scan_has_a_hypointense_lesion(twins, release):
    root = twins[release]
    scans: dict[Path, list[Path]] = {}
    for path in _images(root):
        if "MNI152NLin2009aSym.nii.gz" != path.name:
            scans.setdefault(path.parent, []).append(path)
    for folder, files in scans.items():
        t1 = next(_data(p) for p in files if re.search(r"_t1w|_T1w", p.name))
        masks = [_data(p) > 0 for p in files if re.search(r"LesionSmooth|_mask", p.name)]
        if "Testing" in folder.parts:
            assert not masks
            continue
        lesion = np.logical_or.reduce(masks)
        assert lesion.any(), folder
        brain = (t1 > 0) & ~lesion
        assert t1[lesion].mean() < t1[brain].mean(), folder


def test_sessions_of_a_subject_share_their_lesions(twins):
    base = twins["R1.1"] / "ATLAS_R1.1" / "Site8" / "031948"
    unions = [
        np.logical_or.reduce([_data(p) > 0 for p in sorted((base / s).glob("*Lesion*"))])
        for s in ("t01", "t02")
    ]
    np.testing.assert_array_equal(*unions)
    t1s = [_data(base / s / "031948_t1w_deface_stx.nii.gz") for s in ("t01", "t02")]
    assert not np.array_equal(*t1s), "sessions should differ in intensity and noise"


def test_lesion_volumes_span_the_real_range_and_are_mostly_small():
    rng = np.random.default_rng(0)
    volumes = np.array([lesion_volume_mm3(rng) for _ in range(4000)])
    assert volumes.min() == 13 and volumes.max() == 496656
    q1, median, q3 = np.quantile(volumes, [0.25, 0.5, 0.75])
    assert 700 < q1 < 1700 and 3500 < median < 8000 and 20000 < q3 < 50000


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    root = _write(tmp_path / "a", "R2.0", subjects=3)
    for path in _images(root):  # nibabel's own writer would stamp the current time here
        assert path.read_bytes()[4:8] == bytes(4), f"{path.name}: gzip mtime is not 0"
    first = _digest(root)
    assert first == _digest(_write(tmp_path / "b", "R2.0", subjects=3))
    other = _digest(_write(tmp_path / "c", "R2.0", subjects=3, seed=1))
    images = [n for n in first if n.endswith("_T1w.nii.gz") and "/._" not in n]
    assert images and all(first[name] != other[name] for name in images)


def test_a_subject_does_not_depend_on_how_many_were_asked_for(tmp_path):
    small = _digest(_write(tmp_path / "a", "R1.1", subjects=2))
    large = _digest(_write(tmp_path / "b", "R1.1", subjects=4))
    shared = [name for name in small if name.endswith(".nii.gz")]
    assert shared and all(small[name] == large[name] for name in shared)


def test_full_size_grid_matches_the_release(tmp_path):
    root = write_atlas_twin(tmp_path / "full", "R2.0", subjects=1, size="full")
    t1 = nib.load(next(p for p in root.rglob("sub-*_T1w.nii.gz")))
    assert t1.shape == (197, 233, 189) and t1.header.get_zooms() == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(
        t1.affine, [[1, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]]
    )
    assert 0 < np.asarray(t1.dataobj).max() < 160


def test_overwrite_replaces_a_twin_but_never_other_data(tmp_path):
    root = _write(tmp_path / "twin", "R1.2", subjects=1)
    with pytest.raises(FileExistsError, match="--overwrite"):
        _write(root, "R1.2", subjects=1)
    _write(root, "R1.1", subjects=1, overwrite=True)
    assert (root / "ATLAS_R1.1").is_dir() and not (root / "atlas_standard").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a synthetic twin"):
        _write(precious, "R1.1", subjects=1, overwrite=True)
    assert (precious / "data.txt").read_text() == "keep"


def test_cli_writes_a_twin_and_summarises_it(tmp_path, capsys):
    root = tmp_path / "cli"
    argv = ["synth", "atlas", str(root), "--release", "R2.0", "--subjects", "2"]
    assert cli.main([*argv, "--testing-subjects", "1", "--size", "tiny", "--seed", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "ATLAS R2.0" in out and "Training: 2 subjects" in out and "Testing: 1 subject," in out
    assert json.loads((root / MARKER_FILE).read_text())["seed"] == 3


def test_cli_refuses_a_non_empty_directory_without_a_traceback(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    argv = ["synth", "atlas", str(tmp_path), "--release", "R1.1", "--subjects", "1"]
    assert cli.main([*argv, "--size", "tiny", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "Traceback" not in err
    empty = ["synth", "atlas", str(tmp_path / "new"), "--release", "R1.1", "--subjects", "0"]
    assert cli.main([*empty, "--size", "tiny", "-q"]) == 2
    assert "subjects must be an integer from 1 to 220" in capsys.readouterr().err
