"""Synthetic twin of the ISLES 2018 CT-perfusion archives (``TRAINING/``, ``TESTING/``).

The twin copies the real on-disk layout (``docs/datasets.md`` §4.2–4.4 and §5): folder and
file names with the real SMIR ids, uncompressed ``.nii``, per-modality dtypes, 256×256×Z slabs
with the Z, frame count and voxel spacing of each case's row in the case table, the
pixdim-versus-identity-sform header quirk, the real two-slab patient pairing and a
``__MACOSX/`` folder that readers must skip. The images are synthetic: anatomy is resampled from
the MNI152 2009a template bundled with nilearn, lesions are smooth blobs with a hypoperfused
penumbra, and no real patient data is involved. ``SYNTHETIC_TWIN.json`` at the root says so.

Every voxel value depends only on ``(seed, split, case/patient)`` and the size, never on which
other cases were selected, and the files are byte-identical between runs. ``size="tiny"`` is
for tests only and breaks the real layout on purpose (32×32 in-plane, ≤ 4 slices, ≤ 6 frames).

Modules:
    plan: Which cases (whole patients, stratified by slab protocol), their ids, file names,
        dtypes and random streams.
    anatomy: A synthetic patient: pose, physiology, slab geometry, sampled anatomy, lesions.
    render: The modality volumes of a patient's cases (CT, perfusion maps, 4D series, OT, DWI).
    write: The NIfTI files with the header quirk, the extras, and :func:`write_isles2018_twin`.
"""

from datamodules.synth.common import MARKER_FILE, Size
from datamodules.synth.isles2018.plan import (
    DEFAULT_TESTING_CASES_WITH_SUBSET,
    DWI_ID_OFFSET,
    MODALITY_DTYPES,
    file_ids,
    select_cases,
)
from datamodules.synth.isles2018.write import GENERATOR_VERSION, write_isles2018_twin

__all__ = [
    "DEFAULT_TESTING_CASES_WITH_SUBSET",
    "DWI_ID_OFFSET",
    "GENERATOR_VERSION",
    "MARKER_FILE",
    "MODALITY_DTYPES",
    "Size",
    "file_ids",
    "select_cases",
    "write_isles2018_twin",
]
