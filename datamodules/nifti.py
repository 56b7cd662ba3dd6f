"""NIfTI helpers shared by the readers and the prediction writer.

* :func:`read_shape` reads a header only; :func:`load_volume` decodes a file and checks it.
* :func:`grid_affine` is the voxel → world mapping a file really means. ISLES 2018 files carry
  an identity sform beside a qform with the true spacing (docs/datasets.md §4.3), so the sform
  is trusted only when its voxel sizes agree with the header's pixdim.
* :func:`align_to_reference` puts a mask (or any volume) on its image's voxel grid. Grids that
  differ only by axis flips or permutations (a mask saved by another tool) are reoriented by
  index operations, exactly; any other difference (another spacing, a shift, a rotation) is
  refused with an error naming both files, because resampling a label silently would change
  the ground truth.
* :class:`CaseOrientation` is the axis order of a case: the reference image's voxels in the
  closest RAS order, whatever order the file stores them in; :func:`case_shape` is its shape.
* :func:`write_like` writes a volume (in the case's order) with a reference file's header (qform, sform, pixdim and
  their codes), atomically, so challenge evaluators read it on the reference's grid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np

from core.errors import DataValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Voxel sizes within 0.1 % are the same (headers written by other tools round them).
_ZOOM_RTOL = 1e-3
# A mapping between grids must be a signed permutation within this many voxels.
_VOXEL_ATOL = 1e-2


def _one_line(error: BaseException) -> str:
    """``error`` as ``Type: message`` on one line (nibabel's messages span lines), so that the
    first line of the error that quotes it still says what to do."""
    return " ".join(f"{type(error).__name__}: {error}".split())


def _open(path: Path) -> Any:
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises several types for a damaged file
        raise DataValidationError(
            f"{path}: cannot read the NIfTI header ({_one_line(error)}). The file "
            "is probably truncated or corrupt; re-extract it from the original archive."
        ) from error


def read_shape(path: Path, ndim: int = 3) -> tuple[int, ...]:
    """Shape of the ``ndim``-D volume a file holds, from its header alone (no voxel data is
    decoded). Trailing axes of length 1 (``(X, Y, Z, 1)``) are dropped, as :func:`load_volume`
    drops them, so a file the decoder accepts is never refused by its shape.

    Raises:
        DataValidationError: If the header cannot be read, or the file does not hold one
            ``ndim``-D volume (a 2D slice, a time series); the message names the file.
    """
    shape = tuple(int(n) for n in _open(path).shape)
    while len(shape) > ndim and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != ndim:
        raise _wrong_dimensions(path, shape, ndim)
    return shape


def _wrong_dimensions(path: Path, shape: tuple[int, ...], ndim: int) -> DataValidationError:
    found = f"found {len(shape)}D data of shape {shape}"
    if len(shape) > ndim:
        advice = (
            f"A {ndim}D volume holds one value per voxel; this file has extra axes (a time "
            "series such as the CT_4DPWI, or several volumes in one file). Check that the file "
            f"sits in the right folder, or keep one {ndim}D volume of it (e.g. with nibabel: "
            "image.slicer[..., 0])."
        )
    else:
        advice = f"Replace it with the {ndim}D volume of the original archive."
    return DataValidationError(f"{path}: expected a {ndim}D image, {found}. {advice}")


def load_volume(path: Path, ndim: int = 3) -> tuple[np.ndarray, tuple[float, ...]]:
    """Decode one NIfTI file and check it is finite and has ``ndim`` dimensions.

    A trailing axis of length 1 (``(X, Y, Z, 1)``, as some tools write a 3D volume) is dropped.

    Returns:
        The voxel array as stored (dtype kept) and the spatial zooms (pixdim) in mm.

    Raises:
        DataValidationError: If the file cannot be decoded (e.g. truncated), has the wrong number
            of dimensions or holds NaN/inf; the message names the file and what to do.
    """
    try:
        # mmap=False: read into memory, so a file replaced on disk later cannot fault the array.
        image: Any = nib.load(str(path), mmap=False)
        data = np.asarray(image.dataobj)
    except Exception as error:
        raise DataValidationError(
            f"{path}: cannot be read as NIfTI ({_one_line(error)}). The file is "
            "probably truncated or corrupt; re-extract it from the original archive."
        ) from error
    while data.ndim > ndim and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != ndim:
        raise _wrong_dimensions(path, data.shape, ndim)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataValidationError(
            f"{path}: {bad} voxels are NaN or infinite. Fix or replace the file."
        )
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return data, zooms


def grid_affine(image: Any) -> np.ndarray | None:
    """The voxel → world affine a NIfTI image means, or ``None`` if it states none.

    The sform is used when its code is set and its voxel sizes match pixdim; otherwise the
    qform when its code is set (ISLES 2018: identity sform, true spacing in the qform);
    otherwise (no code set, or only an identity sform) there is no orientation to compare,
    only pixdim.

    Raises:
        DataValidationError: If a sform other than the identity disagrees with pixdim on the
            voxel sizes and no qform is set, so that neither can be trusted; the message
            names the file.
    """
    header = image.header
    zooms = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    sform, sform_code = header.get_sform(coded=True)
    if sform is not None and sform_code > 0:
        sform_zooms = np.linalg.norm(sform[:3, :3], axis=0)
        if np.allclose(sform_zooms, zooms, rtol=_ZOOM_RTOL):
            return np.asarray(sform, dtype=np.float64)
    qform, qform_code = header.get_qform(coded=True)
    if qform is not None and qform_code > 0:
        return np.asarray(qform, dtype=np.float64)
    if sform is not None and sform_code > 0 and not np.allclose(sform, np.eye(4)):
        # No qform to arbitrate (a converter that left pixdim 0, which nibabel reads as 1):
        # either the orientation or the voxel size would be a guess. An identity sform states
        # nothing (ISLES 2018's quirk, here without its qform): pixdim's spacing, as ITK reads.
        found = ", ".join(f"{z:g}" for z in np.linalg.norm(sform[:3, :3], axis=0))
        raise DataValidationError(
            f"{image.get_filename()}: the header's sform has voxel sizes ({found}) mm but its "
            f"pixdim says ({', '.join(f'{z:g}' for z in zooms)}) mm, and there is no qform "
            "(qform_code 0) to tell which is right. Re-save the file with one geometry, e.g. "
            "with nibabel: image.set_qform(image.get_sform(), 1) and "
            "image.header.set_zooms(<the sform's voxel sizes>), or restore it from the original "
            "archive."
        )
    return None


@dataclass(frozen=True)
class _Reorientation:
    """Voxel index map from one grid onto another: ``out = flip(transpose(data, order), axes)``."""

    order: tuple[int, ...]
    flips: tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        return self.order == tuple(range(len(self.order))) and not self.flips

    def apply(self, data: np.ndarray) -> np.ndarray:
        out = np.transpose(data, self.order)
        return np.ascontiguousarray(np.flip(out, self.flips) if self.flips else out)


def _index_map(
    moving: np.ndarray,
    moving_shape: tuple[int, ...],
    fixed: np.ndarray,
    fixed_shape: tuple[int, ...],
) -> _Reorientation | None:
    """The flip/permutation taking ``moving``'s voxels onto ``fixed``'s, if there is one."""
    mapping = np.linalg.solve(fixed, moving)  # moving voxel -> fixed voxel
    rotation, offset = mapping[:3, :3], mapping[:3, 3]
    signed = np.round(rotation)
    ones = np.ones(3)
    if not np.allclose(rotation, signed, atol=_VOXEL_ATOL) or not (
        np.array_equal(np.abs(signed).sum(axis=0), ones)
        and np.array_equal(np.abs(signed).sum(axis=1), ones)
    ):
        return None
    order, flips = [0, 0, 0], []
    for fixed_axis in range(3):
        (moving_axis,) = np.flatnonzero(signed[fixed_axis])
        order[fixed_axis] = int(moving_axis)
        sign = signed[fixed_axis, moving_axis]
        if moving_shape[moving_axis] != fixed_shape[fixed_axis]:
            return None
        expected = 0.0 if sign > 0 else fixed_shape[fixed_axis] - 1.0
        if abs(offset[fixed_axis] - expected) > _VOXEL_ATOL:
            return None
        if sign < 0:
            flips.append(fixed_axis)
    return _Reorientation(tuple(order), tuple(flips))


def _describe(image: Any) -> str:
    affine = grid_affine(image)
    zooms = ", ".join(f"{z:g}" for z in image.header.get_zooms()[:3])
    if affine is None:
        return f"shape {tuple(image.shape[:3])}, pixdim ({zooms}) mm, no orientation"
    rows = "; ".join(" ".join(f"{v:g}" for v in row) for row in affine[:3])
    return f"shape {tuple(image.shape[:3])}, pixdim ({zooms}) mm, affine [{rows}]"


def align_to_reference(data: np.ndarray, path: Path, reference: Path) -> np.ndarray:
    """Return ``data`` (decoded from ``path``) on the voxel grid of ``reference``.

    Args:
        data: The volume of ``path`` as decoded, ``(X, Y, Z)``.
        path: Its file (a mask, a perfusion map, ...).
        reference: The image whose grid the suite uses for the case (T1, CT).

    Returns:
        ``data`` itself if both files describe the same grid; reoriented (exactly, by
        transposing and flipping) if the grids differ by axis flips or permutations, which is
        logged; shapes and spacings must then agree axis for axis.

    Raises:
        DataValidationError: If the grids differ otherwise (spacing, shift, rotation, shape);
            the message gives both files' geometry and what to do.
    """
    moving, fixed = _open(path), _open(reference)
    fixed_shape = tuple(int(n) for n in fixed.shape[:3])
    moving_affine, fixed_affine = grid_affine(moving), grid_affine(fixed)
    mapping: _Reorientation | None
    if moving_affine is None or fixed_affine is None:
        same_zooms = np.allclose(
            moving.header.get_zooms()[:3], fixed.header.get_zooms()[:3], rtol=_ZOOM_RTOL
        )
        same = same_zooms and tuple(data.shape) == fixed_shape
        mapping = _Reorientation((0, 1, 2), ()) if same else None
    else:
        mapping = _index_map(moving_affine, tuple(data.shape), fixed_affine, fixed_shape)
    if mapping is None:
        raise DataValidationError(
            f"{path}: its voxel grid does not match {reference} (the case's reference image): "
            f"{_describe(moving)} versus {_describe(fixed)}. Both must describe the same voxels "
            "(equal shape and spacing, up to axis flips or permutations). Resample or re-export "
            "the file onto the reference image's grid (nearest neighbour for masks), or restore "
            "it from the original archive."
        )
    if mapping.is_identity:
        return data
    log.info(
        "%s: reoriented onto the grid of %s (axes %s, flipped %s)",
        path,
        reference,
        mapping.order,
        mapping.flips or "none",
    )
    return mapping.apply(data)


@dataclass(frozen=True)
class CaseOrientation:
    """How a reference image's stored voxel axes become the axes of its case: the closest RAS
    order (nibabel's ``io_orientation`` of the header's affine: the first axis runs towards the
    patient's Right, the second towards Anterior, the third towards Superior).

    Every case is decoded onto its reference image's voxels in this order, whatever order the
    file stores them in (a scanner's LPS export, an axis-permuted copy, a flipped header), so
    the network always sees the anatomy the same way round; predictions go back to the stored
    order before they are written (:func:`write_like`). A release stored in RAS order, or a
    file whose header states no orientation, keeps its stored order.

    Attributes:
        ornt: Per stored axis, ``(case axis, +1 or -1)`` (nibabel's orientation array).
    """

    ornt: tuple[tuple[int, int], ...] = ((0, 1), (1, 1), (2, 1))

    @classmethod
    def of(cls, path: Path) -> CaseOrientation:
        """The orientation of the image at ``path``, from its header (no voxel is decoded).

        Raises:
            DataValidationError: If the header cannot be read.
        """
        affine = grid_affine(_open(path))
        if affine is None:
            return cls()
        ornt = nib.orientations.io_orientation(affine)
        return cls(tuple((int(axis), int(sign)) for axis, sign in ornt))

    @property
    def is_identity(self) -> bool:
        return self.ornt == ((0, 1), (1, 1), (2, 1))

    def _permute(self, stored: Sequence[T]) -> list[T]:
        out = list(stored)
        for axis, (target, _) in enumerate(self.ornt):
            out[target] = stored[axis]
        return out

    def shape(self, stored: tuple[int, ...]) -> tuple[int, ...]:
        """The case's shape for a stored ``(X, Y, Z, …)`` shape (axes beyond the third kept)."""
        return tuple(self._permute(stored))

    def zooms(self, stored: Sequence[float]) -> tuple[float, float, float]:
        """The voxel size along the case's axes, for the stored axes' ``(dx, dy, dz)``."""
        x, y, z = self._permute([float(v) for v in stored[:3]])
        return x, y, z

    def _apply(self, volume: np.ndarray, ornt: np.ndarray) -> np.ndarray:
        # nibabel reorients the first axes: move any leading channel axes behind the spatial ones.
        leading = volume.ndim - 3
        spatial_first = np.moveaxis(volume, tuple(range(leading)), tuple(range(-leading, 0)))
        out = nib.orientations.apply_orientation(spatial_first, ornt)
        return np.ascontiguousarray(
            np.moveaxis(out, tuple(range(3, 3 + leading)), tuple(range(leading)))
        )

    def to_case(self, volume: np.ndarray) -> np.ndarray:
        """``(…, X, Y, Z)`` in the stored order → the case's order (leading axes kept)."""
        if self.is_identity:
            return volume
        return self._apply(volume, np.array(self.ornt))

    def to_stored(self, volume: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_case`."""
        if self.is_identity:
            return volume
        identity = np.array([[0, 1], [1, 1], [2, 1]])
        return self._apply(volume, nib.orientations.ornt_transform(identity, np.array(self.ornt)))


def case_shape(path: Path) -> tuple[int, ...]:
    """The shape of the case whose reference image is ``path``: :func:`read_shape` in the
    :class:`CaseOrientation` order (from the header alone)."""
    return CaseOrientation.of(path).shape(read_shape(path))


@dataclass(frozen=True)
class PredictionTarget:
    """Where a case's prediction is written, relative to the prediction folder.

    Attributes:
        path: Relative file path, named the way the dataset's challenge evaluator reads it
            (ISLES 2018: ``SMIR.<method>.<id>.nii``; ATLAS R2.0: a BIDS derivative).
        sidecars: ``(relative path, text)`` files the evaluator expects beside the
            predictions (e.g. a BIDS ``dataset_description.json``), written once.
    """

    path: str
    sidecars: tuple[tuple[str, str], ...] = ()


def write_like(volume: np.ndarray, reference: Path, path: Path, dtype: Any) -> Path:
    """Write ``volume`` with ``reference``'s header, atomically (temporary file, then rename).

    Args:
        volume: ``(X, Y, Z)`` on the reference's case grid (:class:`CaseOrientation`); it is
            written in the file's own voxel order.
        reference: The source image whose qform/sform (and codes) and pixdim are copied, so
            the written file lies on exactly its grid for nibabel, ITK and the challenges'
            evaluators.
        path: Output file (``.nii`` or ``.nii.gz``); parent folders are created.
        dtype: Data type on disk (``np.uint8`` masks, ``np.float32`` probabilities).

    Returns:
        ``path``.

    Raises:
        ValueError: If ``volume``'s shape differs from the reference's (a bug upstream).
    """
    source = _open(reference)
    volume = CaseOrientation.of(reference).to_stored(volume)
    if tuple(volume.shape) != tuple(source.shape[:3]):
        raise ValueError(
            f"Refusing to write {path}: volume shape {tuple(volume.shape)} differs from the "
            f"source image {reference} {tuple(source.shape[:3])}."
        )
    header = source.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    if len(header.get_data_shape()) > 3:
        header.set_data_shape(volume.shape)
    image = nib.Nifti1Image(np.asarray(volume, dtype=dtype), None, header)
    image.set_qform(*source.header.get_qform(coded=True))
    image.set_sform(*source.header.get_sform(coded=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        nib.save(image, str(tmp))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
