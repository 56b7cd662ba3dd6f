"""The ``lightning`` command: LightningCLI in subclass mode over the suite's modules.

    lightning fit --config experiments/pspnet_focal.yaml [--config experiments/demo.yaml]
    lightning fit ... --ckpt_path last                      # resume the fold where it stopped
    lightning validate|test|predict --config runs/<experiment>/fold0/config.yaml --ckpt_path best
    lightning fit --config experiments/pspnet_focal.yaml --print_config

Each fold of an experiment lives in ``runs/<experiment>/fold<k>/`` (see
:mod:`lightning_modules.runs`); ``experiment`` is a top-level key of the experiment YAMLs and
the fold comes from ``data.init_args.fold`` (a model with a ``run_folder``, an ensemble, has
that folder instead). Every run gets, without repeating it in the YAMLs, a ``ModelCheckpoint``
of the best epoch and one of the last (``last.ckpt`` after every epoch), a
``LearningRateMonitor``, a ``CaseReport``, per-step seeding for exact resumes (``StepSeed``), a
``NiftiPredictionWriter`` for ``predict`` and an optional ``early_stopping``, all following the
model's single ``monitor``/``monitor_mode`` through ``link_arguments``. ``paper`` names the
published result the experiment reproduces (checked against the package's table). A finished
``fit`` writes ``fit_done.json`` into the fold's folder (the fold workflow,
:mod:`lightning_modules.crossval`, skips such folds). A ``WandbLogger`` given in a config logs beside the CSV logger,
grouped by experiment and named by fold, with its files inside the fold's folder. User
mistakes exit with status 2 and one paragraph (:mod:`lightning_modules.cli_errors`).
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from datetime import datetime, timezone
from importlib import import_module
from typing import Any

import pytorch_lightning as pl
import torch
from jsonargparse import Namespace
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.trainer.states import TrainerStatus

from evaluation.cv_report import DONE_FILE
from evaluation.published import get_published
from evaluation.report import write_text
from lightning_modules.callbacks import CaseReport
from lightning_modules.cli_errors import SuiteArgumentParser, exit_if_user_error
from lightning_modules.runs import RunPlan, plan_run, wandb_run_id
from lightning_modules.seeding import StepSeed
from lightning_modules.writer import NiftiPredictionWriter

log = logging.getLogger(__name__)

_PACKAGES = ("datamodules", "lightning_modules", "networks", "losses", "evaluation")
_WANDB = "WandbLogger"


def _class_of(section: Any) -> type | None:
    """The class a ``class_path`` section of the config names (``None`` without one)."""
    class_path = getattr(section, "class_path", None) if section is not None else None
    if not class_path:
        return None
    module, _, name = str(class_path).rpartition(".")
    return getattr(import_module(module), name, None) if module else None


def _checkpoint_filename(monitor: str) -> str:
    """``best-epoch007-dice0.6360.ckpt`` for ``val/dice``."""
    return f"best-epoch{{epoch:03d}}-{monitor.rsplit('/', 1)[-1]}{{{monitor}:.4f}}"


class SuiteCLI(LightningCLI):
    """LightningCLI with run folders per fold, linked default callbacks and short errors."""

    run_plan: RunPlan | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", SuiteArgumentParser)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--experiment",
            type=str,
            default="experiment",
            help="Experiment name: runs go to <runs_dir>/<experiment>/fold<k>/",
        )
        parser.add_argument("--runs_dir", type=str, default="runs", help="Root of run folders.")
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="fit: delete the fold's existing run folder and start over.",
        )
        parser.add_argument(
            "--paper",
            type=str | None,
            default=None,
            help="The published result this experiment reproduces, e.g. abulnaga/focal "
            "(keys: evaluation/data/published.json); the fold report shows it beside ours.",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {"checkpoint.save_last": False, "checkpoint.auto_insert_metric_name": False}
        )
        # last.ckpt after every epoch. Since Lightning 2.6 the monitored checkpoint's save_last
        # writes it only when a best checkpoint is saved in the same step, so a run that stops
        # improving would resume from its last improvement; a monitor-free checkpoint named
        # "last" is written every epoch (after the monitored one, so it records the best).
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "last_checkpoint.filename": "last",
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "epoch"})
        parser.add_lightning_class_args(CaseReport, "case_report")
        parser.add_lightning_class_args(StepSeed, "step_seed")
        parser.add_lightning_class_args(NiftiPredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(
            EarlyStopping, "early_stopping", subclass_mode=True, required=False
        )
        for target in ("checkpoint", "case_report", "early_stopping.init_args"):
            parser.link_arguments("model.init_args.monitor", f"{target}.monitor")
            parser.link_arguments("model.init_args.monitor_mode", f"{target}.mode")
        parser.link_arguments(
            "model.init_args.monitor", "checkpoint.filename", compute_fn=_checkpoint_filename
        )

    def _config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._config()
        if cfg.get("paper"):
            get_published(cfg.paper)  # an unknown key fails now, not after the last fold
        self._check_dataset(cfg)
        fold = getattr(cfg.data.init_args, "fold", None) if cfg.get("data") else None
        stage = self.subcommand or "fit"
        model_class = _class_of(cfg.get("model"))
        folder = getattr(model_class, "run_folder", None)
        if getattr(model_class, "ddp_find_unused_parameters", False) and (
            cfg.trainer.get("strategy") == "ddp"
        ):
            # A module whose backward passes each reach part of it (a GAN's two optimizers).
            cfg.trainer.strategy = "ddp_find_unused_parameters_true"
        plan = plan_run(
            cfg.runs_dir, cfg.experiment, fold, stage, cfg.get("ckpt_path"), cfg.overwrite, folder
        )
        self.run_plan = plan
        if stage == "fit" and plan.run_dir.is_dir():
            (plan.run_dir / DONE_FILE).unlink(missing_ok=True)  # finished again when fit ends
        if "ckpt_path" in cfg:  # absent when the CLI is built without a subcommand (run=False)
            cfg.ckpt_path = None if plan.ckpt_path is None else str(plan.ckpt_path)
        cfg.checkpoint.dirpath = str(plan.stage_dir / "checkpoints")
        cfg.last_checkpoint.dirpath = cfg.checkpoint.dirpath
        cfg.trainer.default_root_dir = str(plan.stage_dir)
        self._configure_loggers(
            cfg, plan, folder or (f"fold{fold}" if fold is not None else "run"), stage
        )

    @staticmethod
    def _check_dataset(cfg: Any) -> None:
        # Check the dataset before anything heavy is built, so a missing dataset fails in
        # seconds with an actionable message instead of after the model is constructed.
        data = cfg.get("data")
        if data is None or not getattr(data, "class_path", None):
            return
        check = getattr(_class_of(data), "check_data_dir", None)
        data_dir = getattr(data.init_args, "data_dir", None)
        if check is not None and data_dir is not None:
            accepted = inspect.signature(check).parameters
            extra = {
                k: getattr(data.init_args, k)
                for k in accepted
                if k != "data_dir" and hasattr(data.init_args, k)
            }
            check(data_dir, **extra)

    @staticmethod
    def _configure_loggers(cfg: Any, plan: RunPlan, name: str, stage: str) -> None:
        """The CSV logger of the fold's folder first (so ``trainer.log_dir`` is that folder),
        then any logger of the config, W&B pointed into the same folder."""
        given = cfg.trainer.logger
        if given is False:
            return
        others = (
            [] if given in (None, True) else list(given) if isinstance(given, list) else [given]
        )
        # A run's own config.yaml (validate/test/predict --config fold<k>/config.yaml) holds the
        # CSV logger of its fit: a second one would start that folder's metrics.csv over.
        others = [
            logger
            for logger in others
            if not str(getattr(logger, "class_path", "")).endswith("RunCSVLogger")
        ]
        csv = Namespace(
            class_path="lightning_modules.runs.RunCSVLogger",
            init_args=Namespace(
                save_dir=str(plan.run_dir.parent.parent),
                name=plan.run_dir.parent.name,
                version=plan.logger_version,
                keep_until_epoch=plan.resume_epoch,
            ),
        )
        for logger in others:
            if str(getattr(logger, "class_path", "")).endswith(_WANDB):
                logger.init_args.save_dir = str(plan.run_dir)
                logger.init_args.name = logger.init_args.name or (
                    name if stage == "fit" else f"{name}-{stage}"
                )
                if stage == "fit":
                    logger.init_args.id = wandb_run_id(plan.run_dir)
                extra = dict(logger.get("dict_kwargs") or {})
                extra.setdefault("group", cfg.experiment)
                extra.setdefault("job_type", stage)
                extra.setdefault("resume", "allow")
                logger.dict_kwargs = extra
        cfg.trainer.logger = [csv, *others]

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        # Refuse a checkpoint trained on other inputs before anything else is set up or
        # printed: the datamodule and the model exist, the trainer does not yet.
        preflight = getattr(self.datamodule, "preflight", None)
        if preflight is not None:
            preflight(self.subcommand or "fit")
        check_data = getattr(self.model, "check_data", None)
        if check_data is not None:
            check_data(self.datamodule)
        plan = self.run_plan
        check = getattr(self.datamodule, "check_signature", None)
        if plan is not None and plan.ckpt_path is not None and check is not None:
            state = torch.load(plan.ckpt_path, map_location="cpu", weights_only=False, mmap=True)
            saved = state.get(type(self.datamodule).__qualname__, {})
            check(saved.get("signature"), str(plan.ckpt_path))
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        # The fold workflow (lightning-cv) skips a fold only when this file says it finished:
        # an interrupted fit (Ctrl-C, a SLURM time limit) leaves none and is resumed instead.
        trainer, plan = self.trainer, self.run_plan
        if plan is None or not trainer.is_global_zero or trainer.interrupted:
            return
        if trainer.state.status != TrainerStatus.FINISHED:
            return
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None)
        done = {
            "epochs": trainer.current_epoch,
            "best_model_path": getattr(checkpoint, "best_model_path", None),
            "best_model_score": None if best is None else float(best),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_text(plan.run_dir / DONE_FILE, json.dumps(done, indent=1))

    def before_predict(self) -> None:
        # Predictions go to writer callbacks case by case; keeping every case's native-grid
        # probability in memory as well would grow with the dataset.
        config = self.config_init[self.subcommand]
        if config.get("return_predictions") is None:
            config["return_predictions"] = False

    def _instantiate_trainer(
        self, config: dict[str, Any], callbacks: list[pl.Callback]
    ) -> pl.Trainer:
        # An absent optional callback (early_stopping: null) arrives as None.
        return super()._instantiate_trainer(config, [c for c in callbacks if c is not None])


def _configure_logging() -> None:
    # Lightning announces the seed before the arguments are checked; the seed is in the run's
    # config.yaml, and a user error must be the first thing a user reads.
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for package in _PACKAGES:
        package_log = logging.getLogger(package)
        package_log.setLevel(logging.INFO)
        package_log.addHandler(handler)
        package_log.propagate = False


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning`` console script."""
    _configure_logging()
    try:
        SuiteCLI(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except Exception as error:
        exit_if_user_error(error)
        raise
    finally:
        # Lightning leaves the process group alive after fit; tearing gloo down explicitly
        # avoids an abort ("terminate called without an active exception") at interpreter exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
