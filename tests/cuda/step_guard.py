"""Callbacks that run the hooks of every training step inside a guard, for the real CLI
(``--trainer.callbacks+=tests.cuda.step_guard.SyncDebugGuard``).

A training step must not wait for the device: a ``.item()``, the truth value of a tensor or a
blocking copy between host and device each stall the host until the GPU has drained its queue,
and the next step cannot be queued meanwhile. :class:`SyncDebugGuard` runs the step's hooks
under ``torch.cuda.set_sync_debug_mode("error")``, where CUDA raises on every synchronising
call; :class:`HostReadGuard` is its CPU companion: inside ``training_step`` the tensor methods
that read a value on the host raise, whatever the device, so a ``.item()`` added to a step
later fails on a machine without a GPU too.

The guards find the hooks on the instances the trainer calls (the module, the DataModule, the
other callbacks), wrap them at ``setup`` and put them back at ``teardown``. The first
``warmup`` steps of a fit run unguarded: there Lightning registers the metrics a step logs
and the device cache is copied to the device, both once per fit.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch


class HostSync(AssertionError):
    """A hook of a training step waited for the device (names the hook, the step and the call)."""


class StepGuard(pl.Callback):
    """Run the hooks :attr:`hooks` of each training step, from step ``warmup`` on, inside
    :meth:`guard`.

    Args:
        warmup: Training steps of the fit that run unguarded.

    Attributes:
        guarded: How many calls of each hook ran guarded (a test asserts that some did).
        runs: Every guard set up in this process, latest last (the CLI builds them).
    """

    hooks: ClassVar[tuple[str, ...]] = ()
    runs: ClassVar[list[StepGuard]] = []

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup
        self.guarded: Counter[str] = Counter()
        self._undo: list[Callable[[], None]] = []

    def guard(self) -> contextlib.AbstractContextManager[None]:
        """The context the hooks run in."""
        raise NotImplementedError

    def caught(self, error: BaseException) -> bool:
        """Whether ``error`` is the guard's own (re-raised as :class:`HostSync`)."""
        return isinstance(error, HostSync)

    # -- wrapping ---------------------------------------------------------------------------------
    def _owners(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, list[Any]]:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning
        callbacks = [c for c in trainer.callbacks if c is not self]
        return {
            "on_after_batch_transfer": [module, *([datamodule] if datamodule else [])],
            "on_train_batch_start": [*callbacks, module],
            "training_step": [module],
            "on_train_batch_end": [*callbacks, module],
        }

    def _wrap(self, trainer: pl.Trainer, owner: Any, hook: str) -> None:
        original = getattr(owner, hook)
        label = f"{type(owner).__name__}.{hook}"
        progress = trainer.fit_loop.epoch_loop.batch_progress.total

        @functools.wraps(original)  # Lightning's is_overridden still sees the original
        def guarded(*args: Any, **kwargs: Any) -> Any:
            step = progress.completed
            if not trainer.training or step < self.warmup:
                return original(*args, **kwargs)
            self.guarded[hook] += 1
            try:
                with self.guard():
                    return original(*args, **kwargs)
            except Exception as error:
                if not self.caught(error):
                    raise
                raise HostSync(f"{label} in training step {step}: {error}") from error

        had = hook in vars(owner)
        previous = vars(owner).get(hook)
        setattr(owner, hook, guarded)
        self._undo.append(
            functools.partial(setattr, owner, hook, previous)
            if had
            else functools.partial(delattr, owner, hook)
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        StepGuard.runs.append(self)
        for hook, owners in self._owners(trainer, pl_module).items():
            if hook in self.hooks:
                for owner in owners:
                    self._wrap(trainer, owner, hook)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        while self._undo:
            self._undo.pop()()


@contextlib.contextmanager
def cuda_sync_errors() -> Iterator[None]:
    """Inside, CUDA raises on every synchronising call (``set_sync_debug_mode("error")``);
    ``"default"`` again after."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


class SyncDebugGuard(StepGuard):
    """The step's hooks under ``torch.cuda.set_sync_debug_mode("error")`` (CUDA only): the
    module's ``training_step``, the ``on_after_batch_transfer`` that assembles and augments the
    batch on the device, and every callback's ``on_train_batch_start``/``on_train_batch_end``.

    Args:
        warmup: Training steps of the fit that run unguarded (the first: Lightning registers
            the logged metrics, copying their zeros to the device; the device cache is built).
    """

    hooks = (
        "on_after_batch_transfer",
        "on_train_batch_start",
        "training_step",
        "on_train_batch_end",
    )

    def __init__(self, warmup: int = 1) -> None:
        super().__init__(warmup)

    def guard(self) -> contextlib.AbstractContextManager[None]:
        return cuda_sync_errors()

    def caught(self, error: BaseException) -> bool:
        return isinstance(error, RuntimeError) and "synchronizing" in str(error)


#: The tensor methods that hand a value to the host: on CUDA each waits for the device.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
#: Whose reads are refused: the suite's packages (and the tests that stand in for them).
SUITE = (
    "core", "networks", "losses", "datamodules", "evaluation", "lightning_modules", "callbacks",
    "cli", "tests",
)  # fmt: skip


@contextlib.contextmanager
def no_host_reads() -> Iterator[None]:
    """Inside, the :data:`HOST_READS` of any tensor raise :class:`HostSync` when the suite's
    code (:data:`SUITE`) calls them, whatever the device: the CPU stands in for the GPU.

    Third-party code keeps its reads: on the CPU every tensor is a host tensor, and a library
    reading one it made on the host (MONAI's ``torch.arange(...).tolist()`` of reduction axes)
    waits for nothing; what a library does on the device is for CUDA's sync debug mode to judge
    (tests/cuda/test_no_host_sync.py).
    """
    inherited = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def refuse(name: str) -> Callable[..., Any]:
        original = inherited[name]

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)  # the code that reads (slots such as bool() add no frame)
            if str(caller.f_globals.get("__name__", "")).split(".")[0] not in SUITE:
                return original(self, *args, **kwargs)
            raise HostSync(
                f"Tensor.{name}() of a {tuple(self.shape)} tensor at "
                f"{caller.f_code.co_filename}:{caller.f_lineno}: on CUDA it waits for the "
                "device. Keep the value a tensor (self.log takes tensors)."
            )

        return read

    saved = {name: vars(torch.Tensor).get(name) for name in HOST_READS}
    for name in HOST_READS:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)  # inherited from torch._C.TensorBase again
            else:
                setattr(torch.Tensor, name, method)


class HostReadGuard(StepGuard):
    """The CPU companion of :class:`SyncDebugGuard`: the module's ``training_step`` (and no
    other hook) runs inside :func:`no_host_reads`, from the first step on."""

    hooks = ("training_step",)

    def guard(self) -> contextlib.AbstractContextManager[None]:
        return no_host_reads()
