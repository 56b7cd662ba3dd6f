"""``SuiteCLI``: the LightningCLI of the ``lightning`` command (:mod:`cli.lightning`).

Kept apart from the command's entry point so that the mistakes a command line shows before any
class is needed (no subcommand, a ``--config`` file that does not exist) are answered without
importing torch, Lightning and the suite's modules, which takes seconds.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import pydoc
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from jsonargparse import Namespace
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
)
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.case_report import CaseReport
from callbacks.prediction_writer import NiftiPredictionWriter
from callbacks.progress import LoggedValuesBar
from callbacks.seeding import StepSeed
from cli.parse_errors import SuiteArgumentParser
from cli.runs import RunCSVLogger, RunPlan, plan_run, wandb_run_id
from core.checkpoints import AtomicCheckpointIO, check_weights_fit, read_checkpoint
from core.errors import ConfigurationError
from core.io import why_not_writable, write_text
from core.pretrained import weights_from_checkpoint
from core.protocols import (
    ChecksData,
    ChecksDataDir,
    PartialBackward,
    Preflighted,
    RunFolderOwner,
    SignedData,
)
from core.run_layout import RunLayout
from evaluation.published import get_published


def _class_of(section: Any) -> type | None:
    """The class a ``class_path`` section of the config names (``None`` without one)."""
    class_path = section.get("class_path") if isinstance(section, (Namespace, dict)) else None
    if not class_path:
        return None
    try:
        found = pydoc.locate(str(class_path))
    except pydoc.ErrorDuringImport:
        return None  # jsonargparse has already refused an unusable class path
    return found if inspect.isclass(found) else None


#: Lightning's DDP strategies by name → the same strategy looking for unused parameters.
_DDP_LOOKING_FOR_UNUSED = {
    name: f"{name}_find_unused_parameters_true"
    for name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
}


def _partial_backward(model_class: type | None, callbacks: Any) -> bool:
    """Whether the module or one of the trainer's callbacks leaves parameters without gradients
    (:class:`core.protocols.PartialBackward`), so that DDP must look for them."""
    sections = callbacks if isinstance(callbacks, list) else [callbacks]
    classes = [model_class, *(_class_of(section) for section in sections)]
    return any(
        cls is not None and issubclass(cls, PartialBackward) and cls.ddp_finds_unused_parameters()
        for cls in classes
    )


def _checkpoint_filename(monitor: str) -> str:
    """``best-epoch007-dice0.6360.ckpt`` for ``val/dice``."""
    return f"best-epoch{{epoch:03d}}-{monitor.rsplit('/', 1)[-1]}{{{monitor}:.4f}}"


class _CommitReplacement(pl.Callback):
    """Deletes the run folder that ``--overwrite`` set aside once the new fit trains: every
    check (settings, data decoding, model set-up, the sanity validation) has passed."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.plan.commit()


class _PredictStopsAtSigterm(pl.Callback):
    """Ends ``predict`` after the batch it is on at SIGTERM, as Lightning ends ``fit``,
    ``validate`` and ``test``: its prediction loop only notes the signal and predicts every
    case. The writer publishes a prediction's masks only once every case is written."""

    def on_predict_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.received_sigterm:
            raise SIGTERMException


class SuiteCLI(LightningCLI):
    """LightningCLI with run folders per fold, linked default callbacks and short errors.

    Args:
        home: For ``validate``/``test``/``predict`` with a run's own ``config.yaml``: that run's
            folder (its checkpoints and outputs are used, wherever the folder now is).
        plans: Receives the run plan as soon as it is made, so that the caller can put a
            replaced run back even when the CLI fails while it is being constructed.
    """

    run_plan: RunPlan | None = None

    def __init__(
        self,
        *args: Any,
        home: Path | None = None,
        plans: list[RunPlan] | None = None,
        **kwargs: Any,
    ) -> None:
        self.home = home
        self.plans = plans if plans is not None else []
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
            nargs="?",
            const=True,
            default=False,
            help="fit: start the fold over; its existing run folder is deleted once the new fit "
            "starts training (put back if it fails before).",
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
                "last_checkpoint.filename": RunLayout.LAST_CHECKPOINT_STEM,
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

    def _parse_ckpt_path(self) -> None:
        # Lightning re-parses a checkpoint file's hyperparameters over the configuration, which
        # silently undoes command-line overrides (--model.init_args.threshold of a predict) and
        # ends in a traceback for a damaged file. A run's own config.yaml is the suite's record of
        # its settings, so the file is only checked here, with an error that names it.
        if not self.config.get("subcommand"):
            return
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            read_checkpoint(Path(ckpt_path))

    def _config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def instantiate_classes(self) -> None:
        # A checkpoint brings every weight: a network does not read its pretrained file, which
        # a model folder, another working folder or a container does not have.
        trained = self.run_plan is not None and self.run_plan.ckpt_path is not None
        with weights_from_checkpoint() if trained else contextlib.nullcontext():
            super().instantiate_classes()

    def before_instantiate_classes(self) -> None:
        cfg = self._config()
        if cfg.get("paper"):
            get_published(cfg.paper)  # an unknown key fails now, not after the last fold
        self._check_dataset(cfg)
        fold = cfg.data.init_args.get("fold") if cfg.get("data") else None
        stage = self.subcommand or "fit"
        model_class = _class_of(cfg.get("model"))
        folder = None
        if model_class is not None and issubclass(model_class, RunFolderOwner):
            folder = model_class.run_folder()
        strategy = cfg.trainer.get("strategy")
        if strategy in _DDP_LOOKING_FOR_UNUSED and _partial_backward(
            model_class, cfg.trainer.get("callbacks")
        ):
            cfg.trainer.strategy = _DDP_LOOKING_FOR_UNUSED[strategy]
        _check_experiment_name(cfg.experiment)
        _check_runs_dir(Path(cfg.runs_dir))
        plan = plan_run(
            cfg.runs_dir,
            cfg.experiment,
            fold,
            stage,
            cfg.get("ckpt_path"),
            cfg.overwrite,
            folder,
            home=self.home,
        )
        self.run_plan = plan
        self.plans.append(plan)
        if stage == "fit":
            plan.run.fit_done.unlink(missing_ok=True)  # finished again when fit ends
        if "ckpt_path" in cfg:  # absent when the CLI is built without a subcommand (run=False)
            cfg.ckpt_path = None if plan.ckpt_path is None else str(plan.ckpt_path)
        cfg.checkpoint.dirpath = str(plan.stage.checkpoints)
        cfg.last_checkpoint.dirpath = cfg.checkpoint.dirpath
        if stage != "fit":
            # Only a fit saves checkpoints. Restoring the checkpoint callbacks' state from
            # another folder (the fit's) would warn that their record of it was not reloaded.
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        cfg.trainer.default_root_dir = str(plan.stage.root)
        name = folder or plan.run.root.name
        self._configure_loggers(cfg, plan, name, stage)

    @staticmethod
    def _check_dataset(cfg: Any) -> None:
        # Check the dataset before anything heavy is built, so a missing dataset fails in
        # seconds with an actionable message instead of after the model is constructed.
        data = cfg.get("data")
        data_class = _class_of(data)
        if data_class is None or not issubclass(data_class, ChecksDataDir):
            return
        arguments = data.init_args
        if arguments.get("data_dir") is None or arguments.get("predict_cases"):
            return  # cases given as files (lightning-cv segment) need no dataset
        accepted = inspect.signature(data_class.check_data_dir).parameters
        settings = {k: arguments[k] for k in accepted if k != "data_dir" and k in arguments}
        data_class.check_data_dir(arguments.data_dir, **settings)

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
            if not ((cls := _class_of(logger)) is not None and issubclass(cls, RunCSVLogger))
        ]
        csv = Namespace(
            class_path=f"{RunCSVLogger.__module__}.{RunCSVLogger.__qualname__}",
            init_args=Namespace(
                save_dir=str(plan.run.root.parent.parent),
                name=plan.run.root.parent.name,
                version=plan.logger_version,
                keep_until_epoch=plan.resume_epoch,
            ),
        )
        for logger in others:
            cls = _class_of(logger)
            if cls is not None and issubclass(cls, WandbLogger):
                logger.init_args.save_dir = str(plan.stage.root)
                extra = dict(logger.get("dict_kwargs") or {})
                if stage == "fit":
                    logger.init_args.name = logger.init_args.name or name
                    logger.init_args.id = wandb_run_id(plan.run.wandb_run_id)
                else:
                    # A fold's own config.yaml holds its fit's W&B run (id, name, job type):
                    # a validate/test/predict run of its own, beside the fit's, not over it.
                    if logger.init_args.get("name") in (None, name):
                        logger.init_args.name = f"{name}-{stage}"
                    logger.init_args.id = None
                    if logger.init_args.get("job_type") == "fit":
                        logger.init_args.job_type = None
                    if extra.get("job_type") == "fit":
                        del extra["job_type"]
                extra.setdefault("group", cfg.experiment)
                extra.setdefault("job_type", stage)
                extra.setdefault("resume", "allow")
                logger.dict_kwargs = extra
        cfg.trainer.logger = [csv, *others]

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        # Refuse a checkpoint trained on other inputs before anything else is set up or
        # printed: the datamodule and the model exist, the trainer does not yet.
        if isinstance(self.datamodule, Preflighted):
            self.datamodule.preflight(self.subcommand or "fit")
        if isinstance(self.model, ChecksData):
            self.model.check_data(self.datamodule)
        plan = self.run_plan
        if plan is not None and plan.ckpt_path is not None:
            state = read_checkpoint(plan.ckpt_path)
            check_weights_fit(state, self.model, plan.ckpt_path, strict=self.model.strict_loading)
            if isinstance(self.datamodule, SignedData):
                saved = state.get(type(self.datamodule).__qualname__, {})
                self.datamodule.check_signature(saved.get("signature"), str(plan.ckpt_path))
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
        best = checkpoint.best_model_score if isinstance(checkpoint, ModelCheckpoint) else None
        done = {
            "epochs": trainer.current_epoch,
            "best_model_path": (
                checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else None
            ),
            "best_model_score": None if best is None else float(best),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_text(plan.run.fit_done, json.dumps(done, indent=1))

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
        callbacks = [c for c in callbacks if c is not None]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):  # Lightning's default bar reads the loss back from the GPU at every step
            callbacks.append(LoggedValuesBar())
        if self.run_plan is not None and self.run_plan.replaced is not None:
            callbacks.append(_CommitReplacement(self.run_plan))
        callbacks.append(_PredictStopsAtSigterm())
        try:
            trainer = super()._instantiate_trainer(config, callbacks)
        except (MisconfigurationException, ValueError, TypeError, ImportError) as error:
            if not _raised_by_lightning(error):
                raise
            raise ConfigurationError(_trainer_settings_error(config, error)) from error
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # not a writer the user chose
            strategy.checkpoint_io = AtomicCheckpointIO()
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._wandb_init.get("anonymous") is None:
                # Lightning hands wandb.init `anonymous=None` when the config leaves it out; W&B
                # 0.31 warns that the setting has no effect whenever it is given, None included
                # ("wandb: WARNING The anonymous setting has no effect", even with WANDB_SILENT).
                logger._wandb_init.pop("anonymous", None)
        return trainer


def _check_experiment_name(name: str) -> None:
    """Refuse an experiment name that is no folder of its own under ``runs_dir``.

    Raises:
        ConfigurationError: For an empty name, or ``.``/``..``, or one with such a part.
    """
    parts = name.replace("\\", "/").split("/")
    if not name.strip() or any(part in ("", ".", "..") for part in parts):
        raise ConfigurationError(
            f"--experiment {name!r} does not name a folder of its own under runs_dir (its runs "
            "would land beside or outside the other experiments' folders). Give a name such as "
            "--experiment pspnet_focal_v2."
        )


def _check_runs_dir(runs_dir: Path) -> None:
    """Refuse a ``runs_dir`` that cannot be created or written, before anything is built.

    Raises:
        ConfigurationError: Naming the folder, what is wrong and what to do.
    """
    problem = why_not_writable(runs_dir)
    if problem is not None:
        raise ConfigurationError(
            f"--runs_dir {runs_dir}: cannot hold the run folders, {problem}. Pass a writable "
            "folder (the default is runs/ in the working folder), or fix its permissions."
        )


#: The trainer settings that decide where and how a run computes (named in their errors).
_PLACEMENT = ("accelerator", "devices", "strategy", "num_nodes", "precision")


def _raised_by_lightning(error: BaseException) -> bool:
    """Whether ``error`` was raised inside Lightning itself (its argument checks), not in the
    suite's code that the Trainer calls."""
    frames = traceback.extract_tb(error.__traceback__)
    origin = Path(frames[-1].filename).parts if frames else ()
    return "pytorch_lightning" in origin or "lightning_fabric" in origin


def _trainer_settings_error(config: dict[str, Any], error: BaseException) -> str:
    """The one paragraph for trainer settings Lightning refuses (an accelerator this machine
    does not have, more devices than it has, an unknown strategy, a missing backend)."""
    reason = " ".join(str(error).split()) or type(error).__name__
    reason += "" if reason.endswith((".", "!", "?")) else "."
    given = ", ".join(f"trainer.{key}={config.get(key)!r}" for key in _PLACEMENT if key in config)
    return (
        f"The trainer settings cannot be used here ({given}): {reason} Change the "
        "--trainer.<setting> it names (on a machine without a GPU: --trainer.accelerator cpu "
        "--trainer.devices 1, and no mixed precision); `lightning fit --help` lists the settings."
    )
