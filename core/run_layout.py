"""Every file of a run folder and of an experiment folder, named once.

A fold of an experiment lives in ``runs/<experiment>/fold<k>/`` (:class:`RunLayout`): its
``fit`` writes there, and ``validate``/``test``/``predict`` write into ``fold<k>/<stage>/``,
a folder with the same file names (:meth:`RunLayout.stage`). The experiment's folder
(:class:`ExperimentLayout`) holds its folds, the composed configuration of ``lightning-cv``,
the cross-validation report and the ensemble's folder. Writers and readers of these files
(the command line, the callbacks, the DataModule's split, the report) ask these objects for the
paths; no other module spells a file name of a run.

::

    runs/<experiment>/
        cv_config.yaml                 the composed configuration every fold ran with
        .fold<k>.lock                  locked by the fit training fold<k> (RunLayout.fit_lock)
        fold<k>/                       RunLayout
            config.yaml  split.json  metrics.csv  hparams.yaml
            checkpoints/last.ckpt  checkpoints/best-….ckpt  hpc_ckpt_<n>.ckpt
            val_cases_last.csv  val_cases_best.csv  val_postprocessing_{last,best}.csv
            curves.png  fit_done.json
            wandb_run_id  wandb/  dwi_samples/epoch<k>.png
            validate/ test/ predict/   the same names; predict/: predictions/ probabilities/
                                       predict_cases.csv
        ensemble/                      RunLayout of the ensemble (predict_config.yaml, predict/)
        report/                        ReportLayout (wandb_run_id  wandb/ with --wandb)
        submitit/                      the SLURM job array's scripts and logs
    runs/compare_<a>_vs_<b>/           ComparisonLayout (lightning-cv compare)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import ConfigurationError

Stage = Literal["fit", "validate", "test", "predict"]

_FOLD = "fold"


def fold_name(fold: int) -> str:
    """``fold<k>``: the folder name of fold ``k``."""
    return f"{_FOLD}{fold}"


def fold_number(name: str) -> int | None:
    """``k`` for a folder named ``fold<k>``, else ``None``."""
    suffix = name[len(_FOLD) :] if name.startswith(_FOLD) else ""
    return int(suffix) if suffix.isdigit() else None


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder: a fold's ``fit`` (``runs/<experiment>/fold<k>/``) or a later
    stage's (``…/fold<k>/<stage>/``), which uses the same names."""

    root: Path

    # -- written by the command line and Lightning ----------------------------------------
    @property
    def config(self) -> Path:
        """The fully resolved configuration of the run (LightningCLI's ``SaveConfigCallback``)."""
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        """The CSV logger's per-step and per-epoch values."""
        return self.root / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        """The folder of the run's checkpoints."""
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoints/last.ckpt``, written after every epoch."""
        return self.checkpoints / "last.ckpt"

    #: The stem of the every-epoch checkpoint (``ModelCheckpoint(filename=…)``).
    LAST_CHECKPOINT_STEM = "last"

    def checkpoint(self, name: str) -> Path:
        """A checkpoint of this run by file name (e.g. the best one recorded in ``last.ckpt``)."""
        return self.checkpoints / Path(name).name

    def checkpoint_files(self) -> list[Path]:
        """The run's ``*.ckpt`` files, sorted by name."""
        return sorted(self.checkpoints.glob("*.ckpt")) if self.checkpoints.is_dir() else []

    def hpc_checkpoints(self) -> list[Path]:
        """The ``hpc_ckpt_<n>.ckpt`` files Lightning saved before SLURM requeued the job, oldest
        first."""
        if not self.root.is_dir():
            return []
        found = self.root.glob("hpc_ckpt_*.ckpt")
        return sorted(found, key=lambda p: int(p.stem.rsplit("_", 1)[1]))

    @property
    def fit_done(self) -> Path:
        """Written when a ``fit`` finished normally; the fold workflow skips such folds."""
        return self.root / "fit_done.json"

    @property
    def fit_lock(self) -> Path:
        """``.<run>.lock`` beside the run folder: locked by the ``fit`` that trains the run
        (:class:`core.locks.RunLock`); beside it, so that a folder renamed aside by
        ``--overwrite`` does not take it along."""
        return self.root.with_name(f".{self.root.name}.lock")

    @property
    def wandb_run_id(self) -> Path:
        """The W&B run id of the fold, kept so that a resumed run continues the same W&B run."""
        return self.root / "wandb_run_id"

    # -- written by the DataModule and the callbacks --------------------------------------
    @property
    def split(self) -> Path:
        """The fold's training and validation cases (the DataModule's ``setup``)."""
        return self.root / "split.json"

    @property
    def val_cases_last(self) -> Path:
        """Per-case validation metrics of the latest epoch."""
        return self.root / "val_cases_last.csv"

    @property
    def val_cases_best(self) -> Path:
        """Per-case validation metrics of the best epoch (the best checkpoint's)."""
        return self.root / "val_cases_best.csv"

    @property
    def val_postprocessing_last(self) -> Path:
        """Per-case scores of the post-processing candidates at the latest epoch."""
        return self.root / "val_postprocessing_last.csv"

    @property
    def val_postprocessing_best(self) -> Path:
        """Per-case scores of the post-processing candidates at the best epoch (the report's
        choice of post-processing reads them)."""
        return self.root / "val_postprocessing_best.csv"

    @property
    def test_cases(self) -> Path:
        """Per-case test metrics."""
        return self.root / "test_cases.csv"

    @property
    def curves(self) -> Path:
        """Losses and validation metrics per epoch, drawn at the end of ``fit``."""
        return self.root / "curves.png"

    @property
    def dwi_samples(self) -> Path:
        """The GAN's per-epoch figures of a validation case (``epoch<k>.png``)."""
        return self.root / "dwi_samples"

    # -- prediction -----------------------------------------------------------------------
    #: The default folder of predicted masks, relative to the ``predict`` stage folder.
    PREDICTIONS = "predictions"

    @property
    def predictions(self) -> Path:
        """Predicted masks under the challenge's names (what an evaluator reads)."""
        return self.root / self.PREDICTIONS

    def probabilities_beside(self, predictions: Path) -> Path:
        """The float probabilities of the masks in ``predictions``, outside that folder."""
        return predictions.parent / "probabilities"

    def predict_cases_beside(self, predictions: Path) -> Path:
        """Per-case metrics of predicted labelled cases, beside the masks' folder."""
        return predictions.parent / "predict_cases.csv"

    @property
    def predict_config(self) -> Path:
        """The configuration ``lightning-cv predict`` writes for an ensemble."""
        return self.root / "predict_config.yaml"

    # -- stages ---------------------------------------------------------------------------
    def stage(self, stage: str) -> RunLayout:
        """Where a stage of this run writes: the run folder for ``fit``, else ``<run>/<stage>``."""
        return self if stage == "fit" else RunLayout(self.root / stage)

    @property
    def weights(self) -> Path:
        """A fold of an exported model folder: its weights as a plain state dict (no pickled
        objects; ``torch.load(…, weights_only=True)``) with the data signature."""
        return self.root / "weights.pt"

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunLayout | None:
        """The run a checkpoint was written by (``…/fold<k>/checkpoints/x.ckpt`` beside its
        ``config.yaml``, or an exported fold's ``fold<k>/weights.pt``), or ``None`` for a
        checkpoint outside a run folder."""
        run = cls(checkpoint.parent.parent)
        if checkpoint.parent.name == run.checkpoints.name and run.config.is_file():
            return run
        exported = cls(checkpoint.parent)
        if checkpoint == exported.weights and exported.config.is_file():
            return exported
        return None


@dataclass(frozen=True)
class ReportLayout:
    """The files of an experiment's cross-validation report (``runs/<experiment>/report/``)."""

    root: Path

    @property
    def folds(self) -> Path:
        return self.root / "folds.csv"

    @property
    def cases_oof(self) -> Path:
        return self.root / "cases_oof.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def markdown(self) -> Path:
        return self.root / "report.md"

    @property
    def dice_boxplot(self) -> Path:
        return self.root / "dice_boxplot.png"

    @property
    def curves_all(self) -> Path:
        return self.root / "curves_all.png"

    @property
    def wandb_run_id(self) -> Path:
        """The W&B run id of the report, kept so that a report written again updates the same
        W&B run instead of adding another."""
        return self.root / "wandb_run_id"


@dataclass(frozen=True)
class ExperimentLayout:
    """The folder of one experiment: its folds, its composed configuration, report and ensemble."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def cv_config(self) -> Path:
        """The configuration ``lightning-cv fit`` composed once and ran every fold with."""
        return self.root / "cv_config.yaml"

    @property
    def cv_run_config(self) -> Path:
        """The settings of the latest ``lightning-cv fit`` that are not the recipe's but every
        fold's (:func:`core.recipe.run_settings_of`): its folds run with both files."""
        return self.root / "cv_run.yaml"

    def fold(self, fold: int) -> RunLayout:
        return RunLayout(self.root / fold_name(fold))

    def run(self, folder: str) -> RunLayout:
        """A run folder by name: ``fold<k>``, or a module's own (``ensemble``)."""
        return RunLayout(self.root / folder)

    def folds(self) -> dict[int, RunLayout]:
        """The folds that hold a run (``fold<k>/config.yaml``), by fold number."""
        found: dict[int, RunLayout] = {}
        for path in self.root.glob(f"{_FOLD}*"):
            number = fold_number(path.name)
            if number is not None and RunLayout(path).config.is_file():
                found[number] = RunLayout(path)
        return dict(sorted(found.items()))

    @property
    def report(self) -> ReportLayout:
        return ReportLayout(self.root / "report")

    @property
    def submitit(self) -> Path:
        """The SLURM job array's folder (submitit's scripts and the tasks' logs)."""
        return self.root / "submitit"


def first_fold_config(folder: Path) -> Path:
    """The ``config.yaml`` of a fold folder, or of the first fold of an experiment folder.

    Raises:
        ConfigurationError: For a folder that is neither (naming it and what to give).
    """
    runs = list(ExperimentLayout(folder).folds().values()) or [RunLayout(folder)]
    if not runs[0].config.is_file():
        raise ConfigurationError(
            f"{folder} holds no fold configuration (fold<k>/config.yaml): give a fold folder "
            "(runs/<experiment>/fold<k>) or an experiment folder written by lightning fit / "
            "lightning-cv fit."
        )
    return runs[0].config


@dataclass(frozen=True)
class ModelFolderLayout:
    """A model exported by ``lightning-cv export``: an experiment folder's folds reduced to what
    prediction needs, self-contained (``fold<k>/config.yaml`` and ``fold<k>/weights.pt``, so that
    :class:`ExperimentLayout` finds its folds), with a manifest of every file's SHA-256."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def model_card(self) -> Path:
        return self.root / "MODEL_CARD.md"

    @property
    def recipe(self) -> Path:
        """The configuration the folds were trained with (``cv_config.yaml``, or fold 0's)."""
        return self.root / "recipe.yaml"

    @property
    def summary(self) -> Path:
        """The cross-validation report's summary, beside the paper (when it was written)."""
        return self.root / "summary.json"

    def fold(self, fold: int) -> RunLayout:
        return RunLayout(self.root / fold_name(fold))

    @classmethod
    def containing(cls, path: Path) -> ModelFolderLayout | None:
        """The model folder ``path`` is, or is a fold or file of; ``None`` outside one."""
        for candidate in (path, *path.parents[:2]):
            if cls(candidate).manifest.is_file():
                return cls(candidate)
        return None


def training_folder_error(path: Path) -> str | None:
    """Why ``path``, given where an experiment's training folder (``runs/<experiment>``) is
    expected, is another kind of folder, with what to give instead: a model folder (its folds
    keep weights, not their validation results or training state) or one fold's folder.
    ``None`` for any other path."""
    if ModelFolderLayout(path).manifest.is_file():
        return (
            f"{path} is a model folder (lightning-cv export): it keeps the folds' weights, not "
            "their validation results. Give the experiment folder it was exported from "
            "(runs/<experiment>); a model folder goes to segment, predict and challenge."
        )
    if fold_number(path.name) is not None and RunLayout(path).config.is_file():
        return f"{path} is one fold's folder: give its experiment folder, {path.parent}."
    return None


@dataclass(frozen=True)
class ComparisonLayout:
    """The files of a comparison of experiments (``lightning-cv compare``)."""

    root: Path

    @classmethod
    def beside(cls, experiments: Sequence[Path]) -> ComparisonLayout:
        """The default folder, beside the first experiment: ``compare_<a>_vs_<b>`` for two;
        for more, ``compare_<a>_vs_<b>_and_<n>_more_<hash>``, the hash (6 hex digits) of all
        the experiments' paths, so that other third experiments get other folders."""
        first, second, *others = (Path(e) for e in experiments)
        name = f"compare_{first.name}_vs_{second.name}"
        if others:
            paths = "\n".join(str(Path(e).absolute()) for e in experiments)
            digest = hashlib.sha1(paths.encode()).hexdigest()[:6]
            name += f"_and_{len(others)}_more_{digest}"
        return cls(first.parent / name)

    @property
    def markdown(self) -> Path:
        """The comparison as a researcher reads it: tables, ranking, tests, figures."""
        return self.root / "comparison.md"

    @property
    def summary(self) -> Path:
        """All the comparison's numbers (JSON)."""
        return self.root / "comparison.json"

    @property
    def metrics(self) -> Path:
        """One row per metric and experiment: fold mean ± sd, out-of-fold mean, rank."""
        return self.root / "comparison_metrics.csv"

    @property
    def cases(self) -> Path:
        """The tested metric per case, one column per experiment."""
        return self.root / "comparison_cases.csv"

    @property
    def cases_plot(self) -> Path:
        """The tested metric per case: a box and the jittered cases per experiment."""
        return self.root / "comparison_cases.png"

    @property
    def ranks_plot(self) -> Path:
        """The experiments on a rank axis."""
        return self.root / "comparison_ranks.png"

    @property
    def paired(self) -> Path:
        """Two experiments: ``case, a, b, difference`` per paired case."""
        return self.root / "comparison.csv"

    @property
    def paired_plot(self) -> Path:
        """Two experiments: the paired scatter and the sorted differences."""
        return self.root / "comparison.png"
