"""Synthetic twins of the ATLAS R1.1, R1.2 and R2.0 extracts, in their exact on-disk layouts.

The twin copies the real layout (``docs/datasets.md`` §1–3 and §5) under ``DIR``, the folder an
archive is extracted into, which is also the ``root`` that :mod:`datamodules.atlas_reader`
takes: ``DIR/ATLAS_R1.1/`` (R1.1), ``DIR/atlas_standard/`` (R1.2) or ``DIR/ATLAS_2/`` (R2.0),
with the real folder and file names, dtypes, 197×233×189 1 mm grid, metadata tables and
mask-value quirks. The images are synthetic: anatomy is the MNI152 2009a template bundled with
nilearn, lesions are T1-hypointense blobs, and no real patient data is involved.
``SYNTHETIC_TWIN.json`` at the root says so.

Every voxel depends only on ``(seed, release, subject, session)`` and the size, never on how
many subjects were asked for, and the files are byte-identical between runs (gzip mtime 0).
``size="tiny"`` (40×47×38 at 5 mm) is for tests only.

Modules:
    plan: Which subjects and scans, their folders, file names, mask styles and random streams.
    anatomy: The T1 and mask volumes of a scan: template grid, bias, noise, lesions, mask values.
    write: The gzipped NIfTI files, the release's tables and dot-files, and
        :func:`write_atlas_twin`.
"""

from datamodules.synth.atlas.anatomy import NEAR_ONE, TINY_STEP, lesion_volume_mm3
from datamodules.synth.atlas.plan import (
    HUNDREDTH_SUBJECT,
    LIMITS,
    R11_SECOND_SESSION,
    R11_SITES,
    R12_COHORTS,
    R12_FOLDER,
    R20_TESTING_COHORTS,
    R20_TESTING_FIRST_NUMBER,
    R20_TRAINING_COHORTS,
    RELEASES,
    Release,
    Scan,
    plan_scans,
)
from datamodules.synth.atlas.write import (
    GENERATOR_VERSION,
    GZIP_LEVEL,
    R11_CSV,
    R11_HEADER,
    R20_METADATA,
    R20_SUPPLEMENTARY,
    R20_TEMPLATE,
    write_atlas_twin,
)
from datamodules.synth.common import MARKER_FILE, Size

__all__ = [
    "GENERATOR_VERSION",
    "GZIP_LEVEL",
    "HUNDREDTH_SUBJECT",
    "LIMITS",
    "MARKER_FILE",
    "NEAR_ONE",
    "R11_CSV",
    "R11_HEADER",
    "R11_SECOND_SESSION",
    "R11_SITES",
    "R12_COHORTS",
    "R12_FOLDER",
    "R20_METADATA",
    "R20_SUPPLEMENTARY",
    "R20_TEMPLATE",
    "R20_TESTING_COHORTS",
    "R20_TESTING_FIRST_NUMBER",
    "R20_TRAINING_COHORTS",
    "RELEASES",
    "TINY_STEP",
    "Release",
    "Scan",
    "Size",
    "lesion_volume_mm3",
    "plan_scans",
    "write_atlas_twin",
]
