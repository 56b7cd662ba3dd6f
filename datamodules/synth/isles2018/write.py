"""Writing an ISLES 2018 twin: uncompressed NIfTI with the real header quirk, and the extras.

Every volume is an uncompressed ``.nii`` whose header repeats the real archives' quirk
(``docs/datasets.md`` §4.3): ``pixdim`` holds the true spacing (and the frame duration of the
4D series), the qform is ``diag(spacing)``, and the sform is the identity, so readers that trust
the affine see a 1 mm grid. Besides the cases, the extract root holds ``TRAINING/``,
``TESTING/`` (even when a split has no case) and a ``__MACOSX/`` folder with AppleDouble junk
that readers must skip, as in the real zip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from datamodules.isles2018_cases import SPLITS, CaseInfo
from datamodules.synth import common
from datamodules.synth.common import Size
from datamodules.synth.isles2018 import plan, render
from datamodules.synth.isles2018.anatomy import TINY_MAX_SLICES, Geometry

GENERATOR_VERSION = 1


def _write_nifti(
    path: Path, data: np.ndarray, spacing: tuple[float, ...], frame_seconds: float | None
) -> None:
    """Write with the real quirk: pixdim = spacing, qform diag(spacing), sform identity."""
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_qform(np.diag([*spacing, 1.0]), code=2)
    header.set_sform(np.eye(4), code=2)
    zooms = tuple(spacing) if frame_seconds is None else (*spacing, frame_seconds)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = b"synthetic ISLES2018 twin (lightning-data)"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, None, header=header), path)


def _write_case(
    root: Path, row: CaseInfo, images: dict[str, np.ndarray], geometry: Geometry, dwi: bool
) -> int:
    """Write every file of one case under ``root``; return the bytes written."""
    written = 0
    for modality, relative in plan.case_files(row, dwi).items():
        path = root / relative
        data = images[modality]
        seconds = geometry.frame_seconds if data.ndim == 4 else None
        _write_nifti(path, data, geometry.spacing, seconds)
        written += path.stat().st_size
    return written


def _split_summary(rows: Sequence[CaseInfo], size: Size) -> dict[str, dict[str, Any]]:
    """Cases, patients and slices written per split."""
    splits = {}
    for split in SPLITS:
        chosen = [row for row in rows if row.split == split]
        slices = sum(
            min(r.shape[2], TINY_MAX_SLICES) if size == "tiny" else r.shape[2] for r in chosen
        )
        splits[split] = {
            "cases": [row.case for row in chosen],
            "patients": len({row.patient for row in chosen}),
            "slices": slices,
        }
    return splits


class _ISLES2018Twin(common.Twin):
    """An ISLES 2018 twin, written case by case (both slabs of a patient in turn)."""

    generator = "datamodules.synth.isles2018"
    version = GENERATOR_VERSION
    unit = "case"

    def __init__(
        self, cases: int | None, testing_cases: int | None, seed: int, size: Size, dwi: bool
    ) -> None:
        super().__init__("ISLES 2018", seed, size)
        self.cases, self.testing_cases, self.dwi = cases, testing_cases, dwi
        self.rows: list[CaseInfo] = []

    def check_arguments(self) -> None:
        plan.check_counts(self.cases, self.testing_cases)

    def plan_units(self) -> int:
        self.rows = plan.plan_cases(self.cases, self.testing_cases, self.seed)
        return len(self.rows)

    def write_units(self, build: Path) -> Iterator[int]:
        for slabs in plan.patients(self.rows):
            cases = render.render_patient(slabs, self.seed, self.size, self.dwi)
            for row, geometry, images in cases:
                yield _write_case(build, row, images, geometry, self.dwi)

    def write_extras(self, build: Path) -> int:
        for split in SPLITS:
            (build / split).mkdir(exist_ok=True)
        (build / "__MACOSX" / "TRAINING").mkdir(parents=True)
        (build / "__MACOSX" / "TRAINING" / "._case_1").write_bytes(common.APPLE_DOUBLE)
        return 0

    def summary(self, nifti_bytes: int) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "size": self.size,
            "dwi": self.dwi,
            "nifti_bytes": nifti_bytes,
            "splits": _split_summary(self.rows, self.size),
        }


def write_isles2018_twin(
    root: Path,
    cases: int | None = None,
    testing_cases: int | None = None,
    seed: int = 0,
    size: Size = "full",
    dwi: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic ISLES 2018 extract root (``TRAINING/``, ``TESTING/``, ``__MACOSX/``).

    The twin is built in a hidden sibling directory and renamed into place at the end, so an
    interrupted run leaves no half-written twin behind (:func:`.common.write_twin`).

    Args:
        root: Directory to create (its parents are created too). It may exist if empty.
        cases: Training cases to write, chosen by :func:`.plan.select_cases` as whole patients
            (so one more when the last patient has two slabs); ``None`` writes all 94.
        testing_cases: Testing cases, chosen the same way; ``None`` writes all 62 when
            ``cases`` is ``None`` and 4 otherwise.
        seed: Seed for case selection, anatomy, lesions and noise. Same arguments, same bytes.
        size: ``"full"`` (the real 256×256 layout) or ``"tiny"`` (32×32, ≤ 4 slices,
            ≤ 6 frames; for tests only).
        dwi: Also write the optional ``MR_DWI`` folder in every training case.
        overwrite: Replace an existing non-empty ``root``; only a previous twin (one holding
            ``SYNTHETIC_TWIN.json``) is ever replaced.
        progress: Show a tqdm bar over cases on stderr.

    Returns:
        ``root``.

    Raises:
        ValueError: If a count, the seed or the size is out of range.
        FileExistsError: If ``root`` is not empty and ``overwrite`` is false, or is not a twin.
        NotADirectoryError: If ``root`` is a file.
    """
    twin = _ISLES2018Twin(cases, testing_cases, seed, size, dwi)
    return common.write_twin(twin, root, overwrite, progress)
