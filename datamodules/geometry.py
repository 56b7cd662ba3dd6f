"""One object maps a case from its source volume to a 2D network and back: :class:`SliceGeometry`.

A case's source array is ``(X, Y, Z)`` as nibabel decodes it. The geometry

1. reorders its axes into a stack of slices ``(D, H, W)`` (``axes``; ISLES 2018 keeps
   ``(Z, X, Y)``, ATLAS serves ``(Z, Y, X)``, the 233 × 197 orientation of the published h5
   files, so that the papers' crop boxes apply unchanged),
2. cuts the ``crop`` window ``(h0, h1, w0, w1)`` out of every slice,
3. resizes the window to ``size`` (bilinear with antialiasing for images, nearest for labels),
   or, with a ``target_spacing``, resamples it so that a network pixel measures that many mm
   and centre-pads (zeros) or centre-crops the result to ``size``: cases from scanners with
   other voxel sizes then show anatomy at one scale (ISLES 2022),
4. stacks the ``context`` neighbours of each slice as channels (D-UNet: ``(-2, -1, 0, 1)``,
   zero outside the case).

Steps 1–3 are applied once, when the cache is built; step 4 when a sample is read. The way
back, :meth:`SliceGeometry.to_native` then :meth:`SliceGeometry.to_source`, undoes the padding
or crop of step 3, resizes a prediction to the window, pastes it into a zero slice of the
native size and restores the source axis order. Training, validation, prediction, the metrics and the NIfTI writer all ask
this one object, so they cannot disagree about where a voxel is. A crop that does not fit a
case is refused (:meth:`SliceGeometry.check`) instead of being clipped.

3D networks read the same cache: :class:`VolumeGeometry` adds one step for them, the depth
policy. A case's network-grid slices ``(D, C, h, w)`` become a volume ``(C, D, h, w)``, zero-padded
(centred) in depth to ``depth`` slices (:meth:`VolumeGeometry.pad_depth`); the padding is cut off
again before the in-plane way back (:meth:`VolumeGeometry.crop_depth`), so the inversion is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ConfigurationError

Box = tuple[int, int, int, int]


def _mm_pair(spacing: float | Sequence[float] | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    if isinstance(spacing, int | float):
        return float(spacing), float(spacing)
    if len(spacing) != 2:
        raise ConfigurationError(
            f"spacing must be one in-plane voxel size in mm or [rows, cols], got {list(spacing)}"
        )
    height, width = (float(s) for s in spacing)
    return height, width


def _centred(have: int, want: int) -> tuple[int, int]:
    """``(start in the source, start in the target)`` of centring ``have`` in ``want`` (or
    ``want`` in ``have``): the odd pixel goes after, as in
    :meth:`VolumeGeometry.depth_padding`."""
    if have >= want:
        return (have - want) // 2, 0
    return 0, (want - have) // 2


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


@dataclass(frozen=True)
class SliceGeometry:
    """Source volume ↔ 2D network input, both ways (see the module docstring).

    Args:
        axes: Source axes taken as ``(D, H, W)``: slices along ``axes[0]``; a permutation of
            ``(0, 1, 2)``.
        crop: ``(h0, h1, w0, w1)`` window of every ``(H, W)`` slice, or ``None`` (whole slice).
        size: Network grid ``(h, w)`` (an int means square), or ``None`` (the window's size).
        context: Slice offsets stacked as channels, in order.
        target_spacing: Target in-plane voxel size ``(dh, dw)`` in mm, or ``None`` (resize the
            window to ``size`` whatever its voxel size). Needs ``size``: the resampled window is
            centre-padded or centre-cropped to it. The steps that depend on a case's own voxel
            size take it as ``native_spacing``.

    Raises:
        ConfigurationError: On a malformed setting (the message names it).
    """

    axes: tuple[int, int, int] = (2, 0, 1)
    crop: Box | None = None
    size: tuple[int, int] | None = None
    context: tuple[int, ...] = (0,)
    target_spacing: tuple[float, float] | None = field(default=None, kw_only=True)
    _consecutive: bool = field(init=False, repr=False, compare=False)
    #: What a training sample is: 2, a slice stack (for 2D networks).
    spatial_dims: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if sorted(self.axes) != [0, 1, 2]:
            raise ConfigurationError(f"axes must be a permutation of (0, 1, 2), got {self.axes}")
        if self.crop is not None:
            h0, h1, w0, w1 = self.crop
            if not (0 <= h0 < h1 and 0 <= w0 < w1):
                raise ConfigurationError(
                    f"crop must be (row0, row1, col0, col1) with 0 <= row0 < row1 and "
                    f"0 <= col0 < col1, got {list(self.crop)}; fix data.init_args.crop."
                )
        if self.size is not None and min(self.size) < 1:
            raise ConfigurationError(f"image_size must be positive, got {list(self.size)}")
        if not self.context:
            raise ConfigurationError("context must list at least one slice offset, e.g. [0]")
        target = self.target_spacing
        if target is not None and (self.size is None or min(target) <= 0):
            raise ConfigurationError(
                f"target_spacing {list(target)} needs positive values and an image_size: cases "
                "resampled to a voxel size are padded or cropped to one network grid. Set "
                "data.init_args.image_size (e.g. [128, 128]) beside data.init_args.target_spacing."
            )
        # Consecutive increasing offsets, e.g. (-2, -1, 0, 1): a stack is one block of rows.
        start = self.context[0]
        consecutive = self.context == tuple(range(start, start + len(self.context)))
        object.__setattr__(self, "_consecutive", consecutive)

    @classmethod
    def create(
        cls,
        axes: Sequence[int],
        crop: Sequence[int] | None = None,
        size: int | Sequence[int] | None = None,
        context: Sequence[int] = (0,),
        target_spacing: float | Sequence[float] | None = None,
    ) -> SliceGeometry:
        """Build from loosely typed settings (lists from YAML, an int size or spacing)."""
        a0, a1, a2 = (int(a) for a in axes)
        box: Box | None = None
        if crop is not None:
            if len(crop) != 4:
                raise ConfigurationError(
                    f"crop must have 4 values (row0, row1, col0, col1), got {list(crop)}"
                )
            h0, h1, w0, w1 = (int(c) for c in crop)
            box = (h0, h1, w0, w1)
        pair = None if size is None else _pair(size)
        offsets = tuple(int(c) for c in context)
        return cls((a0, a1, a2), box, pair, offsets, target_spacing=_mm_pair(target_spacing))

    def settings(self) -> dict[str, Any]:
        """What the cache's content depends on (part of its key)."""
        settings: dict[str, Any] = {
            "axes": list(self.axes),
            "crop": None if self.crop is None else list(self.crop),
            "size": None if self.size is None else list(self.size),
        }
        # Only when set: the caches and checkpoints of earlier releases keep their keys.
        if self.target_spacing is not None:
            settings["target_spacing"] = list(self.target_spacing)
        return settings

    def network_settings(self) -> dict[str, Any]:
        """What the network's input depends on beyond the cache (part of the data signature)."""
        return {"context": list(self.context)}

    # -- source array <-> stack of native slices ---------------------------------------
    def native_shape(self, source_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(D, H, W)`` of a case whose source array has shape ``(X, Y, Z)``."""
        d, h, w = (int(source_shape[a]) for a in self.axes)
        return d, h, w

    def spacing(self, zooms: Sequence[float]) -> tuple[float, float, float]:
        """Voxel size in mm along ``(D, H, W)`` from the source's ``(dx, dy, dz)``."""
        d, h, w = (float(zooms[a]) for a in self.axes)
        return d, h, w

    def to_slices(self, array: np.ndarray) -> np.ndarray:
        """``(*lead, X, Y, Z)`` → ``(D, *lead, H, W)``, e.g. channels ``(C, X, Y, Z)`` → ``(D, C, H, W)``."""
        lead = array.ndim - 3
        order = [lead + self.axes[0], *range(lead), lead + self.axes[1], lead + self.axes[2]]
        return np.ascontiguousarray(np.transpose(array, order))

    def to_source(self, volume: np.ndarray) -> np.ndarray:
        """``(D, H, W)`` → the source array order ``(X, Y, Z)``."""
        return np.ascontiguousarray(np.transpose(volume, np.argsort(self.axes)))

    # -- native slices <-> network grid ------------------------------------------------
    def window(self, native_hw: Sequence[int]) -> Box:
        """The ``(h0, h1, w0, w1)`` window of a native slice the network sees."""
        return self.crop if self.crop is not None else (0, int(native_hw[0]), 0, int(native_hw[1]))

    def network_size(self, native_hw: Sequence[int]) -> tuple[int, int]:
        """``(h, w)`` of the network input for slices of ``native_hw``."""
        if self.size is not None:
            return self.size
        h0, h1, w0, w1 = self.window(native_hw)
        return h1 - h0, w1 - w0

    def check(self, source_shape: Sequence[int], where: str) -> None:
        """Refuse a case whose slices the crop window does not fit.

        Raises:
            ConfigurationError: Naming the case (``where``), its slice size and the crop.
        """
        _, height, width = self.native_shape(source_shape)
        h0, h1, w0, w1 = self.window((height, width))
        if h1 > height or w1 > width:
            raise ConfigurationError(
                f"{where}: the crop window rows {h0}:{h1}, cols {w0}:{w1} does not fit its "
                f"{height}×{width} slices (rows × cols, source shape {tuple(source_shape)}). "
                f"Set data.init_args.crop to a window inside [0, {height}) × [0, {width}), or "
                "null for whole slices; a clipped window would misplace every prediction."
            )

    def resampled_size(
        self, native_hw: Sequence[int], native_spacing: Sequence[float] | None = None
    ) -> tuple[int, int]:
        """``(h', w')`` the window is resized to: the network grid, or with a target
        ``target_spacing`` the window's extent in target pixels (before padding or cropping to it).

        Args:
            native_hw: ``(H, W)`` of the case's native slices.
            native_spacing: The case's in-plane voxel size ``(dH, dW)`` in mm (needed with a
                ``target_spacing`` only).
        """
        if self.target_spacing is None:
            return self.network_size(native_hw)
        if native_spacing is None:
            raise ValueError("this geometry resamples to a voxel size: pass native_spacing")
        h0, h1, w0, w1 = self.window(native_hw)
        dh, dw = (float(v) for v in native_spacing)
        return (
            max(1, round((h1 - h0) * dh / self.target_spacing[0])),
            max(1, round((w1 - w0) * dw / self.target_spacing[1])),
        )

    def _fit(self, window: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Centre-pad (zeros) or centre-crop the last two axes to ``size``."""
        if tuple(window.shape[-2:]) == size:
            return window
        out = window.new_zeros((*window.shape[:-2], *size))
        (sh, th), (sw, tw) = (
            _centred(window.shape[-2], size[0]),
            _centred(window.shape[-1], size[1]),
        )
        rows, cols = min(window.shape[-2], size[0]), min(window.shape[-1], size[1])
        out[..., th : th + rows, tw : tw + cols] = window[..., sh : sh + rows, sw : sw + cols]
        return out

    def image_to_network(
        self, slices: np.ndarray, native_spacing: Sequence[float] | None = None
    ) -> np.ndarray:
        """Native ``(D, C, H, W)`` float32 → network grid ``(D, C, h, w)`` (crop, antialiased
        resize, and with a ``target_spacing`` the padding or crop to ``size``)."""
        h0, h1, w0, w1 = self.window(slices.shape[-2:])
        window = torch.from_numpy(np.ascontiguousarray(slices[..., h0:h1, w0:w1]))
        size = self.resampled_size(slices.shape[-2:], native_spacing)
        if tuple(window.shape[-2:]) != size:
            window = F.interpolate(
                window, size=size, mode="bilinear", align_corners=False, antialias=True
            )
        return self._fit(window, self.network_size(slices.shape[-2:])).numpy()

    def label_to_network(
        self, slices: np.ndarray, native_spacing: Sequence[float] | None = None
    ) -> np.ndarray:
        """Native ``(D, H, W)`` {0, 1} → network grid ``(D, h, w)`` uint8 (crop, nearest)."""
        h0, h1, w0, w1 = self.window(slices.shape[-2:])
        window = np.ascontiguousarray(slices[:, h0:h1, w0:w1], dtype=np.uint8)
        size = self.resampled_size(slices.shape[-2:], native_spacing)
        network = self.network_size(slices.shape[-2:])
        if tuple(window.shape[-2:]) == size == network:
            return window
        resized = torch.from_numpy(window)
        if tuple(window.shape[-2:]) != size:
            resized = F.interpolate(resized[:, None].float(), size=size, mode="nearest-exact")[
                :, 0
            ].to(torch.uint8)
        return self._fit(resized, network).numpy()

    def to_native(
        self,
        probability: torch.Tensor,
        native_hw: Sequence[int],
        out: torch.Tensor | None = None,
        native_spacing: Sequence[float] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Network-grid ``(D, h, w)`` → native ``(D, H, W)``: resized to the window, 0 outside it.

        Args:
            probability: ``(D, h, w)`` on the network grid.
            native_hw: ``(H, W)`` of the case's native slices.
            out: Optional ``(D, H, W)`` tensor to fill (e.g. a slice of an uninitialised
                whole-case output), so a case is assembled without padded copies or a full
                zero fill: only the border outside the window is zeroed.
            native_spacing: The case's in-plane voxel size ``(dH, dW)`` in mm; read only with a
                ``target_spacing`` (a case item's ``spacing[1:]`` will do).
        """
        height, width = int(native_hw[0]), int(native_hw[1])
        h0, h1, w0, w1 = self.window((height, width))
        if self.target_spacing is not None:
            assert native_spacing is not None, "this geometry resamples: pass native_spacing"
            spacing = [float(v) for v in native_spacing]
            probability = self._fit(probability, self.resampled_size((height, width), spacing))
        resize = tuple(probability.shape[-2:]) != (h1 - h0, w1 - w0)
        if out is not None and tuple(out.shape) != (probability.shape[0], height, width):
            raise ValueError(
                f"to_native: out is {tuple(out.shape)}, the slices need "
                f"{(probability.shape[0], height, width)}"
            )
        if out is None:
            if not resize and (h0, h1, w0, w1) == (0, height, 0, width):
                return probability
            out = probability.new_empty((probability.shape[0], height, width))
        window = out[:, h0:h1, w0:w1]
        if not resize:
            window.copy_(probability)
        elif (
            out.dtype == probability.dtype
            and out.device == probability.device
            and not (probability.requires_grad and torch.is_grad_enabled())
        ):
            # Resized straight into the output's window: no intermediate tensor and no copy of
            # it (F.interpolate's own kernel, with its out= argument, which autograd and a
            # copy across devices or dtypes do not take: those go the way below).
            torch.ops.aten.upsample_bilinear2d.out(
                probability[:, None], [h1 - h0, w1 - w0], False, None, None, out=window[:, None]
            )
        else:
            window.copy_(
                F.interpolate(
                    probability[:, None],
                    size=(h1 - h0, w1 - w0),
                    mode="bilinear",
                    align_corners=False,
                )[:, 0]
            )
        out[:, :h0] = 0
        out[:, h1:] = 0
        out[:, h0:h1, :w0] = 0
        out[:, h0:h1, w1:] = 0
        return out  # (D, H, W)

    # -- context stacking ----------------------------------------------------------------
    def sample(self, images: np.ndarray, row: int, first: int, last: int) -> np.ndarray:
        """One training stack ``(K * C, h, w)``: slice ``row`` of a case stored at rows
        ``[first, last)`` of ``images`` with its context.

        Away from the case's ends a consecutive context is one contiguous block of rows: a
        single copy, nothing else (this is the training loop's hot path).
        """
        low, high = row + self.context[0], row + self.context[-1]
        if self._consecutive and low >= first and high < last:
            return np.array(images[low : high + 1]).reshape(-1, *images.shape[2:])
        start, stop = self.context_rows(row, first, last)
        return self.stack(images[start:stop], np.array([row - start]))[0]

    def context_rows(self, row: int, first: int, last: int) -> tuple[int, int]:
        """The contiguous rows ``[start, stop)`` holding slice ``row``'s context, clipped to its
        case (stored at rows ``[first, last)``)."""
        return max(row + min(self.context), first), min(row + max(self.context) + 1, last)

    def stack(self, block: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Stack the context of ``targets`` as channels: ``(N, K * C, h, w)`` float32.

        Args:
            block: ``(B, C, h, w)`` consecutive slices of one case (a memory-mapped view is
                fine: this is where they are copied); offsets that fall outside ``block``
                are outside the case and give zeros.
            targets: ``(N,)`` indices into ``block`` of the slices to segment.
        """
        targets = np.asarray(targets, dtype=np.int64)
        if self.context == (0,):
            return np.ascontiguousarray(block[targets], dtype=np.float32)
        wanted = targets[:, None] + np.asarray(self.context, dtype=np.int64)[None, :]  # (N, K)
        inside = (wanted >= 0) & (wanted < len(block))
        out = np.zeros((len(targets), len(self.context), *block.shape[1:]), dtype=np.float32)
        if len(targets) == 1:  # one training sample: plain indexing copies each slice once
            for k in np.flatnonzero(inside[0]):
                out[0, k] = block[wanted[0, k]]
        else:
            out[inside] = block[wanted[inside]]
        return out.reshape(len(targets), -1, *block.shape[2:])  # (N, K * C, h, w)


@dataclass(frozen=True)
class VolumeGeometry(SliceGeometry):
    """Source volume ↔ 3D network input: :class:`SliceGeometry` in-plane, plus a depth policy.

    The in-plane steps (axes, crop, resize) are those of :class:`SliceGeometry`, so a 3D run
    shares the cache of a 2D run with the same settings (:meth:`settings` is unchanged). The
    volume a 3D network sees is the case's network-grid slices stacked along depth,
    ``(C, D, h, w)``, then

    * ``depth`` set (seed 001's 32): a case of fewer slices is zero-padded, centred, to
      ``depth`` (ISLES 2018 slabs have 2–22); padding instead of resampling keeps every
      voxel's values and makes the way back an exact crop. A case of more slices is not
      shrunk: training draws a random window of ``depth`` slices, evaluation slides a window
      of ``depth`` slices along it.
    * ``depth`` ``None`` (seed 003's 3D baselines, batch 1): the native depth; the network pads
      what its poolings need (:class:`networks.blocks.VolumeNet`).

    Args:
        depth: Slices of the network's volume, or ``None`` for each case's own depth.

    Raises:
        ConfigurationError: On a depth below 1 or a context other than ``(0,)`` (a volume holds
            its neighbours already).
    """

    depth: int | None = None
    #: What a training sample is: 3, a volume (for 3D networks).
    spatial_dims: ClassVar[int] = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth is not None and self.depth < 1:
            raise ConfigurationError(
                f"depth must be a positive number of slices or null (each case's own), got "
                f"{self.depth}; fix data.init_args.depth."
            )
        if self.context != (0,):
            raise ConfigurationError(
                f"3D networks see whole volumes, so the slice context must be [0], got "
                f"{list(self.context)}."
            )

    @classmethod
    def create_volume(
        cls,
        axes: Sequence[int],
        crop: Sequence[int] | None = None,
        size: int | Sequence[int] | None = None,
        depth: int | None = None,
        target_spacing: float | Sequence[float] | None = None,
    ) -> VolumeGeometry:
        """Build from loosely typed settings (lists from YAML, an int size)."""
        flat = SliceGeometry.create(axes, crop, size, target_spacing=target_spacing)
        return cls(flat.axes, flat.crop, flat.size, (0,), depth, target_spacing=flat.target_spacing)

    def network_settings(self) -> dict[str, Any]:
        return {**super().network_settings(), "spatial_dims": 3, "depth": self.depth}

    def depth_padding(self, depth: int, target: int | None = None) -> tuple[int, int]:
        """Slices added ``(before, after)`` a case of ``depth`` slices to reach ``target``
        (default: the geometry's depth). Centred, the odd slice after: MONAI's and
        :func:`networks.blocks.pad_to_multiples`'s convention."""
        total = max((target or self.depth or depth) - depth, 0)
        return total // 2, total - total // 2

    def volume(self, slices: torch.Tensor) -> torch.Tensor:
        """Network-grid slices ``(D, C, h, w)`` → the volume ``(C, D, h, w)`` (a view)."""
        return slices.permute(1, 0, 2, 3)

    def pad_depth(self, volume: torch.Tensor, target: int | None = None) -> torch.Tensor:
        """``(..., D, h, w)`` → ``(..., max(D, target), h, w)``, zero slices centred around it
        (``target`` defaults to the geometry's depth)."""
        before, after = self.depth_padding(volume.shape[-3], target)
        if before == after == 0:
            return volume
        return F.pad(volume, (0, 0, 0, 0, before, after))

    def crop_depth(self, volume: torch.Tensor, depth: int) -> torch.Tensor:
        """Undo :meth:`pad_depth` for a case of ``depth`` slices: ``(..., D', h, w)`` → ``(..., D, h, w)``."""
        before, _ = self.depth_padding(depth)
        return volume[..., before : before + depth, :, :]


def geometry_for(
    spatial_dims: int,
    axes: Sequence[int],
    crop: Sequence[int] | None = None,
    size: int | Sequence[int] | None = None,
    context: Sequence[int] = (0,),
    depth: int | None = None,
    target_spacing: float | Sequence[float] | None = None,
) -> SliceGeometry:
    """The geometry of a data module's ``spatial_dims`` setting: slices (2) or volumes (3).

    Raises:
        ConfigurationError: For another ``spatial_dims``, a ``depth`` with slices, or a slice
            context with volumes (a 3D network sees the neighbours already).
    """
    if spatial_dims == 3:
        if tuple(context) != (0,):
            raise ConfigurationError(
                f"context {list(context)} stacks neighbouring slices for 2D networks; a 3D "
                "network sees them already. Set data.init_args.context: [0]."
            )
        return VolumeGeometry.create_volume(axes, crop, size, depth, target_spacing)
    if spatial_dims == 2 and depth is None:
        return SliceGeometry.create(axes, crop, size, context, target_spacing)
    raise ConfigurationError(
        f"spatial_dims must be 2 or 3 and depth is for spatial_dims 3 only; got "
        f"spatial_dims={spatial_dims}, depth={depth}. Set data.init_args.spatial_dims: 3 "
        "for volumes, or depth: null for slices."
    )
