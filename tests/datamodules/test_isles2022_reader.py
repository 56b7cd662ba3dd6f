"""The ISLES 2022 reader on tiny BIDS trees written here, as another tool would write them: the
release's layout and a copy that differs from it, sidecars and stray files, damaged cases, and
FLAIR put on the DWI's grid through the headers (oblique FLAIR, analytic intensities) or by a
rigid registration (a FLAIR whose header is off by a known rigid motion)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from core.errors import ConfigurationError, DatasetNotFoundError, DataValidationError
from datamodules.isles2022_reader import (
    _sitk_image,
    check_root,
    flair_on_dwi_grid,
    read_case,
    scan_isles2022,
)

A, B = "strokecase0001", "strokecase0002"


# -- the other tool: a NIfTI writer and analytic volumes ------------------------------------------
def _write(path: Path, data: np.ndarray, affine: np.ndarray, sform: bool = True) -> Path:
    """Write ``data`` with ``affine`` as qform (and sform, unless ``sform`` is false)."""
    image = nib.Nifti1Image(data, None)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1 if sform else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def _rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (world axes)."""
    out = np.eye(3)
    for axis, angle in enumerate(np.radians(degrees)):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(3)
        turn[i, i], turn[i, j], turn[j, i], turn[j, j] = c, -s, s, c
        out = turn @ out
    return out


def _affine(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    centre: tuple[float, ...] = (0.0, 0.0, 0.0),
    axes: tuple[int, ...] = (0, 1, 2),
    flips: tuple[int, ...] = (),
    degrees: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """A grid of ``shape`` centred at ``centre`` (RAS mm): voxel axis i runs along world axis
    ``axes[i]`` (reversed if i is in ``flips``), then everything is rotated by ``degrees``."""
    linear = np.zeros((3, 3))
    for i, axis in enumerate(axes):
        linear[axis, i] = -spacing[i] if i in flips else spacing[i]
    linear = _rotation(degrees) @ linear
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.asarray(centre) - linear @ ((np.asarray(shape) - 1) / 2)
    return affine


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World (RAS mm) coordinates of every voxel centre, ``(X, Y, Z, 3)``."""
    index = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def _head(xyz: np.ndarray) -> np.ndarray:
    """A smooth head-like intensity of world position, asymmetric along every axis (a flipped
    or mirrored sampling of it cannot pass for the right one)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    radius = np.sqrt((x / 36) ** 2 + (y / 44) ** 2 + (z / 34) ** 2)
    skull = 1 / (1 + np.exp((radius - 1) * 14))

    def blob(cx: float, cy: float, cz: float, width: float) -> np.ndarray:
        return np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width**2))

    texture = 10 * np.sin(x / 7) * np.cos(y / 9)
    lesions = 60 * blob(12, -8, 5, 8) - 40 * blob(-15, 18, -8, 10) + 30 * blob(-2, -25, 15, 6)
    return skull * (80 + texture + lesions)


def _flair_contrast(value: np.ndarray) -> np.ndarray:
    """FLAIR's intensities as another (non-monotonic) function of the same tissue."""
    return 150 - 1.2 * value + 0.004 * value**2


def _flair_coordinates(dwi: np.ndarray, dwi_shape: tuple, flair: np.ndarray) -> np.ndarray:
    """FLAIR voxel coordinates of every DWI voxel centre."""
    return (_world(dwi, dwi_shape) - flair[:3, 3]) @ np.linalg.inv(flair[:3, :3]).T


def _relative_errors(out, expected, dwi, dwi_shape, flair, flair_shape) -> np.ndarray:
    """|out − expected| / range over the DWI voxels inside the head and 1 voxel inside the FLAIR."""
    index = _flair_coordinates(dwi, dwi_shape, flair)
    inside = np.all((index >= 1) & (index <= np.asarray(flair_shape) - 2), axis=-1)
    inside &= _head(_world(dwi, dwi_shape)) > 5
    assert inside.mean() > 0.25, "the test grids should overlap well"
    span = expected[inside].max() - expected[inside].min()
    return np.abs(out - expected)[inside] / span


# The grids of the FLAIR tests: an LAS DWI of anisotropic voxels, and an oblique sagittal FLAIR
# of 1.6 mm voxels, another shape and a field of view centred elsewhere.
DWI_SHAPE = (40, 36, 16)
DWI_AFFINE = _affine(DWI_SHAPE, (2.0, 2.2, 5.0), centre=(0, 5, 0), flips=(0,))
FLAIR_SHAPE = (48, 56, 56)
FLAIR_AFFINE = _affine(
    FLAIR_SHAPE, (1.6, 1.6, 1.6), (3, -4, -10), axes=(1, 2, 0), flips=(1,), degrees=(12, -7, 4)
)


@pytest.fixture
def grids(tmp_path) -> dict[str, Path]:
    """A DWI and its oblique FLAIR of one analytic head; and the same FLAIR with a header off
    by 5°/3° of rotation and (4, −2, 1) mm, i.e. the patient moved between the two scans."""
    motion = np.eye(4)
    motion[:3, :3] = _rotation((5.0, 0.0, 3.0))
    motion[:3, 3] = (4.0, -2.0, 1.0)
    flair = _flair_contrast(_head(_world(FLAIR_AFFINE, FLAIR_SHAPE))).astype(np.float32)
    return {
        "dwi": _write(tmp_path / "dwi.nii.gz", _expected_dwi(), DWI_AFFINE),
        "flair": _write(tmp_path / "flair.nii.gz", flair, FLAIR_AFFINE, sform=False),
        "moved": _write(tmp_path / "moved.nii.gz", flair, motion @ FLAIR_AFFINE),
    }


def _expected_dwi() -> np.ndarray:
    return _head(_world(DWI_AFFINE, DWI_SHAPE)).astype(np.float32)


def _expected_flair() -> np.ndarray:
    return _flair_contrast(_head(_world(DWI_AFFINE, DWI_SHAPE)))


# -- a dataset: case A as released, case B as a differing copy ------------------------------------
SHAPE = (24, 24, 12)
A_AFFINE = _affine(SHAPE, (2.0, 2.0, 2.0), flips=(0,))
B_AFFINE = _affine(SHAPE, (0.9, 0.9, 4.0), centre=(1, -2, 3), degrees=(0, 0, 8))


def _ball(shape: tuple[int, ...], centre: tuple[int, ...], radius: float) -> np.ndarray:
    index = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
    return (np.linalg.norm(index - np.asarray(centre), axis=-1) <= radius).astype(np.uint8)


MASK_A = _ball(SHAPE, (8, 14, 6), 3)
MASK_B = _ball(SHAPE, (15, 9, 5), 4)


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ISLES-2022"
    sub_a = f"sub-{A}/ses-0001"
    stem_a, stem_b = f"sub-{A}_ses-0001", f"sub-{B}_ses-0001"
    dwi_a = _head(_world(A_AFFINE, SHAPE)).astype(np.float32) + 50 * MASK_A
    _write(root / "rawdata" / sub_a / "dwi" / f"{stem_a}_dwi.nii.gz", dwi_a, A_AFFINE)
    _write(root / "rawdata" / sub_a / "dwi" / f"{stem_a}_adc.nii.gz", 1000 - dwi_a, A_AFFINE)
    flair_a = _affine((20, 28, 28), (1.8, 1.8, 1.8), axes=(1, 2, 0), degrees=(10, 0, 0))
    flair = _flair_contrast(_head(_world(flair_a, (20, 28, 28)))).astype(np.int16)
    _write(root / "rawdata" / sub_a / "anat" / f"{stem_a}_FLAIR.nii.gz", flair, flair_a)
    _write(root / "derivatives" / sub_a / f"{stem_a}_msk.nii.gz", MASK_A, A_AFFINE)
    (root / "rawdata" / sub_a / "dwi" / f"{stem_a}_dw.json").write_text('{"EchoTime": 0.1}')
    (root / "rawdata" / sub_a / "dwi" / f"{stem_a}_adc.json").write_text('{"EchoTime": 0.08}')
    (root / "derivatives" / sub_a / f"{stem_a}_snp.png").write_bytes(b"\x89PNG")
    (root / "participants.tsv").write_text("participant_id\tsex\nsub-strokecase0001\tF\n")
    (root / "README").write_text("ISLES 2022\n")
    (root / "dataset_description.json").write_text('{"Name": "ISLES 2022"}')
    # case B: _rawdata without modality folders, lower-case flair, a float mask a folder deeper,
    # an ADC stored with its x axis reversed and a mask with x and y swapped (another tool's save)
    raw_b, derived_b = root / "_rawdata" / f"sub-{B}/ses-0001", root / "_derivatives" / f"sub-{B}"
    dwi_b = _head(_world(B_AFFINE, SHAPE)) + 50 * MASK_B
    _write(raw_b / f"{stem_b}_dwi.nii.gz", dwi_b.astype(np.float32), B_AFFINE)
    flip_x = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip_x[0, 3] = SHAPE[0] - 1
    _write(raw_b / f"{stem_b}_adc.nii.gz", (800 - dwi_b)[::-1], B_AFFINE @ flip_x)
    flair_b = _affine((30, 26, 26), (1.2, 1.2, 1.2), degrees=(0, 15, 0))
    flair = _flair_contrast(_head(_world(flair_b, (30, 26, 26)))).astype(np.float32)
    _write(raw_b / f"{stem_b}_flair.nii.gz", flair, flair_b)
    (raw_b / f"{stem_b}_flair.json").write_text('{"RepetitionTime": 9.0}')
    swap_xy = np.eye(4)[[1, 0, 2, 3]]
    mask_b = MASK_B.transpose(1, 0, 2).astype(np.float32)
    _write(derived_b / "ses-0001" / "anat" / f"{stem_b}_msk.nii.gz", mask_b, B_AFFINE @ swap_xy)
    # what an archive tool and a version-control folder leave beside the data
    macosx = root / "__MACOSX" / "rawdata"
    _write(macosx / f"sub-{A}_ses-0001_dwi.nii.gz", dwi_a, A_AFFINE)
    _write(root / ".git" / f"sub-{A}_ses-0001_dwi.nii.gz", dwi_a, A_AFFINE)
    (root / "rawdata" / sub_a / "dwi" / f"._{stem_a}_dwi.nii.gz").write_bytes(b"\0\5\26\7")
    (root / "_rawdata" / "again").symlink_to(root)
    return root


def _case(root: Path, subject: str, require_masks: bool = True):
    return next(c for c in scan_isles2022(root, require_masks) if c.subject == subject)


# -- scanning ------------------------------------------------------------------------------------
def test_every_case_is_found_with_its_files_in_both_layouts(dataset, caplog):
    with caplog.at_level(logging.DEBUG, logger="datamodules.isles2022_reader"):
        cases = scan_isles2022(dataset, require_masks=True)
    assert [(c.subject, c.session, c.name) for c in cases] == [
        (A, "0001", f"sub-{A}/ses-0001"),
        (B, "0001", f"sub-{B}/ses-0001"),
    ]
    a, b = cases
    assert {role: p.relative_to(dataset).as_posix() for role, p in a.files.items()} == {
        "DWI": f"rawdata/sub-{A}/ses-0001/dwi/sub-{A}_ses-0001_dwi.nii.gz",
        "ADC": f"rawdata/sub-{A}/ses-0001/dwi/sub-{A}_ses-0001_adc.nii.gz",
        "FLAIR": f"rawdata/sub-{A}/ses-0001/anat/sub-{A}_ses-0001_FLAIR.nii.gz",
        "mask": f"derivatives/sub-{A}/ses-0001/sub-{A}_ses-0001_msk.nii.gz",
    }
    assert {role: p.relative_to(dataset).as_posix() for role, p in b.files.items()} == {
        "DWI": f"_rawdata/sub-{B}/ses-0001/sub-{B}_ses-0001_dwi.nii.gz",
        "ADC": f"_rawdata/sub-{B}/ses-0001/sub-{B}_ses-0001_adc.nii.gz",
        "FLAIR": f"_rawdata/sub-{B}/ses-0001/sub-{B}_ses-0001_flair.nii.gz",
        "mask": f"_derivatives/sub-{B}/ses-0001/anat/sub-{B}_ses-0001_msk.nii.gz",
    }
    assert a.path("FLAIR") == a.files["FLAIR"]
    # stray files are ignored, and said so at debug level only
    assert "_snp.png" in caplog.text and "participants.tsv" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    assert check_root(dataset) == dataset


def test_an_extension_in_capitals_is_an_image_too(dataset):
    # A copy made on a case-insensitive file system may spell the extension .NII.GZ.
    case = _case(dataset, A)
    dwi = case.files["DWI"]
    upper = dwi.with_name(dwi.name.replace(".nii.gz", ".NII.GZ"))
    dwi.rename(upper)
    (dwi.parent / f"sub-{A}_ses-0001_dwi.json").write_text('{"EchoTime": 0.09}')
    case = _case(dataset, A)
    assert case.files["DWI"] == upper and case.sidecar("DWI") == {"EchoTime": 0.09}
    image, _, _ = read_case(case, ["DWI"])
    assert image.shape == (1, *SHAPE)


def test_sidecars_are_read_beside_their_image_and_bad_json_is_named(dataset):
    a, b = scan_isles2022(dataset, require_masks=True)
    assert a.sidecar("ADC") == {"EchoTime": 0.08}
    assert a.sidecar("DWI") is None  # only a misnamed _dw.json is there
    assert b.sidecar("FLAIR") == {"RepetitionTime": 9.0}
    bad = b.files["FLAIR"].with_name(f"sub-{B}_ses-0001_flair.json")
    bad.write_text('{"RepetitionTime": 9.0,')
    with pytest.raises(DataValidationError, match=rf"{bad}: not valid JSON"):
        b.sidecar("FLAIR")
    bad.write_text("[1, 2]")
    with pytest.raises(DataValidationError, match=rf"{bad}: a BIDS sidecar holds a JSON object"):
        b.sidecar("FLAIR")


def test_a_role_found_twice_names_the_subject_and_both_files(dataset):
    first = _case(dataset, A).files["DWI"]
    second = dataset / "extra" / first.name
    second.parent.mkdir()
    shutil.copy(first, second)
    with pytest.raises(DataValidationError) as error:
        scan_isles2022(dataset, require_masks=False)
    message = str(error.value)
    assert message.startswith(f"sub-{A}/ses-0001: two DWI files for subject {A}")
    assert str(first) in message and str(second) in message


def test_a_missing_adc_names_the_subject_and_where_it_belongs(dataset):
    _case(dataset, B).files["ADC"].unlink()
    with pytest.raises(DataValidationError) as error:
        scan_isles2022(dataset, require_masks=False)
    message = str(error.value)
    assert message.startswith(f"sub-{B}/ses-0001: no ADC image for subject {B}")
    assert f"sub-{B}_ses-0001_adc.nii[.gz]" in message and "found: DWI (" in message


def test_masks_are_required_only_when_asked(dataset):
    _case(dataset, B).files["mask"].unlink()
    with pytest.raises(DataValidationError) as error:
        scan_isles2022(dataset, require_masks=True)
    message = str(error.value)
    assert message.startswith(f"sub-{B}/ses-0001: no lesion mask for subject {B}")
    assert f"sub-{B}_ses-0001_msk.nii[.gz] at any depth under {dataset}" in message
    assert f"derivatives/sub-{B}/ses-0001/sub-{B}_ses-0001_msk.nii.gz" in message
    case = _case(dataset, B, require_masks=False)
    assert "mask" not in case.files
    image, label, _ = read_case(case, ["DWI"])
    assert label is None and image.shape == (1, *SHAPE)


def test_a_missing_flair_is_an_error_only_when_flair_is_read(dataset):
    _case(dataset, A).files["FLAIR"].unlink()
    case = _case(dataset, A)
    image, _, _ = read_case(case, ["DWI", "ADC"])
    assert image.shape == (2, *SHAPE)
    with pytest.raises(DataValidationError, match=rf"sub-{A}/ses-0001: no FLAIR image.*found: "):
        read_case(case, ["DWI", "FLAIR"])


def test_a_root_without_dwi_is_not_a_dataset(tmp_path):
    for root, why in ((tmp_path / "nowhere", "does not exist"), (tmp_path, "holds no DWI image")):
        for call in (check_root, lambda r: scan_isles2022(r, require_masks=False)):
            with pytest.raises(DatasetNotFoundError) as error:
                call(root)
            message = str(error.value)
            assert message.startswith(f"ISLES 2022 data not found: {root.resolve()} {why}")
            assert "rawdata/sub-<label>/ses-<label>" in message
            assert "lightning-data synth isles2022" in message
    _write(tmp_path / f"sub-{A}_ses-0001_adc.nii.gz", MASK_A, A_AFFINE)
    with pytest.raises(DatasetNotFoundError, match="holds no DWI image"):
        check_root(tmp_path)


# -- decoding ------------------------------------------------------------------------------------
def test_read_case_gives_channels_in_order_on_the_dwi_grid(dataset):
    a, b = scan_isles2022(dataset, require_masks=True)
    dwi_b = nib.load(b.files["DWI"]).get_fdata()
    image, label, zooms = read_case(b, ["FLAIR", "DWI", "ADC"])
    assert image.dtype == np.float32 and image.shape == (3, *SHAPE)
    assert np.array_equal(image[1], dwi_b.astype(np.float32))
    assert np.allclose(image[2], 800 - dwi_b)  # the reversed x axis undone
    assert zooms == pytest.approx((0.9, 0.9, 4.0))
    assert label is not None and label.dtype == np.uint8
    assert np.array_equal(label, MASK_B)  # float mask, swapped axes, on the DWI's grid
    assert image[0].max() > 0  # FLAIR covers part of the DWI
    image, label, zooms = read_case(a, ["ADC"], flair_alignment="rigid")
    assert image.shape == (1, *SHAPE) and zooms == pytest.approx((2.0, 2.0, 2.0))
    assert label is not None and np.array_equal(label, MASK_A)


def test_masks_of_other_values_are_binarised_with_a_warning(dataset, caplog):
    case = _case(dataset, A)
    mask = MASK_A * 255.0
    mask[8, 14, 6] = 128.0
    _write(case.files["mask"], mask, A_AFFINE)
    with caplog.at_level(logging.WARNING, logger="datamodules.isles2022_reader"):
        _, label, _ = read_case(case, ["DWI"])
    assert "mask values are not binary (0, 128, 255)" in caplog.text
    assert label is not None and np.array_equal(label, MASK_A)
    caplog.clear()
    _write(case.files["mask"], MASK_A * 255.0, A_AFFINE)
    with caplog.at_level(logging.WARNING, logger="datamodules.isles2022_reader"):
        _, label, _ = read_case(case, ["DWI"])
    assert caplog.text == "" and label is not None and np.array_equal(label, MASK_A)


def test_an_adc_off_the_dwi_grid_names_both_files(dataset):
    case = _case(dataset, A)
    _write(case.files["ADC"], np.zeros(SHAPE, np.float32), B_AFFINE)
    with pytest.raises(DataValidationError) as error:
        read_case(case, ["DWI", "ADC"])
    message = str(error.value)
    assert message.startswith(f"{case.files['ADC']}: its voxel grid does not match")
    assert str(case.files["DWI"]) in message


def test_non_finite_values_are_refused_with_the_file_named(dataset, grids):
    case = _case(dataset, B)
    adc = np.full(SHAPE, 1.0, np.float32)
    adc[3, 4, 5] = np.nan
    _write(case.files["ADC"], adc, B_AFFINE)
    with pytest.raises(DataValidationError, match=rf"{case.files['ADC']}: 1 voxels are NaN"):
        read_case(case, ["DWI", "ADC"])
    flair = nib.load(grids["flair"]).get_fdata().astype(np.float32)
    flair[0, 0, 0] = np.inf
    _write(grids["flair"], flair, FLAIR_AFFINE)
    with pytest.raises(DataValidationError, match=rf"{grids['flair']}: 1 voxels are NaN"):
        flair_on_dwi_grid(grids["flair"], grids["dwi"])


def test_unknown_channels_and_alignments_are_configuration_errors(dataset):
    case = _case(dataset, A)
    with pytest.raises(ConfigurationError, match=r"valid channels: \['DWI', 'ADC', 'FLAIR'\]"):
        read_case(case, ["DWI", "T2"])
    with pytest.raises(ConfigurationError, match=r"valid: \['header', 'rigid'\]"):
        read_case(case, ["FLAIR"], flair_alignment="affine")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"valid: \['header', 'rigid'\]"):
        flair_on_dwi_grid(case.path("FLAIR"), case.path("DWI"), "affine")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="valid roles"):
        case.path("T1")


# -- FLAIR on the DWI's grid -----------------------------------------------------------------------
def test_header_alignment_reproduces_the_head_on_the_dwi_grid(grids):
    out = flair_on_dwi_grid(grids["flair"], grids["dwi"], "header")
    assert out.dtype == np.float32 and out.shape == DWI_SHAPE
    errors = _relative_errors(
        out, _expected_flair(), DWI_AFFINE, DWI_SHAPE, FLAIR_AFFINE, FLAIR_SHAPE
    )
    assert np.median(errors) < 0.02 and np.percentile(errors, 95) < 0.05
    # voxels the FLAIR does not cover are 0
    index = _flair_coordinates(DWI_AFFINE, DWI_SHAPE, FLAIR_AFFINE)
    outside = np.any((index < -1) | (index > np.asarray(FLAIR_SHAPE)), axis=-1)
    assert outside.any() and not out[outside].any()


def test_the_sitk_geometry_is_the_one_itk_reads_from_the_file(grids):
    # On a file whose qform and sform agree, ITK's own reader cannot choose wrongly: the image
    # built from nibabel's affine must lie exactly where ITK puts that file (RAS → LPS).
    image = nib.load(grids["dwi"])
    ours = _sitk_image(np.asarray(image.dataobj), image.affine)
    itk = sitk.ReadImage(str(grids["dwi"]))
    assert ours.GetSize() == itk.GetSize()
    assert np.allclose(ours.GetSpacing(), itk.GetSpacing())
    assert np.allclose(ours.GetOrigin(), itk.GetOrigin(), atol=1e-4)
    assert np.allclose(ours.GetDirection(), itk.GetDirection(), atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(itk))


def test_rigid_alignment_recovers_a_moved_flair(grids):
    expected = _expected_flair()
    moved = FLAIR_AFFINE  # where the content really is; the header says otherwise
    header = flair_on_dwi_grid(grids["moved"], grids["dwi"], "header")
    header_error = _relative_errors(header, expected, DWI_AFFINE, DWI_SHAPE, moved, FLAIR_SHAPE)
    rigid = flair_on_dwi_grid(grids["moved"], grids["dwi"], "rigid")
    rigid_error = _relative_errors(rigid, expected, DWI_AFFINE, DWI_SHAPE, moved, FLAIR_SHAPE)
    assert np.median(header_error) > 0.03  # the headers disagree by 4.6 mm and ~6°
    assert np.median(rigid_error) < 0.01
    assert np.median(rigid_error) < np.median(header_error) / 5
    # seeded: a second run differs at most by the rounding of ITK's multithreaded sums
    again = flair_on_dwi_grid(grids["moved"], grids["dwi"], "rigid")
    np.testing.assert_allclose(again, rigid, rtol=0, atol=1e-3)


def test_a_flair_without_orientation_is_refused(grids):
    flair = nib.load(grids["flair"])
    image = nib.Nifti1Image(np.asarray(flair.dataobj), None)
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, str(grids["flair"]))
    with pytest.raises(DataValidationError, match=rf"{grids['flair']}: the header states no"):
        flair_on_dwi_grid(grids["flair"], grids["dwi"])


def test_a_flair_far_from_the_dwi_is_reported(grids, caplog):
    far = np.eye(4)
    far[:3, 3] = (0.0, 0.0, 400.0)
    flair = nib.load(grids["flair"])
    _write(grids["flair"], np.asarray(flair.dataobj), far @ FLAIR_AFFINE)
    with caplog.at_level(logging.WARNING, logger="datamodules.isles2022_reader"):
        assert not flair_on_dwi_grid(grids["flair"], grids["dwi"], "header").any()
    assert "covers none of the grid" in caplog.text
    with pytest.raises(DataValidationError) as error:
        flair_on_dwi_grid(grids["flair"], grids["dwi"], "rigid")
    message = str(error.value)
    assert message.startswith(f"{grids['flair']}: rigid registration onto {grids['dwi']} failed")
    assert "\n" not in message and "flair_alignment: header" in message
