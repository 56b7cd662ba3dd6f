"""The ATLAS reader on tiny synthetic twins of R1.1, R1.2 and R2.0, and on damaged copies."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import DatasetNotFoundError, DataValidationError
from datamodules.atlas_layout import ATLAS_RELEASES, check_atlas_root, detect_release
from datamodules.atlas_reader import ATLASScan, read_scan, scan_atlas
from datamodules.synth.atlas import write_atlas_twin


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("atlas")
    return {
        release: write_atlas_twin(
            base / release.replace(".", "_"),
            release,
            subjects=5,
            testing_subjects=2 if release == "R2.0" else 0,
            seed=1,
            size="tiny",
        )
        for release in ATLAS_RELEASES
    }


@pytest.fixture
def r11_copy(twins, tmp_path) -> Path:
    return Path(shutil.copytree(twins["R1.1"], tmp_path / "copy"))


def _scan(root: Path, name: str) -> ATLASScan:
    return next(scan for scan in scan_atlas(root) if scan.name == name)


def _data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


@pytest.mark.parametrize("release", ATLAS_RELEASES)
def test_release_is_detected_from_the_extract_root_and_the_release_folder(twins, release):
    root = twins[release]
    assert detect_release(root) == release
    release_dir, found = check_atlas_root(root)
    assert found == release
    assert detect_release(release_dir) == release
    assert [s.name for s in scan_atlas(release_dir)] == [s.name for s in scan_atlas(root)]


def test_an_empty_root_lists_the_three_layouts_and_the_synth_command(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        detect_release(tmp_path)
    message = str(error.value)
    for token in ("ATLAS_R1.1/Site", "_t1w_stx.nii.gz", "ATLAS_2/Training", "synth atlas"):
        assert token in message
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        check_atlas_root(tmp_path / "missing")


def test_wrong_or_ambiguous_release_is_reported(twins, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no ATLAS R2.0 layout"):
        check_atlas_root(twins["R1.1"], "R2.0")
    with pytest.raises(ValueError, match="release must be one of"):
        check_atlas_root(twins["R1.1"], "R3")
    (tmp_path / "ATLAS_R1.1").symlink_to(twins["R1.1"] / "ATLAS_R1.1")
    (tmp_path / "ATLAS_2").symlink_to(twins["R2.0"] / "ATLAS_2")
    with pytest.raises(ValueError, match="several ATLAS releases"):
        detect_release(tmp_path)
    assert scan_atlas(tmp_path, "R2.0")[0].name.startswith("R2.0/")


def test_r11_scans_names_subjects_and_sorted_masks(twins):
    scans = scan_atlas(twins["R1.1"])
    assert [s.name for s in scans] == sorted(s.name for s in scans)
    assert {s.split for s in scans} == {"Training"}
    t01 = _scan(twins["R1.1"], "R1.1/Site8/031948/t01")
    t02 = _scan(twins["R1.1"], "R1.1/Site8/031948/t02")
    assert t01.subject == t02.subject == "R1.1/031948"
    assert len({s.subject for s in scans}) == len(scans) - 1
    for scan in scans:
        assert scan.t1.name == f"{scan.name.split('/')[2]}_t1w_deface_stx.nii.gz"
        names = [m.name for m in scan.masks]
        stem = scan.name.split("/")[2]
        expected = [f"{stem}_LesionSmooth_stx.nii.gz"] + [
            f"{stem}_LesionSmooth_{k}_stx.nii.gz" for k in range(1, len(names))
        ]
        assert names == expected


def test_r12_subject_key_and_the_two_part_layout(twins, tmp_path):
    scans = scan_atlas(twins["R1.2"])
    first = [s for s in scans if s.subject == "R1.2/c0001s0001"]
    assert [s.name for s in first] == ["R1.2/c0001/c0001s0001t01", "R1.2/c0001/c0001s0001t02"]
    # the ICPSR archive unzips into standard_MNI/standard_part{1,2}/; both parts are one dataset
    parts = tmp_path / "ATLAS R 1.2" / "standard_MNI"
    for cohort in sorted((twins["R1.2"] / "atlas_standard").iterdir()):
        part = "standard_part1" if cohort.name <= "c0002" else "standard_part2"
        shutil.copytree(cohort, parts / part / cohort.name)
    assert detect_release(tmp_path) == "R1.2"
    assert [s.name for s in scan_atlas(tmp_path)] == [s.name for s in scans]


def test_r20_testing_has_no_masks_and_hidden_files_are_skipped(twins):
    root = twins["R2.0"]
    testing = scan_atlas(root, split="Testing")
    assert len(testing) == 2 and all(s.masks == () and s.split == "Testing" for s in testing)
    t1, mask, spacing = read_scan(testing[0])
    assert mask is None and t1.dtype == np.float32 and spacing == (5.0, 5.0, 5.0)
    training = scan_atlas(root)
    assert all(len(s.masks) == 1 and not s.t1.name.startswith(".") for s in training)
    assert list(root.rglob("._*")), "the twin should carry an AppleDouble file to skip"
    assert {s.subject for s in training}.isdisjoint({s.subject for s in testing})
    with pytest.raises(ValueError, match="no Testing split"):
        scan_atlas(twins["R1.1"], split="Testing")


def test_read_scan_ors_every_mask_file_after_thresholding_at_zero(twins):
    multi_file = 0
    for release in ("R1.1", "R1.2"):
        for scan in scan_atlas(twins[release]):
            t1, mask, spacing = read_scan(scan)
            files = [_data(path) for path in scan.masks]
            expected = np.logical_or.reduce([f > 0 for f in files])
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
            np.testing.assert_array_equal(mask, expected)
            assert mask.sum() > 0 and t1.shape == mask.shape and spacing == (5.0, 5.0, 5.0)
            if len(files) > 1:
                multi_file += 1
                assert mask.sum() > max(int((f > 0).sum()) for f in files)
    assert multi_file >= 2


def test_the_hundredth_mask_is_kept(twins):
    scan = _scan(twins["R2.0"], "R2.0/Training/R039/sub-r039s002")
    assert float(_data(scan.masks[0]).max()) == pytest.approx(0.01)
    _, mask, _ = read_scan(scan)
    assert mask.sum() > 0 and mask.max() == 1


def test_training_scan_without_mask_names_its_folder(r11_copy):
    scan = _scan(r11_copy, "R1.1/Site2/031823/t01")
    for path in scan.masks:
        path.unlink()
    with pytest.raises(DataValidationError, match=r"Site2/031823/t01.*no lesion mask"):
        scan_atlas(r11_copy)


def test_missing_t1_and_a_stray_file_are_reported(r11_copy):
    scan = _scan(r11_copy, "R1.1/Site2/031823/t01")
    (scan.t1.parent / "031768_LesionSmooth_stx.nii.gz").write_bytes(b"")
    with pytest.raises(DataValidationError, match="named for 031768"):
        scan_atlas(r11_copy)
    (scan.t1.parent / "031768_LesionSmooth_stx.nii.gz").unlink()
    scan.t1.unlink()
    # The name to restore, not the pattern the reader matches with.
    expected = r"031823/t01: no T1 file \(expected 031823_t1w_deface_stx\.nii\.gz\)\. Re-extract"
    with pytest.raises(DataValidationError, match=expected):
        scan_atlas(r11_copy)


def test_an_r12_scan_without_t1_names_the_file(twins, tmp_path):
    copy = Path(shutil.copytree(twins["R1.2"], tmp_path / "copy"))
    scan = _scan(copy, "R1.2/c0002/c0002s0001t01")
    scan.t1.unlink()
    with pytest.raises(DataValidationError) as error:
        scan_atlas(copy)
    assert "(expected c0002s0001t01_t1w_stx.nii.gz)" in str(error.value)


@pytest.mark.parametrize("release", ATLAS_RELEASES)
def test_the_macosx_folder_of_a_zip_made_on_a_mac_is_ignored(twins, tmp_path, release):
    copy = Path(shutil.copytree(twins[release], tmp_path / "copy"))
    # macOS's zip mirrors the tree under __MACOSX/, one AppleDouble ._<name> per file.
    for path in sorted(copy.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            relative = path.relative_to(copy)
            junk = copy / "__MACOSX" / relative.parent / f"._{relative.name}"
            junk.parent.mkdir(parents=True, exist_ok=True)
            junk.write_bytes(b"\x00\x05\x16\x07")
    assert detect_release(copy) == release
    assert [s.name for s in scan_atlas(copy)] == [s.name for s in scan_atlas(twins[release])]


def test_folders_outside_the_layout_are_reported_not_dropped_silently(twins, tmp_path, caplog):
    r11 = Path(shutil.copytree(twins["R1.1"], tmp_path / "r11"))
    (r11 / "ATLAS_R1.1" / "Site2").rename(r11 / "ATLAS_R1.1" / "site2")
    with caplog.at_level("WARNING", logger="datamodules.atlas_reader"):
        names = [s.name for s in scan_atlas(r11)]
    assert "R1.1/Site2/031823/t01" not in names
    assert "ignoring 1 folder(s) that do not follow the Site<k>" in caplog.text
    assert ": site2. Rename them" in caplog.text

    caplog.clear()
    r20 = Path(shutil.copytree(twins["R2.0"], tmp_path / "r20"))
    subject = _scan(r20, "R2.0/Training/R001/sub-r001s001").t1.parents[2]
    (subject / "ses-2" / "anat").mkdir(parents=True)
    with caplog.at_level("WARNING", logger="datamodules.atlas_reader"):
        scan_atlas(r20)
    assert f"Ignoring ses-2 in {subject}: the release has one session per subject" in caplog.text
    (subject / "ses-1").rename(subject / "ses-01")
    with pytest.raises(DataValidationError, match=r"no ses-1/anat/ folder \(found ses-01, ses-2\)"):
        scan_atlas(r20)


def test_mask_of_another_shape_is_reported_with_its_file(r11_copy):
    scan = _scan(r11_copy, "R1.1/Site1/031768/t01")
    image = nib.load(scan.masks[-1])
    small = nib.Nifti1Image(np.zeros((4, 4, 4)), image.affine)
    nib.save(small, scan.masks[-1])
    message = rf"{re.escape(scan.masks[-1].name)}: its voxel grid does not match .*{re.escape(scan.t1.name)}"
    with pytest.raises(DataValidationError, match=message):
        read_scan(scan)


def test_truncated_file_is_reported_with_its_path(r11_copy):
    scan = _scan(r11_copy, "R1.1/Site1/031768/t01")
    payload = scan.masks[0].read_bytes()
    scan.masks[0].write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataValidationError, match=rf"{scan.masks[0].name}: cannot be read"):
        read_scan(scan)
    scan.t1.write_bytes(gzip.compress(b"not a nifti", mtime=0))
    with pytest.raises(DataValidationError, match=rf"{scan.t1.name}: cannot be read"):
        read_scan(scan)


def test_non_finite_t1_is_reported(r11_copy):
    scan = _scan(r11_copy, "R1.1/Site1/031768/t01")
    image = nib.load(scan.t1)
    data = np.asarray(image.dataobj).copy()
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine, image.header), scan.t1)
    with pytest.raises(DataValidationError, match=rf"{scan.t1.name}: 1 voxels are NaN"):
        read_scan(scan)


def test_empty_split_folder_is_not_found(tmp_path):
    (tmp_path / "ATLAS_2" / "Training").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no ATLAS R2.0 scan"):
        scan_atlas(tmp_path)


def test_a_linked_split_folder_is_read_and_named_where_it_lies(twins, tmp_path):
    # lightning-cv challenge atlas2 links an input that is the Testing folder itself as Testing.
    testing = twins["R2.0"] / "ATLAS_2" / "Testing"
    (tmp_path / "Testing").symlink_to(testing, target_is_directory=True)
    linked = scan_atlas(tmp_path, "R2.0", split="Testing")
    direct = scan_atlas(twins["R2.0"], split="Testing")
    assert [s.name for s in linked] == [s.name for s in direct]
    # Errors and predictions name the user's files, not the link.
    assert [s.t1 for s in linked] == [s.t1.resolve() for s in direct]
