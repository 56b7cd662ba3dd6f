"""``lightning-cv challenge``: the entry points of the challenges' algorithm containers.

    lightning-cv challenge isles2022 --model /opt/model [--input /input] [--output /output]
    lightning-cv challenge atlas2 --model /opt/model [--input /input] [--output /output]

**ISLES 2022** (Grand-Challenge's interface): one case per job, read from
``/input/images/dwi-brain-mri/<name>.mha``, ``/input/images/adc-brain-mri/…`` and
``/input/images/flair-brain-mri/…``; the binary mask written to
``/output/images/stroke-lesion-segmentation/<name of the DWI>.mha`` (uint8, on the DWI's grid:
its size, origin, spacing and direction), and ``/output/results.json`` listing it. Images the
model does not read (FLAIR for a DWI-only model) are not used.

**ATLAS R2.0**: the T1s in MNI space under ``/input`` in the release's BIDS layout
(``ATLAS_2/Testing/…`` or the ``Testing`` folder itself); the masks written under ``/output`` as
the BIDS derivative ``derivatives/atlas2_prediction/`` the challenge's evaluator reads (the
suite's ATLAS R2.0 writer).

Both run the model folder (``lightning-cv export``), fold or experiment given as ``--model``
through :mod:`cli.segment` / ``lightning-cv predict``, so a container predicts what the suite
predicts. The ``Dockerfile`` at the repository root builds such a container.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.image_files import is_image_file
from core.errors import ConfigurationError, DatasetNotFoundError
from core.io import write_text

#: Grand-Challenge's ISLES 2022 interface: input folder per image → the model's image name.
ISLES2022_INPUTS = {
    "dwi-brain-mri": "DWI",
    "adc-brain-mri": "ADC",
    "flair-brain-mri": "FLAIR",
}
ISLES2022_OUTPUT = "stroke-lesion-segmentation"
IMAGES = "images"
RESULTS = "results.json"


def _one_image(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []
    if len(found) != 1:
        raise DatasetNotFoundError(
            f"{folder}: expected one image (.mha), found "
            f"{', '.join(p.name for p in found) if found else 'none'}. The ISLES 2022 container "
            "reads one case per job: /input/images/dwi-brain-mri/, adc-brain-mri/, "
            "flair-brain-mri/, one file each."
        )
    return found[0]


def run_isles2022(model: Path, input_dir: Path, output_dir: Path) -> Path:
    """One ISLES 2022 case from Grand-Challenge's input interface to its output interface.

    Returns:
        The written mask.
    """
    from cli.segment import model_images, segment_case

    _, needed = model_images(model)
    images = {
        name: _one_image(input_dir / IMAGES / folder)
        for folder, name in ISLES2022_INPUTS.items()
        if name in needed
    }
    dwi = images["DWI"]
    stem = dwi.name[: -len(".nii.gz")] if dwi.name.endswith(".nii.gz") else dwi.stem
    mask = output_dir / IMAGES / ISLES2022_OUTPUT / f"{stem}.mha"
    code = segment_case(model, images, mask)
    if code != 0:
        raise RuntimeError(f"the prediction of {dwi} failed (exit status {code})")
    results = [
        {
            "inputs": [{"type": "metaio_image", "filename": p.name} for p in images.values()],
            "outputs": [{"type": "metaio_image", "filename": mask.name}],
            "error_messages": [],
        }
    ]
    write_text(output_dir / RESULTS, json.dumps(results, indent=1) + "\n")
    return mask


def run_atlas2(model: Path, input_dir: Path, output_dir: Path) -> int:
    """Every ATLAS R2.0 test T1 under ``input_dir`` → the BIDS derivative in ``output_dir``."""
    import tempfile

    from cli.crossval import cmd_predict

    with tempfile.TemporaryDirectory(prefix="strokeseg-atlas2-") as tmp:
        predict = argparse.Namespace(
            members=[str(model)], name="atlas2", runs_dir=tmp, split="Testing",
            save_probability=False, postprocessing="auto", tta=False,
        )  # fmt: skip
        return cmd_predict(
            predict,
            [
                "--data.init_args.data_dir", str(input_dir),
                "--data.init_args.release", "R2.0",
                "--data.init_args.cache_dir", str(Path(tmp) / "cache"),
                "--data.init_args.num_workers", "0",
                "--prediction_writer.output_dir", str(output_dir),
            ],
            in_process=True,
        )  # fmt: skip


def cmd_challenge(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        raise ConfigurationError(f"challenge takes no option {extra[0]!r}.")
    model, input_dir, output_dir = Path(args.model), Path(args.input), Path(args.output)
    if args.challenge == "isles2022":
        print(f"wrote {run_isles2022(model, input_dir, output_dir)}")
        return 0
    return run_atlas2(model, input_dir, output_dir)


def add_parser(commands: argparse._SubParsersAction) -> None:
    challenge = commands.add_parser(
        "challenge",
        help="a challenge container's entry point (ISLES 2022, ATLAS R2.0)",
        description="Read a challenge's container input interface, write its output interface.",
    )
    challenge.add_argument("challenge", choices=("isles2022", "atlas2"))
    challenge.add_argument("--model", required=True, help="a model folder, fold or experiment")
    challenge.add_argument("--input", default="/input", help="the input interface (/input)")
    challenge.add_argument("--output", default="/output", help="the output interface (/output)")
