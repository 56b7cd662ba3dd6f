"""A patient's images as files in the formats scanners and challenges use, read and written.

Read: NIfTI, anything SimpleITK reads (MHA, NRRD, …) and a folder holding one DICOM series.
Written, on the reference input's grid (its size, origin, spacing and direction):

* ``.nii.gz`` / ``.nii`` — as the suite's prediction writer wrote it when the reference is
  NIfTI (its own header), else through SimpleITK;
* ``.mha``, ``.nrrd`` — SimpleITK, compressed (one file each);
* ``.dcm`` — a **DICOM Segmentation** object (highdicom), one multi-frame file referring to the
  reference DICOM series: its patient, study and frame of reference, each frame tied to the
  source slice it segments. A mask is a BINARY segmentation, a probability a FRACTIONAL one
  (PROBABILITY, 255 steps). It needs the reference to be a DICOM series: a SEG is defined by
  the images it refers to.

SimpleITK's DICOM (GDCM) writer switches the process's locale to "C", after which Python reads
text files as ASCII; every SimpleITK call here is wrapped in :func:`keep_locale`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import locale
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigurationError, DataValidationError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: File names (any case) taken for an image: NIfTI and the formats SimpleITK reads as volumes.
IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".tif", ".tiff")
DICOM_SEG_SUFFIX = ".dcm"
#: What ``--output`` / ``--format`` may name.
OUTPUT_FORMATS = ("nii.gz", "nii", "mha", "nrrd", "dcm")
#: SNOMED CT codes of the DICOM SEG segment: a morphologically abnormal structure, an infarct.
_CATEGORY = ("49755003", "SCT", "Morphologically Abnormal Structure")
_PROPERTY = ("55641003", "SCT", "Infarct")
_SEG_SERIES_OFFSET = 1000  # the SEG's series number: the source's + 1000 (a common convention)
# The head of an ITK error line: "MetaImageIO(0x55d4d8026410): " (the class and its address).
log = logging.getLogger(__name__)
_ITK_PREFIX = re.compile(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*")

if TYPE_CHECKING:
    import numpy as np


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def is_image_file(path: Path) -> bool:
    """A file named like an image (:data:`IMAGE_SUFFIXES`), not a sidecar (``.json``), a
    backup or a MetaImage's ``.raw`` data."""
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def is_dicom_seg(path: Path) -> bool:
    return path.name.lower().endswith(DICOM_SEG_SUFFIX)


def format_of(path: Path) -> str:
    """The output format that matches an input: its extension, ``dcm`` for a DICOM folder."""
    if path.is_dir():
        return "dcm"
    name = path.name.lower()
    for fmt in OUTPUT_FORMATS:
        if name.endswith(f".{fmt}"):
            return fmt
    return "nii.gz"


@contextlib.contextmanager
def keep_locale() -> Iterator[None]:
    """Put the process's locale back after SimpleITK: its DICOM (GDCM) writer switches it to
    "C", after which Python reads text files as ASCII (a YAML comment with "—" then fails);
    the DICOM reader and the other formats are guarded the same way, in case they do."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def dicom_series_files(folder: Path) -> list[str]:
    """The files of the one DICOM series in ``folder``, in SimpleITK's slice order (the order
    of the volume's third axis)."""
    import SimpleITK as sitk

    with keep_locale():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if len(series) != 1:
            raise DataValidationError(
                f"{folder}: a DICOM folder must hold exactly one series, found {len(series)}"
                f"{' (' + ', '.join(series) + ')' if series else ''}. Give the folder of "
                "one series."
            )
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    _check_one_volume(folder, files)
    return files


def _check_one_volume(folder: Path, files: list[str]) -> None:
    """Refuse a series holding several volumes at the same slice positions (scanners store a
    DWI's b-values, or a perfusion's time points, in one series): stacked as one volume they
    would give a grid with repeated slices."""
    import pydicom

    positions = []
    for name in files:
        header = pydicom.dcmread(
            name, stop_before_pixels=True, specific_tags=["ImagePositionPatient"]
        )
        position = header.get("ImagePositionPatient")
        positions.append(None if position is None else tuple(round(float(v), 3) for v in position))
    distinct = {p for p in positions if p is not None}
    if positions and None not in positions and len(distinct) < len(positions):
        raise DataValidationError(
            f"{folder}: its DICOM series holds {len(files)} images at {len(distinct)} slice "
            "positions — several volumes in one series (a DWI's b-values, a perfusion's time "
            "points). Split it into one folder per volume and give the one the model reads "
            "(for ISLES 2022, the trace DWI at b = 1000)."
        )


@contextlib.contextmanager
def _itk_console() -> Iterator[list[str]]:
    """Collect what ITK's image readers print straight to the process's standard error (MetaIO's
    "data not read completely" before it fails on a truncated file, GDCM's warnings), so the
    suite's one-paragraph error stays the first line a user sees; the lines are yielded."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def _itk_reason(error: RuntimeError) -> str:
    """ITK's own words from one of its exceptions, without its source path and object address
    (its last line may be a stale ``Reason: <errno>``, e.g. "No such file or directory" for a
    truncated file that exists)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "ERROR:" in line:
            return _ITK_PREFIX.sub("", line.split("ERROR:", 1)[1]).strip()
    return lines[-1] if lines else type(error).__name__


def _one_volume(image, path: Path):  # noqa: ANN001, ANN202 - SimpleITK has no stubs
    """``image`` as one 3D grey-level volume: trailing axes of length 1 (``(X, Y, Z, 1)``) are
    dropped, as the NIfTI decoder drops them; anything else is refused naming ``path``."""
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise DataValidationError(
            f"{path}: its voxels hold {components} values each (a colour or vector image); a "
            "scan holds one. Give the grey-level 3D image."
        )
    while image.GetDimension() > 3 and image.GetSize()[-1] == 1:
        image = image[(slice(None),) * (image.GetDimension() - 1) + (0,)]
    if image.GetDimension() != 3:
        raise DataValidationError(
            f"{path}: expected a 3D image, found {image.GetDimension()}D data of size "
            f"{image.GetSize()}. Give one 3D volume (not a slice, nor a series of volumes such "
            "as a DWI's b-values)."
        )
    return image


def read_image(path: Path):  # noqa: ANN201 - SimpleITK has no stubs
    """One 3D volume from any image file SimpleITK reads, or from the one DICOM series of a
    folder (trailing axes of length 1 dropped).

    Raises:
        DataValidationError: If SimpleITK cannot read it, or it is not one grey-level 3D
            volume; the message names ``path``.
    """
    import SimpleITK as sitk

    files = dicom_series_files(path) if path.is_dir() else [str(path)]
    try:
        with _itk_console() as printed, keep_locale():
            image = sitk.ReadImage(files if path.is_dir() else files[0])
    except RuntimeError as error:
        said = f"; {printed[-1]}" if printed else ""
        raise DataValidationError(
            f"{path}: SimpleITK cannot read it ({_itk_reason(error)}{said}). The file may be "
            "truncated or not an image: give a NIfTI, MHA/NRRD or a folder of one DICOM "
            "series, exported again from the source if it is damaged."
        ) from error
    for line in printed:
        log.info("%s: SimpleITK said: %s", path, line)
    return _one_volume(image, path)


def as_nifti(name: str, path: Path, folder: Path) -> Path:
    """The image as a NIfTI file the dataset's reader takes: NIfTI as given, anything else
    converted by SimpleITK (origin, spacing and direction kept)."""
    if path.is_file() and is_nifti(path):
        return path.absolute()
    import SimpleITK as sitk

    out = folder / f"{name}.nii.gz"
    image = read_image(path)
    with keep_locale():
        sitk.WriteImage(image, str(out))
    return out


def check_output(output: Path, reference: Path) -> None:
    """Refuse, before any work, an output the reference input cannot give."""
    if is_dicom_seg(output) and not reference.is_dir():
        raise ConfigurationError(
            f"{output}: a DICOM Segmentation refers to the DICOM series it segments, but the "
            f"reference image {reference} is not a DICOM series folder. Give the reference "
            "image as its DICOM folder, or write .nii.gz, .mha or .nrrd."
        )
    if not any(output.name.lower().endswith(f".{fmt}") for fmt in OUTPUT_FORMATS):
        raise ConfigurationError(
            f"{output}: unknown output format; name the file .{', .'.join(OUTPUT_FORMATS)}."
        )


def _open_nifti(path: Path, write: bool, actual: Path | None = None) -> io.BufferedIOBase:
    """A NIfTI file opened as its uncompressed bytes (through gzip for ``.nii.gz``).
    ``actual`` is the file opened in place of ``path`` (a temporary sibling)."""
    target, compressed = actual or path, path.name.endswith(".gz")
    if write:
        return gzip.open(target, "wb") if compressed else open(target, "wb")
    return gzip.open(target, "rb") if compressed else open(target, "rb")


def write_like_reference(
    written: Path, reference: Path, output: Path, *, fractional: bool, model: str = "model"
) -> None:
    """The suite's written NIfTI (a mask, or a probability when ``fractional``, on the
    reference's converted grid) at ``output``, in the format its extension names, with the
    reference input's geometry. Written through a temporary sibling and a rename; ``model``
    names the model in a DICOM SEG."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if is_nifti(output) and reference.is_file() and is_nifti(reference):
        # Written by nibabel with the reference's own header (qform, sform and their codes):
        # kept byte for byte, only (de)compressed, since SimpleITK would rewrite both forms
        # from the one it chooses, moving the voxels for a reader that takes the other one.
        tmp = output.with_name(f".{output.name}.tmp")
        with _open_nifti(written, False) as source, _open_nifti(output, True, tmp) as target:
            shutil.copyfileobj(source, target)
        tmp.replace(output)
        return
    import SimpleITK as sitk

    with keep_locale():
        written_image = sitk.ReadImage(str(written))
    array = sitk.GetArrayFromImage(written_image)  # (slice, row, column)
    if is_dicom_seg(output):
        write_dicom_seg(array, reference, output, fractional=fractional, model=model)
        return
    try:
        reference_image = read_image(reference)
    except DataValidationError:
        if not (reference.is_file() and is_nifti(reference)):
            raise
        # A NIfTI that nibabel reads and SimpleITK does not (NIfTI-2): the written file carries
        # its header (qform, sform, pixdim and codes) as NIfTI-1, which SimpleITK reads.
        reference_image = written_image
    with keep_locale():
        image = sitk.GetImageFromArray(array)  # no NIfTI metadata
        image.CopyInformation(reference_image)
        tmp = output.with_name(f".{output.name}.tmp{''.join(output.suffixes)}")
        sitk.WriteImage(image, str(tmp), useCompression=True)
    tmp.replace(output)


def write_dicom_seg(
    array: np.ndarray, series: Path, output: Path, *, fractional: bool, model: str = "model"
) -> None:
    """``array`` (slice, row, column, on the DICOM series ``series``'s grid) as a DICOM
    Segmentation referring to that series: BINARY for a mask, FRACTIONAL for a probability;
    ``model`` (the experiment, fold or model folder's name) is its Manufacturer's Model Name.

    Raises:
        DataValidationError: For a series a SEG cannot refer to (no frame of reference, a
            multi-frame file whose frames are not the volume's slices).
    """
    import highdicom as hd
    import numpy as np
    import pydicom
    from pydicom.sr.codedict import codes

    # highdicom logs every module it copies at INFO (~20 lines a SEG) into the command's output.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    files = dicom_series_files(series)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    if len(sources) != array.shape[0] or any(int(s.get("NumberOfFrames", 1)) > 1 for s in sources):
        raise DataValidationError(
            f"{series}: a DICOM SEG is written for a series of single-frame slices "
            f"({len(sources)} file(s) for {array.shape[0]} slices). Write .nii.gz or .mha."
        )
    pixels = (
        np.clip(array.astype(np.float32), 0.0, 1.0) if fractional else (array > 0).astype(np.uint8)
    )
    try:
        version = metadata.version("strokeseg-repro")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        version = "unknown"
    algorithm = hd.AlgorithmIdentificationSequence(
        name="strokeseg-repro", version=version, family=codes.cid7162.ArtificialIntelligence
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Stroke lesion",
        segmented_property_category=hd.sr.CodedConcept(*_CATEGORY),
        segmented_property_type=hd.sr.CodedConcept(*_PROPERTY),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    first = sources[0]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type="FRACTIONAL" if fractional else "BINARY",
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=int(first.get("SeriesNumber") or 0) + _SEG_SERIES_OFFSET,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="strokeseg-repro",
            manufacturer_model_name=model[-64:] or "model",  # a LO value: 64 characters
            software_versions=version,
            device_serial_number="none",
            series_description="Stroke lesion probability" if fractional else "Stroke lesion",
            omit_empty_frames=False,  # every source slice has its frame, empty or not
        )
    except (ValueError, AttributeError) as error:
        raise DataValidationError(
            f"{series}: cannot write a DICOM SEG referring to this series ({error}). Write "
            ".nii.gz or .mha instead."
        ) from error
    tmp = output.with_name(f".{output.name}.tmp")
    seg.save_as(tmp)
    tmp.replace(output)
