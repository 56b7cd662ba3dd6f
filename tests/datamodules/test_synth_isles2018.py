"""The synthetic ISLES 2018 twin: layout, dtypes, header quirk, pairing, determinism, lesions."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli import data as cli
from datamodules.isles2018_cases import case_info, load_case_table
from datamodules.synth import mni
from datamodules.synth.isles2018 import MODALITY_DTYPES, select_cases, write_isles2018_twin
from datamodules.synth.isles2018 import plan as isles2018_plan
from datamodules.synth.isles2018 import write as isles2018_write

FILE_PATTERN = re.compile(
    r"^(?P<split>TRAINING|TESTING)/case_(?P<case>[1-9]\d?)/SMIR\.Brain\.XX\.O\."
    r"(?P<mod>CT|(?:CT|MR)_(?:4DPWI|CBF|CBV|MTT|Tmax|DWI)|OT)\.(?P<id>\d+)/"
    r"SMIR\.Brain\.XX\.O\.(?P=mod)\.(?P=id)\.nii$"
)
TRAINING_MODS = {"CT", "CT_4DPWI", "CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax", "OT", "MR_DWI"}
TESTING_MODS = TRAINING_MODS - {"OT", "MR_DWI"}


def _files(root: Path) -> dict[tuple[str, int], dict[str, Path]]:
    """Map (split, case) → modality → file, for every file matching the real layout."""
    cases: dict[tuple[str, int], dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() or relative.startswith("__MACOSX/") or relative == "SYNTHETIC_TWIN.json":
            continue
        match = FILE_PATTERN.match(relative)
        assert match, f"{relative} does not follow the ISLES 2018 layout"
        key = (match["split"], int(match["case"]))
        cases.setdefault(key, {})[match["mod"]] = path
    return cases


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("twin") / "ISLES2018"
    return write_isles2018_twin(root, cases=6, testing_cases=3, seed=0, size="tiny")


def test_layout_follows_the_real_tree(tiny):
    cases = _files(tiny)
    assert {split for split, _ in cases} == {"TRAINING", "TESTING"}
    for (split, case), mods in cases.items():
        assert set(mods) == (TRAINING_MODS if split == "TRAINING" else TESTING_MODS)
        row = case_info(split, case)
        ids = {mod: int(path.stem.rsplit(".", 1)[1]) for mod, path in mods.items()}
        assert ids["CT_4DPWI"] == row.ids["CT"] - 1
        assert all(ids[mod] == value for mod, value in row.ids.items())
    assert (tiny / "__MACOSX" / "TRAINING" / "._case_1").is_file()
    marker = json.loads((tiny / "SYNTHETIC_TWIN.json").read_text())
    assert marker["synthetic"] is True and marker["seed"] == 0 and marker["size"] == "tiny"
    assert sorted(marker["splits"]["TRAINING"]["cases"]) == sorted(
        case for split, case in cases if split == "TRAINING"
    )
    assert not list(tiny.parent.glob(".*partial*")), "temporary directory left behind"


def test_dtypes_per_modality(tiny):
    for mods in _files(tiny).values():
        for mod, path in mods.items():
            assert _load(path).dtype == MODALITY_DTYPES[mod], path.name


def test_shapes_follow_the_case_table_capped_for_tiny(tiny):
    for (split, case), mods in _files(tiny).items():
        row = case_info(split, case)
        expected = (32, 32, min(row.shape[2], 4))
        for mod, path in mods.items():
            shape = _load(path).shape
            if mod == "CT_4DPWI":
                assert shape == (*expected, min(row.frames, 6))
            else:
                assert shape == expected, (path.name, shape)


def test_header_keeps_true_spacing_in_pixdim_and_identity_sform(tiny):
    for (split, case), mods in _files(tiny).items():
        row = case_info(split, case)
        for mod, path in mods.items():
            image = nib.load(path)
            header = image.header
            zooms = header.get_zooms()
            assert np.allclose(image.affine, np.eye(4)), "affine must be the 1 mm identity sform"
            assert int(header["sform_code"]) == 2 and int(header["qform_code"]) == 2
            assert np.allclose(header.get_qform()[:3, 3], 0)
            assert np.allclose(np.diag(header.get_qform())[:3], zooms[:3])
            assert header.get_xyzt_units() == ("mm", "sec")
            if row.spacing is not None:
                assert zooms[2] == pytest.approx(row.spacing[2], rel=1e-5)
                assert zooms[0] == pytest.approx(row.spacing[0] * 8, rel=1e-5)  # tiny: 256/32
            if mod == "CT_4DPWI":
                assert zooms[3] == pytest.approx(row.frames / min(row.frames, 6))


def test_ot_is_binary_and_every_training_case_has_a_core(tiny):
    for (split, _), mods in _files(tiny).items():
        if split == "TRAINING":
            ot = _load(mods["OT"])
            assert set(np.unique(ot)) == {0, 1}


def test_two_slab_patients_are_written_whole(tiny):
    written = set(_files(tiny))
    for split, case in written:
        row = case_info(split, case)
        if row.slab:
            partner = case + 1 if row.slab == "A" else case - 1
            assert (split, partner) in written
            assert case_info(split, partner).patient == row.patient


def test_perfusion_maps_are_zero_outside_the_brain_and_ct_is_not(tiny):
    for mods in _files(tiny).values():
        support = _load(mods["CT_MTT"]) > 0
        ct = _load(mods["CT"])
        assert support.any() and not support[ct > 300].any(), "perfusion in the skull"
        for mod in ("CT_CBF", "CT_CBV", "CT_Tmax"):
            assert not _load(mods[mod])[~support].any(), mod
        assert ct.max() > 500, "no skull in CT"
        assert (ct[~support] != 0).any(), "CT must not be skull-stripped"


def test_lesions_are_hypoperfused_with_late_tmax(tiny):
    inside, outside = {"Tmax": [], "CBF": []}, {"Tmax": [], "CBF": []}
    for (split, _), mods in _files(tiny).items():
        if split != "TRAINING":
            continue
        ot = _load(mods["OT"]).astype(bool)
        brain = _load(mods["CT_CBF"]) > 0
        for name in inside:
            values = _load(mods[f"CT_{name}"]).astype(float)
            inside[name].append(values[ot])
            outside[name].append(values[brain & ~ot])
    tmax_in, tmax_out = (np.concatenate(v["Tmax"]).mean() for v in (inside, outside))
    cbf_in, cbf_out = (np.concatenate(v["CBF"]).mean() for v in (inside, outside))
    assert tmax_in > 6.0 and tmax_in > tmax_out + 3.0
    assert cbf_in < 0.6 * cbf_out


def test_same_seed_same_bytes_and_other_seed_other_data(tmp_path):
    first = write_isles2018_twin(tmp_path / "a", cases=3, testing_cases=1, seed=7, size="tiny")
    second = write_isles2018_twin(tmp_path / "b", cases=3, testing_cases=1, seed=7, size="tiny")
    other = write_isles2018_twin(tmp_path / "c", cases=3, testing_cases=1, seed=8, size="tiny")
    assert _digest(first) == _digest(second)
    shared = set(_digest(first)) & set(_digest(other))
    assert any(_digest(first)[name] != _digest(other)[name] for name in shared if ".nii" in name)
    assert json.loads((other / "SYNTHETIC_TWIN.json").read_text())["seed"] == 8


def test_a_case_does_not_depend_on_which_other_cases_were_chosen(tiny, tmp_path):
    other = write_isles2018_twin(tmp_path / "t", cases=2, testing_cases=0, seed=0, size="tiny")
    twin_files = _files(tiny)
    for key, mods in _files(other).items():
        assert key in twin_files, "pick counts whose selections overlap"
        for mod, path in mods.items():
            assert twin_files[key][mod].read_bytes() == path.read_bytes(), (key, mod)


def test_testing_has_no_ot_and_no_dwi_flag_drops_dwi(tmp_path):
    root = write_isles2018_twin(tmp_path / "t", cases=2, testing_cases=2, size="tiny", dwi=False)
    for (split, _), mods in _files(root).items():
        assert "MR_DWI" not in mods
        assert ("OT" in mods) == (split == "TRAINING")


@pytest.mark.parametrize("count", [0, 1, 2, 5, 13, 30, 50, 93])
def test_selection_takes_whole_patients_and_spreads_protocols(count):
    chosen = select_cases("TRAINING", count, seed=0)
    assert len(chosen) in (count, count + 1)
    patients = Counter(row.patient for row in chosen)
    table = Counter(row.patient for row in load_case_table() if row.split == "TRAINING")
    assert all(patients[p] == table[p] for p in patients), "a two-slab patient was split"
    if count >= 7:  # seven training slab protocols
        assert len({isles2018_plan._protocol(row) for row in chosen}) == 7
    assert chosen == select_cases("TRAINING", count, seed=0)


def test_selection_depends_on_seed_and_none_means_all():
    assert len(select_cases("TRAINING", None, seed=0)) == 94
    assert len(select_cases("TESTING", None, seed=0)) == 62
    assert select_cases("TRAINING", 20, seed=0) != select_cases("TRAINING", 20, seed=1)


def test_existing_directory_needs_overwrite_and_must_be_a_twin(tmp_path):
    root = tmp_path / "twin"
    root.mkdir()
    (root / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_isles2018_twin(root, cases=1, testing_cases=0, size="tiny")
    with pytest.raises(FileExistsError, match="not a synthetic twin"):
        write_isles2018_twin(root, cases=1, testing_cases=0, size="tiny", overwrite=True)
    assert (root / "keep.txt").read_text() == "user data"

    empty = tmp_path / "empty"
    empty.mkdir()
    write_isles2018_twin(empty, cases=1, testing_cases=0, size="tiny")
    write_isles2018_twin(empty, cases=2, testing_cases=0, size="tiny", overwrite=True)
    assert (
        len(json.loads((empty / "SYNTHETIC_TWIN.json").read_text())["splits"]["TRAINING"]["cases"])
        == 2
    )


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = isles2018_write._write_case
    monkeypatch.setattr(isles2018_write, "_write_case", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_isles2018_twin(tmp_path / "twin", cases=4, testing_cases=0, size="tiny")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cases": 95}, "from 0 to 94"),
        ({"testing_cases": -1}, "from 0 to 62"),
        ({"seed": -3}, "non-negative"),
        ({"size": "huge"}, "'full' or 'tiny'"),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_isles2018_twin(tmp_path / "twin", **kwargs)
    assert not (tmp_path / "twin").exists()


def test_one_full_size_case_has_the_real_geometry_and_a_visible_bolus(tmp_path):
    root = write_isles2018_twin(tmp_path / "full", cases=1, testing_cases=0, seed=0)
    ((split, case), mods), *_ = _files(root).items()
    row = case_info(split, case)
    for mod, path in mods.items():
        image = nib.load(path)
        if mod == "CT_4DPWI":
            assert image.shape == (256, 256, row.shape[2], row.frames)
            assert image.header.get_zooms() == pytest.approx((*row.spacing, 1.0), rel=1e-5)
        else:
            assert image.shape == row.shape
            assert image.header.get_zooms() == pytest.approx(row.spacing, rel=1e-5)
    series = _load(mods["CT_4DPWI"]).astype(np.float32)
    ot = _load(mods["OT"]).astype(bool)
    healthy = (_load(mods["CT_Tmax"]) < 2) & (_load(mods["CT_CBF"]) > 0) & ~ot
    enhancement = series.max(axis=-1) - series[..., :3].mean(axis=-1)
    assert ot.any()
    assert enhancement[healthy].mean() > 1.3 * enhancement[ot].mean()
    ct = _load(mods["CT"])
    assert ct[healthy].mean() > ct[ot].mean()


def test_template_comes_from_the_nilearn_wheel():
    import nilearn.datasets

    assert mni.template_path("t1") == Path(nilearn.datasets.MNI152_FILE_PATH)
    assert mni.template_path("gm") == Path(nilearn.datasets.GM_MNI152_FILE_PATH)
    assert mni.template_path("wm") == Path(nilearn.datasets.WM_MNI152_FILE_PATH)
    t1, gm, wm = mni.load_template()
    assert t1.shape == gm.shape == wm.shape == (197, 233, 189) and t1.dtype == np.float32
    assert 0 <= wm.min() and gm.max() <= 1
    assert np.allclose(mni.template_affine()[:3, 3], (-98, -134, -72))
    assert mni.sample(t1, np.zeros((3, 1))).item() > 0  # the origin (AC) is inside the brain


def test_cli_writes_a_twin_and_summarises_it(tmp_path, capsys):
    root = tmp_path / "cli"
    argv = ["synth", "isles2018", str(root), "--cases", "2", "--testing-cases", "1"]
    assert cli.main([*argv, "--size", "tiny", "--seed", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert str(root) in out and "TRAINING: 2 cases" in out and "on disk" in out
    assert (root / "TRAINING").is_dir() and (root / "TESTING").is_dir()


def test_cli_refuses_a_non_empty_directory_without_a_traceback(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("")
    code = cli.main(["synth", "isles2018", str(tmp_path), "--size", "tiny", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--overwrite" in err and "Traceback" not in err
