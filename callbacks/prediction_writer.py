"""Writes predicted cases as NIfTI files on their source grid, named for the challenge evaluators."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from core.distributed import gather_objects
from core.errors import ConfigurationErrorOnEveryRank, DataValidationError
from core.io import replace_folder, write_text
from core.protocols import CaseTableSource
from core.run_layout import RunLayout
from datamodules.nifti import write_like
from evaluation.postprocessing import NONE, apply, chosen_postprocessing, parse, structure_for
from evaluation.report import format_case_table, write_case_table
from lightning_modules.case_evaluation import CaseEvaluationModule

log = logging.getLogger(__name__)


def _staging(folder: Path) -> Path:
    """Where a predict run writes ``folder`` before it is complete (the same name on every
    rank, so that all ranks of a DDP run write into one folder)."""
    return folder.with_name(f".{folder.name}.partial")


def _refuse_a_second_case(
    claims: dict[str, tuple[str, Path]], out: Path, relative: str, case: str, source: Path
) -> None:
    """Refuse ``case`` a file name another case of ``claims`` has (the same case from the same
    source, predicted twice, is fine).

    Raises:
        DataValidationError: Naming the file, both cases and their sources.
    """
    if relative in claims and claims[relative] != (case, source):
        other, other_source = claims[relative]
        raise DataValidationError(
            f"{out / relative}: cases {other} and {case} would both be written to "
            f"this one file (from {other_source} and {source}), so one mask would replace "
            "the other. The file name comes from the case's files (ISLES 2018: the SMIR "
            "id of its CT_MTT folder); one case folder is probably a copy of the other: "
            "remove or restore the duplicate, then predict again."
        )


class NiftiPredictionWriter(BasePredictionWriter):
    """Writes each predicted case as a NIfTI mask (uint8 {0, 1}) on its source image's grid.

    Everything comes from the predicted case (the batch, see
    :class:`datamodules.datasets.CaseDataset`, and ``CaseEvaluationModule.predict_step``): the
    case's geometry maps the ``(D, H, W)`` mask back to the source array order, the
    source image's header (qform, sform, pixdim and their codes, the ISLES identity-sform
    quirk included) is copied, and the file goes to the case's prediction target: ISLES 2018
    ``SMIR.strokeseg.<MTT id>.nii``, ATLAS R2.0 a BIDS derivative
    ``derivatives/atlas2_prediction/sub-…/ses-1/anat/…_label-L_desc-T1lesion_mask.nii.gz``
    with its ``dataset_description.json`` files. Memory holds one case. When the predicted
    cases have labels, the module scores them as it predicts, and the per-case table is written
    to ``<output_dir>/../predict_cases.csv``.

    A predict run owns its output: the masks are written into a hidden staging folder beside
    ``output_dir`` and replace the folder only when every case is written, so the folder a
    challenge evaluator reads holds the masks of exactly one complete run (never stale masks
    of an earlier run, never half a run after a crash). An ``output_dir`` outside the run
    folder (an absolute path) must be empty or absent: the writer does not replace folders
    it did not make. Two cases whose files have one name (a copied case folder) are refused,
    under DDP over the cases of every rank, before the folder is published.

    Args:
        output_dir: Folder of the masks; relative paths are inside the run's stage folder
            (``runs/<experiment>/fold<k>/predict/``).
        save_probability: Also write the lesion probability (float32) under
            ``<output_dir>/../probabilities/`` with the same relative names, outside the
            folder a challenge evaluator reads.
        postprocessing: Connected-component post-processing of the written masks
            (:mod:`evaluation.postprocessing`): a choice string (``"none"``, ``"largest"``,
            ``"min_size:<ml>"``), ``"auto"`` for the choice of the experiment's
            cross-validation report (``report/summary.json`` above the run; ``none`` without
            one), or ``None`` (``none``: old run folders predict as before). A module of the
            suite scores the labelled cases on the post-processed masks, so ``predict_cases.csv``
            scores what was written; the probabilities are written as predicted.

    Raises:
        ValueError: For an unknown post-processing string.
    """

    def __init__(
        self,
        output_dir: str = RunLayout.PREDICTIONS,
        save_probability: bool = False,
        postprocessing: str | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        if postprocessing not in (None, "auto"):
            parse(postprocessing)
        self.output_dir = output_dir
        self.save_probability = save_probability
        self.postprocessing = postprocessing
        self._choice = NONE
        self._structure = structure_for("")
        self._out: Path | None = None
        self._places: tuple[Path, Path, Path] | None = None  # _folders, resolved at the start
        self._sidecars: set[str] = set()
        self._targets: dict[str, tuple[str, Path]] = {}
        self._written = 0

    def _folders(self, trainer: pl.Trainer) -> tuple[Path, Path, Path]:
        """The masks', the probabilities' and the case table's final places."""
        out = Path(self.output_dir)
        if not out.is_absolute():
            out = RunLayout(Path(trainer.log_dir or ".")).root / out
        run = RunLayout(out.parent)
        return out, run.probabilities_beside(out), run.predict_cases_beside(out)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resolved here, on every rank, and kept: trainer.log_dir is a collective under DDP, so
        # asking for it again where only rank 0 runs (on_predict_end) would wait forever.
        self._places = self._folders(trainer)
        out, probabilities, _ = self._places
        # Every rank refuses alike before the barrier (rank 0 alone left the others waiting in
        # it): nothing writes into these folders before every rank has passed it.
        if Path(self.output_dir).is_absolute():
            for folder in (out, probabilities) if self.save_probability else (out,):
                if folder.is_dir() and any(folder.iterdir()):
                    raise ConfigurationErrorOnEveryRank(
                        f"prediction_writer.output_dir {folder} is not empty. A predict run "
                        "writes into an empty folder (or its own folder inside the run, the "
                        "default), so the folder never mixes runs: empty it, or choose another."
                    )
        if trainer.is_global_zero:
            for folder in (out, probabilities):
                shutil.rmtree(_staging(folder), ignore_errors=True)  # a crashed run's leftovers
                _staging(folder).mkdir(parents=True)
        trainer.strategy.barrier("prediction_writer_staging")
        self._out, self._sidecars, self._targets, self._written = out, set(), {}, 0
        self._choice = self._resolve(trainer)
        if isinstance(pl_module, CaseEvaluationModule):
            # The labelled cases' scores (predict_cases.csv) are of the masks written here.
            pl_module.predict_metrics.postprocessing = self._choice
            self._structure = pl_module.predict_metrics.structure

    def _resolve(self, trainer: pl.Trainer) -> str:
        """The choice string of this run (``"auto"``: the experiment report's)."""
        if self.postprocessing is None:
            return NONE
        if self.postprocessing != "auto":
            return self.postprocessing
        choice, source = chosen_postprocessing(Path(trainer.log_dir or "."))
        log.info("Post-processing %s (%s)", choice, source or "no cross-validation report found")
        return choice

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
        staging = _staging(self._out)
        target, geometry, source = batch["prediction"], batch["geometry"], Path(batch["source"])
        for relative, text in target.sidecars:
            if relative not in self._sidecars:
                write_text(staging / relative, text)
                self._sidecars.add(relative)
        self._claim(target.path, prediction["case"], source)
        mask = prediction["mask"].numpy()
        if self._choice != NONE:
            spacing = batch["spacing"]
            spacing = spacing.tolist() if isinstance(spacing, torch.Tensor) else list(spacing)
            mask = apply(mask, self._choice, spacing, self._structure)
        mask = geometry.to_source(mask)
        write_like(mask, source, staging / target.path, np.uint8)
        if self.save_probability:
            probability = geometry.to_source(prediction["probability"].cpu().numpy())
            probabilities = _staging(RunLayout(self._out.parent).probabilities_beside(self._out))
            write_like(probability, source, probabilities / target.path, np.float32)
        self._written += 1
        log.info("%s -> %s", prediction["case"], self._out / target.path)

    def _claim(self, relative: str, case: str, source: Path) -> None:
        """Reserve ``relative`` for ``case``, or refuse a second case with the same file name:
        writing it would silently replace the first case's mask."""
        assert self._out is not None, "on_predict_start sets the output folder"
        _refuse_a_second_case(self._targets, self._out, relative, case, source)
        self._targets[relative] = (case, source)

    def _claim_across_ranks(self) -> None:
        """Under DDP each rank claimed the files of its own cases only: two cases on two ranks
        named for one file would have had one mask replace the other in the shared staging
        folder. Every rank checks the union (the same, so all raise or none), before the
        folder is published. A case predicted on two ranks (a padded sampler) is one case."""
        assert self._out is not None, "on_predict_start sets the output folder"
        union: dict[str, tuple[str, Path]] = {}
        for part in gather_objects(self._targets):
            for relative, (case, source) in part.items():
                _refuse_a_second_case(union, self._out, relative, case, source)
                union[relative] = (case, source)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier("prediction_writer_done")
        if self._out is not None:
            self._claim_across_ranks()
        if not trainer.is_global_zero or self._places is None:
            return
        out, probabilities, table = self._places
        replace_folder(_staging(out), out)
        if self.save_probability:
            replace_folder(_staging(probabilities), probabilities)
        else:  # an earlier run's probabilities would not belong to these masks
            shutil.rmtree(_staging(probabilities), ignore_errors=True)
            shutil.rmtree(probabilities, ignore_errors=True)
        written = sum(1 for path in out.rglob("*.nii*") if path.is_file())
        log.info("Wrote %d predicted case(s) to %s", written, out)
        rows = pl_module.case_table if isinstance(pl_module, CaseTableSource) else []
        table.unlink(missing_ok=True)
        if rows:
            # Labelled cases were scored as they were predicted (CaseEvaluationModule).
            write_case_table(table, rows)
            title = f"Per-case metrics of the predicted labelled cases ({table})"
            log.info("%s", format_case_table(rows, title=title))
