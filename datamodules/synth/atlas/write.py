"""Writing an ATLAS twin: gzipped NIfTI, the release's tables and the dot-files readers skip.

Every volume is a ``.nii.gz`` gzipped with mtime 0 (so the bytes do not depend on the clock)
whose ``qform``/``sform`` codes are 4 (MNI152); the real codes are unknown
(``docs/datasets.md`` §6). Besides the scans:

* R1.1: ``ATLAS_R1.1/`` holds the 15-column metadata CSV (ids without leading zeros, Session
  with a leading space, quoted fields with commas; ``docs/datasets.md`` §1.4).
* R1.2: nothing; the archive's ``.xlsx`` sheets are not written.
* R2.0: ``ATLAS_2/`` holds the SupplementaryInfo CSV, a CSV export of the MetaData sheet and the
  template ``MNI152NLin2009aSym.nii.gz``; every cohort folder holds the same
  ``dataset_description.json`` and a ``.DS_Store``, and an AppleDouble file sits next to the
  first T1, as the real tarball carries hidden files. MetaData column names beyond the first
  seven (the six a public loader reads, and Session; ``docs/datasets.md`` §3.2) are
  placeholders.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.synth import common
from datamodules.synth.atlas import anatomy, plan
from datamodules.synth.atlas.anatomy import Lesion
from datamodules.synth.atlas.plan import Release, Scan
from datamodules.synth.common import Size

GENERATOR_VERSION = 1
GZIP_LEVEL = 1  # the T1 noise is incompressible anyway; level 6 costs 2× the time for ~3 %
R11_CSV = "ATLAS_Meta-Data_Release_1.1_standard_mni.csv"
R11_HEADER = (
    "INDI Site ID", "INDI Subject ID", "Session", "# Strokes LH Cortical",
    "# Strokes LH subcortical", "# Strokes RH Cortical", "# Strokes RH subcortical",
    "Other Location", "Stroke type", "Primary Stroke Location",
    "Primary Stroke Location Hemisphere", "Vascular territory", "PVH", "DWMH", "Notes",
)  # fmt: skip
R20_SUPPLEMENTARY = "20211112_ATLAS_2.0_SupplementaryInfo.csv"
R20_METADATA = "20220425_ATLAS_2.0_MetaData.csv"
R20_TEMPLATE = "MNI152NLin2009aSym.nii.gz"

# Only the first seven names are known (docs/datasets.md §3.2); the cohort sits at index 23,
# where an X-Net port reads it.
_R20_METADATA_HEADER = (
    "Subject ID", "Session", "# Lesions LH Cortical and White Matter", "# Lesions LH Subcortical",
    "# Lesions RH Cortical and White Matter", "# Lesions RH Subcortical",
    "# Lesions Other Location", *(f"Unspecified {i:02d}" for i in range(7, 23)), "Site",
)  # fmt: skip


def _nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    return common.nifti_gz_bytes(
        data, affine, 4, b"synthetic ATLAS twin (lightning-data)", GZIP_LEVEL
    )


_write = common.write_file


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _lesion_counts(lesions: list[Lesion]) -> list[str]:
    """Lesions per hemisphere: left cortical, left subcortical, right cortical, right subcortical."""
    return [
        str(sum(lesion.left == left and lesion.cortical == cortical for lesion in lesions))
        for left, cortical in ((True, True), (True, False), (False, True), (False, False))
    ]


def _r11_csv_row(scan: Scan, lesions: list[Lesion]) -> list[str]:
    if scan.csv_row is None:
        raise ValueError(f"{scan.folder} is not an R1.1 scan: it has no metadata row")
    site, subject_id, session = scan.csv_row
    main = lesions[0]
    location = "Frontal, parietal" if main.cortical else "Basal ganglia, corona radiata"
    territory = "MCA" if main.cortical else "Lacunar"
    return [
        f"Site{site}", str(subject_id), f" {session}", *_lesion_counts(lesions), "0", "Embolic",
        location, "Left" if main.left else "Right", territory, "1", "1", "",
    ]  # fmt: skip


def _r20_metadata_row(scan: Scan, lesions: list[Lesion]) -> list[str]:
    sub, cohort = scan.stem.split("_")[0], scan.folder.split("/")[2]
    return [sub, "ses-1", *_lesion_counts(lesions), "0", *([""] * 16), cohort]


def _r20_extras(
    build: Path, scans: list[Scan], lesions_of: dict[Scan, list[Lesion]], size: Size
) -> int:
    base = build / "ATLAS_2"
    written = 0
    rows = [_r20_metadata_row(scan, lesions_of[scan]) for scan in scans if scan.split == "Training"]
    written += _write(base / R20_METADATA, _csv_text(_R20_METADATA_HEADER, rows).encode())
    supplementary = [
        [scan.stem.split("_")[0], "ses-1", scan.folder.split("/")[2], scan.split] for scan in scans
    ]
    text = _csv_text(("Subject ID", "Session", "Site", "Split"), supplementary)
    written += _write(base / R20_SUPPLEMENTARY, text.encode())
    grid = anatomy.template_grid(size)
    template = (grid.t1 * np.float32(100.0)).astype(np.float32)
    written += _write(base / R20_TEMPLATE, _nifti_bytes(template, grid.affine))
    description = json.dumps(
        {
            "Name": "ATLAS R2.0 (synthetic twin)",
            "BIDSVersion": "1.6.0",
            "DatasetType": "derivative",
        },
        indent=2,
    ).encode()
    for cohort in sorted({scan.folder.rsplit("/", 3)[0] for scan in scans}):
        written += _write(build / cohort / "dataset_description.json", description)
        _write(build / cohort / ".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(24))
    first = scans[0]
    t1_name, _ = plan.file_names("R2.0", first.stem, 0)
    _write(build / first.folder / f"._{t1_name}", common.APPLE_DOUBLE)
    return written


class _AtlasTwin(common.Twin):
    """An ATLAS twin of one release, written scan by scan, then the release's tables."""

    generator = "datamodules.synth.atlas"
    version = GENERATOR_VERSION
    unit = "scan"

    def __init__(
        self, release: Release, subjects: int, testing_subjects: int, seed: int, size: Size
    ) -> None:
        super().__init__(f"ATLAS {release}", seed, size)
        self.release, self.subjects, self.testing_subjects = release, subjects, testing_subjects
        self.scans: list[Scan] = []
        self.lesions_of: dict[Scan, list[Lesion]] = {}
        self.lesion_voxels: dict[str, int] = {}

    def check_arguments(self) -> None:
        plan.check_counts(self.release, self.subjects, self.testing_subjects)

    def plan_units(self) -> int:
        self.scans = plan.plan_scans(self.release, self.subjects, self.testing_subjects, self.seed)
        return len(self.scans)

    def write_units(self, build: Path) -> Iterator[int]:
        affine = anatomy.template_grid(self.size).affine
        for scan in self.scans:
            t1, masks, self.lesions_of[scan] = anatomy.render_scan(
                self.release, scan, self.seed, self.size
            )
            t1_name, mask_names = plan.file_names(self.release, scan.stem, scan.mask_files)
            written = 0
            for name, volume in zip([t1_name, *mask_names], [t1, *masks], strict=True):
                written += _write(build / scan.folder / name, _nifti_bytes(volume, affine))
            if masks:
                union = np.logical_or.reduce([mask > 0 for mask in masks])
                self.lesion_voxels[scan.folder] = int(union.sum())
            yield written

    def write_extras(self, build: Path) -> int:
        if self.release == "R1.1":
            rows = [_r11_csv_row(scan, self.lesions_of[scan]) for scan in self.scans]
            text = _csv_text(R11_HEADER, rows)
            return _write(build / "ATLAS_R1.1" / R11_CSV, text.encode())
        if self.release == "R2.0":
            return _r20_extras(build, self.scans, self.lesions_of, self.size)
        return 0

    def summary(self, nifti_bytes: int) -> dict[str, Any]:
        splits = {}
        for split in ("Training", "Testing"):
            chosen = [scan for scan in self.scans if scan.split == split]
            if chosen:
                splits[split] = {
                    "subjects": len({scan.subject for scan in chosen}),
                    "scans": [scan.folder for scan in chosen],
                    "mask_files": sum(scan.mask_files for scan in chosen),
                }
        return {
            "release": self.release,
            "seed": self.seed,
            "size": self.size,
            "shape": list(anatomy.template_grid(self.size).t1.shape),
            "nifti_bytes": nifti_bytes,  # with the tables and dataset_description.json
            "lesion_voxels": self.lesion_voxels,
            "splits": splits,
        }


def write_atlas_twin(
    root: Path,
    release: Release,
    subjects: int,
    testing_subjects: int = 0,
    seed: int = 0,
    size: Size = "full",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic ATLAS extract root ``root`` holding one release's exact layout.

    The twin is built in a hidden sibling directory and renamed into place at the end, so an
    interrupted run leaves no half-written twin behind (:func:`.common.write_twin`).

    Args:
        root: Directory to create (its parents are created too); it may exist if empty. The
            release folder (``ATLAS_R1.1/``, ``atlas_standard/``, ``ATLAS_2/``) goes inside it,
            so ``root`` is what :func:`datamodules.atlas_reader.scan_atlas` takes.
        release: ``"R1.1"``, ``"R1.2"`` or ``"R2.0"``.
        subjects: Training subjects (R1.1 ≤ 220, R1.2 ≤ 239, R2.0 ≤ 655). R1.x subjects with a
            second session bring two scans.
        testing_subjects: R2.0 ``Testing/`` subjects (T1w only, ≤ 300); must be 0 for R1.x.
        seed: Seed for anatomy, lesions and noise. Same arguments, same bytes.
        size: ``"full"`` (197×233×189, 1 mm) or ``"tiny"`` (40×47×38, 5 mm; tests only).
        overwrite: Replace an existing non-empty ``root``; only a previous twin (one holding
            ``SYNTHETIC_TWIN.json``) is ever replaced.
        progress: Show a tqdm bar over scans on stderr.

    Returns:
        ``root``.

    Raises:
        ValueError: If the release, a count, the seed or the size is out of range.
        FileExistsError: If ``root`` is not empty and ``overwrite`` is false, or is not a twin.
        NotADirectoryError: If ``root`` is a file.
    """
    twin = _AtlasTwin(release, subjects, testing_subjects, seed, size)
    return common.write_twin(twin, root, overwrite, progress)
