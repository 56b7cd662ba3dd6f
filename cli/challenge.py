"""``lightning-cv challenge``: the entry points of the challenges' algorithm containers.

    lightning-cv challenge isles2022 --model /opt/model [--input /input] [--output /output]
    lightning-cv challenge atlas2 --model /opt/model [--input /input] [--output /output]

**ISLES 2022** (Grand-Challenge's interface): one case per job, read from
``/input/images/dwi-brain-mri/<name>.mha``, ``/input/images/adc-brain-mri/…`` and
``/input/images/flair-brain-mri/…``; the binary mask written to
``/output/images/stroke-lesion-segmentation/<name of the DWI>.mha`` (uint8, on the DWI's grid:
its size, origin, spacing and direction), and ``/output/results.json`` listing it. Images the
model does not read (FLAIR for a DWI-only model) are not used.

**ATLAS R2.0**, either submission type (docs/datasets.md §3.5). Type 2, Grand-Challenge's
interface: one T1 in MNI space per job, ``/input/images/t1-brain-mri/<name>.mha`` → the mask
``/output/images/stroke-segmentation/<name>.mha`` on the T1's grid, and ``/output/results.json``.
Type 1: the T1s under ``/input`` in the release's BIDS layout (``ATLAS_2/Testing/…`` or the
``Testing`` folder itself) → the BIDS derivative ``derivatives/atlas2_prediction/`` under
``/output`` that the challenge's evaluator reads (the suite's ATLAS R2.0 writer).

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
#: ATLAS R2.0's Type 2 (container) submission: one T1 in MNI space per job (docs/datasets.md §3.5).
ATLAS2_INPUTS = {"t1-brain-mri": "T1"}
ATLAS2_OUTPUT = "stroke-segmentation"
IMAGES = "images"
RESULTS = "results.json"
#: A challenge → the ``dataset_name`` of the data module its models are trained with, and the
#: dataset's name in words.
CHALLENGE_DATA = {"isles2022": ("isles2022", "ISLES 2022"), "atlas2": ("atlas", "ATLAS R2.0")}


def check_model_of(challenge: str, model: Path) -> None:
    """Refuse a model trained on another dataset than the challenge's, before any image is read
    (its prediction would fail on a setting of the other dataset, e.g. its split names).

    Raises:
        ConfigurationError: Naming the model's dataset, the challenge's, and what to give.
    """
    from cli.segment import model_data_config

    data_class, _ = model_data_config(model)  # a folder without a fold fails before torch
    from datamodules.base import SliceDataModule

    if issubclass(data_class, SliceDataModule):
        dataset = data_class.dataset_name
    else:
        dataset = data_class.__name__
    expected, words = CHALLENGE_DATA[challenge]
    if dataset == expected:
        return
    other = next((name for name, (d, _) in CHALLENGE_DATA.items() if d == dataset), None)
    raise ConfigurationError(
        f"--model {model}: the model was trained on {dataset} data ({data_class.__name__}), "
        f"but the {challenge} challenge's cases are {words} ({expected}) data. Give --model a "
        f"model trained on {words} (a folder of lightning-cv export)"
        + (f", or run lightning-cv challenge {other} with this model." if other else ".")
    )


def _one_image(folder: Path) -> Path:
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir() if is_image_file(p))
        what = ", ".join(p.name for p in found) if found else "none"
    else:
        found, what = [], "no such folder"
    if len(found) != 1:
        raise DatasetNotFoundError(
            f"{folder}: expected one image (.mha), found {what}. A challenge container "
            "reads one case per job: one image in each input folder /input/images/<slug>/ "
            "(ISLES 2022: dwi-brain-mri/, adc-brain-mri/, flair-brain-mri/; ATLAS R2.0: "
            "t1-brain-mri/)."
        )
    return found[0]


def run_grand_challenge_case(
    model: Path, input_dir: Path, output_dir: Path, inputs: dict[str, str], output: str
) -> Path:
    """One case from a Grand-Challenge algorithm's input interface to its output interface.

    Args:
        inputs: Input folder (``/input/images/<slug>/``) → the name of the model's image it
            holds; only the images the model reads are needed.
        output: The output slug: the mask is ``/output/images/<output>/<name of the reference
            image>.mha``, on the reference image's grid, listed in ``/output/results.json``.

    Returns:
        The written mask.
    """
    from cli.segment import model_images, segment_case

    reference_name, needed = model_images(model)
    images = {
        name: _one_image(input_dir / IMAGES / folder)
        for folder, name in inputs.items()
        if name in needed
    }
    if reference_name not in images:
        raise ConfigurationError(
            f"{model}: the model reads {reference_name}, which this challenge's interface "
            f"({', '.join(inputs)}) does not provide. Give a model of this challenge."
        )
    reference = images[reference_name]
    stem = (
        reference.name[: -len(".nii.gz")] if reference.name.endswith(".nii.gz") else reference.stem
    )
    mask = output_dir / IMAGES / output / f"{stem}.mha"
    code = segment_case(model, images, mask)
    if code != 0:
        raise RuntimeError(f"the prediction of {reference} failed (exit status {code})")
    results = [
        {
            "inputs": [{"type": "metaio_image", "filename": p.name} for p in images.values()],
            "outputs": [{"type": "metaio_image", "filename": mask.name}],
            "error_messages": [],
        }
    ]
    write_text(output_dir / RESULTS, json.dumps(results, indent=1) + "\n")
    return mask


def run_isles2022(model: Path, input_dir: Path, output_dir: Path) -> Path:
    """One ISLES 2022 case from Grand-Challenge's input interface to its output interface.

    Returns:
        The written mask.
    """
    check_model_of("isles2022", model)
    return run_grand_challenge_case(
        model, input_dir, output_dir, ISLES2022_INPUTS, ISLES2022_OUTPUT
    )


def _atlas2_root(input_dir: Path, tmp: Path) -> Path:
    """The extract root that holds ``input_dir``'s test T1s as the reader's ``Testing`` split.

    ``input_dir`` is an extract root (``ATLAS_2/`` or its parent) as it is; when it is the
    ``Testing`` folder itself (its ``R<NNN>`` cohort folders directly inside, whatever it is
    called), a folder in ``tmp`` that links it as ``Testing`` (``input_dir`` is only read).
    """
    from datamodules.atlas_layout import R20_COHORT_RE, visible_dirs

    if not any(R20_COHORT_RE.match(folder.name) for folder in visible_dirs(input_dir)):
        return input_dir
    root = tmp / "input"
    root.mkdir()
    (root / "Testing").symlink_to(input_dir.resolve(), target_is_directory=True)
    return root


def run_atlas2(model: Path, input_dir: Path, output_dir: Path) -> int:
    """ATLAS R2.0's two submission types.

    Type 2 (a container on Grand-Challenge), when ``input_dir`` holds ``images/t1-brain-mri/``:
    its one T1 → ``output_dir/images/stroke-segmentation/<name of the T1>.mha``. Type 1
    otherwise: every test T1 under ``input_dir`` (an extract root, ``ATLAS_2/`` or its
    ``Testing`` folder) → the BIDS derivative in ``output_dir``.
    """
    import tempfile

    check_model_of("atlas2", model)
    if (input_dir / IMAGES / next(iter(ATLAS2_INPUTS))).is_dir():
        mask = run_grand_challenge_case(model, input_dir, output_dir, ATLAS2_INPUTS, ATLAS2_OUTPUT)
        print(f"wrote {mask}")
        return 0

    from cli.crossval import cmd_predict
    from cli.errors import naming_files_as_given

    with tempfile.TemporaryDirectory(prefix="strokeseg-atlas2-") as tmp:
        root = _atlas2_root(input_dir, Path(tmp))
        given = {} if root == input_dir else {str(root / "Testing"): input_dir}
        predict = argparse.Namespace(
            members=[str(model)], name="atlas2", runs_dir=tmp, split="Testing",
            save_probability=False, postprocessing="auto", tta=False,
        )  # fmt: skip
        # The log names the user's folders, never the ensemble's run folder or cache in tmp.
        with naming_files_as_given(given, unseen=[tmp]):
            return cmd_predict(
                predict,
                [
                    "--data.init_args.data_dir", str(root),
                    "--data.init_args.release", "R2.0",
                    "--data.init_args.cache_dir", str(Path(tmp) / "cache"),
                    "--data.init_args.num_workers", "0",
                    # Absolute: a relative folder is the run's own, in tmp (deleted below).
                    "--prediction_writer.output_dir", str(output_dir.absolute()),
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
