"""Writing an ISLES 2022 twin: gzipped NIfTI with scanner affines, JSON sidecars, BIDS files.

Every volume is a ``.nii.gz`` gzipped with mtime 0 (so the bytes do not depend on the clock)
whose sform and qform hold the grid's affine with code 1 (scanner), as a DICOM converter writes
them. Each raw image has a JSON sidecar beside it (scanner, field strength, timing,
acquisition). The root holds the BIDS ``dataset_description.json``, ``participants.tsv`` (subject
and centre) and a ``README``; masks sit under ``derivatives/`` without sidecars. Every path comes
from :mod:`datamodules.isles2022_layout`, except ``participants.tsv`` and ``README``, which
the layout does not name and which are spelled here only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from datamodules import isles2022_layout as layout
from datamodules.synth import common
from datamodules.synth.common import Size
from datamodules.synth.isles2022 import plan, render
from datamodules.synth.isles2022.anatomy import Grid
from datamodules.synth.isles2022.plan import Case, Centre
from datamodules.synth.isles2022.render import RenderedCase

GENERATOR_VERSION = 1
GZIP_LEVEL = 1  # noise is incompressible anyway; level 6 costs about 2× the time for a few %
PARTICIPANTS = "participants.tsv"
README = "README"
BIDS_VERSION = "1.7.0"
_GENERATED_BY = "lightning-data synth isles2022"

_IMAGE_TYPE = {
    "DWI": ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"],
    "ADC": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"],
    "FLAIR": ["ORIGINAL", "PRIMARY", "M", "NORM"],
}
_SERIES = {"DWI": "DWI b1000 trace", "ADC": "DWI ADC map", "FLAIR": "FLAIR"}
_README_TEXT = """\
ISLES 2022 (synthetic twin)

This folder has the layout of the ISLES 2022 training release (BIDS: rawdata/ with DWI, ADC and
FLAIR of each case, derivatives/ with the lesion masks), but every image is synthetic: the
anatomy is the MNI152 2009a template bundled with nilearn, the lesions are random ellipsoids,
and no real patient data is involved. SYNTHETIC_TWIN.json says how it was made.
Written by `lightning-data synth isles2022`.
"""


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    return common.nifti_gz_bytes(
        data, affine, 1, b"synthetic ISLES2022 twin (lightning-data)", GZIP_LEVEL
    )


_write = common.write_file


def _json_bytes(content: dict[str, Any]) -> bytes:
    return (json.dumps(content, indent=2) + "\n").encode()


def _sidecar(centre: Centre, channel: str, grid: Grid) -> dict[str, Any]:
    """The scanner metadata of one raw image, in BIDS keys."""
    echo, repetition, inversion = centre.timing[channel]
    spec = centre.flair if channel == "FLAIR" else centre.dwi
    sidecar: dict[str, Any] = {
        "Modality": "MR",
        "MagneticFieldStrength": centre.field_tesla,
        "Manufacturer": centre.manufacturer,
        "SeriesDescription": _SERIES[channel],
        "ImageType": _IMAGE_TYPE[channel],
        "MRAcquisitionType": spec.acquisition,
        "SliceThickness": round(grid.spacing[2], 4),  # the third voxel axis is the slice axis
        "EchoTime": echo,
        "RepetitionTime": repetition,
    }
    if inversion is not None:
        sidecar["InversionTime"] = inversion
    return sidecar


def _geometry(grid: Grid, image: np.ndarray) -> dict[str, Any]:
    """What the marker records of a grid: shape, spacing, axes, obliquity, origin, dtype."""
    directions = grid.affine[:3, :3] / np.array(grid.spacing)
    obliquity = np.degrees(np.arccos(np.clip(np.abs(directions).max(axis=0).min(), 0, 1)))
    return {
        "shape": list(grid.shape),
        "spacing_mm": [round(s, 3) for s in grid.spacing],
        "axes": "".join(nib.aff2axcodes(grid.affine)),
        "obliquity_deg": round(float(obliquity), 1),
        "origin_mm": [round(float(x), 1) for x in grid.affine[:3, 3]],
        "dtype": str(image.dtype),
    }


def _write_case(build: Path, case: Case, rendered: RenderedCase) -> int:
    """Write a case's images, sidecars and mask under ``build``; return the NIfTI bytes."""
    written = 0
    for channel in layout.CHANNELS:
        grid = rendered.grids["FLAIR" if channel == "FLAIR" else "DWI"]
        path = build / layout.raw_path(case.subject, case.session, channel)
        written += _write(path, _nifti_bytes(rendered.images[channel], grid.affine))
        _write(layout.sidecar_path(path), _json_bytes(_sidecar(case.centre, channel, grid)))
    mask = rendered.images[layout.MASK]
    path = build / layout.mask_path(case.subject, case.session)
    return written + _write(path, _nifti_bytes(mask, rendered.grids["DWI"].affine))


class _ISLES2022Twin(common.Twin):
    """An ISLES 2022 twin, written case by case, then the BIDS files at its root."""

    generator = "datamodules.synth.isles2022"
    version = GENERATOR_VERSION
    unit = "case"

    def __init__(self, cases: int, seed: int, size: Size) -> None:
        super().__init__("ISLES 2022", seed, size)
        self.count = cases
        self.cases: list[Case] = []
        self.records: dict[str, dict[str, Any]] = {}

    def check_arguments(self) -> None:
        plan.check_cases(self.count)

    def plan_units(self) -> int:
        self.cases = plan.plan_cases(self.count)
        return len(self.cases)

    def write_units(self, build: Path) -> Iterator[int]:
        for case in self.cases:
            rendered = render.render_case(case, self.seed, self.size)
            self.records[f"sub-{case.subject}"] = {
                "centre": case.centre.name,
                "dwi": _geometry(rendered.grids["DWI"], rendered.images["DWI"]),
                "flair": _geometry(rendered.grids["FLAIR"], rendered.images["FLAIR"]),
                "mask_dtype": str(rendered.images[layout.MASK].dtype),
                "lesions": rendered.lesions,
                "lesion_ml": round(rendered.lesion_ml, 3),
                "lesion_on_flair": rendered.flair_visible,
            }
            yield _write_case(build, case, rendered)

    def write_extras(self, build: Path) -> int:
        description = {
            "Name": "ISLES 2022 (synthetic twin; no real patient data)",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": _GENERATED_BY, "Version": str(GENERATOR_VERSION)}],
        }
        _write(build / layout.DESCRIPTION, _json_bytes(description))
        rows = [f"sub-{case.subject}\t{case.centre.name}\n" for case in self.cases]
        _write(build / PARTICIPANTS, ("participant_id\tsite\n" + "".join(rows)).encode())
        _write(build / README, _README_TEXT.encode())
        return 0

    def summary(self, nifti_bytes: int) -> dict[str, Any]:
        records = list(self.records.values())
        counts = [record["lesions"] for record in records]
        volumes = [record["lesion_ml"] for record in records]
        per_centre = Counter(record["centre"] for record in records)
        training = {
            "cases": len(records),
            "centres": {name: per_centre[name] for name in sorted(per_centre)},
            "lesions": sum(counts),
            "cases_with_several_lesions": sum(count > 1 for count in counts),
            "lesions_per_case": [min(counts), max(counts)],
            "lesion_ml_per_case": [min(volumes), max(volumes)],
        }
        centres = {
            name: {
                "scanner": f"{centre.manufacturer} {centre.field_tesla:g} T",
                "cases": per_centre[name],
            }
            for name, centre in plan.CENTRES.items()
            if per_centre[name]
        }
        return {
            "seed": self.seed,
            "size": self.size,
            "nifti_bytes": nifti_bytes,
            "centres": centres,
            "splits": {"training": training},
            "cases": self.records,
        }


def write_isles2022_twin(
    root: Path,
    cases: int = plan.DEFAULT_CASES,
    seed: int = 0,
    size: Size = "full",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic ISLES 2022 training release (BIDS) at ``root``.

    The twin is built in a hidden sibling directory and renamed into place at the end, so an
    interrupted run leaves no half-written twin behind (:func:`.common.write_twin`).

    Args:
        root: Directory to create (its parents are created too); it may exist if empty. It
            receives ``rawdata/``, ``derivatives/`` and the BIDS files, as the release's root.
        cases: Training cases ``strokecase0001`` … (1 to 250), round-robin over centres A, B, C.
        seed: Seed for pose, grids, lesions, contrast and noise. Same arguments, same bytes, and
            a case's files do not depend on ``cases``.
        size: ``"full"`` (the centres' grids, e.g. DWI 112×112×73 at 2 mm) or ``"tiny"`` (the
            same fields of view on matrices of about 24×24×8; for tests only).
        overwrite: Replace an existing non-empty ``root``; only a previous twin (one holding
            ``SYNTHETIC_TWIN.json``) is ever replaced.
        progress: Show a tqdm bar over cases on stderr.

    Returns:
        ``root`` as an absolute path.

    Raises:
        ValueError: If ``cases``, the seed or the size is out of range.
        FileExistsError: If ``root`` is a file, or is not empty and either ``overwrite`` is
            false or it is not a twin.
    """
    twin = _ISLES2022Twin(cases, seed, size)
    return common.write_twin(twin, root, overwrite, progress)
