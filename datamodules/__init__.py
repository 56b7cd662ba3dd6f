"""Readers, caches, splits, transforms and LightningDataModules for ATLAS, ISLES 2018 and 2022."""

from __future__ import annotations

from typing import Any

__all__ = ["ATLASDataModule", "ISLES2018DataModule", "ISLES2022DataModule"]


def __getattr__(name: str) -> Any:
    # Lazy: `lightning-data` (the synthetic-twin writer) must not pay for importing torch and
    # Lightning; `datamodules.ISLES2018DataModule` still resolves for configs and imports.
    if name == "ISLES2018DataModule":
        from datamodules.isles2018 import ISLES2018DataModule

        return ISLES2018DataModule
    if name == "ISLES2022DataModule":
        from datamodules.isles2022 import ISLES2022DataModule

        return ISLES2022DataModule
    if name == "ATLASDataModule":
        from datamodules.atlas import ATLASDataModule

        return ATLASDataModule
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
