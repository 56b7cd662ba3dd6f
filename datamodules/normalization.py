"""Per-case, per-channel intensity normalisation, applied once when the cache is built."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Normalization = Literal["zscore", "minmax", "none"]


def normalize_channels(
    image: np.ndarray,
    mask: np.ndarray,
    method: Normalization = "zscore",
    clip: Sequence[bool] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    stats: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise each channel of one case.

    Args:
        image: ``(C, *spatial)`` raw intensities.
        mask: ``spatial`` boolean foreground (e.g. the brain) the statistics are taken over;
            if it is empty, the whole volume is used.
        method: ``"zscore"``: subtract the foreground mean and divide by its standard
            deviation (after clipping, for the channels selected by ``clip``). ``"minmax"``:
            scale the whole volume to [0, 1] (Kervadec et al., ISLES 2018). ``"none"``:
            unchanged.
        clip: Per channel, whether ``"zscore"`` first clips to the foreground ``percentiles``
            (default: no channel). Clip channels whose outliers are not the target (CT: skull
            at up to 3071 HU); never perfusion maps, where the lesion *is* the tail (on the
            twin, 97 % of core voxels lie above the 99.5th Tmax percentile of the brain).
        percentiles: Clipping percentiles.
        stats: Optional ``(C, 2)`` array filled with each channel's ``(offset, scale)``:
            ``normalised = (raw − offset) / scale`` (after clipping), the way back for display.

    Returns:
        ``(C, *spatial)`` float32.
    """
    image = image.astype(np.float32, copy=True)
    if stats is not None:
        stats[:] = (0.0, 1.0)
    if method == "none":
        return image
    if method not in ("zscore", "minmax"):
        raise ValueError(f"normalization must be 'zscore', 'minmax' or 'none', got {method!r}")
    region = mask if mask.any() else np.ones_like(mask, dtype=bool)
    clip = list(clip) if clip is not None else [False] * len(image)
    if len(clip) != len(image):
        raise ValueError(f"clip has {len(clip)} entries for {len(image)} channels")
    for index, (channel, clipped) in enumerate(zip(image, clip)):
        if method == "minmax":
            low, high = float(channel.min()), float(channel.max())
            channel -= low
            channel /= max(high - low, 1e-8)
            if stats is not None:
                stats[index] = (low, max(high - low, 1e-8))
            continue
        if clipped:
            low, high = np.percentile(channel[region], percentiles)
            np.clip(channel, low, high, out=channel)
        values = channel[region]
        mean, std = float(values.mean()), max(float(values.std()), 1e-8)
        channel -= mean
        channel /= std
        if stats is not None:
            stats[index] = (mean, std)
    return image
