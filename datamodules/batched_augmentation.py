"""The papers' random affine for a whole batch on its device: one grid and one resampling.

:class:`~datamodules.transforms.RandomOrderAffined` draws one in-plane matrix per sample and
resamples the sample with MONAI's ``Affine`` — one small ``grid_sample`` per image and per label,
in the loader's workers. On a GPU that is the step's bottleneck (nnU-Net users measured the GPU
busy 40 % of the time with CPU augmentation, 86 % with batched GPU augmentation).
:class:`BatchedAffine` draws *the same* matrices from the same per-sample seeds, stacks them and
resamples the whole batch at once where it lies: the image bilinearly, the label with nearest
neighbour, zeros outside, with MONAI's coordinate convention (pixel coordinates about the image
centre, ``align_corners=False``), so the result equals the per-sample path up to floating-point
rounding in the interpolation weights (tests/datamodules/test_batched_augmentation.py says how
many label voxels differ).

A volume ``(C, D, H, W)`` gets its sample's matrix on every slice (in-plane, as the per-sample
path): the batch is resampled as ``B·D`` slices.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.transforms import Augmentation


@functools.lru_cache(maxsize=8)
def _centred_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Homogeneous pixel coordinates about the slice centre, ``(H·W, 3)`` (MONAI's grid), made
    once per size and device."""
    rows = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2.0
    cols = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2.0
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
    ones = torch.ones_like(grid_rows)
    return torch.stack([grid_rows, grid_cols, ones], dim=-1).reshape(-1, 3)


class BatchedAffine:
    """Augment a batch with each sample's own random affine, in one resampling.

    Args:
        augmentation: The papers' settings (ranges, flips, order), as for the per-sample path.
    """

    def __init__(self, augmentation: Augmentation) -> None:
        self._drawer = augmentation.transform()

    def matrices(self, seeds: Sequence[int | None], height: int, width: int) -> np.ndarray:
        """The in-plane ``(B, 3, 3)`` matrices (output → input, pixel units about the centre)
        that the per-sample path draws from the same seeds (``None``: unseeded)."""
        drawn = []
        for seed in seeds:
            if seed is not None:
                self._drawer.set_random_state(seed=seed)
            drawn.append(self._drawer.draw_in_plane((height, width)))
        return np.stack(drawn)

    def grid(
        self, matrices: np.ndarray, height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        """``grid_sample`` coordinates ``(B, H, W, 2)`` of the matrices on an ``H × W`` slice."""
        # grid_sample wants (x = column, y = row), normalised as align_corners=False does:
        # swap the matrices' two output rows and scale them on the host, then one product.
        to_xy = np.array([[0.0, 2.0 / width], [2.0 / height, 0.0]])
        xy = torch.as_tensor(to_xy @ matrices[:, :2], dtype=torch.float32)  # (B, 2, 3)
        base = _centred_grid(height, width, device)  # (H·W, 3)
        # One (H·W, 3) × (3, B·2) product (a batched product would copy the base grid B times).
        points = base @ xy.to(device, non_blocking=True).reshape(-1, 3).T  # (H·W, B·2)
        return points.reshape(height, width, -1, 2).permute(2, 0, 1, 3).contiguous()

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, seeds: Sequence[int | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Resample a batch.

        Args:
            image: ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)``, any float dtype, any device.
            label: ``(B, 1, H, W)`` / ``(B, 1, D, H, W)``, integer or float.
            seeds: One seed per sample (``None``: draw without reseeding).

        Returns:
            The image in float32 (the per-sample path's dtype) and the label in uint8.
        """
        height, width = image.shape[-2:]
        grid = self.grid(self.matrices(seeds, height, width), height, width, image.device)
        volume = image.ndim == 5
        if volume:  # every slice of a volume with its sample's grid: (B·D, C, H, W)
            depth = image.shape[2]
            grid = grid.repeat_interleave(depth, dim=0)
            image = image.transpose(1, 2).flatten(0, 1)
            label = label.transpose(1, 2).flatten(0, 1)
        out_image = F.grid_sample(
            image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out_label = F.grid_sample(
            label.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        if volume:
            batch = len(seeds)
            out_image = out_image.unflatten(0, (batch, -1)).transpose(1, 2)
            out_label = out_label.unflatten(0, (batch, -1)).transpose(1, 2)
        return out_image, out_label.to(torch.uint8)
