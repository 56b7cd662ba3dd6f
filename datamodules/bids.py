"""Predictions written as a BIDS derivative, the way pybids-based challenge evaluators read them.

A derivative ``<prediction folder>/derivatives/<name>/`` holds the masks under the dataset's own
``sub-…/ses-…/`` names, with a ``dataset_description.json`` beside them and one at the prediction
folder's root (which pybids indexes as the raw dataset). pybids names a derivative after
``GeneratedBy[0].Name`` (``PipelineDescription.Name`` only when GeneratedBy has none), so both say
``<name>``; the suite names itself in GeneratedBy's ``Description``.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version

from datamodules.nifti import PredictionTarget

BIDS_VERSION = "1.6.0"
DESCRIPTION = "dataset_description.json"
DERIVATIVES = "derivatives"


def _description(name: str, dataset_type: str, **extra: object) -> str:
    fields = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": dataset_type, **extra}
    return json.dumps(fields, indent=2) + "\n"


def suite_version() -> str:
    """The installed suite's version, ``"unknown"`` in a source tree never installed."""
    try:
        return version("strokeseg-repro")
    except PackageNotFoundError:
        return "unknown"


def derivative_target(derivative: str, relative_path: str) -> PredictionTarget:
    """Where one mask goes: ``derivatives/<derivative>/<relative_path>`` with the two
    ``dataset_description.json`` files a BIDS reader needs to find it.

    Args:
        derivative: The derivative's (pipeline's) name, e.g. ``"atlas2_prediction"``.
        relative_path: The mask's path inside the derivative, e.g.
            ``"sub-x/ses-1/anat/sub-x_ses-1_…_mask.nii.gz"``.
    """
    folder = f"{DERIVATIVES}/{derivative}"
    sidecars = (
        (DESCRIPTION, _description("strokeseg-repro predictions", "raw")),
        (
            f"{folder}/{DESCRIPTION}",
            _description(
                derivative,
                "derivative",
                PipelineDescription={"Name": derivative},
                GeneratedBy=[
                    {
                        "Name": derivative,
                        "Version": suite_version(),
                        "Description": "Lesion masks predicted by strokeseg-repro",
                    }
                ],
            ),
        ),
    )
    return PredictionTarget(f"{folder}/{relative_path}", sidecars)
