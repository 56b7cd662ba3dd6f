"""``lightning-data``: data utilities that run outside training.

Usage::

    lightning-data synth isles2018 DIR [--cases N] [--testing-cases M] [--seed S]
                                       [--size {full,tiny}] [--no-dwi] [--overwrite]
    lightning-data synth atlas DIR --release {R1.1,R1.2,R2.0} --subjects N
                                   [--testing-subjects M] [--seed S] [--size {full,tiny}]
                                   [--overwrite]
    lightning-data synth isles2022 DIR [--cases N] [--seed S] [--size {full,tiny}] [--overwrite]
    lightning-data convert-weights SRC DST [--layout {auto,semseg,pytorch-semseg}]
                                           [--backbone-depth {50,101,152}] [--keep-caffe-input]
                                           [--overwrite]

``synth`` writes synthetic twins of the public datasets in their exact on-disk layout, so the
readers, datamodules and experiment configs can be run end to end without the real data.
Each twin is one sub-command of ``synth``. ``DIR`` is always the folder the real archive would
be extracted into (for ATLAS: the parent of ``ATLAS_R1.1/``, ``atlas_standard/`` or
``ATLAS_2/``; for ISLES 2022: the BIDS root holding ``rawdata/`` and ``derivatives/``), and it is
the ``root``/data directory the matching reader takes.

``convert-weights`` turns a downloaded VOC2012 PSPNet checkpoint (hszhao/semseg's
``train_epoch_50.pth`` or pytorch-semseg's ``pspnet_101_pascalvoc.pth``) into the file
``PSPNet(pretrained_weights=DST)`` loads; see docs/pretrained_weights.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cli.errors import USER_ERROR_STATUS, UserArgumentParser, report_user_error


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _disk_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n_bytes < 1000:
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} GB"


def _report(root: Path, marker: str, title: str, describe: Callable[[dict], str]) -> int:
    """Print what a twin writer wrote (from its marker file) and its size on disk."""
    summary = json.loads((root / marker).read_text())
    parts = [f"{split}: {describe(info)}" for split, info in summary["splits"].items()]
    print(f"wrote a synthetic {title} to {root}")
    print(f"{'; '.join(parts)}; {_human(_disk_bytes(root))} on disk")
    return 0


def _synth_isles2018(args: argparse.Namespace) -> int:
    from datamodules.synth.isles2018 import MARKER_FILE, write_isles2018_twin

    root = write_isles2018_twin(
        args.dir,
        cases=args.cases,
        testing_cases=args.testing_cases,
        seed=args.seed,
        size=args.size,
        dwi=args.dwi,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return _report(
        root,
        MARKER_FILE,
        f"ISLES 2018 twin (seed {args.seed}, size {args.size})",
        lambda info: (
            f"{_plural(len(info['cases']), 'case')}, "
            f"{_plural(info['patients'], 'patient')}, {_plural(info['slices'], 'slice')}"
        ),
    )


def _synth_atlas(args: argparse.Namespace) -> int:
    from datamodules.synth.atlas import MARKER_FILE, write_atlas_twin

    root = write_atlas_twin(
        args.dir,
        release=args.release,
        subjects=args.subjects,
        testing_subjects=args.testing_subjects,
        seed=args.seed,
        size=args.size,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    return _report(
        root,
        MARKER_FILE,
        f"ATLAS {args.release} twin (seed {args.seed}, size {args.size})",
        lambda info: (
            f"{_plural(info['subjects'], 'subject')}, "
            f"{_plural(len(info['scans']), 'scan')}, {_plural(info['mask_files'], 'mask file')}"
        ),
    )


def _synth_isles2022(args: argparse.Namespace) -> int:
    from datamodules.synth.isles2022 import MARKER_FILE, write_isles2022_twin

    root = write_isles2022_twin(
        args.dir,
        cases=args.cases,
        seed=args.seed,
        size=args.size,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )

    def describe(info: dict) -> str:
        centres = ", ".join(f"{name} {count}" for name, count in info["centres"].items())
        low, high = info["lesion_ml_per_case"]
        return (
            f"{_plural(info['cases'], 'case')} (centres {centres}), "
            f"{_plural(info['lesions'], 'lesion')} ({info['cases_with_several_lesions']} "
            f"cases with several), {low:g}–{high:g} ml of lesion per case"
        )

    return _report(
        root, MARKER_FILE, f"ISLES 2022 twin (seed {args.seed}, size {args.size})", describe
    )


def _convert_weights(args: argparse.Namespace) -> int:
    from networks.pspnet.convert import convert_file, summarize

    result = convert_file(
        args.src,
        args.dst,
        layout=args.layout,
        backbone_depth=args.backbone_depth,
        keep_caffe_input=args.keep_caffe_input,
        overwrite=args.overwrite,
    )
    print(f"read {args.src}: {result.layout} layout, PSPNet-{args.backbone_depth}")
    if result.layout == "pytorch-semseg":
        kept = "Caffe's BGR, mean-subtracted 0-255 input (kept)"
        converted = "RGB, ImageNet-normalised input (converted from Caffe's BGR, 0-255)"
        print(f"the stem expects {kept if args.keep_caffe_input else converted}")
    print(summarize(result))
    print(f"wrote {args.dst.absolute()}")
    return 0


def _add_convert_weights(commands) -> None:
    convert = commands.add_parser(
        "convert-weights",
        help="convert a public VOC2012 PSPNet checkpoint to the suite's PSPNet layer names",
        description=(
            "Convert a downloaded VOC2012 PSPNet checkpoint to the layer names of "
            "networks/pspnet/model.py and write it to DST, the file the PSPNet experiments read "
            "(model.init_args.net.init_args.pretrained_weights). SRC is hszhao/semseg's .pth "
            "(layer0…, ppm.*, cls.*) or pytorch-semseg's Caffe conversion (convbnrelu1_1…, "
            "res_block2…, pyramid_pooling…). "
            "The 21-class VOC classifiers are dropped; DST is written only after it loads into "
            "PSPNet. Nothing is downloaded; docs/pretrained_weights.md says where the files are."
        ),
    )
    convert.add_argument("src", type=Path, metavar="SRC", help="the downloaded checkpoint")
    convert.add_argument(
        "dst", type=Path, metavar="DST", help="file to write, e.g. weights/pspnet101_voc2012.pth"
    )
    convert.add_argument(
        "--layout",
        choices=("auto", "semseg", "pytorch-semseg"),
        default="auto",
        help="layout of SRC (default: auto, detected from its key names)",
    )
    convert.add_argument(
        "--backbone-depth",
        type=int,
        choices=(50, 101, 152),
        default=101,
        help="ResNet depth of SRC and of the PSPNet that will load DST (default: 101)",
    )
    convert.add_argument(
        "--keep-caffe-input",
        action="store_true",
        help="pytorch-semseg only: keep the stem's Caffe input (BGR, mean-subtracted, 0-255) "
        "instead of converting it to hszhao/semseg's (RGB, ImageNet mean/std)",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    convert.set_defaults(handler=_convert_weights)


def _add_atlas(twins) -> None:
    atlas = twins.add_parser(
        "atlas",
        help="ATLAS R1.1 / R1.2 / R2.0 T1 stroke lesions (ATLAS_R1.1/, atlas_standard/, ATLAS_2/)",
        description=(
            "Write DIR/ATLAS_R1.1/… (R1.1), DIR/atlas_standard/c<NNNN>/… (R1.2) or "
            "DIR/ATLAS_2/{Training,Testing}/… (R2.0) with the real folder and file names, "
            "dtypes, 197×233×189 1 mm grid and mask-value quirks, filled with synthetic anatomy "
            "(MNI152 template) and lesions. DIR is what the ATLAS reader and datamodule take "
            "as their root. DIR/SYNTHETIC_TWIN.json marks it as synthetic."
        ),
    )
    atlas.add_argument("dir", type=Path, metavar="DIR", help="directory to create")
    atlas.add_argument(
        "--release", required=True, choices=("R1.1", "R1.2", "R2.0"), help="layout to write"
    )
    atlas.add_argument(
        "--subjects",
        type=_count,
        required=True,
        metavar="N",
        help="training subjects (R1.1 ≤ 220, R1.2 ≤ 239, R2.0 ≤ 655); R1.x writes one subject "
        "with two sessions, so N+1 scans",
    )
    atlas.add_argument(
        "--testing-subjects",
        type=_count,
        default=0,
        metavar="M",
        help="R2.0 Testing/ subjects, T1w only (default: 0; R1.x has no Testing split)",
    )
    atlas.add_argument("--seed", type=_count, default=0, help="random seed (default: 0)")
    atlas.add_argument(
        "--size",
        choices=("full", "tiny"),
        default="full",
        help="full: the real 197×233×189 1 mm grid (default; about 1 s per subject). tiny: for "
        "tests only; every 5th voxel (40×47×38, 5 mm)",
    )
    atlas.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it already holds a twin"
    )
    atlas.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    atlas.set_defaults(handler=_synth_atlas)


def _add_isles2022(twins) -> None:
    from datamodules.synth.isles2022 import DEFAULT_CASES, MAX_CASES

    isles = twins.add_parser(
        "isles2022",
        help="ISLES 2022 DWI/ADC/FLAIR stroke lesions, BIDS (rawdata/, derivatives/)",
        description=(
            "Write DIR/rawdata/sub-strokecase<NNNN>/ses-0001/{dwi,anat}/… (DWI, ADC, FLAIR, "
            "with JSON sidecars), DIR/derivatives/…_msk.nii.gz and the BIDS files, as in the "
            "ISLES 2022 training release: three centres with their own grids and dtypes, FLAIR "
            "on its own grid, filled with synthetic anatomy (MNI152 template) and DWI-bright, "
            "ADC-dark lesions. DIR/SYNTHETIC_TWIN.json marks it as synthetic."
        ),
    )
    isles.add_argument("dir", type=Path, metavar="DIR", help="directory to create")
    isles.add_argument(
        "--cases",
        type=_count,
        default=DEFAULT_CASES,
        metavar="N",
        help=f"training cases strokecase0001…, 1 to {MAX_CASES}, round-robin over the three "
        f"centres (default: {DEFAULT_CASES})",
    )
    isles.add_argument("--seed", type=_count, default=0, help="random seed (default: 0)")
    isles.add_argument(
        "--size",
        choices=("full", "tiny"),
        default="full",
        help="full: the centres' grids, e.g. DWI 112×112×73 at 2 mm (default; about 1 s and "
        "6 MB per case). tiny: for tests only; the same fields of view on about 24×24×8 voxels",
    )
    isles.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it already holds a twin"
    )
    isles.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    isles.set_defaults(handler=_synth_isles2022)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``lightning-data`` argument parser."""
    parser = UserArgumentParser(
        prog="lightning-data", description="Data utilities for the stroke-segmentation suite."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser(
        "synth",
        help="write a synthetic twin of a dataset in its exact on-disk layout",
        description="Write a synthetic twin of a dataset in its exact on-disk layout.",
    )
    twins = synth.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    isles = twins.add_parser(
        "isles2018",
        help="ISLES 2018 CT perfusion (TRAINING/, TESTING/)",
        description=(
            "Write DIR/TRAINING/case_N/SMIR.Brain.XX.O.<MOD>.<id>/….nii and DIR/TESTING/… with "
            "the real case numbers, ids, dtypes, slab shapes, spacings and header quirk, filled "
            "with synthetic anatomy (MNI152 template) and lesions. DIR/SYNTHETIC_TWIN.json "
            "marks it as synthetic."
        ),
    )
    isles.add_argument("dir", type=Path, metavar="DIR", help="directory to create")
    isles.add_argument(
        "--cases",
        type=_count,
        default=None,
        metavar="N",
        help="training cases, chosen as whole patients spread over the slab protocols (a "
        "two-slab patient brings both slabs, so N+1 may be written); default: all 94",
    )
    isles.add_argument(
        "--testing-cases",
        type=_count,
        default=None,
        metavar="M",
        help="testing cases, chosen the same way; default: all 62 without --cases, else 4",
    )
    isles.add_argument("--seed", type=_count, default=0, help="random seed (default: 0)")
    isles.add_argument(
        "--size",
        choices=("full", "tiny"),
        default="full",
        help="full: the real 256×256×Z layout (default). tiny: for tests only; 32×32 in-plane, "
        "at most 4 slices and 6 frames, which breaks the real 256×256 layout on purpose",
    )
    isles.add_argument(
        "--no-dwi",
        dest="dwi",
        action="store_false",
        help="do not write the optional MR_DWI folder in training cases",
    )
    isles.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it already holds a twin"
    )
    isles.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    isles.set_defaults(handler=_synth_isles2018)
    _add_atlas(twins)
    _add_isles2022(twins)
    _add_convert_weights(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning-data`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as error:  # a user's mistake: one paragraph, status 2; a bug: traceback
        if report_user_error(error, parser.prog):
            return USER_ERROR_STATUS
        raise


if __name__ == "__main__":
    sys.exit(main())
