"""The synthetic ISLES 2022 twin: BIDS layout, grids, dtypes, lesions, determinism, pybids, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cli import data as cli
from datamodules.isles2022_layout import (
    CHANNELS,
    DESCRIPTION,
    MASK,
    mask_path,
    parse_name,
    raw_path,
    sidecar_path,
)
from datamodules.synth.common import generator
from datamodules.synth.isles2022 import (
    CENTRES,
    MARKER_FILE,
    PARTICIPANTS,
    README,
    plan_cases,
    write_isles2022_twin,
)
from datamodules.synth.isles2022 import anatomy as isles2022_anatomy
from datamodules.synth.isles2022 import write as isles2022_write

CASES = 6  # two per centre
TWENTY_SIX = np.ones((3, 3, 3), dtype=bool)


def _subjects(cases: int) -> list[str]:
    return [f"strokecase{k:04d}" for k in range(1, cases + 1)]


def _image_paths(subject: str) -> dict[str, str]:
    """Layout path of each role of a case: the three channels and the mask."""
    return {
        **{channel: raw_path(subject, "0001", channel) for channel in CHANNELS},
        MASK: mask_path(subject, "0001"),
    }


def _load(root: Path, subject: str) -> dict[str, nib.Nifti1Image]:
    return {role: nib.load(root / path) for role, path in _image_paths(subject).items()}


def _data(image: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(image.dataobj)


def _digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _marker(root: Path) -> dict:
    return json.loads((root / MARKER_FILE).read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("twin") / "ISLES2022"
    return write_isles2022_twin(root, cases=CASES, seed=0, size="tiny")


def test_every_file_follows_the_release_layout(tiny):
    expected = {DESCRIPTION, PARTICIPANTS, README, MARKER_FILE}
    for subject in _subjects(CASES):
        paths = _image_paths(subject)
        expected |= set(paths.values())
        expected |= {sidecar_path(paths[channel]).as_posix() for channel in CHANNELS}
    written = {p.relative_to(tiny).as_posix() for p in tiny.rglob("*") if p.is_file()}
    assert written == expected
    for name in written:
        entities = parse_name(Path(name).name)
        if name.endswith(".nii.gz"):
            assert entities is not None and entities.session == "0001", name
    marker = _marker(tiny)
    assert marker["synthetic"] is True and marker["seed"] == 0 and marker["size"] == "tiny"
    assert list(marker["cases"]) == [f"sub-{s}" for s in _subjects(CASES)]
    assert not list(tiny.parent.glob(".*partial*")), "temporary directory left behind"


def test_bids_files_at_the_root_and_sidecars(tiny):
    description = json.loads((tiny / DESCRIPTION).read_text())
    assert description["BIDSVersion"] and description["DatasetType"] == "raw"
    assert "synthetic" in description["Name"]
    rows = list(csv.DictReader((tiny / PARTICIPANTS).read_text().splitlines(), delimiter="\t"))
    assert [row["participant_id"] for row in rows] == [f"sub-{s}" for s in _subjects(CASES)]
    assert [row["site"] for row in rows] == ["A", "B", "C"] * 2
    assert "synthetic" in (tiny / README).read_text()
    for case in plan_cases(CASES):
        for channel in CHANNELS:
            path = tiny / sidecar_path(raw_path(case.subject, case.session, channel))
            sidecar = json.loads(path.read_text())
            assert sidecar["MagneticFieldStrength"] == case.centre.field_tesla in (1.5, 3.0)
            assert sidecar["Manufacturer"] == case.centre.manufacturer
            assert 0 < sidecar["EchoTime"] < sidecar["RepetitionTime"] < 20
            assert ("InversionTime" in sidecar) == (channel == "FLAIR")


def test_dwi_adc_and_mask_share_a_scanner_grid_and_flair_has_its_own(tiny):
    for subject in _subjects(CASES):
        images = _load(tiny, subject)
        dwi, flair = images["DWI"], images["FLAIR"]
        for role in ("ADC", MASK):
            assert images[role].shape == dwi.shape and len(dwi.shape) == 3
            np.testing.assert_array_equal(images[role].affine, dwi.affine)
        assert flair.shape != dwi.shape
        assert not np.allclose(flair.affine, dwi.affine)
        for image in images.values():
            header = image.header
            assert int(header["sform_code"]) == int(header["qform_code"]) == 1
            np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-4)
            assert not np.allclose(image.affine[:3, :3], np.diag(np.diag(image.affine[:3, :3])))
            assert np.abs(image.affine[:3, 3]).max() > 50, "origin should be far from 0"


def test_dtypes_vary_by_centre_and_masks_hold_zero_and_one(tiny):
    dtypes = {role: set() for role in (*CHANNELS, MASK)}
    for case in plan_cases(CASES):
        images = _load(tiny, case.subject)
        for role, image in images.items():
            data = _data(image)
            assert data.dtype == case.centre.dtypes[role], (case.subject, role)
            dtypes[role].add(data.dtype)
        assert set(np.unique(_data(images[MASK]))) == {0, 1}
    assert dtypes[MASK] == {np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64)}
    assert dtypes["DWI"] == {np.dtype(np.int16), np.dtype(np.float32)}


def test_lesions_are_bright_on_dwi_dark_on_adc_and_inside_the_brain(tiny):
    for subject in _subjects(CASES):
        images = _load(tiny, subject)
        dwi, adc = (_data(images[c]).astype(np.float64) for c in ("DWI", "ADC"))
        lesion = _data(images[MASK]) > 0
        brain = (adc > 0) & ~lesion  # ADC is 0 outside the brain
        assert lesion.any() and np.all(adc[lesion] > 0), subject
        assert dwi[lesion].mean() > 1.6 * dwi[brain].mean(), subject
        assert adc[lesion].mean() < 0.6 * adc[brain].mean(), subject
        assert 250 < adc[lesion].mean() < 650 and 700 < np.median(adc[brain]) < 1200


def test_several_lesions_in_some_cases_counted_as_the_challenge_does(tiny):
    marker = _marker(tiny)
    counts = []
    for subject in _subjects(CASES):
        _, count = ndimage.label(_data(_load(tiny, subject)[MASK]) > 0, structure=TWENTY_SIX)
        assert marker["cases"][f"sub-{subject}"]["lesions"] == count
        counts.append(count)
    assert min(counts) >= 1 and max(counts) >= 2
    training = marker["splits"]["training"]
    assert training["lesions"] == sum(counts) and training["centres"] == {"A": 2, "B": 2, "C": 2}


def test_lesion_draws_have_realistic_sizes_and_counts():
    isles2022_anatomy.template_maps()
    cases = [
        isles2022_anatomy.draw_lesions(generator(0, (99, k)), scale=1.0, gap_mm=8.0)
        for k in range(300)
    ]
    assert all(1 <= len(lesions) <= 6 for lesions in cases)
    several = np.mean([len(lesions) > 1 for lesions in cases])
    assert 0.25 < several < 0.45, "about a third of cases should have several lesions"
    first = np.array([lesions[0].volume_ml for lesions in cases])
    assert 0.15 < np.mean(first >= 20) < 0.3 and first.max() <= 150
    others = np.array([lesion.volume_ml for lesions in cases for lesion in lesions[1:]])
    assert others.max() <= 1.0 and np.mean(others < 0.2) > 0.3, "satellites are small"
    assert any(lesions[0].kind == "tiny" and len(lesions) == 1 for lesions in cases)
    for lesions in cases:
        for a in lesions:
            assert all(
                np.linalg.norm(a.centre_mm - b.centre_mm) > a.extent_mm + b.extent_mm
                for b in lesions
                if b is not a
            )


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first = write_isles2022_twin(tmp_path / "a", cases=3, seed=5, size="tiny")
    for path in first.rglob("*.nii.gz"):  # nibabel's own writer would stamp the time here
        assert path.read_bytes()[4:8] == bytes(4), f"{path.name}: gzip mtime is not 0"
    second = write_isles2022_twin(tmp_path / "b", cases=3, seed=5, size="tiny")
    assert _digest(first) == _digest(second)
    other = _digest(write_isles2022_twin(tmp_path / "c", cases=3, seed=6, size="tiny"))
    images = [name for name in _digest(first) if name.endswith(".nii.gz")]
    assert images and all(_digest(first)[name] != other[name] for name in images)


def test_a_case_does_not_depend_on_how_many_were_asked_for(tiny, tmp_path):
    small = _digest(write_isles2022_twin(tmp_path / "two", cases=2, seed=0, size="tiny"))
    large = _digest(tiny)
    shared = [name for name in small if name.startswith(("rawdata/", "derivatives/"))]
    assert len(shared) == 2 * 7 and all(small[name] == large[name] for name in shared)


def _flair_at(flair: nib.Nifti1Image, affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """FLAIR at the nearest voxels of other-grid ``voxels`` (N, 3), through the two affines."""
    points = nib.affines.apply_affine(np.linalg.inv(flair.affine) @ affine, voxels)
    points = np.rint(points).astype(int)
    inside = np.all((points >= 0) & (points < flair.shape), axis=1)
    return _data(flair).astype(np.float64)[tuple(points[inside].T)]


def test_one_full_size_case_per_centre_has_the_centre_geometry(tmp_path):
    root = write_isles2022_twin(tmp_path / "full", cases=3, seed=0)
    for case in plan_cases(3):
        images = _load(root, case.subject)
        centre = case.centre
        for role in ("DWI", "ADC", MASK):
            assert images[role].shape == centre.dwi.shape
            assert images[role].header.get_zooms() == pytest.approx(centre.dwi.spacing, abs=1e-4)
        flair = images["FLAIR"]
        assert flair.shape == centre.flair.shape
        assert flair.header.get_zooms() == pytest.approx(centre.flair.spacing, abs=1e-4)
        assert "".join(nib.aff2axcodes(flair.affine)) == centre.flair.axes
        lesion = _data(images[MASK]) > 0
        brain = _data(images["ADC"]) > 0
        dwi_affine = images["DWI"].affine
        on_lesion = _flair_at(flair, dwi_affine, np.argwhere(lesion)).mean()
        ratio = on_lesion / _flair_at(flair, dwi_affine, np.argwhere(brain)).mean()
        visible = _marker(root)["cases"][f"sub-{case.subject}"]["lesion_on_flair"]
        assert ratio > 1.15 if visible else 0.8 < ratio < 1.15, (case.subject, ratio)


def test_overwrite_replaces_a_twin_but_never_other_data(tmp_path):
    root = write_isles2022_twin(tmp_path / "twin", cases=1, size="tiny")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_isles2022_twin(root, cases=1, size="tiny")
    write_isles2022_twin(root, cases=2, size="tiny", overwrite=True)
    assert _marker(root)["splits"]["training"]["cases"] == 2
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a synthetic twin"):
        write_isles2022_twin(precious, cases=1, size="tiny", overwrite=True)
    assert (precious / "data.txt").read_text() == "keep"


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    original = isles2022_write._write_case

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(isles2022_write, "_write_case", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_isles2022_twin(tmp_path / "twin", cases=3, size="tiny")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cases": 0}, "from 1 to 250"),
        ({"cases": 251}, "from 1 to 250"),
        ({"seed": -1}, "non-negative"),
        ({"size": "huge"}, "'full' or 'tiny'"),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_isles2022_twin(tmp_path / "twin", **kwargs)
    assert not (tmp_path / "twin").exists()


def test_centres_differ_in_grids_and_dtypes():
    assert len({centre.dwi.shape for centre in CENTRES.values()}) == 3
    assert {centre.field_tesla for centre in CENTRES.values()} == {1.5, 3.0}
    assert {centre.flair.acquisition for centre in CENTRES.values()} == {"2D", "3D"}


def test_pybids_indexes_the_raw_images(tiny):
    bids = pytest.importorskip("bids")
    layout = bids.BIDSLayout(tiny, validate=False)
    assert layout.get_subjects() == _subjects(CASES) and layout.get_sessions() == ["0001"]
    for suffix in ("dwi", "adc", "FLAIR"):
        files = layout.get(suffix=suffix, extension=".nii.gz")
        assert len(files) == CASES, suffix
    dwi = layout.get(subject="strokecase0002", suffix="dwi", extension=".nii.gz")[0]
    assert dwi.get_metadata()["MagneticFieldStrength"] == CENTRES["B"].field_tesla


def test_cli_writes_a_twin_and_says_what_it_wrote(tmp_path, capsys):
    root = tmp_path / "cli"
    argv = ["synth", "isles2022", str(root), "--cases", "4", "--size", "tiny", "--seed", "3"]
    assert cli.main([*argv, "-q"]) == 0
    out = capsys.readouterr().out
    assert f"ISLES 2022 twin (seed 3, size tiny) to {root}" in out
    assert "training: 4 cases (centres A 2, B 1, C 1)" in out and "on disk" in out
    assert (
        _marker(root)["seed"] == 3 and (root / raw_path("strokecase0004", "0001", "DWI")).is_file()
    )


def test_cli_refuses_other_data_and_bad_counts_without_a_traceback(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    base = ["synth", "isles2022", str(tmp_path), "--cases", "1", "--size", "tiny", "-q"]
    assert cli.main(base) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*base, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a synthetic twin" in err and "Traceback" not in err
    assert (tmp_path / "notes.txt").read_text() == "x"
    too_many = ["synth", "isles2022", str(tmp_path / "new"), "--cases", "251", "-q"]
    assert cli.main(too_many) == 2
    assert "cases must be an integer from 1 to 250" in capsys.readouterr().err
