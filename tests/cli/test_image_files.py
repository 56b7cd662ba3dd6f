"""Patient images as files: DICOM series read onto their grid (oblique ones too), a series of
several volumes refused, and DICOM Segmentations that a DICOM reader (highdicom) places on the
source series' slices and in its physical space."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cli.image_files import (
    as_nifti,
    check_output,
    keep_locale,
    read_image,
    write_dicom_seg,
    write_like_reference,
)
from core.errors import ConfigurationError, DataValidationError
from datamodules.nifti import CaseOrientation, load_volume, write_like
from tests.helpers.dicom import PATIENT_ID, SERIES_UID, write_dicom_series


def _oblique_image(seed: int = 0) -> sitk.Image:
    """A small anisotropic volume rotated about two axes: no axis of the grid is a patient
    axis, as in an oblique acquisition."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(0, 1000, size=(6, 9, 7)).astype(np.int16))
    image.SetSpacing((0.9, 1.2, 4.0))
    image.SetOrigin((-20.5, 31.0, 7.25))
    rotation = sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.1)
    image.SetDirection(rotation.GetMatrix())
    return image


def test_a_dicom_series_is_read_onto_its_grid_oblique_too(tmp_path):
    image = _oblique_image()
    write_dicom_series(image, tmp_path / "series")
    read = read_image(tmp_path / "series")
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)


def test_a_series_of_several_volumes_is_refused(tmp_path):
    image = _oblique_image()
    write_dicom_series(image, tmp_path / "dwi")  # b = 0
    write_dicom_series(image, tmp_path / "dwi", first_file=image.GetDepth())  # b = 1000
    with pytest.raises(DataValidationError, match="12 images at 6 slice positions"):
        read_image(tmp_path / "dwi")


@pytest.mark.parametrize("fractional", [False, True])
def test_a_dicom_seg_lies_on_the_source_slices_and_in_their_space(tmp_path, fractional):
    import highdicom as hd
    import pydicom

    image = _oblique_image()
    files = write_dicom_series(image, tmp_path / "series")
    rng = np.random.default_rng(1)
    array = rng.random(size=(6, 9, 7)).astype(np.float32)  # (slice, row, column)
    if not fractional:
        array = (array > 0.7).astype(np.uint8)
    output = tmp_path / "seg.dcm"
    write_dicom_seg(array, tmp_path / "series", output, fractional=fractional)

    seg = hd.seg.segread(output)
    assert seg.SegmentationType == ("FRACTIONAL" if fractional else "BINARY")
    assert seg.PatientID == PATIENT_ID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
    tolerance = 0.5 / 255 + 1e-6 if fractional else 0
    # Frame by frame: each source slice's frame holds that slice of the array.
    for k, path in enumerate(files):
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        frame = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, :, :, 0]
        np.testing.assert_allclose(frame, array[k], atol=tolerance)
    # In physical space: the SEG's own geometry puts every voxel where the source has it.
    with keep_locale():
        volume = seg.get_volume(segment_numbers=[1]).squeeze_channel().to_simpleitk()
        expected = sitk.GetImageFromArray(array.astype(np.float32))
        expected.CopyInformation(image)
        on_source = sitk.Resample(
            sitk.Cast(volume, sitk.sitkFloat32),
            expected,
            sitk.Transform(),
            sitk.sitkNearestNeighbor,
        )
    np.testing.assert_allclose(sitk.GetArrayFromImage(on_source), array, atol=tolerance or 1e-6)


def test_writing_a_dicom_seg_prints_only_the_suites_lines(tmp_path, caplog):
    """highdicom's INFO lines ("copy attributes of module …", ~20 a SEG) reached the output of
    ``lightning-cv segment --output mask.dcm``."""
    write_dicom_series(_oblique_image(), tmp_path / "series")
    caplog.set_level(logging.INFO)
    mask = np.zeros((6, 9, 7), dtype=np.uint8)
    write_dicom_seg(mask, tmp_path / "series", tmp_path / "seg.dcm", fractional=False)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("highdicom")] == []


def test_outputs_the_reference_cannot_give_are_refused(tmp_path):
    nifti = tmp_path / "dwi.nii.gz"
    nifti.touch()
    with pytest.raises(ConfigurationError, match="is not a DICOM series folder"):
        check_output(tmp_path / "mask.dcm", nifti)
    with pytest.raises(ConfigurationError, match="unknown output format"):
        check_output(tmp_path / "mask.png", nifti)
    (tmp_path / "series").mkdir()
    check_output(tmp_path / "mask.dcm", tmp_path / "series")  # a folder: a DICOM series
    check_output(tmp_path / "mask.mha", nifti)


def test_a_series_without_a_frame_of_reference_gives_a_user_error(tmp_path):
    image = _oblique_image()
    files = write_dicom_series(image, tmp_path / "series")
    import pydicom

    for path in files:
        header = pydicom.dcmread(path)
        del header.FrameOfReferenceUID
        header.save_as(path)
    array = np.zeros((6, 9, 7), np.uint8)
    with pytest.raises(DataValidationError, match="cannot write a DICOM SEG referring to"):
        write_dicom_seg(array, tmp_path / "series", Path(tmp_path / "seg.dcm"), fractional=False)
    assert not list(tmp_path.glob("*seg.dcm*"))


@pytest.mark.parametrize("output_name", ["mask.nii", "mask.nii.gz"])
def test_a_nifti_mask_keeps_the_reference_header_whose_sform_and_qform_disagree(
    tmp_path, output_name
):
    # The sform (what nibabel reads) is rotated and shifted against the qform (what ITK may
    # read): a NIfTI mask of a NIfTI image keeps both, so every reader puts it on the voxels
    # it puts the image on, whatever the compression asked for.
    qform = np.array([[2.0, 0, 0, -40], [0, 2.0, 0, -50], [0, 0, 4.0, -20], [0, 0, 0, 1]])
    turn = sitk.Euler3DTransform((0, 0, 0), 0.0, 0.0, 0.2, (5.0, -7.0, 3.0))
    sform = np.eye(4)
    sform[:3, :3], sform[:3, 3] = np.reshape(turn.GetMatrix(), (3, 3)), turn.GetTranslation()
    sform = sform @ qform
    image = nib.Nifti1Image(np.arange(7 * 6 * 5, dtype=np.float32).reshape(7, 6, 5), None)
    image.set_qform(qform, 1)
    image.set_sform(sform, 2)
    reference = tmp_path / "dwi.nii.gz"
    nib.save(image, reference)
    mask = (np.asarray(image.dataobj) % 7 == 0).astype(np.uint8)
    in_case_order = CaseOrientation.of(reference).to_case(mask)
    written = write_like(in_case_order, reference, tmp_path / "written.nii.gz", np.uint8)

    write_like_reference(written, reference, tmp_path / output_name, fractional=False)
    read, source = nib.load(tmp_path / output_name), nib.load(reference)
    assert np.array_equal(np.asarray(read.dataobj), mask)
    for form in ("get_sform", "get_qform"):  # as stored (float32), codes too
        np.testing.assert_array_equal(
            getattr(read.header, form)(coded=True)[0], getattr(source.header, form)(coded=True)[0]
        )
        assert (
            getattr(read.header, form)(coded=True)[1] == getattr(source.header, form)(coded=True)[1]
        )
    itk_mask, itk_image = sitk.ReadImage(tmp_path / output_name), sitk.ReadImage(reference)
    np.testing.assert_allclose(itk_mask.GetOrigin(), itk_image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(itk_mask.GetDirection(), itk_image.GetDirection(), atol=1e-6)


def test_a_volume_with_a_trailing_axis_of_length_one_is_read_and_written_as_3d(tmp_path):
    # SimpleITK writes an (X, Y, Z, 1) MetaImage as 4D; it is the 3D volume the NIfTI decoder
    # takes from an (X, Y, Z, 1) NIfTI, and the mask is written on its 3D grid.
    image = _oblique_image()
    reference = tmp_path / "dwi.mha"
    sitk.WriteImage(sitk.JoinSeries([image]), reference)
    read = read_image(reference)
    assert read.GetDimension() == 3 and read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
    converted = as_nifti("DWI", reference, tmp_path)
    data, _ = load_volume(converted)
    in_case_order = CaseOrientation.of(converted).to_case((data > 500).astype(np.uint8))
    written = write_like(in_case_order, converted, tmp_path / "written.nii.gz", np.uint8)
    write_like_reference(written, reference, tmp_path / "mask.mha", fractional=False)
    mask = sitk.ReadImage(tmp_path / "mask.mha")
    assert mask.GetSize() == image.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(image) > 500)


@pytest.mark.parametrize("kind", ["two volumes", "a slice", "colour", "truncated"])
def test_an_image_that_is_not_one_readable_volume_is_refused_naming_it(tmp_path, kind, capfd):
    image, path = _oblique_image(), tmp_path / "dwi.mha"
    if kind == "truncated":
        sitk.WriteImage(image, path)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        image = {
            "two volumes": sitk.JoinSeries([image, image]),
            "a slice": image[:, :, 2],
            "colour": sitk.Compose([image] * 3),
        }[kind]
        sitk.WriteImage(image, path)
    with pytest.raises(DataValidationError) as error:
        read_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "give" in message.lower()
    assert "No such file" not in message  # ITK's stale errno for a file that exists
    # Nothing printed before it (MetaIO writes "data not read completely" to the process's
    # standard error for a truncated file: the error's first line must stay the suite's).
    assert capfd.readouterr().err == ""


def test_a_mask_of_a_nifti2_image_that_simpleitk_cannot_open_is_written_on_its_grid(tmp_path):
    # nibabel reads NIfTI-2 (the prediction runs); SimpleITK may not: the mask's geometry
    # comes from the written NIfTI-1, which carries the image's header.
    affine = np.array([[0, 0, 3.0, -30], [-1.5, 0, 0, 60], [0, 2.0, 0, -20], [0, 0, 0, 1]])
    image = nib.Nifti2Image(np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4), affine)
    image.set_qform(affine, 1)
    reference = tmp_path / "dwi.nii.gz"
    nib.save(image, reference)
    mask = (np.asarray(image.dataobj) % 5 == 0).astype(np.uint8)
    in_case_order = CaseOrientation.of(reference).to_case(mask)
    written = write_like(in_case_order, reference, tmp_path / "written.nii.gz", np.uint8)

    write_like_reference(written, reference, tmp_path / "mask.mha", fractional=False)
    read = sitk.ReadImage(tmp_path / "mask.mha")
    assert np.array_equal(sitk.GetArrayFromImage(read).transpose(2, 1, 0), mask)
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(read.GetOrigin(), lps @ affine[:3, 3], atol=1e-5)
    np.testing.assert_allclose(read.GetSpacing(), (1.5, 2.0, 3.0), atol=1e-6)
    direction = lps @ affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(np.reshape(read.GetDirection(), (3, 3)), direction, atol=1e-6)
