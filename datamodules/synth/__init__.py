"""Synthetic twins: the public datasets' exact on-disk layouts, filled with synthetic images.

Modules:
    common: How every twin is built (checks, hidden build directory, marker, atomic rename).
    mni: The MNI152 2009a template bundled with nilearn, which all twins build anatomy from.
    isles2018: The ISLES 2018 twin (``lightning-data synth isles2018``).
    atlas: The ATLAS R1.1 / R1.2 / R2.0 twins (``lightning-data synth atlas``).
    isles2022: The ISLES 2022 BIDS twin (``lightning-data synth isles2022``).
"""
