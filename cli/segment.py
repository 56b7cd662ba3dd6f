"""``lightning-cv segment``: a trained model applied to one patient's scans.

    lightning-cv segment MODEL --image DWI=dwi.mha --image ADC=adc.mha --image FLAIR=flair/ \\
        --output mask.mha [--probabilities probability.nii.gz]
    lightning-cv segment MODEL --input-dir patients/ --output-dir masks/ [--format mha]

``MODEL`` is a fold folder (its best checkpoint), an experiment folder (the ensemble of its
folds' best checkpoints) or a model folder (``lightning-cv export``). ``--input-dir`` holds one
folder per patient with ``<NAME>.nii.gz`` (or ``.mha``, ``.nrrd``, a ``<NAME>/`` DICOM folder)
for each image; all patients are predicted in one run, the model loaded once. Each ``--image``
names one of the model's images: a NIfTI file, any format SimpleITK reads (MHA, NRRD, …) or a
folder holding one DICOM series. The case goes
through exactly the path of ``lightning predict`` — the dataset's own decoding, checks and
normalisation (``data.init_args.predict_cases``), the geometry, the network, the way back —
so the mask equals the one ``lightning predict`` writes for the same files. It is written on
the reference image's grid (the DWI, the CT, the T1) with its origin, spacing and direction,
in the format the output's extension names; ``.dcm`` writes a DICOM Segmentation referring to
the DICOM series given as the reference image (:mod:`cli.image_files`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pydoc
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from cli.errors import naming_files_as_given
from cli.image_files import (
    OUTPUT_FORMATS,
    as_nifti,
    check_output,
    format_of,
    is_image_file,
    write_like_reference,
)
from core.errors import ConfigurationError, DatasetNotFoundError, DataValidationError
from core.run_layout import ExperimentLayout, RunLayout, first_fold_config

log = logging.getLogger(__name__)

_CASE = "patient"  # the case name of a single-patient call


def parse_images(entries: Sequence[str]) -> dict[str, Path]:
    """``["DWI=a.mha", …]`` → ``{"DWI": Path("a.mha"), …}``, refusing malformed or repeated
    names."""
    images: dict[str, Path] = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep or not name or not value:
            raise ConfigurationError(
                f"--image {entry!r}: expected NAME=FILE, e.g. --image DWI=dwi.nii.gz (the names "
                "are the model's images)."
            )
        if name in images:
            raise ConfigurationError(f"--image {name} is given twice; give each image once.")
        path = Path(value).expanduser()
        if not path.exists():
            raise DatasetNotFoundError(f"--image {name}={value}: no such file or folder.")
        images[name] = path
    return images


def model_data_config(model: Path) -> tuple[type, dict]:
    """The data module class of the fold, experiment or model folder ``model``, and the
    configuration of its (first) fold."""
    config_path = first_fold_config(model)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    return data_class_of(config, config_path), config


def data_class_of(config: dict, config_path: Path) -> type:
    """The data module class a fold's configuration (read from ``config_path``) names."""
    located = pydoc.locate(str((config.get("data") or {}).get("class_path", "")))
    if not isinstance(located, type):
        raise ConfigurationError(f"{config_path}: its data.class_path names no class.")
    return located


def model_images(model: Path) -> tuple[str, list[str]]:
    """The reference image and every image name the model at ``model`` reads."""
    data_class, config = model_data_config(model)  # a folder without a fold fails before torch
    from datamodules.base import SliceDataModule

    if not issubclass(data_class, SliceDataModule) or not data_class.reference_image:
        raise ConfigurationError(
            f"{model}: its data module {data_class.__name__} cannot read a case given as files."
        )
    channels = [
        str(c) for c in ((config.get("data") or {}).get("init_args") or {}).get("channels") or []
    ]
    reference = data_class.reference_image
    return reference, [reference, *(c for c in channels if c != reference)]


def segment_case(
    model: Path,
    images: dict[str, Path],
    output: Path,
    probabilities: Path | None = None,
    extra: Sequence[str] = (),
    tta: bool = False,
) -> int:
    """Segment one case given as files with the fold, experiment or model folder ``model``;
    the mask (and the probability) on the reference image's grid, in ``output``'s format.

    Returns:
        The exit status of the prediction (0 when the files were written).
    """
    outputs = {_CASE: (output, probabilities)}
    return segment_cases(model, {_CASE: images}, outputs, extra, tta)


_PROCESS_SETTINGS = ("--trainer.devices", "--trainer.num_nodes")


def _one_process(extra: Sequence[str]) -> Sequence[str]:
    """``extra`` if it keeps segmentation in one process.

    Raises:
        ConfigurationError: Naming a ``--trainer.devices`` or ``--trainer.num_nodes`` other
            than 1.
    """
    for index, option in enumerate(extra):
        name, equals, value = option.partition("=")
        if name not in _PROCESS_SETTINGS:
            continue
        if not equals:
            value = extra[index + 1] if index + 1 < len(extra) else ""
        if not re.fullmatch(r"1|\[\s*\d+\s*\]", value.strip()):  # one device: 1, or [k]
            raise ConfigurationError(
                f"{name} {value}: segment runs in one process (one device, one node); drop "
                f"the option, or give {name} 1. To predict many cases on several GPUs, use "
                "lightning-cv predict."
            )
    return extra


def segment_cases(
    model: Path,
    cases: dict[str, dict[str, Path]],
    outputs: dict[str, tuple[Path, Path | None]],
    extra: Sequence[str] = (),
    tta: bool = False,
) -> int:
    """Segment several cases in one prediction run (the model is loaded once).

    Args:
        model: A fold, experiment or model folder.
        cases: Case name → {image name → file or DICOM folder}.
        outputs: Case name → (mask file, probability file or ``None``).
        extra: Further ``lightning predict`` options.
        tta: Mirroring test-time augmentation (every member of the ensemble).

    Returns:
        The exit status of the prediction (0 when every file was written).
    """
    from tqdm.auto import tqdm

    from cli.crossval import cmd_predict

    reference_name, _ = model_images(model)
    for case, images in cases.items():
        if reference_name not in images:
            raise ConfigurationError(
                f"{case}: this model writes its masks on the {reference_name} grid: give "
                f"{reference_name} (got {', '.join(images) or 'no image'})."
            )
        for path in outputs[case]:
            if path is not None:
                check_output(path, images[reference_name])
    with tempfile.TemporaryDirectory(prefix="strokeseg-segment-") as tmp_name:
        tmp = Path(tmp_name)
        files: dict[str, dict[str, str]] = {}
        for case, images in tqdm(
            cases.items(), desc="Reading", unit="case", disable=len(cases) < 2
        ):
            folder = tmp / "inputs" / case
            folder.mkdir(parents=True)
            files[case] = {name: str(as_nifti(name, path, folder)) for name, path in images.items()}
        out = tmp / "out" / RunLayout.PREDICTIONS
        predict = argparse.Namespace(
            members=[str(model)],
            name="segment",
            runs_dir=str(tmp / "runs"),
            split=None,
            save_probability=any(p is not None for _, p in outputs.values()),
            postprocessing="auto",  # the cross-validation's choice, as lightning-cv predict
            tta=tta,
        )
        overrides = [
            "--data.init_args.predict_cases", json.dumps(files),
            "--data.init_args.cache_dir", str(tmp / "cache"),
            "--data.init_args.num_workers", "0",
            "--prediction_writer.output_dir", str(out),
            # One process: a patient's few cases gain nothing from DDP, and the ranks would
            # each read the images into a temporary folder of their own (a model trained on
            # several GPUs has devices: auto in its configuration).
            "--trainer.devices", "1",
            "--trainer.num_nodes", "1",
            *_one_process(extra),
        ]  # fmt: skip
        probabilities = RunLayout(tmp).probabilities_beside(out)
        # Errors and log lines name the user's files, not the temporary ones they never see
        # (a converted input, the mask before it is put on the reference grid).
        given: dict[str, Path] = {
            file: images[name]
            for case, images in cases.items()
            for name, file in files[case].items()
            if Path(file) != images[name].absolute()
        }
        for case, (mask_path, probability_path) in outputs.items():
            given[str(out / f"{case}.nii.gz")] = mask_path
            if probability_path is not None:
                given[str(probabilities / f"{case}.nii.gz")] = probability_path
        masks = [mask for mask, _ in outputs.values()]
        given[str(out)] = masks[0] if len(masks) == 1 else _common_folder(masks)
        with naming_files_as_given(given, unseen=[tmp]):
            code = cmd_predict(predict, overrides, in_process=True)
        if code != 0:
            return code
        name = _model_name(model)
        for case, (mask_path, probability_path) in outputs.items():
            reference = cases[case][reference_name]
            written = out / f"{case}.nii.gz"
            write_like_reference(written, reference, mask_path, fractional=False, model=name)
            if probability_path is not None:
                written = probabilities / f"{case}.nii.gz"
                write_like_reference(
                    written, reference, probability_path, fractional=True, model=name
                )
    return 0


def _common_folder(paths: Sequence[Path]) -> Path:
    """The folder that holds all of ``paths`` (``--output-dir``), as the user named it."""
    parents = {path.parent for path in paths}
    if len(parents) == 1:
        return parents.pop()
    return Path(os.path.commonpath([str(path.absolute()) for path in paths]))


def _model_name(model: Path) -> str:
    """``<experiment>/fold<k>`` for a fold folder, else the folder's own name."""
    resolved = model.resolve()
    if RunLayout(resolved).config.is_file() and not ExperimentLayout(resolved).folds():
        return f"{resolved.parent.name}/{resolved.name}"
    return resolved.name


def patient_folders(root: Path, needed: Sequence[str]) -> dict[str, dict[str, Path]]:
    """The patients of ``root``: one folder each, holding an image file ``<NAME>.<ext>`` (or a
    ``<NAME>/`` DICOM folder) for each of the model's image names, in any case of letters
    (``dwi.nii.gz`` is the DWI). Other entries are ignored: sidecars (``DWI.json``), backups,
    a MetaImage's ``.raw`` data, hidden files.

    Raises:
        DatasetNotFoundError: For a root that is no folder, one patient's own folder (it holds
            the images), a root without patient folders, or a patient missing an image (all
            such patients listed).
        DataValidationError: For a patient with two images of one name (both named).
    """
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"--input-dir {root}: "
            + ("is a file" if root.exists() else f"no such folder (from {Path.cwd()})")
            + "; give a folder holding one folder per patient, or segment one patient with "
            "--image NAME=FILE … --output."
        )
    names = {name.casefold(): name for name in needed}
    stems = {entry: entry.name.split(".", 1)[0].casefold() for entry in root.iterdir()}
    own = sorted({names[s] for e, s in stems.items() if s in names and is_image_file(e)})
    if own:
        raise DatasetNotFoundError(
            f"--input-dir {root}: holds the images of one patient ({', '.join(own)}), not "
            "patient folders. Give the folder above it (one folder per patient), or segment this "
            "patient with --image NAME=FILE … --output."
        )
    patients: dict[str, dict[str, Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found: dict[str, Path] = {}
        for entry in sorted(folder.iterdir()):
            name = names.get(entry.name.split(".", 1)[0].casefold())
            if name is None or entry.name.startswith("."):
                continue
            if not (entry.is_dir() or is_image_file(entry)):
                continue
            if name in found:
                raise DataValidationError(
                    f"{folder}: two images for {name}, {found[name].name} and {entry.name}. "
                    "Keep one per image in each patient folder."
                )
            found[name] = entry
        case = _safe_name(folder.name)
        if case in patients:
            raise DataValidationError(
                f"{folder}: its mask would be written as {case}, as another patient folder's "
                "(names are made safe: other characters than letters, digits, - and _ become "
                "_). Rename one of the two folders."
            )
        patients[case] = found
    if not patients:
        raise DatasetNotFoundError(
            f"{root} holds no patient folder. Expected one folder per patient holding "
            f"{', '.join(f'{n}.nii.gz' for n in needed)} (or .mha, .nrrd, a DICOM folder)."
        )
    incomplete = {p: [n for n in needed if n not in f] for p, f in patients.items()}
    incomplete = {p: missing for p, missing in incomplete.items() if missing}
    if incomplete:
        listed = "; ".join(f"{p}: {', '.join(m)}" for p, m in list(incomplete.items())[:5])
        raise DatasetNotFoundError(
            f"{root}: {len(incomplete)} patient folder(s) miss images the model reads ({listed}"
            f"{' …' if len(incomplete) > 5 else ''}). Name each file after its image, e.g. "
            f"{needed[0]}.nii.gz."
        )
    return patients


def _format(asked: str, reference: Path) -> str:
    """``--format``: a named format, or ``input`` for the reference image's own (a DICOM
    series gives a DICOM SEG)."""
    return format_of(reference) if asked == "input" else asked


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def cmd_segment(args: argparse.Namespace, extra: list[str]) -> int:
    """Segment one patient, or a folder of patients (see the module docstring)."""
    model = Path(args.model).expanduser()
    if args.input_dir is not None:
        if args.image or args.output or args.probabilities:
            raise ConfigurationError(
                "--input-dir segments a folder of patients into --output-dir; --image, --output "
                "and --probabilities are for one patient. Use one form or the other."
            )
        if args.output_dir is None:
            raise ConfigurationError("--input-dir needs --output-dir (where the masks go).")
        return _segment_folder(args, model, extra)
    if args.output is None:
        raise ConfigurationError("segment needs --output (the mask file), or --input-dir.")
    output = Path(args.output).expanduser()
    probabilities = None if args.probabilities is None else Path(args.probabilities).expanduser()
    images = parse_images(args.image or [])
    code = segment_case(model, images, output, probabilities, extra, args.tta)
    if code == 0:
        print(f"wrote {output}" + (f" and {probabilities}" if probabilities else ""))
    return code


def _segment_folder(args: argparse.Namespace, model: Path, extra: list[str]) -> int:
    """``--input-dir``: every patient folder through one prediction run; with ``--continue``,
    the patients whose mask exists are skipped (masks are written whole, through a rename, so
    an existing one is complete)."""
    reference, needed = model_images(model)
    cases = patient_folders(Path(args.input_dir).expanduser(), needed)
    out_dir = Path(args.output_dir).expanduser()
    outputs: dict[str, tuple[Path, Path | None]] = {
        case: (out_dir / f"{case}.{_format(args.format, images[reference])}", None)
        for case, images in cases.items()
    }
    if args.resume:
        done = [case for case, (mask, _) in outputs.items() if mask.exists()]
        cases = {case: images for case, images in cases.items() if case not in done}
        outputs = {case: outputs[case] for case in cases}
        if done:
            print(f"--continue: {len(done)} patient(s) already segmented in {out_dir}, skipped")
        if not cases:
            return 0
    code = segment_cases(model, cases, outputs, extra, args.tta)
    if code == 0:
        print(f"wrote {len(cases)} mask(s) to {out_dir}")
    return code


def add_parser(commands: argparse._SubParsersAction) -> None:
    segment = commands.add_parser(
        "segment",
        help="segment one patient's scans with a trained fold or experiment",
        description=(
            "Segment one patient's scans with a trained fold (its best checkpoint) or "
            "experiment (the ensemble of its folds). The mask is written on the reference "
            "image's grid (DWI, CT or T1), in the format of --output's extension."
        ),
    )
    segment.add_argument(
        "model",
        help="a fold folder (runs/<experiment>/fold<k>), an experiment folder or a model folder "
        "(lightning-cv export)",
    )
    segment.add_argument(
        "--image",
        action="append",
        metavar="NAME=FILE",
        help="one of the model's images: NIfTI, MHA/NRRD or a DICOM series folder (repeat)",
    )
    segment.add_argument(
        "--output",
        help="the mask: .nii.gz, .nii, .mha, .nrrd, or .dcm (a DICOM SEG of a DICOM input)",
    )
    segment.add_argument(
        "--probabilities", help="also write the lesion probability here (same formats)"
    )
    segment.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    segment.add_argument(
        "--input-dir", help="a folder of patient folders, each holding <NAME>.nii.gz/.mha/DICOM"
    )
    segment.add_argument("--output-dir", help="with --input-dir: where <patient>.<format> go")
    segment.add_argument(
        "--continue", dest="resume", action="store_true",
        help="with --input-dir: skip the patients whose mask is already in --output-dir",
    )  # fmt: skip
    segment.add_argument(
        "--format", default="nii.gz", choices=(*OUTPUT_FORMATS, "input"),
        help="with --input-dir: the masks' format (default nii.gz); input: each patient's "
        "reference image's own (a DICOM series gives a DICOM SEG)",
    )  # fmt: skip
