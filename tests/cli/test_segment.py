"""``lightning-cv segment``: one patient's scans through a trained fold, as NIfTI, MHA or a DICOM
series, give the mask ``lightning predict`` writes for that case (identical voxels), on the
reference image's grid and in the output's format."""

from __future__ import annotations

import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cli.image_files import keep_locale
from core.errors import DatasetNotFoundError
from tests.conftest import RECIPES, configs, isles22_args, run_in_process
from tests.helpers.dicom import PATIENT_ID, write_dicom_series

SUBJECT = "strokecase0002"  # centre B of the twin: a right-handed grid, as a DICOM series has


@pytest.fixture(scope="module")
def fold(tiny_isles22, tmp_path_factory) -> Path:
    """One step of the ISLES 2022 demo on the tiny twin, and its masks of every case."""
    tmp = tmp_path_factory.mktemp("segment-fit")
    args = [*configs(*RECIPES["isles22_demo"].configs), *isles22_args(tiny_isles22, tmp)]
    run_in_process("lightning", "fit", *args, cwd=tmp)
    (run,) = (tmp / "runs").glob("*/fold0")
    run_in_process(
        "lightning", "predict", "--config", str(run / "config.yaml"), "--ckpt_path", "best",
        "--data.init_args.predict_split", "all",
        "--prediction_writer.output_dir", str(tmp / "predicted"),
        "--prediction_writer.save_probability", "true",
        cwd=tmp,
    )  # fmt: skip
    return run


def _inputs(twin: Path) -> dict[str, Path]:
    raw = twin / f"rawdata/sub-{SUBJECT}/ses-0001"
    stem = f"sub-{SUBJECT}_ses-0001"
    return {
        "DWI": raw / f"dwi/{stem}_dwi.nii.gz",
        "ADC": raw / f"dwi/{stem}_adc.nii.gz",
        "FLAIR": raw / f"anat/{stem}_FLAIR.nii.gz",
    }


def _segment(
    fold: Path, images: dict[str, Path], output: Path, cwd: Path, *extra: str, check: bool = True
):
    flags = [arg for name, path in images.items() for arg in ("--image", f"{name}={path}")]
    return run_in_process(
        "lightning-cv", "segment", str(fold), *flags, "--output", str(output), *extra, cwd=cwd,
        check=check,
    )  # fmt: skip


@pytest.mark.slow
def test_segment_from_nifti_and_mha_writes_the_mask_lightning_predict_wrote(
    fold, tiny_isles22, tmp_path
):
    predicted = fold.parents[2] / "predicted"
    (expected_file,) = predicted.rglob(f"sub-{SUBJECT}_ses-0001_msk.nii.gz")
    expected = np.asarray(nib.load(expected_file).dataobj)
    (probability_file,) = (predicted.parent / "probabilities").rglob(expected_file.name)
    probability = np.asarray(nib.load(probability_file).dataobj)
    assert probability.std() > 0  # one training step: the mask may be uniform, this is not
    images = _inputs(tiny_isles22)

    flags = ["--probabilities", str(tmp_path / "probability.nii.gz")]
    _segment(fold, images, tmp_path / "mask.nii.gz", tmp_path, *flags)
    written, dwi = nib.load(tmp_path / "mask.nii.gz"), nib.load(images["DWI"])
    assert np.array_equal(np.asarray(written.dataobj), expected)
    np.testing.assert_allclose(written.affine, dwi.affine, atol=1e-5)
    segmented = np.asarray(nib.load(tmp_path / "probability.nii.gz").dataobj)
    assert np.array_equal(segmented, probability)  # bit for bit: the same path

    as_mha = {name: tmp_path / f"{name}.mha" for name in images}
    for name, path in images.items():
        sitk.WriteImage(sitk.ReadImage(str(path)), str(as_mha[name]))
    _segment(fold, as_mha, tmp_path / "mask.mha", tmp_path)
    mask, reference = sitk.ReadImage(str(tmp_path / "mask.mha")), sitk.ReadImage(str(images["DWI"]))
    assert np.array_equal(sitk.GetArrayFromImage(mask).transpose(2, 1, 0), expected)
    assert mask.GetSize() == reference.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), reference.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(mask.GetDirection(), reference.GetDirection(), atol=1e-5)


@pytest.mark.slow
def test_segment_from_a_dicom_series_equals_the_same_image_as_nifti(fold, tiny_isles22, tmp_path):
    images = _inputs(tiny_isles22)
    dwi = sitk.Cast(sitk.ReadImage(str(images["DWI"])), sitk.sitkInt16)  # DICOM stores integers
    nifti = tmp_path / "dwi_int16.nii.gz"
    sitk.WriteImage(dwi, str(nifti))
    write_dicom_series(dwi, tmp_path / "dicom")
    encoding = locale.getpreferredencoding(False)
    for name, dwi_input in (("nifti", nifti), ("dicom", tmp_path / "dicom")):
        output = tmp_path / f"from_{name}.{'nii.gz' if name == 'nifti' else 'mha'}"
        probability = ["--probabilities", str(tmp_path / f"probability_{name}.nrrd")]
        _segment(fold, {**images, "DWI": dwi_input}, output, tmp_path, *probability)
    from_nifti = sitk.ReadImage(str(tmp_path / "from_nifti.nii.gz"))
    from_dicom = sitk.ReadImage(str(tmp_path / "from_dicom.mha"))
    assert np.array_equal(sitk.GetArrayFromImage(from_dicom), sitk.GetArrayFromImage(from_nifti))
    # The process's text encoding is what it was (GDCM's writer switches the locale to "C",
    # after which every open() of a UTF-8 file in the process fails).
    assert locale.getpreferredencoding(False) == encoding
    probabilities = [
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"probability_{name}.nrrd")))
        for name in ("nifti", "dicom")
    ]
    # The DICOM grid is rebuilt from positions written to 10 decimals, the NIfTI's from float32
    # header fields: the FLAIR resampling may differ in the last bit.
    assert probabilities[0].std() > 0
    np.testing.assert_allclose(*probabilities, atol=1e-6)
    np.testing.assert_allclose(from_dicom.GetOrigin(), from_nifti.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(from_dicom.GetSpacing(), from_nifti.GetSpacing(), rtol=1e-4)

    # The same case written as DICOM Segmentations of the DICOM series, read back the way a
    # PACS viewer reads them (highdicom): each frame tied to the slice it segments.
    import highdicom as hd
    import pydicom

    seg_files = {"mask": tmp_path / "mask.dcm", "probability": tmp_path / "probability.dcm"}
    _segment(
        fold, {**images, "DWI": tmp_path / "dicom"}, seg_files["mask"], tmp_path,
        "--probabilities", str(seg_files["probability"]),
    )  # fmt: skip
    mask_seg, probability_seg = (hd.seg.segread(seg_files[n]) for n in ("mask", "probability"))
    assert (
        mask_seg.SegmentationType == "BINARY" and probability_seg.SegmentationType == "FRACTIONAL"
    )
    with keep_locale():
        reader = sitk.ImageSeriesReader()
        slices = reader.GetGDCMSeriesFileNames(str(tmp_path / "dicom"))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in slices]
    for seg in (mask_seg, probability_seg):
        assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
        assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
        assert seg.PatientID == PATIENT_ID
        assert seg.ManufacturerModelName == f"{fold.parent.name}/{fold.name}"
        (referenced,) = seg.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    # After one training step the mask may be uniform; the probability is not (checked above),
    # so it is the probability's frames that show each slice in its place (random masks:
    # tests/cli/test_image_files.py).
    expected_mask = sitk.GetArrayFromImage(from_dicom)  # (slice, row, column)
    for k, source in enumerate(sources):
        uid = [source.SOPInstanceUID]
        frame = mask_seg.get_pixels_by_source_instance(uid, segment_numbers=[1])[0, :, :, 0]
        assert np.array_equal(frame, expected_mask[k]), f"slice {k}"
        fraction = probability_seg.get_pixels_by_source_instance(uid, segment_numbers=[1])
        # FRACTIONAL stores 255 steps: within half a step of the written probability.
        np.testing.assert_allclose(fraction[0, :, :, 0], probabilities[1][k], atol=0.5 / 255 + 1e-6)


def test_segment_lists_missing_and_extra_images(fold, tiny_isles22, tmp_path):
    images = _inputs(tiny_isles22)
    result = run_in_process(
        "lightning-cv", "segment", str(fold),
        "--image", f"DWI={images['DWI']}", "--image", f"T2={images['ADC']}",
        "--output", str(tmp_path / "m.nii.gz"), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "Missing: ADC, FLAIR" in error and "Not used: T2" in error
    assert not (tmp_path / "m.nii.gz").exists()

    # A DICOM SEG refers to a DICOM series: refused for a NIfTI reference, before any work.
    flags = [arg for name, path in images.items() for arg in ("--image", f"{name}={path}")]
    result = run_in_process(
        "lightning-cv", "segment", str(fold), *flags, "--output", str(tmp_path / "m.dcm"),
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "m.dcm: a DICOM Segmentation refers to the DICOM series" in error
    assert not (tmp_path / "m.dcm").exists()


def test_an_error_about_a_converted_input_names_the_file_the_user_gave(
    fold, tiny_isles22, tmp_path
):
    # An ADC on another grid than the DWI, both .mha: the reader meets them as NIfTI files
    # converted into a temporary folder, but the error names the user's own files.
    images = _inputs(tiny_isles22)
    dwi = sitk.ReadImage(str(images["DWI"]))
    adc = sitk.ReadImage(str(images["ADC"]))
    adc.SetOrigin([v + 10.0 for v in adc.GetOrigin()])
    given = {**images, "DWI": tmp_path / "dwi.mha", "ADC": tmp_path / "adc.mha"}
    sitk.WriteImage(dwi, str(given["DWI"]))
    sitk.WriteImage(adc, str(given["ADC"]))
    result = _segment(fold, given, tmp_path / "m.mha", tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert error.startswith(f"error: {given['ADC']}: its voxel grid does not match {given['DWI']}")
    assert "strokeseg-segment-" not in error


@pytest.mark.slow
def test_the_log_names_the_users_files_not_the_temporary_ones(fold, tiny_isles22, tmp_path):
    images = {**_inputs(tiny_isles22), "ADC": tmp_path / "adc.mha"}  # converted to NIfTI first
    sitk.WriteImage(sitk.ReadImage(str(_inputs(tiny_isles22)["ADC"])), str(images["ADC"]))
    result = _segment(fold, images, Path("mask.mha"), tmp_path)  # as given: relative
    assert "patient -> mask.mha" in result.stdout, result.stdout
    assert "Wrote 1 predicted case(s) to mask.mha" in result.stdout
    assert "strokeseg-segment-" not in result.stdout + result.stderr
    assert (tmp_path / "mask.mha").is_file()


@pytest.mark.slow
def test_an_exported_model_folder_segments_like_its_experiment_and_refuses_tampering(
    fold, tiny_isles22, tmp_path
):
    import torch

    model = tmp_path / "models" / "isles22_demo"
    run_in_process("lightning-cv", "export", str(fold.parent), "--to", str(model), cwd=tmp_path)
    weights = model / "fold0" / "weights.pt"
    state = torch.load(weights, weights_only=True)  # plain tensors and values only
    assert state["state_dict"] and state["signature"]
    assert {"manifest.json", "MODEL_CARD.md", "recipe.yaml"} <= {p.name for p in model.iterdir()}
    assert "must not be used for" in (model / "MODEL_CARD.md").read_text(encoding="utf-8")

    images = _inputs(tiny_isles22)
    probability = ["--probabilities"]
    _segment(
        fold, images, tmp_path / "a.nii.gz", tmp_path, *probability, str(tmp_path / "pa.nii.gz")
    )
    _segment(
        model, images, tmp_path / "b.nii.gz", tmp_path, *probability, str(tmp_path / "pb.nii.gz")
    )
    for first, second in (("a", "b"), ("pa", "pb")):
        a, b = (np.asarray(nib.load(tmp_path / f"{n}.nii.gz").dataobj) for n in (first, second))
        assert np.array_equal(a, b)

    original = weights.read_bytes()
    data = bytearray(original)
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    changed = run_in_process(
        "lightning-cv", "segment", str(model), *[f for n, p in images.items() for f in ("--image", f"{n}={p}")],
        "--output", str(tmp_path / "c.nii.gz"), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert changed.returncode == 2
    error = next(line for line in changed.stderr.splitlines() if line.startswith("error:"))
    assert str(weights) in error and "changed since the model was exported" in error
    weights.write_bytes(original)
    (model / "recipe.yaml").unlink()
    missing = run_in_process(
        "lightning-cv", "predict", str(model), "--name", "x", "--runs-dir", str(tmp_path / "r"),
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert (
        missing.returncode == 2 and "recipe.yaml: missing from the model folder" in missing.stderr
    )


@pytest.mark.slow
def test_the_isles2022_container_entry_point_writes_the_challenges_output(
    fold, tiny_isles22, tmp_path
):
    import json

    from cli.challenge import run_isles2022

    uuid = "5f0d3e1a-0b9c-4f7e-9a51-3c2d1e0f9a77"
    images = _inputs(tiny_isles22)
    for folder, name in (("dwi", "DWI"), ("adc", "ADC"), ("flair", "FLAIR")):
        target = tmp_path / "input" / "images" / f"{folder}-brain-mri" / f"{uuid}.mha"
        target.parent.mkdir(parents=True)
        sitk.WriteImage(sitk.ReadImage(str(images[name])), str(target))
    mask_file = run_isles2022(fold, tmp_path / "input", tmp_path / "output")
    assert mask_file == tmp_path / "output/images/stroke-lesion-segmentation" / f"{uuid}.mha"
    mask, dwi = sitk.ReadImage(str(mask_file)), sitk.ReadImage(str(images["DWI"]))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == dwi.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), dwi.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), dwi.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(mask.GetDirection(), dwi.GetDirection(), atol=1e-5)
    (expected_file,) = (fold.parents[2] / "predicted").rglob(f"sub-{SUBJECT}_ses-0001_msk.nii.gz")
    expected = np.asarray(nib.load(expected_file).dataobj)
    assert np.array_equal(sitk.GetArrayFromImage(mask).transpose(2, 1, 0), expected)
    (result,) = json.loads((tmp_path / "output" / "results.json").read_text())
    assert result["outputs"] == [{"type": "metaio_image", "filename": f"{uuid}.mha"}]


@pytest.mark.slow
def test_a_folder_of_patients_in_one_call(fold, tiny_isles22, tmp_path):
    predicted = fold.parents[2] / "predicted"
    patients = tmp_path / "patients"
    for number, subject in enumerate(("strokecase0002", "strokecase0004")):
        raw = tiny_isles22 / f"rawdata/sub-{subject}/ses-0001"
        folder = patients / f"patient {number}"  # a space: names are made safe
        folder.mkdir(parents=True)
        for name, relative in (("DWI", "dwi/*_dwi.nii.gz"), ("ADC", "dwi/*_adc.nii.gz"),
                               ("FLAIR", "anat/*_FLAIR.nii.gz")):  # fmt: skip
            (source,) = raw.glob(relative)
            suffix = ".mha" if number == 1 else ".nii.gz"
            sitk.WriteImage(sitk.ReadImage(str(source)), str(folder / f"{name}{suffix}"))
        (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "masks"
    run_in_process(
        "lightning-cv", "segment", str(fold), "--input-dir", str(patients),
        "--output-dir", str(out), "--format", "input", cwd=tmp_path,
    )  # fmt: skip
    # --format input: each patient's mask in the format of its DWI
    assert sorted(p.name for p in out.iterdir()) == ["patient_0.nii.gz", "patient_1.mha"]
    for number, subject in enumerate(("strokecase0002", "strokecase0004")):
        (expected,) = predicted.rglob(f"sub-{subject}_ses-0001_msk.nii.gz")
        suffix = ".mha" if number == 1 else ".nii.gz"
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"patient_{number}{suffix}")))
        assert np.array_equal(mask.transpose(2, 1, 0), np.asarray(nib.load(expected).dataobj))

    # --continue predicts only the patients without a mask: an existing one is left as it is.
    first, second = out / "patient_0.nii.gz", out / "patient_1.mha"
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(second)))
    first.write_bytes(b"kept")
    second.unlink()
    again = run_in_process(
        "lightning-cv", "segment", str(fold), "--input-dir", str(patients),
        "--output-dir", str(out), "--format", "input", "--continue", cwd=tmp_path,
    )  # fmt: skip
    assert "1 patient(s) already segmented" in again.stdout and "wrote 1 mask(s)" in again.stdout
    assert first.read_bytes() == b"kept"
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(second))), before)


def test_patient_folders_take_image_files_only_in_any_case(tmp_path):
    # Sidecars, backups and a MetaImage's data file share the image's name; none is the image.
    from cli.segment import patient_folders
    from core.errors import DataValidationError

    folder = tmp_path / "patients" / "p1"
    folder.mkdir(parents=True)
    for name in ("DWI.bak", "DWI.json", "dwi.nii.gz", "ADC.mhd", "ADC.raw", "ADC.json",
                 ".FLAIR.nii.gz", "notes.txt"):  # fmt: skip
        (folder / name).write_text("x")
    (folder / "FLAIR").mkdir()  # a DICOM folder
    found = patient_folders(tmp_path / "patients", ["DWI", "ADC", "FLAIR"])
    assert {n: p.name for n, p in found["p1"].items()} == {
        "DWI": "dwi.nii.gz", "ADC": "ADC.mhd", "FLAIR": "FLAIR"
    }  # fmt: skip

    (folder / "DWI.mha").write_text("x")
    with pytest.raises(DataValidationError, match=r"p1: two images for DWI, DWI\.mha and dwi\.nii"):
        patient_folders(tmp_path / "patients", ["DWI", "ADC", "FLAIR"])

    # Two folders whose safe names agree would write one mask file: refused, not one dropped.
    (folder / "DWI.mha").unlink()
    (tmp_path / "patients" / "p 2").mkdir()
    (tmp_path / "patients" / "p_2").mkdir()
    with pytest.raises(DataValidationError, match=r"p_2: its mask would be written as p_2,"):
        patient_folders(tmp_path / "patients", ["DWI", "ADC", "FLAIR"])


def test_an_input_dir_that_is_no_folder_of_patients_is_named(tmp_path):
    from cli.segment import patient_folders

    needed = ["DWI", "ADC", "FLAIR"]
    with pytest.raises(DatasetNotFoundError, match=r"--input-dir .*patients: no such folder"):
        patient_folders(tmp_path / "patients", needed)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"--input-dir .*notes\.txt: is a file"):
        patient_folders(tmp_path / "notes.txt", needed)
    # One patient's own folder given in place of the folder of patients.
    patient = tmp_path / "p1"
    patient.mkdir()
    for name in ("dwi.nii.gz", "ADC.mha", "DWI.json"):
        (patient / name).write_text("x")
    (patient / "FLAIR").mkdir()
    with pytest.raises(
        DatasetNotFoundError, match=r"p1: holds the images of one patient \(ADC, DWI\)"
    ):
        patient_folders(patient, needed)


def test_a_missing_challenge_input_folder_is_named_as_missing(tmp_path):
    from cli.challenge import _one_image

    with pytest.raises(
        DatasetNotFoundError, match=r"dwi-brain-mri: expected one image .*found no such folder"
    ):
        _one_image(tmp_path / "input" / "images" / "dwi-brain-mri")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"empty: expected one image .*found none"):
        _one_image(tmp_path / "empty")


def test_segment_keeps_to_one_process():
    """Under DDP each rank read the images into a temporary folder of its own and the other
    rank's cache was missing: segment refuses several devices or nodes, naming the option."""
    from cli.segment import _one_process
    from core.errors import ConfigurationError

    for fine in ([], ["--trainer.devices", "1"], ["--trainer.devices=[1]", "--tta"]):
        assert _one_process(fine) == fine
    for bad in (["--trainer.devices", "2"], ["--trainer.num_nodes=2"], ["--trainer.devices=auto"]):
        with pytest.raises(ConfigurationError, match="segment runs in one process"):
            _one_process(bad)
