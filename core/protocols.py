"""The hooks the command line, the callbacks and the ensemble rely on, declared as protocols.

A class takes part by defining the method (structural typing; no base class needed), and the
caller asks ``isinstance``/``issubclass`` against the protocol, never ``getattr`` on a string:
renaming a hook on one side is then a type error (mypy) and an ``isinstance`` that fails in a
test, not a check that silently stops running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

Row = dict[str, Any]


# -- DataModules -------------------------------------------------------------------------------
@runtime_checkable
class ChecksDataDir(Protocol):
    """A DataModule class that can check its dataset folder before anything is built.

    The ``lightning`` command calls it (on the class, before the DataModule is instantiated)
    with ``data_dir`` and those of the DataModule's settings the method also takes.
    """

    @classmethod
    def check_data_dir(cls, data_dir: str, **settings: Any) -> None: ...


@runtime_checkable
class Preflighted(Protocol):
    """A DataModule with cheap checks of its settings against the data (folds, crop), run before
    the trainer exists and before anything is deleted or decoded."""

    def preflight(self, stage: str) -> None: ...


@runtime_checkable
class SignedData(Protocol):
    """A DataModule whose network inputs are described by a signature stored in checkpoints."""

    def signature(self) -> dict[str, Any]: ...

    def check_signature(
        self, saved: Mapping[str, Any] | None, where: str, remedy: str | None = None
    ) -> None: ...


@runtime_checkable
class ServesSamples(Protocol):
    """A DataModule that says the dimensionality of its training samples (2: slices,
    3: volumes) and the in-plane size of its network grid (``None``: each case's own)."""

    @property
    def spatial_dims(self) -> int: ...

    @property
    def network_size(self) -> tuple[int, int] | None: ...


# -- LightningModules --------------------------------------------------------------------------
@runtime_checkable
class ChecksData(Protocol):
    """A module that refuses data it cannot train on (dimensionality, grid size), asked before
    the trainer exists, so the mistake is found before any data is decoded."""

    def check_data(self, datamodule: object) -> None: ...


@runtime_checkable
class CaseTableSource(Protocol):
    """A module that keeps the per-case metric rows of its last evaluation epoch."""

    case_table: list[Row]


@runtime_checkable
class PostprocessingTableSource(Protocol):
    """A module that keeps, beside ``case_table``, the post-processing candidates' per-case
    scores of its last validation epoch (``evaluation.postprocessing``)."""

    postprocessing_table: list[Row]


@runtime_checkable
class CasePredictor(Protocol):
    """A module that predicts whole cases on their native grid (ensembles average them)."""

    def predict_case(self, case: dict[str, Any]) -> Any: ...


@runtime_checkable
class HasPretrainedModules(Protocol):
    """A network with a pretrained part, for fine-tuning callbacks."""

    def pretrained_modules(self) -> torch.nn.Module: ...


@runtime_checkable
class RunFolderOwner(Protocol):
    """A module whose runs belong to no fold (an ensemble): they go to
    ``runs/<experiment>/<run_folder()>/`` instead of ``fold<k>/``."""

    @classmethod
    def run_folder(cls) -> str: ...


@runtime_checkable
class PartialBackward(Protocol):
    """A module, or a callback, by which backward passes reach only part of the module's
    parameters (a GAN's two optimizers; a fine-tuning stage with frozen layers), so that DDP
    must look for parameters without gradients."""

    @classmethod
    def ddp_finds_unused_parameters(cls) -> bool: ...


@runtime_checkable
class ShowsTrainingValues(Protocol):
    """A module whose training values the progress bar shows as last logged for the loggers
    (``train/loss_step`` …): the same tensor objects until the next logged step, so a bar reads
    each back once instead of at every refresh."""

    def progress_bar_values(self) -> Mapping[str, torch.Tensor]: ...


# -- networks ----------------------------------------------------------------------------------
@runtime_checkable
class HasMinimumInputSize(Protocol):
    """A network that cannot take inputs smaller than some in-plane size (valid convolutions)."""

    def min_input_size(self) -> int: ...
