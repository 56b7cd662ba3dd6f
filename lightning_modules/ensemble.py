"""Ensembles: the average lesion probability of several trained models, case by case.

Seed 003's headline test result is a 10-model ensemble (the five focal-loss and the five
cross-entropy folds); an experiment's folds together are the natural ensemble of any
cross-validation. :class:`EnsembleModule` rebuilds each member from the configuration its run
saved (``runs/<experiment>/fold<k>/config.yaml``), loads the checkpoint's weights memory-mapped,
and averages the members' native-grid probabilities one case at a time: the probabilities held
at once are one case's running sum and one member's output, whatever the number of members.
It predicts (``lightning predict``: NIfTI masks, optional probabilities, and per-case metrics
for labelled cases) and evaluates (``validate``/``test``) like a single model.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from core.checkpoints import best_checkpoint, read_checkpoint, read_weights
from core.defaults import DEFAULT_MONITOR, DEFAULT_MONITOR_MODE, DEFAULT_PRESET, MonitorMode
from core.errors import ConfigurationError
from core.legacy import upgrade_config
from core.model_folder import verify_model_folder
from core.pretrained import weights_from_checkpoint
from core.protocols import SignedData
from core.run_layout import ExperimentLayout, ModelFolderLayout, RunLayout
from evaluation.metrics import PresetName
from lightning_modules.case_evaluation import CaseEvaluationModule, CasePrediction

log = logging.getLogger(__name__)


def resolve_members(members: list[str], command: str | None = None) -> list[Path]:
    """Checkpoint files from checkpoints, fold folders or experiment folders (globs allowed).

    ``runs/x/fold0/checkpoints/last.ckpt`` is used as given; ``runs/x/fold0`` means that fold's
    best checkpoint; ``runs/x`` means the best checkpoint of each of its ``fold*`` folders. A
    model folder (``lightning-cv export``) or one of its folds means its folds' ``weights.pt``,
    after the folder's manifest has been checked.

    Args:
        members: The entries, as the user gave them.
        command: The command whose arguments they are (``lightning-cv predict``), named in the
            errors; ``None``: they come from ``model.init_args.members`` of a configuration.

    Raises:
        ConfigurationError: For an entry that names nothing, or a fold without a checkpoint.
    """
    found: list[Path] = []
    for entry in members:
        given = f"{command} {entry}" if command else f"Ensemble member {entry!r}"
        fix = "" if command else " Fix model.init_args.members."
        pattern = Path(entry).expanduser()
        paths = sorted(Path(p) for p in glob.glob(str(pattern))) or [pattern]
        for path in paths:
            if not path.exists():
                raise ConfigurationError(
                    f"{given}: no such file or folder (from {Path.cwd()}). Give an experiment "
                    "folder (runs/<experiment>), a fold folder (runs/<experiment>/fold<k>), a "
                    f"model folder (lightning-cv export) or a checkpoint file.{fix}"
                )
            folder = ModelFolderLayout.containing(path)
            if folder is not None:
                verify_model_folder(folder)  # a changed or incomplete export is refused now
            if path.is_file():
                found.append(path.resolve())
                continue
            run = RunLayout(path)
            runs = [run] if run.checkpoints.is_dir() or run.weights.is_file() else []
            if not runs and path.is_dir():
                runs = list(ExperimentLayout(path).folds().values())
            if not runs:
                raise ConfigurationError(
                    f"{given}: {path.absolute()} is neither a checkpoint, a fold folder "
                    "(runs/<experiment>/fold<k>), a model folder (lightning-cv export) nor an "
                    f"experiment folder holding fold folders.{fix}"
                )
            for run in runs:
                if run.weights.is_file():  # a fold of an exported model folder
                    found.append(run.weights.resolve())
                    continue
                best = best_checkpoint(run)
                if best is None:
                    raise ConfigurationError(
                        f"{given}: {run.root} has no best checkpoint in "
                        f"{run.checkpoints} (its fit never finished a validated epoch, or the "
                        "file was not copied with the folder). Finish it (lightning-cv fit) or "
                        f"name a checkpoint file.{fix}"
                    )
                found.append(best.resolve())
    if len(set(found)) != len(found):
        raise ConfigurationError(
            f"Ensemble members name a checkpoint twice: {[str(p) for p in found]}."
        )
    return found


def build_member(checkpoint: Path) -> tuple[pl.LightningModule, dict[str, Any]]:
    """The trained module of ``checkpoint`` and its data signature.

    The module is rebuilt from its run's ``config.yaml`` (its ``model`` section), then the
    checkpoint's weights are assigned memory-mapped, so they are paged in from the file.

    Raises:
        ConfigurationError: For a checkpoint outside a run folder.
    """
    run = RunLayout.of_checkpoint(checkpoint)
    if run is None:
        raise ConfigurationError(
            f"Ensemble member {checkpoint}: not inside a run folder "
            "(runs/<experiment>/fold<k>/checkpoints/), so the network it holds is unknown. "
            "Use a checkpoint written by lightning fit, next to its config.yaml."
        )
    folder = ModelFolderLayout.containing(checkpoint)
    if folder is not None:
        verify_model_folder(folder)
    config, _ = upgrade_config(yaml.safe_load(run.config.read_text()))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningModule, "model")
    parsed = parser.parse_object({"model": config["model"]})
    with weights_from_checkpoint():  # the checkpoint's weights replace any pretrained ones
        module = parser.instantiate_classes(parsed).model
    state = read_weights(checkpoint) if checkpoint == run.weights else read_checkpoint(checkpoint)
    if "state_dict" not in state:
        raise ConfigurationError(
            f"Ensemble member {checkpoint} holds no weights (no state_dict): use a checkpoint "
            "written by lightning fit."
        )
    module.load_state_dict(state["state_dict"], assign=True)
    module.eval()
    signature: dict[str, Any] = {}
    for value in state.values():
        if isinstance(value, dict) and "signature" in value:
            signature = value["signature"]
    return module, signature


#: What to do when an ensemble's members were trained on other data settings than its data.
_MIXED_INPUTS = (
    "An ensemble feeds every member the same inputs: ensemble only experiments trained with the "
    "same data settings (lightning-cv predict A B … of one preprocessing), or predict the others "
    "on their own."
)


class EnsembleModule(CaseEvaluationModule):
    """The mean lesion probability of trained members, evaluated and predicted per case.

    Args:
        members: Checkpoints, fold folders or experiment folders (see :func:`resolve_members`),
            e.g. ``[runs/pspnet_focal, runs/pspnet_ce]`` for seed 003's 10-model ensemble.
        metrics, monitor, monitor_mode, threshold: As
            :class:`~lightning_modules.case_evaluation.CaseEvaluationModule`; the threshold
            applies to the averaged probability.
        tta: Mirroring test-time augmentation for every member, whatever its own
            configuration says: each member averages its flips (by its own dimensionality),
            then the ensemble averages the members.

    Raises:
        ConfigurationError: For a member that names no checkpoint, or (at setup) one trained
            on other data settings than the DataModule's.
    """

    def __init__(
        self,
        members: list[str],
        metrics: PresetName = DEFAULT_PRESET,
        monitor: str = DEFAULT_MONITOR,
        monitor_mode: MonitorMode = DEFAULT_MONITOR_MODE,
        threshold: float = 0.5,
        tta: bool = False,
    ) -> None:
        super().__init__(
            metrics=metrics,
            monitor=monitor,
            monitor_mode=monitor_mode,
            threshold=threshold,
            tta=tta,
        )
        self.save_hyperparameters()
        self.checkpoints = resolve_members(members)
        built = [build_member(path) for path in self.checkpoints]
        self.members = nn.ModuleList([module for module, _ in built])
        self.signatures = [signature for _, signature in built]
        for member in self.members:
            if not isinstance(member, CaseEvaluationModule):
                raise ConfigurationError(
                    f"Ensemble member {type(member).__name__} cannot predict whole cases (it is "
                    "not a CaseEvaluationModule); ensembles need case-predicting modules."
                )
            member.use_tta(tta)
        log.info(
            "Ensemble of %d member(s):\n  %s",
            len(self.checkpoints),
            "\n  ".join(str(p) for p in self.checkpoints),
        )

    @classmethod
    def run_folder(cls) -> str:
        """Its runs belong to no fold: ``runs/<experiment>/ensemble/<stage>/``."""
        return "ensemble"

    def check_data(self, datamodule: object) -> None:
        """Refuse data settings other than those every member was trained with.

        Raises:
            ConfigurationError: Naming the member and each setting that differs.
        """
        if isinstance(datamodule, SignedData):
            for path, signature in zip(self.checkpoints, self.signatures):
                datamodule.check_signature(signature or None, str(path), _MIXED_INPUTS)

    def predict_case(self, case: dict[str, Any]) -> CasePrediction:
        total = None
        for member in self.members:
            assert isinstance(member, CaseEvaluationModule), "checked in __init__"
            probability = member.predict_case(case).probability
            total = probability if total is None else total.add_(probability)
        assert total is not None, "an ensemble has at least one member"
        return CasePrediction(total.div_(len(self.members)))
