"""NIfTI helpers: the effective affine, aligning a mask to its image, decoding checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import DataValidationError
from datamodules.nifti import (
    CaseOrientation,
    align_to_reference,
    case_shape,
    grid_affine,
    load_volume,
    read_shape,
    write_like,
)

ATLAS_AFFINE = np.array([[1.0, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]])


def _save(
    path: Path, data: np.ndarray, affine: np.ndarray, sform: np.ndarray | None = None
) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, 1)
    image.set_sform(affine if sform is None else sform, 1 if sform is None else 2)
    nib.save(image, str(path))
    return path


def _lesion(shape=(9, 11, 7)) -> np.ndarray:
    data = np.zeros(shape, dtype=np.uint8)
    data[1:4, 2:5, 3] = 1
    data[6, 8, 1] = 1
    return data


def test_the_isles_identity_sform_yields_to_the_qform_with_the_true_spacing(tmp_path):
    qform = np.diag([0.86, 0.86, 10.0, 1.0])
    path = _save(tmp_path / "ct.nii", np.zeros((4, 4, 2), np.int32), qform, sform=np.eye(4))
    np.testing.assert_allclose(grid_affine(nib.load(path)), qform, atol=1e-6)
    atlas = _save(tmp_path / "t1.nii.gz", np.zeros((4, 4, 2), np.float32), ATLAS_AFFINE)
    np.testing.assert_allclose(grid_affine(nib.load(atlas)), ATLAS_AFFINE)


def test_an_sform_that_contradicts_pixdim_without_a_qform_is_refused_naming_the_file(tmp_path):
    # A converter that left pixdim 0 (nibabel reads 1 mm) beside a 2 mm sform, and no qform:
    # the voxel size would be a guess, and the FLAIR's resampling once blamed "codes are 0".
    sform = np.diag([2.0, 2.0, 3.0, 1.0])
    image = nib.Nifti1Image(_lesion(), None)
    image.set_sform(sform, 1)
    image.set_qform(None, 0)
    image.header["pixdim"][1:4] = 1.0
    path = tmp_path / "dwi.nii.gz"
    nib.save(image, str(path))
    with pytest.raises(
        DataValidationError,
        match=r"dwi\.nii\.gz: the header's sform has voxel sizes \(2, 2, 3\) mm but its pixdim says \(1, 1, 1\) mm",
    ):
        grid_affine(nib.load(str(path)))


def test_an_identity_sform_without_a_qform_leaves_pixdims_spacing(tmp_path):
    # ISLES 2018's identity sform, in a copy that lost its qform: it states no geometry, so the
    # file is read at pixdim's spacing without an orientation (as ITK reads it), not refused.
    image = nib.Nifti1Image(_lesion(), None)
    image.set_sform(np.eye(4), 2)
    image.set_qform(None, 0)
    image.header.set_zooms((0.864, 0.864, 10.0))
    path = tmp_path / "ct.nii.gz"
    nib.save(image, str(path))
    assert grid_affine(nib.load(str(path))) is None
    _, zooms = load_volume(path)
    np.testing.assert_allclose(zooms, (0.864, 0.864, 10.0), rtol=1e-6)


@pytest.mark.parametrize(
    "flips, order", [((0,), (0, 1, 2)), ((0, 2), (0, 1, 2)), ((), (1, 0, 2)), ((1,), (2, 0, 1))]
)
def test_a_mask_stored_flipped_or_permuted_is_put_back_exactly(tmp_path, flips, order):
    lesion = _lesion()
    reference = _save(tmp_path / "t1.nii.gz", lesion.astype(np.float32), ATLAS_AFFINE)
    # Store the same lesion (same world position) with axes reversed and/or permuted.
    stored = np.transpose(np.flip(lesion, flips) if flips else lesion, order)
    index_to_original = np.eye(4)
    for axis in flips:
        index_to_original[axis, axis] = -1
        index_to_original[axis, 3] = lesion.shape[axis] - 1
    permute = np.eye(4)[[*order, 3]].T  # stored index -> flipped index
    affine = ATLAS_AFFINE @ index_to_original @ permute
    mask = _save(tmp_path / "mask.nii.gz", stored, affine)
    aligned = align_to_reference(stored, mask, reference)
    assert np.array_equal(aligned, lesion)


def test_the_same_grid_is_returned_untouched(tmp_path):
    lesion = _lesion()
    reference = _save(tmp_path / "t1.nii.gz", lesion.astype(np.float32), ATLAS_AFFINE)
    mask = _save(tmp_path / "mask.nii.gz", lesion, ATLAS_AFFINE)
    assert align_to_reference(lesion, mask, reference) is lesion


@pytest.mark.parametrize("change", ["spacing", "shift", "shape"])
def test_other_grid_differences_are_refused_naming_both_files(tmp_path, change):
    lesion = _lesion()
    reference = _save(tmp_path / "t1.nii.gz", lesion.astype(np.float32), ATLAS_AFFINE)
    affine, data = ATLAS_AFFINE.copy(), lesion
    if change == "spacing":
        affine[0, 0] = 1.5
    elif change == "shift":
        affine[1, 3] += 3.0
    else:
        data = lesion[:-1]
    mask = _save(tmp_path / "mask.nii.gz", data, affine)
    with pytest.raises(
        DataValidationError, match=rf"{mask}: its voxel grid does not match {reference}"
    ):
        align_to_reference(data, mask, reference)


def test_a_4d_file_where_3d_is_expected_says_what_to_do(tmp_path):
    path = _save(tmp_path / "pwi.nii", np.zeros((4, 4, 2, 5), np.int16), np.eye(4))
    with pytest.raises(DataValidationError) as error:
        load_volume(path)
    message = str(error.value)
    assert message.startswith(f"{path}: expected a 3D image, found 4D data of shape (4, 4, 2, 5)")
    assert "time series" in message and "image.slicer[..., 0]" in message


def test_a_trailing_singleton_axis_is_dropped(tmp_path):
    path = _save(tmp_path / "map.nii", np.ones((4, 4, 2, 1), np.float32), np.eye(4))
    data, zooms = load_volume(path)
    assert data.shape == (4, 4, 2) and len(zooms) == 3
    # The header-only shape agrees (the cache plans its grid from it): the file is 3D.
    assert read_shape(path) == (4, 4, 2)
    other = _save(tmp_path / "pwi.nii", np.ones((4, 4, 2, 5), np.float32), np.eye(4))
    assert read_shape(other, ndim=4) == (4, 4, 2, 5)


def test_the_case_orientation_puts_any_stored_order_in_ras_order_and_back(tmp_path):
    # A RAS-stored volume and a copy stored with its axes permuted and flipped (the same image in
    # world space): the case orientation of the copy gives back the RAS array, and the way back
    # gives the stored one; shapes, spacings and leading channel axes follow.
    ras = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    zooms = (0.9, 1.1, 5.0)
    affine = np.diag([*zooms, 1.0])
    ornt = np.array([[2, -1], [0, 1], [1, -1]])  # stored axis i → RAS axis ornt[i, 0]
    to_stored = nib.orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), ornt)
    stored = nib.orientations.apply_orientation(ras, to_stored)
    stored_affine = affine @ nib.orientations.inv_ornt_aff(to_stored, ras.shape)
    path = _save(tmp_path / "copy.nii", np.ascontiguousarray(stored), stored_affine)
    original = _save(tmp_path / "ras.nii", ras, affine)

    orientation = CaseOrientation.of(path)
    assert CaseOrientation.of(original).is_identity and not orientation.is_identity
    assert case_shape(path) == ras.shape and read_shape(path) == stored.shape
    assert orientation.zooms(nib.load(path).header.get_zooms()) == pytest.approx(zooms)
    assert np.array_equal(orientation.to_case(stored), ras)
    assert np.array_equal(orientation.to_stored(ras), stored)
    channels = np.stack([stored, 2 * stored])  # (C, X, Y, Z)
    assert np.array_equal(orientation.to_case(channels), np.stack([ras, 2 * ras]))

    # write_like takes the case's order and writes the file's own, on its grid.
    written = nib.load(write_like(ras, path, tmp_path / "out.nii", np.float32))
    assert np.array_equal(np.asarray(written.dataobj), stored)
    np.testing.assert_allclose(written.affine, nib.load(path).affine, atol=1e-6)


def test_a_header_without_orientation_keeps_its_stored_order(tmp_path):
    image = nib.Nifti1Image(np.zeros((3, 4, 2), np.float32), np.diag([-1.0, 1, 1, 1]))
    image.set_qform(None, 0)
    image.set_sform(None, 0)
    nib.save(image, str(tmp_path / "plain.nii"))
    assert CaseOrientation.of(tmp_path / "plain.nii").is_identity


def test_the_header_shape_agrees_with_the_decoder_on_a_trailing_singleton_axis(tmp_path):
    # A DWI saved as (X, Y, Z, 1) decodes as a 3D volume, so the shape the cache plans its grid
    # from (read from the header alone) is 3D too, rather than refused as 4D.
    path = _save(tmp_path / "dwi.nii.gz", np.ones((6, 5, 4, 1), np.float32), np.eye(4))
    assert read_shape(path) == (6, 5, 4) == load_volume(path)[0].shape


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 4, 2)])
def test_a_header_shape_that_is_not_one_volume_is_refused_naming_the_file(tmp_path, shape):
    path = _save(tmp_path / "dwi.nii.gz", np.ones(shape, np.float32), np.eye(4))
    with pytest.raises(DataValidationError, match=r"^\S+dwi\.nii\.gz: expected a 3D image, found"):
        read_shape(path)


def test_a_file_cut_after_its_header_is_refused_on_one_line(tmp_path):
    # nibabel's words for it span two lines; the suite's message is one paragraph.
    path = _save(tmp_path / "dwi.nii.gz", np.ones((6, 5, 4), np.float32), np.eye(4))
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:352]))
    with pytest.raises(DataValidationError) as error:
        load_volume(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot be read as NIfTI") and "\n" not in message
    assert "re-extract it from the original archive" in message
