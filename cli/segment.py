"""``lightning-cv segment``: a trained model applied to one patient's scans.

    lightning-cv segment MODEL --image DWI=dwi.mha --image ADC=adc.mha --image FLAIR=flair/ \\
        --output mask.mha [--probabilities probability.nii.gz]

``MODEL`` is a fold folder (its best checkpoint) or an experiment folder (the ensemble of its
folds' best checkpoints). Each ``--image`` names one of the model's images: a NIfTI file, any
format SimpleITK reads (MHA, NRRD, …) or a folder holding one DICOM series. The case goes
through exactly the path of ``lightning predict`` — the dataset's own decoding, checks and
normalisation (``data.init_args.predict_files``), the geometry, the network, the way back —
so the mask equals the one ``lightning predict`` writes for the same files. It is written on
the reference image's grid (the DWI, the CT, the T1) with its origin, spacing and direction,
in the format the output's extension names.
"""

from __future__ import annotations

import argparse
import json
import logging
import pydoc
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from core.errors import ConfigurationError, DatasetNotFoundError, DataValidationError
from core.run_layout import ExperimentLayout, RunLayout

log = logging.getLogger(__name__)

_NIFTI = (".nii", ".nii.gz")


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


def _read_image(path: Path):  # noqa: ANN202 - SimpleITK has no stubs
    """Any image SimpleITK reads, or the one DICOM series of a folder."""
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
    sitk.WriteImage(_read_image(path), str(out))
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
    config = yaml.safe_load(config_path.read_text())
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

    written = sitk.ReadImage(str(mask))
    image = sitk.GetImageFromArray(sitk.GetArrayFromImage(written))  # without NIfTI's metadata
    image.CopyInformation(_read_image(reference))
    tmp = output.with_name(f".{output.name}.tmp{''.join(output.suffixes)}")
    sitk.WriteImage(image, str(tmp), useCompression=True)
    tmp.replace(output)


def model_images(model: Path) -> tuple[str, list[str]]:
    """The reference image and every image name the model at ``model`` reads."""
    from datamodules.base import SliceDataModule

    data_class, config = _data_config(model)
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
) -> int:
    """Segment one case given as files with the fold, experiment or model folder ``model``;
    the mask (and the probability) on the reference image's grid, in ``output``'s format.

    Returns:
        The exit status of the prediction (0 when the files were written).
    """
    from cli.crossval import cmd_predict

    reference_name, _ = model_images(model)
    if reference_name not in images:
        raise ConfigurationError(
            f"This model writes its masks on the {reference_name} grid: give --image "
            f"{reference_name}=FILE (got {', '.join(images) or 'no image'})."
        )
    with tempfile.TemporaryDirectory(prefix="strokeseg-segment-") as tmp_name:
        tmp = Path(tmp_name)
        files = {name: str(as_nifti(name, path, tmp)) for name, path in images.items()}
        out = tmp / "out" / RunLayout.PREDICTIONS
        predict = argparse.Namespace(
            members=[str(model)],
            name="segment",
            runs_dir=str(tmp / "runs"),
            split=None,
            save_probability=probabilities is not None,
        )
        overrides = [
            "--data.init_args.predict_files", json.dumps(files),
            "--data.init_args.cache_dir", str(tmp / "cache"),
            "--data.init_args.num_workers", "0",
            "--prediction_writer.output_dir", str(out),
            *extra,
        ]  # fmt: skip
        code = cmd_predict(predict, overrides)
        if code != 0:
            return code
        (mask,) = sorted(p for p in out.rglob("*") if p.is_file() and _is_nifti(p))
        _write_output(mask, images[reference_name], output)
        if probabilities is not None:
            (probability,) = sorted(
                p for p in RunLayout(tmp).probabilities_beside(out).rglob("*") if _is_nifti(p)
            )
            _write_output(probability, images[reference_name], probabilities)
    return 0


def cmd_segment(args: argparse.Namespace, extra: list[str]) -> int:
    """Segment one patient (see the module docstring)."""
    output = Path(args.output).expanduser()
    probabilities = None if args.probabilities is None else Path(args.probabilities).expanduser()
    code = segment_case(
        Path(args.model).expanduser(), parse_images(args.image or []), output, probabilities, extra
    )
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
    segment.add_argument("--output", required=True, help="the mask: .nii.gz, .nii, .mha, .nrrd")
    segment.add_argument("--probabilities", help="also write the lesion probability here")
