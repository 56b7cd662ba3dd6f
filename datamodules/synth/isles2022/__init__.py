"""Synthetic twin of the ISLES 2022 training release (BIDS: ``rawdata/``, ``derivatives/``).

The twin copies the release's layout (:mod:`datamodules.isles2022_layout`): per case
``sub-strokecase<NNNN>/ses-0001`` with DWI (b = 1000) and ADC on one grid, FLAIR on its own
grid (resolution, orientation and field of view: never co-registered), JSON sidecars, the
lesion mask on the DWI grid under ``derivatives/``, and ``dataset_description.json``,
``participants.tsv`` and ``README`` at the root. Three invented centres differ in scanner, grids,
on-disk dtypes (int16 or float32 images; uint8, float32 or float64 masks) and affines, which are
scanner-like: oblique, not at the corner, sform and qform set. The images are synthetic:
anatomy is the MNI152 2009a template bundled with nilearn in a per-case pose, lesions are
DWI-bright and ADC-dark blobs of realistic sizes (a few voxels to 150 ml, up to 6 per case), and
no real patient data is involved. ``SYNTHETIC_TWIN.json`` at the root says so and records each
case's geometry and lesions.

Every voxel depends only on ``(seed, case)`` and the size, never on how many cases were asked
for, and the files are byte-identical between runs (gzip mtime 0). ``size="tiny"`` (DWI about
24×24×8) is for tests only.

Modules:
    plan: The cases, their centres (scanner, grids, dtypes, timing) and random streams.
    anatomy: Pose, grids, template sampling, and lesions drawn and rendered in the template.
    render: The DWI, ADC, FLAIR and mask volumes of a case, with contrast, bias and noise.
    write: The NIfTI files, sidecars and BIDS files, and :func:`write_isles2022_twin`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datamodules.synth.common import MARKER_FILE, Size
    from datamodules.synth.isles2022.plan import (
        CENTRES,
        DEFAULT_CASES,
        MAX_CASES,
        Centre,
        plan_cases,
    )
    from datamodules.synth.isles2022.write import (
        GENERATOR_VERSION,
        PARTICIPANTS,
        README,
        write_isles2022_twin,
    )

__all__ = [
    "CENTRES",
    "DEFAULT_CASES",
    "GENERATOR_VERSION",
    "MARKER_FILE",
    "MAX_CASES",
    "PARTICIPANTS",
    "README",
    "Centre",
    "Size",
    "plan_cases",
    "write_isles2022_twin",
]

_HOMES = {
    "MARKER_FILE": "datamodules.synth.common",
    "Size": "datamodules.synth.common",
    "CENTRES": "datamodules.synth.isles2022.plan",
    "DEFAULT_CASES": "datamodules.synth.isles2022.plan",
    "MAX_CASES": "datamodules.synth.isles2022.plan",
    "Centre": "datamodules.synth.isles2022.plan",
    "plan_cases": "datamodules.synth.isles2022.plan",
    "GENERATOR_VERSION": "datamodules.synth.isles2022.write",
    "PARTICIPANTS": "datamodules.synth.isles2022.write",
    "README": "datamodules.synth.isles2022.write",
    "write_isles2022_twin": "datamodules.synth.isles2022.write",
}


def __getattr__(name: str) -> Any:
    # Lazy: `lightning-data synth isles2022 --help` reads the case limits without importing the
    # renderer (SciPy's image filters).
    if name not in _HOMES:
        raise AttributeError(f"module 'datamodules.synth.isles2022' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
