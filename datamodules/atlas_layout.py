"""The three ATLAS layouts (R1.1, R1.2, R2.0): their names and how to tell which one a folder holds.

The folder structures, file-name patterns and the release detection that
:mod:`datamodules.atlas_reader` scans with (docs/datasets.md §1–3). Nothing here opens a file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core.errors import ConfigurationError, DatasetNotFoundError

ATLAS_RELEASES = ("R1.1", "R1.2", "R2.0")
SPLITS = ("Training", "Testing")
RELEASE_FOLDERS = {"R1.1": "ATLAS_R1.1", "R2.0": "ATLAS_2"}

SYNTH_HINT = "lightning-data synth atlas {root} --release R2.0 --subjects 20 --seed 0"

EXPECTED_LAYOUTS = """\
  R1.1: <root>/ATLAS_R1.1/Site<k>/<NNNNNN>/t0<1|2>/<NNNNNN>_t1w_deface_stx.nii.gz
            + one or more <NNNNNN>_LesionSmooth[_<k>]_stx.nii.gz
  R1.2: <root>/<folder>/c<NNNN>/c<NNNN>s<NNNN>t<NN>/c<NNNN>s<NNNN>t<NN>_t1w_stx.nii.gz
            + one or more c<NNNN>s<NNNN>t<NN>_LesionSmooth[_<k>]_stx.nii.gz
  R2.0: <root>/ATLAS_2/Training/R<NNN>/sub-r<NNN>s<NNN>/ses-1/anat/
            sub-r<NNN>s<NNN>_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
            + sub-r<NNN>s<NNN>_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz
        (and <root>/ATLAS_2/Testing/... with the T1w only)"""

R11_SCAN_RE = re.compile(r"^Site(?P<site>[1-9])/(?P<sid>\d{6})/(?P<ses>t0[12])$")
R11_T1_RE = re.compile(r"^(?P<sid>\d{6})_t1w_deface_stx\.nii\.gz$")
R11_T1 = "{id}_t1w_deface_stx.nii.gz"
R11_MASK_RE = re.compile(r"^(?P<sid>\d{6})_LesionSmooth(?:_(?P<k>\d+))?_stx\.nii\.gz$")
R12_COHORT_RE = re.compile(r"^c\d{4}$")
R12_SCAN_RE = re.compile(r"^c(?P<c>\d{4})/c(?P=c)s(?P<s>\d{4})t(?P<t>\d{2})$")
R12_T1_RE = re.compile(r"^(?P<scan>c\d{4}s\d{4}t\d{2})_t1w_stx\.nii\.gz$")
R12_T1 = "{id}_t1w_stx.nii.gz"
R12_MASK_RE = re.compile(
    r"^(?P<scan>c\d{4}s\d{4}t\d{2})_LesionSmooth(?:_(?P<k>\d+))?_stx\.nii\.gz$"
)
R20_COHORT_RE = re.compile(r"^R\d{3}$")
R20_SUBJECT_RE = re.compile(
    r"^(?P<split>Training|Testing)/R(?P<site>\d{3})/sub-r(?P=site)s(?P<n>\d{3})/ses-1/anat$"
)
R20_T1 = "{sub}_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"
R20_MASK = "{sub}_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz"
R12_SEARCH_DEPTH = 4  # <root>/ATLAS R 1.2/standard_MNI/standard_part1/c0001


#: Folders an archive tool adds beside the release's own: macOS's zip keeps its AppleDouble
#: ``._*`` files in a ``__MACOSX/`` copy of the tree, which holds no image.
ARCHIVE_JUNK_FOLDERS = frozenset({"__MACOSX"})


def visible_dirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that can hold the release's data, sorted: neither
    dot-folders nor :data:`ARCHIVE_JUNK_FOLDERS`; none if ``folder`` cannot be listed."""
    try:
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in ARCHIVE_JUNK_FOLDERS
        )
    except OSError:
        return []


def _r11_dir(root: Path) -> Path | None:
    for candidate in (root / RELEASE_FOLDERS["R1.1"], root):
        if any(re.fullmatch(r"Site[1-9]", d.name) for d in visible_dirs(candidate)):
            return candidate
    return None


def _r20_dir(root: Path) -> Path | None:
    for candidate in (root / RELEASE_FOLDERS["R2.0"], root):
        if any((candidate / split).is_dir() for split in SPLITS):
            return candidate
    return None


def r12_cohort_parents(root: Path) -> list[Path]:
    """Folders (at most a few levels below ``root``) that hold ``c<NNNN>`` cohort folders."""
    parents, frontier = [], [root]
    for _ in range(R12_SEARCH_DEPTH):
        next_frontier = []
        for folder in frontier:
            children = visible_dirs(folder)
            if any(R12_COHORT_RE.match(child.name) for child in children):
                parents.append(folder)
                continue
            next_frontier.extend(children)
        frontier = next_frontier
    return sorted(parents)


def _r12_dir(root: Path) -> Path | None:
    parents = r12_cohort_parents(root)
    return Path(os.path.commonpath(parents)) if parents else None


_DETECTORS = {"R1.1": _r11_dir, "R1.2": _r12_dir, "R2.0": _r20_dir}


def not_found(root: Path, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"ATLAS data not found: {root.resolve()} {what}.\n"
        f"Expected one of the layouts of the official releases, under the folder the archive "
        f"was extracted into:\n{EXPECTED_LAYOUTS}\n"
        f"Extract the real data there (or point the data directory at it), or write a synthetic "
        f"twin with the same layout:\n  {SYNTH_HINT.format(root=root)}"
    )


def detect_release(root: str | Path) -> str:
    """Tell which ATLAS release ``root`` holds, from its folder structure alone.

    Returns:
        One of :data:`ATLAS_RELEASES`.

    Raises:
        DatasetNotFoundError: If no layout matches; lists the three layouts and the synth command.
        ConfigurationError: If ``root`` holds several releases (pass ``release`` then).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise not_found(root, "does not exist" if not root.exists() else "is not a directory")
    found = [release for release, detect in _DETECTORS.items() if detect(root) is not None]
    if not found:
        raise not_found(root, "matches none of the ATLAS R1.1, R1.2 or R2.0 layouts")
    if len(found) > 1:
        raise ConfigurationError(
            f"{root} holds several ATLAS releases ({', '.join(found)}); choose one with "
            f"data.init_args.release (one of {', '.join(found)})."
        )
    return found[0]


def check_atlas_root(root: str | Path, release: str | None = None) -> tuple[Path, str]:
    """Fail fast (no file decoding) if ``root`` does not hold an ATLAS release.

    Args:
        root: The extract folder (parent of ``ATLAS_R1.1/``, the R1.2 folder or ``ATLAS_2/``)
            or the release folder itself.
        release: One of :data:`ATLAS_RELEASES`, or ``None`` to detect it.

    Returns:
        ``(release_dir, release)``: the folder the release's relative paths start from
        (``…/ATLAS_R1.1``, the common parent of the R1.2 cohort folders, ``…/ATLAS_2``) and the
        release.

    Raises:
        DatasetNotFoundError: If the layout is not found.
        ConfigurationError: If ``release`` is unknown, or ``None`` and several releases are present.
    """
    root = Path(root).expanduser()
    if release is None:
        release = detect_release(root)
    if release not in ATLAS_RELEASES:
        raise ConfigurationError(
            f"release must be one of {ATLAS_RELEASES}, got {release!r} (data.init_args.release)."
        )
    found = _DETECTORS[release](root) if root.is_dir() else None
    if found is None:
        what = "does not exist" if not root.exists() else f"has no ATLAS {release} layout"
        raise not_found(root, what)
    return found, release
