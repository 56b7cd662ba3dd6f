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
in the format the output's extension names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import locale
import logging
import pydoc
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from core.errors import ConfigurationError, DatasetNotFoundError, DataValidationError
from core.run_layout import ExperimentLayout, RunLayout

log = logging.getLogger(__name__)

_NIFTI = (".nii", ".nii.gz")
_CASE = "patient"  # the case name of a single-patient call


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(_NIFTI)


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


@contextlib.contextmanager
def keep_locale() -> Iterator[None]:
    """Put the process's locale back after SimpleITK: its DICOM (GDCM) writer switches it to
    "C", after which Python reads text files as ASCII (a YAML comment with "—" then fails);
    the DICOM reader and the other formats are guarded the same way, in case they do."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _read_image(path: Path):  # noqa: ANN202 - SimpleITK has no stubs
    """Any image SimpleITK reads, or the one DICOM series of a folder."""
    with keep_locale():
        return _read_image_as_is(path)


def _read_image_as_is(path: Path):  # noqa: ANN202
    import SimpleITK as sitk

    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if len(series) != 1:
                raise DataValidationError(
                    f"{path}: a DICOM folder must hold exactly one series, found {len(series)}"
                    f"{' (' + ', '.join(series) + ')' if series else ''}. Give the folder of "
                    "one series."
                )
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise DataValidationError(
            f"{path}: SimpleITK cannot read it ({str(error).strip().splitlines()[-1]}). Give a "
            "NIfTI, MHA/NRRD or a folder of one DICOM series."
        ) from error


def as_nifti(name: str, path: Path, folder: Path) -> Path:
    """The image as a NIfTI file the dataset's reader takes: NIfTI as given, anything else
    converted by SimpleITK (origin, spacing and direction kept)."""
    if path.is_file() and _is_nifti(path):
        return path.absolute()
    import SimpleITK as sitk

    out = folder / f"{name}.nii.gz"
    image = _read_image(path)
    with keep_locale():
        sitk.WriteImage(image, str(out))
    return out


def _data_config(model: Path) -> tuple[type, dict]:
    runs = list(ExperimentLayout(model).folds().values()) or [RunLayout(model)]
    config_path = runs[0].config
    if not config_path.is_file():
        raise ConfigurationError(
            f"{model} holds no fold configuration (config.yaml): give a fold folder "
            "(runs/<experiment>/fold<k>) or an experiment folder written by lightning fit / "
            "lightning-cv fit."
        )
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    located = pydoc.locate(str((config.get("data") or {}).get("class_path", "")))
    if not isinstance(located, type):
        raise ConfigurationError(f"{config_path}: its data.class_path names no class.")
    return located, config


def _write_output(mask: Path, reference: Path, output: Path) -> None:
    """The written mask (NIfTI on the reference's converted grid) at ``output``, in the format
    its extension names, with the reference input's geometry."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if _is_nifti(output) and reference.is_file() and _is_nifti(reference):
        if output.name.endswith(".gz") == mask.name.endswith(".gz"):
            shutil.copyfile(mask, output)  # written by nibabel with the reference's header
            return
    import SimpleITK as sitk

    reference_image = _read_image(reference)
    with keep_locale():
        written = sitk.ReadImage(str(mask))
        image = sitk.GetImageFromArray(sitk.GetArrayFromImage(written))  # no NIfTI metadata
        image.CopyInformation(reference_image)
        tmp = output.with_name(f".{output.name}.tmp{''.join(output.suffixes)}")
        sitk.WriteImage(image, str(tmp), useCompression=True)
    tmp.replace(output)


def model_images(model: Path) -> tuple[str, list[str]]:
    """The reference image and every image name the model at ``model`` reads."""
    data_class, config = _data_config(model)  # a folder without a fold fails before torch
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
            *extra,
        ]  # fmt: skip
        code = cmd_predict(predict, overrides, in_process=True)
        if code != 0:
            return code
        probabilities = RunLayout(tmp).probabilities_beside(out)
        for case, (mask_path, probability_path) in outputs.items():
            reference = cases[case][reference_name]
            _write_output(out / f"{case}.nii.gz", reference, mask_path)
            if probability_path is not None:
                _write_output(probabilities / f"{case}.nii.gz", reference, probability_path)
    return 0


def patient_folders(root: Path, needed: Sequence[str]) -> dict[str, dict[str, Path]]:
    """The patients of ``root``: one folder each, holding ``<NAME>.<ext>`` files (or
    ``<NAME>/`` DICOM folders) for the model's image names; other entries are ignored.

    Raises:
        DatasetNotFoundError: For a root without patient folders, or a patient missing an image
            (all such patients listed).
    """
    patients: dict[str, dict[str, Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found: dict[str, Path] = {}
        for entry in folder.iterdir():
            stem = entry.name.split(".", 1)[0]
            if stem in needed and not entry.name.startswith("."):
                found[stem] = entry
        patients[_safe_name(folder.name)] = found
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
        _, needed = model_images(model)
        cases = patient_folders(Path(args.input_dir).expanduser(), needed)
        out_dir = Path(args.output_dir).expanduser()
        outputs: dict[str, tuple[Path, Path | None]] = {
            case: (out_dir / f"{case}.{args.format}", None) for case in cases
        }
        code = segment_cases(model, cases, outputs, extra, args.tta)
        if code == 0:
            print(f"wrote {len(cases)} mask(s) to {out_dir}")
        return code
    if args.output is None:
        raise ConfigurationError("segment needs --output (the mask file), or --input-dir.")
    output = Path(args.output).expanduser()
    probabilities = None if args.probabilities is None else Path(args.probabilities).expanduser()
    images = parse_images(args.image or [])
    code = segment_case(model, images, output, probabilities, extra, args.tta)
    if code == 0:
        print(f"wrote {output}" + (f" and {probabilities}" if probabilities else ""))
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
        "model", help="a fold folder (runs/<experiment>/fold<k>) or experiment folder"
    )
    segment.add_argument(
        "--image",
        action="append",
        metavar="NAME=FILE",
        help="one of the model's images: NIfTI, MHA/NRRD or a DICOM series folder (repeat)",
    )
    segment.add_argument("--output", help="the mask: .nii.gz, .nii, .mha, .nrrd")
    segment.add_argument("--probabilities", help="also write the lesion probability here")
    segment.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    segment.add_argument(
        "--input-dir", help="a folder of patient folders, each holding <NAME>.nii.gz/.mha/DICOM"
    )
    segment.add_argument("--output-dir", help="with --input-dir: where <patient>.<format> go")
    segment.add_argument(
        "--format", default="nii.gz", choices=("nii.gz", "nii", "mha", "nrrd"),
        help="with --input-dir: the masks' format (default nii.gz)",
    )  # fmt: skip
