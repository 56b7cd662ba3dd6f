"""The MNI152 2009a template shipped inside the nilearn wheel, read without network access.

nilearn carries three 1 mm volumes of the ICBM 2009a nonlinear symmetric template (T1, grey
matter and white matter probability maps; 197×233×189, uint8 0–255, RAS axes, origin
(-98, -134, -72) mm). The synthetic twins build their anatomy from them. Only these bundled
files are read: nilearn's ``fetch_*`` functions, which download, are never called.

The file paths are resolved from nilearn's package folder without importing
``nilearn.datasets``, which costs more than a second of imports and would dominate a tiny
twin; they are the same files as ``nilearn.datasets.MNI152_FILE_PATH``,
``GM_MNI152_FILE_PATH`` and ``WM_MNI152_FILE_PATH``.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage

TemplateVolume = Literal["t1", "gm", "wm"]

_FILE_NAMES: dict[TemplateVolume, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_NILEARN_CONSTANTS: dict[TemplateVolume, str] = {
    "t1": "MNI152_FILE_PATH",
    "gm": "GM_MNI152_FILE_PATH",
    "wm": "WM_MNI152_FILE_PATH",
}

TEMPLATE_SHAPE = (197, 233, 189)


class MNITemplate(NamedTuple):
    """The three template volumes as float32 in [0, 1] (uint8 / 255), read-only.

    Attributes:
        t1: Skull-stripped T1 intensity, exactly 0 outside the brain.
        gm: Grey-matter probability.
        wm: White-matter probability.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray


def _nilearn_data_dir() -> Path | None:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def template_path(volume: TemplateVolume) -> Path:
    """Return the local path of one bundled template file.

    Args:
        volume: ``"t1"``, ``"gm"`` or ``"wm"``.

    Raises:
        ValueError: If ``volume`` is not one of the three names.
        FileNotFoundError: If nilearn is not installed or no longer bundles the file.
    """
    if volume not in _FILE_NAMES:
        raise ValueError(f"unknown template volume {volume!r}; expected one of {list(_FILE_NAMES)}")
    data_dir = _nilearn_data_dir()
    if data_dir is not None and (data_dir / _FILE_NAMES[volume]).is_file():
        return data_dir / _FILE_NAMES[volume]
    try:  # a future nilearn may move its data folder; its public constant still says where
        import nilearn.datasets
    except ImportError as error:
        raise FileNotFoundError(
            "the MNI152 template comes from the nilearn wheel, which is not installed; "
            "run `pip install nilearn`"
        ) from error
    path = Path(getattr(nilearn.datasets, _NILEARN_CONSTANTS[volume]))
    if not path.is_file():
        raise FileNotFoundError(f"nilearn's bundled template file is missing: {path}")
    return path


@lru_cache(maxsize=1)
def template_affine() -> np.ndarray:
    """Return the template's voxel → world (mm) affine, a read-only 4×4 float64 array."""
    affine = np.array(nib.Nifti1Image.from_filename(template_path("t1")).affine, dtype=np.float64)
    affine.setflags(write=False)
    return affine


@lru_cache(maxsize=1)
def load_template() -> MNITemplate:
    """Load T1, GM and WM once per process (≈0.1 s) and return them as float32 in [0, 1].

    The arrays are shared between callers and therefore read-only; copy before editing.

    Raises:
        ValueError: If a file does not have the expected 197×233×189 shape.
    """
    volumes = {}
    for name in _FILE_NAMES:
        path = template_path(name)
        image = nib.Nifti1Image.from_filename(path)
        data = np.asarray(image.dataobj, dtype=np.float32) / np.float32(255.0)
        if data.shape != TEMPLATE_SHAPE:
            raise ValueError(f"{path} has shape {data.shape}, expected {TEMPLATE_SHAPE}")
        data.setflags(write=False)
        volumes[name] = data
    return MNITemplate(**volumes)


@lru_cache(maxsize=1)
def brain_mask() -> np.ndarray:
    """Return the template's brain mask (T1 > 0), a read-only bool array."""
    mask = load_template().t1 > 0
    mask.setflags(write=False)
    return mask


def world_to_voxel(points_mm: np.ndarray) -> np.ndarray:
    """Map world coordinates ``(3, ...)`` in mm to fractional template voxel indices (float64)."""
    inverse = np.linalg.inv(template_affine())
    voxels = np.empty(points_mm.shape, dtype=np.float64)
    for row in range(3):  # elementwise: much faster than a (3, 3) @ (3, N) matmul
        voxels[row] = inverse[row, 3]
        for col in range(3):
            if inverse[row, col] != 0:
                voxels[row] += inverse[row, col] * points_mm[col]
    return voxels


def sample(volume: np.ndarray, points_mm: np.ndarray, order: int = 1) -> np.ndarray:
    """Interpolate a template-grid volume at world coordinates; 0 outside the template box.

    Args:
        volume: Any array on the template grid, shape ``(197, 233, 189)``.
        points_mm: World coordinates in mm, shape ``(3, ...)``.
        order: Spline order (1 = trilinear).

    Returns:
        float32 array of shape ``points_mm.shape[1:]``.
    """
    coords = world_to_voxel(np.asarray(points_mm))
    return ndimage.map_coordinates(
        volume,
        coords,
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=order > 1,
        output=np.float32,
    )
