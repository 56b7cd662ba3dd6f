"""The reader on the real layout: token matching, ignored folders, and actionable errors."""

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import DatasetNotFoundError, DataValidationError
from datamodules.isles2018_reader import read_case, scan_isles2018


def _folder(case_dir: Path, token: str) -> Path:
    return next(p for p in case_dir.iterdir() if f".O.{token}." in p.name)


def test_scan_finds_cases_and_ignores_macosx(tiny_twin):
    cases = scan_isles2018(tiny_twin, "TRAINING")
    assert len(cases) >= 12
    assert (tiny_twin / "__MACOSX").exists()
    assert all({"CT", "PWI", "CBF", "CBV", "MTT", "Tmax", "OT"} <= set(c.files) for c in cases)
    assert [c.case for c in cases] == sorted(c.case for c in cases)
    testing = scan_isles2018(tiny_twin, "TESTING")
    assert testing and all("OT" not in c.files for c in testing)


def test_patient_keys_follow_the_case_table(tiny_twin):
    cases = {c.case: c for c in scan_isles2018(tiny_twin, "TRAINING")}
    pairs = [
        (a, a + 1)
        for a in cases
        if a + 1 in cases and cases[a].patient_key == cases[a + 1].patient_key
    ]
    assert pairs, "the twin keeps whole two-slab patients"
    for a, b in pairs:
        assert cases[a].patient_key == cases[b].patient_key


def test_old_release_mr_prefix_is_the_same_modality(twin_copy):
    case_dir = twin_copy / "TRAINING" / sorted((twin_copy / "TRAINING").iterdir())[0].name
    old = _folder(case_dir, "CT_Tmax")
    new_name = old.name.replace("CT_Tmax", "MR_Tmax")
    (old / f"{old.name}.nii").rename(old / f"{new_name}.nii")
    old.rename(case_dir / new_name)
    case = next(c for c in scan_isles2018(twin_copy) if c.directory == case_dir)
    assert case.files["Tmax"].name == f"{new_name}.nii"


def test_read_case_shapes_spacing_and_pwi_max(tiny_twin):
    case = scan_isles2018(tiny_twin)[0]
    image, label, spacing = read_case(case, ["CT", "Tmax", "PWI_max"])
    header = nib.load(case.files["CT"]).header
    assert image.shape[0] == 3 and image.shape[1:] == label.shape
    assert spacing == pytest.approx(header.get_zooms()[:3])
    assert not np.allclose(
        nib.load(case.files["CT"]).affine[:3, :3], np.diag(spacing)
    )  # sform quirk
    pwi = np.asarray(nib.load(case.files["PWI"]).dataobj)
    assert np.array_equal(image[2], pwi.max(axis=3).astype(np.float32))
    assert set(np.unique(label)) <= {0, 1}


def test_missing_dataset_explains_layout_and_twin_command(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        scan_isles2018(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "TRAINING/case_<N>/SMIR.Brain.XX.O.<MOD>.<id>" in message
    assert "lightning-data synth isles2018" in message


def test_missing_modality_folder_names_the_case(twin_copy):
    case_dir = sorted((twin_copy / "TRAINING").iterdir())[0]

    shutil.rmtree(_folder(case_dir, "CT_CBV"))
    with pytest.raises(DataValidationError, match=rf"{case_dir}: no CBV folder.*CT_CBV") as error:
        scan_isles2018(twin_copy)
    # The CBV is part of the brain mask: dropping a channel would not help, moving the case does.
    assert "drop" not in str(error.value) and "move the case folder out" in str(error.value)
    # The 4D series is only needed for PWI_max: that channel can go.
    testing = scan_isles2018(twin_copy, "TESTING")[0].directory
    shutil.rmtree(_folder(testing, "CT_4DPWI"))
    (case,) = [c for c in scan_isles2018(twin_copy, "TESTING") if c.directory == testing]
    with pytest.raises(DataValidationError, match=r"no PWI folder.*drop PWI_max from"):
        case.path("PWI")


def test_truncated_nii_names_the_file(twin_copy):
    case = scan_isles2018(twin_copy)[0]
    path = case.files["CBF"]
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(DataValidationError) as error:
        read_case(case, ["CT", "CBF"])
    # nibabel's own message spans lines: the first line still names the file and the remedy.
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"{path}: cannot be read as NIfTI (OSError: ")
    assert first_line.endswith("re-extract it from the original archive.")


def test_non_binary_ot_names_the_file(twin_copy):
    case = scan_isles2018(twin_copy)[0]
    image = nib.load(case.files["OT"])
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 2
    nib.save(nib.Nifti1Image(data, None, image.header), case.files["OT"])
    with pytest.raises(
        DataValidationError, match=rf"{case.files['OT']}: the lesion mask must be binary"
    ):
        read_case(case, ["CT"])


def test_shape_mismatch_names_both_files(twin_copy):
    case = scan_isles2018(twin_copy)[0]
    image = nib.load(case.files["MTT"])
    data = np.asarray(image.dataobj)[:-1].copy()
    nib.save(nib.Nifti1Image(data, None, image.header), case.files["MTT"])
    mtt, ct = (re.escape(case.files[m].name) for m in ("MTT", "CT"))
    with pytest.raises(DataValidationError, match=rf"{mtt}: its voxel grid does not match .*{ct}"):
        read_case(case, ["CT", "MTT"])


def test_other_letter_case_and_zero_padded_case_numbers_are_the_same_layout(twin_copy):
    # Copies made by other tools: a title-case split folder, zero-padded and capitalised case
    # folders, an upper-case modality token and file extension. Nothing may be dropped.
    expected = {c.case: c for c in scan_isles2018(twin_copy)}
    (twin_copy / "TRAINING").rename(twin_copy / "Training")
    first, second = sorted(expected)[:2]
    (twin_copy / "Training" / f"case_{first}").rename(twin_copy / "Training" / f"case_{first:03d}")
    (twin_copy / "Training" / f"case_{second}").rename(twin_copy / "Training" / f"Case_{second}")
    case_dir = twin_copy / "Training" / f"case_{first:03d}"
    tmax = _folder(case_dir, "CT_Tmax")
    upper = tmax.name.replace("CT_Tmax", "CT_TMAX")
    (tmax / f"{tmax.name}.nii").rename(tmax / f"{upper}.NII")
    tmax.rename(case_dir / upper)
    cases = {c.case: c for c in scan_isles2018(twin_copy)}
    assert sorted(cases) == sorted(expected)
    assert cases[first].files["Tmax"] == case_dir / upper / f"{upper}.NII"
    assert cases[first].ids == expected[first].ids
    assert cases[second].patient_key == expected[second].patient_key
    image, label, _ = read_case(cases[first], ["CT", "Tmax"])
    assert image.shape[1:] == label.shape


def test_two_folders_with_one_case_number_are_refused(twin_copy):
    first = sorted(scan_isles2018(twin_copy), key=lambda c: c.case)[0]
    padded = first.directory.with_name(f"case_0{first.case}")
    padded.mkdir()
    with pytest.raises(DataValidationError) as error:
        scan_isles2018(twin_copy)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"{twin_copy / 'TRAINING'}: ")
    assert f"{padded.name} and {first.directory.name} are both case {first.case}" in first_line
    assert "Keep one of them" in first_line


def test_a_missing_split_folder_is_named(twin_copy):

    shutil.rmtree(twin_copy / "TRAINING")
    with pytest.raises(DatasetNotFoundError) as error:
        scan_isles2018(twin_copy, "TRAINING")
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"{twin_copy}: no TRAINING/ folder (found only TESTING")
    assert scan_isles2018(twin_copy, "TESTING")


def test_splits_unzipped_into_folders_named_after_their_archives_are_found(twin_copy):
    # unzip -d ISLES2018_Training ISLES2018_Training.zip (and the same for the testing zip).
    for split, archive in (("TRAINING", "ISLES2018_Training"), ("TESTING", "ISLES2018_Testing")):
        (twin_copy / archive).mkdir()
        (twin_copy / split).rename(twin_copy / archive / split)
    cases = scan_isles2018(twin_copy, "TRAINING")
    assert cases and all(
        c.directory.parent == twin_copy / "ISLES2018_Training" / "TRAINING" for c in cases
    )
    assert scan_isles2018(twin_copy, "TESTING")
    # Two candidates are refused rather than guessed between.
    (twin_copy / "copy" / "TRAINING").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"2 folders could hold the TRAINING split"):
        scan_isles2018(twin_copy, "TRAINING")


def test_a_copied_case_folder_is_refused_by_its_smir_ids(twin_copy):
    # Ids are unique across the release; a copied case would be trained on twice and its
    # prediction would replace the original's (both named after one CT_MTT id).
    first = scan_isles2018(twin_copy, "TESTING")[0]
    copy = first.directory.with_name("case_61")
    shutil.copytree(first.directory, copy)
    with pytest.raises(DataValidationError) as error:
        scan_isles2018(twin_copy, "TESTING")
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"{copy}/SMIR.Brain.XX.O.")
    assert f"is also the id of {first.directory}/" in first_line
    assert "remove or restore the duplicate" in first_line
