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
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
import yaml
from jsonargparse import ArgumentParser
from torch import nn

from datamodules.errors import ConfigurationError
from evaluation.metrics import PresetName
from lightning_modules.case_evaluation import CaseEvaluationModule
from lightning_modules.runs import best_checkpoint, run_folder_of

log = logging.getLogger(__name__)


def resolve_members(members: list[str]) -> list[Path]:
    """Checkpoint files from checkpoints, fold folders or experiment folders (globs allowed).

    ``runs/x/fold0/checkpoints/last.ckpt`` is used as given; ``runs/x/fold0`` means that fold's
    best checkpoint; ``runs/x`` means the best checkpoint of each of its ``fold*`` folders.

    Raises:
        ConfigurationError: For an entry that names nothing, or a fold without a checkpoint.
    """
    found: list[Path] = []
    for entry in members:
        paths = sorted(Path(p) for p in glob.glob(str(Path(entry).expanduser()))) or [Path(entry)]
        for path in paths:
            if path.is_file():
                found.append(path.resolve())
                continue
            folds = sorted(path.glob("fold*")) if path.is_dir() else []
            folds = [path] if (path / "checkpoints").is_dir() else folds
            if not folds:
                raise ConfigurationError(
                    f"Ensemble member {entry!r}: {path.absolute()} is neither a checkpoint, a fold "
                    "folder (runs/<experiment>/fold<k>) nor an experiment folder holding fold "
                    "folders. Check model.init_args.members."
                )
            for fold in folds:
                best = best_checkpoint(fold)
                if best is None:
                    raise ConfigurationError(
                        f"Ensemble member {entry!r}: {fold} has no best checkpoint (its fit never "
                        "finished a validated epoch). Finish it (lightning-cv fit) or name a "
                        "checkpoint file."
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
    run_dir = run_folder_of(checkpoint)
    if run_dir is None:
        raise ConfigurationError(
            f"Ensemble member {checkpoint}: not inside a run folder "
            "(runs/<experiment>/fold<k>/checkpoints/), so the network it holds is unknown. "
            "Use a checkpoint written by lightning fit, next to its config.yaml."
        )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningModule, "model")
    parsed = parser.parse_object({"model": config["model"]})
    module = parser.instantiate_classes(parsed).model
    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    module.load_state_dict(state["state_dict"], assign=True)
    module.eval()
    signature: dict[str, Any] = {}
    for value in state.values():
        if isinstance(value, dict) and "signature" in value:
            signature = value["signature"]
    return module, signature


class EnsembleModule(CaseEvaluationModule):
    """The mean lesion probability of trained members, evaluated and predicted per case.

    Args:
        members: Checkpoints, fold folders or experiment folders (see :func:`resolve_members`),
            e.g. ``[runs/pspnet_focal, runs/pspnet_ce]`` for seed 003's 10-model ensemble.
        metrics, monitor, monitor_mode, threshold: As
            :class:`~lightning_modules.case_evaluation.CaseEvaluationModule`; the threshold
            applies to the averaged probability.

    Raises:
        ConfigurationError: For a member that names no checkpoint, or (at setup) one trained
            on other data settings than the DataModule's.
    """

    # Its runs belong to no fold: runs/<experiment>/ensemble/<stage>/.
    run_folder: ClassVar[str] = "ensemble"

    def __init__(
        self,
        members: list[str],
        metrics: PresetName = "isles2018",
        monitor: str = "val/dice",
        monitor_mode: Literal["max", "min"] = "max",
        threshold: float = 0.5,
    ) -> None:
        super().__init__(metrics, monitor, monitor_mode, threshold)
        self.save_hyperparameters()
        self.checkpoints = resolve_members(members)
        built = [build_member(path) for path in self.checkpoints]
        self.members = nn.ModuleList([module for module, _ in built])
        self.signatures = [signature for _, signature in built]
        for member in self.members:
            if not hasattr(member, "predict_case"):
                raise ConfigurationError(
                    f"Ensemble member {type(member).__name__} cannot predict whole cases (it has "
                    "no predict_case); ensembles need case-predicting modules."
                )
        log.info(
            "Ensemble of %d member(s):\n  %s",
            len(self.checkpoints),
            "\n  ".join(str(p) for p in self.checkpoints),
        )

    def setup(self, stage: str) -> None:
        check = getattr(getattr(self.trainer, "datamodule", None), "check_signature", None)
        if check is not None:
            for path, signature in zip(self.checkpoints, self.signatures):
                check(signature or None, str(path))

    def predict_case(self, case: dict[str, Any]) -> torch.Tensor:
        total: torch.Tensor | None = None
        for member in self.members:
            probability = member.predict_case(case)  # type: ignore[operator]
            total = probability if total is None else total.add_(probability)
        assert total is not None, "an ensemble has at least one member"
        return total.div_(len(self.members))
