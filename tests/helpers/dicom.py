"""DICOM series written the way a scanner export lays them out, for the tests of the readers and
writers of patient images."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from cli.image_files import keep_locale

SERIES_UID = "1.2.826.0.1.3680043.2.1125.77.1"
PATIENT_ID = "TWIN-0002"


def write_dicom_series(
    image: sitk.Image, folder: Path, *, series_uid: str = SERIES_UID, first_file: int = 0
) -> list[Path]:
    """The image as one DICOM series of int16 slices in ``folder`` (created if needed), with
    the positions, orientation, study, frame of reference and patient a scanner writes (what a
    DICOM reader rebuilds the grid from, what a DICOM SEG refers to).

    ``first_file`` numbers the files and SOP instances, so that a second volume can be written
    into the same series (as scanners store several b-values of a DWI).

    Returns:
        The written files, in slice order.
    """
    with keep_locale():  # GDCM switches the process to the "C" locale
        return _write_series(image, folder, series_uid, first_file)


def _write_series(image: sitk.Image, folder: Path, series: str, first: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series}.{first + k + 1}",
            "0020|000d": f"{series}.0",
            "0020|000e": series,
            "0020|0052": f"{series}.9",  # the frame of reference a DICOM SEG refers to
            "0010|0020": PATIENT_ID,
            "0020|0013": str(first + k + 1),
            "0020|0032": "\\".join(f"{v:.10f}" for v in position),
            "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]:.10f}",
        }.items():
            plane.SetMetaData(tag, value)
        files.append(folder / f"slice{first + k:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(plane)
    return files
