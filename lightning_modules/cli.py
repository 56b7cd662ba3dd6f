"""The ``lightning`` command: LightningCLI in subclass mode over the suite's modules.

    lightning fit --config experiments/pspnet_focal.yaml [--config experiments/demo.yaml]
    lightning validate|test|predict --config ... --ckpt_path runs/<experiment>/fold0/checkpoints/...
    lightning fit --config experiments/pspnet_focal.yaml --print_config

Each run writes to ``runs/<experiment>/fold<k>/`` (CSV metrics, checkpoints, the resolved
config, the patient split and the per-case tables). ``experiment`` is a top-level key of the
experiment YAMLs; the fold comes from ``data.init_args.fold``. A ``WandbLogger`` given in a
config gets ``group=<experiment>`` and ``name=fold<k>`` unless the config sets them, so the
folds of one experiment sit together in W&B.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from datamodules.errors import DatasetNotFoundError, DataValidationError

log = logging.getLogger(__name__)

_PACKAGES = ("datamodules", "lightning_modules", "networks", "losses", "evaluation")
_VERSION_ENV = "STROKESEG_RUN_VERSION"


def _run_version(root: Path, base: str) -> str:
    """Run folder name, agreed on by every process of a job.

    ``fold<k>`` if free, else ``fold<k>-<timestamp>``; under SLURM ``fold<k>-job<id>``. The
    choice is exported so that DDP processes started by Lightning reuse it.
    """
    if os.environ.get(_VERSION_ENV):
        return os.environ[_VERSION_ENV]
    if "SLURM_JOB_ID" in os.environ:
        version = f"{base}-job{os.environ['SLURM_JOB_ID']}"
    elif (root / base).exists():
        version = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        version = base
    os.environ[_VERSION_ENV] = version
    return version


class SuiteCLI(LightningCLI):
    """LightningCLI with experiment naming, a CSV logger default and fast dataset checks."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--experiment", type=str, default="experiment",
                            help="Experiment name: runs go to runs/<experiment>/fold<k>/")  # fmt: skip
        parser.add_argument("--runs_dir", type=str, default="runs", help="Root of run folders.")

    def _config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        # Check the dataset before anything heavy is built, so a missing dataset fails in
        # seconds with an actionable message instead of after the model is constructed.
        data = self._config().get("data")
        if data is not None and getattr(data, "class_path", None):
            module, _, name = data.class_path.rpartition(".")
            data_class = getattr(import_module(module), name)
            data_dir = getattr(data.init_args, "data_dir", None)
            if hasattr(data_class, "check_data_dir") and data_dir is not None:
                accepted = inspect.signature(data_class.check_data_dir).parameters
                extra = {k: getattr(data.init_args, k) for k in accepted
                         if k != "data_dir" and hasattr(data.init_args, k)}  # fmt: skip
                data_class.check_data_dir(data_dir, **extra)

    def _instantiate_trainer(
        self, config: dict[str, Any], callbacks: list[pl.Callback]
    ) -> pl.Trainer:
        cfg = self._config()
        experiment = cfg.experiment
        fold = getattr(cfg.data.init_args, "fold", None) if cfg.get("data") else None
        base = f"fold{fold}" if fold is not None else "run"
        stage = self.subcommand or "fit"
        if stage != "fit":
            base = f"{base}-{stage}"
        root = Path(cfg.runs_dir) / experiment
        version = _run_version(root, base)
        logger = config.get("logger")
        if logger is None or logger is True:
            config["logger"] = CSVLogger(save_dir=cfg.runs_dir, name=experiment, version=version)
        else:
            for each in logger if isinstance(logger, list) else [logger]:
                if isinstance(each, WandbLogger):
                    settings = each._wandb_init  # consumed lazily, when the run starts
                    settings["group"] = settings.get("group") or experiment
                    settings["name"] = settings.get("name") or base
                    settings["job_type"] = settings.get("job_type") or stage
        if not config.get("default_root_dir"):
            config["default_root_dir"] = str(root)
        return super()._instantiate_trainer(config, callbacks)


def _configure_logging() -> None:
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
    except (DatasetNotFoundError, DataValidationError) as error:
        print(f"\nerror: {error}", file=sys.stderr)
        sys.exit(2)
    finally:
        # Lightning leaves the process group alive after fit; tearing gloo down explicitly
        # avoids an abort ("terminate called without an active exception") at interpreter exit.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
