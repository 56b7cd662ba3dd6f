"""Writes predicted cases as NIfTI files on their source grid, named for the challenge evaluators."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from datamodules.nifti import write_like
from evaluation.report import format_case_table, write_case_table, write_text

log = logging.getLogger(__name__)


class NiftiPredictionWriter(BasePredictionWriter):
    """Writes each predicted case as a NIfTI mask (uint8 {0, 1}) on its source image's grid.

    Everything comes from the predicted case (the batch, see
    :class:`datamodules.datasets.CaseDataset`, and ``SegmentationModule.predict_step``): the
    case's geometry maps the ``(D, H, W)`` mask back to the source array order, the
    source image's header (qform, sform, pixdim and their codes, the ISLES identity-sform
    quirk included) is copied, and the file goes to the case's prediction target: ISLES 2018
    ``SMIR.strokeseg.<MTT id>.nii``, ATLAS R2.0 a BIDS derivative
    ``derivatives/atlas2_prediction/sub-…/ses-1/anat/…_label-L_desc-T1lesion_mask.nii.gz``
    with its ``dataset_description.json`` files. Each file is written to a temporary name and
    renamed, so an interrupted run never leaves a half-written mask. Memory holds one case.
    When the predicted cases have labels, the module scores them as it predicts, and the
    per-case table is written to ``<output_dir>/../predict_cases.csv``.

    Args:
        output_dir: Folder of the masks; relative paths are inside the run's stage folder
            (``runs/<experiment>/fold<k>/predict/``).
        save_probability: Also write the lesion probability (float32) under
            ``<output_dir>/../probabilities/`` with the same relative names, outside the
            folder a challenge evaluator reads.
    """

    def __init__(self, output_dir: str = "predictions", save_probability: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.save_probability = save_probability
        self._out: Path | None = None
        self._sidecars: set[str] = set()
        self._written = 0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        out = Path(self.output_dir)
        if not out.is_absolute():
            # Resolved once on every rank: trainer.log_dir is a collective under DDP, and
            # ranks may predict different numbers of cases.
            out = Path(trainer.log_dir or ".") / out
        out.mkdir(parents=True, exist_ok=True)
        self._out, self._sidecars, self._written = out, set(), 0

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        assert self._out is not None, "on_predict_start sets the output folder"
        target, geometry, source = batch["prediction"], batch["geometry"], Path(batch["source"])
        for relative, text in target.sidecars:
            if relative not in self._sidecars:
                write_text(self._out / relative, text)
                self._sidecars.add(relative)
        mask = geometry.to_source(prediction["mask"].numpy())
        write_like(mask, source, self._out / target.path, np.uint8)
        if self.save_probability:
            probability = geometry.to_source(prediction["probability"].numpy())
            write_like(
                probability, source, self._out.parent / "probabilities" / target.path, np.float32
            )
        self._written += 1
        log.info("%s -> %s", prediction["case"], self._out / target.path)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log.info("Wrote %d predicted case(s) to %s", self._written, self._out)
        rows = getattr(pl_module, "case_table", [])
        if rows and trainer.is_global_zero and self._out is not None:
            # Labelled cases were scored as they were predicted (CaseEvaluationModule).
            table = write_case_table(self._out.parent / "predict_cases.csv", rows)
            log.info(
                "%s",
                format_case_table(
                    rows, title=f"Per-case metrics of the predicted labelled cases ({table})"
                ),
            )
