"""Per-case, per-channel intensity normalisation, applied once when the cache is built."""

from __future__ import annotations

from typing import Literal

import numpy as np

Normalization = Literal["zscore", "minmax", "none"]


def normalize_channels(
    image: np.ndarray,
    mask: np.ndarray,
    method: Normalization = "zscore",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Normalise each channel of one case.

    Args:
        image: ``(C, *spatial)`` raw intensities.
        mask: ``spatial`` boolean foreground (e.g. the brain) the statistics are taken over;
            if it is empty, the whole volume is used.
        method: ``"zscore"``: clip to the ``percentiles`` of the foreground, then subtract the
            foreground mean and divide by its standard deviation. ``"minmax"``: scale the
            whole volume to [0, 1] (Kervadec et al., ISLES 2018). ``"none"``: unchanged.
        percentiles: Clipping percentiles for ``"zscore"``.

    Returns:
        ``(C, *spatial)`` float32.
    """
    image = image.astype(np.float32, copy=True)
    if method == "none":
        return image
    if method not in ("zscore", "minmax"):
        raise ValueError(f"normalization must be 'zscore', 'minmax' or 'none', got {method!r}")
    region = mask if mask.any() else np.ones_like(mask, dtype=bool)
    for channel in image:
        if method == "minmax":
            low, high = float(channel.min()), float(channel.max())
            channel -= low
            channel /= max(high - low, 1e-8)
            continue
        low, high = np.percentile(channel[region], percentiles)
        np.clip(channel, low, high, out=channel)
        values = channel[region]
        channel -= values.mean()
        channel /= max(float(values.std()), 1e-8)
    return image
