"""What an ISLES 2022 twin holds: its cases, their centres, scanners, grids, dtypes and seeds.

The real training release has 250 cases (``sub-strokecase0001`` … ``sub-strokecase0250``, one
session ``ses-0001`` each) from three centres with 1.5 T and 3 T scanners of two vendors. The
twin imitates that mix with three invented centres, which it calls A, B and C:

====== ================== ============================= ============================ =======
centre scanner            DWI and ADC (the mask's grid) FLAIR                        mask
====== ================== ============================= ============================ =======
A      Siemens-like 3 T   112×112×73, 2 mm, axial;      3D sagittal 176×144×128,     uint8
                          DWI int16, ADC int16          1.2 mm, oblique; int16
B      Philips-like 3 T   192×192×32, 1.15×1.15×5 mm;   2D axial 224×224×28,         float32
                          DWI float32, ADC float32      0.98×0.98×5.5 mm; float32
C      Siemens-like 1.5 T 128×128×40, 1.8×1.8×4 mm;     2D axial 256×256×24,         float64
                          DWI int16, ADC float32        0.9×0.9×6.5 mm (LPS); int16
====== ================== ============================= ============================ =======

These are modelling choices in the spirit of the release, not copies of its per-case geometry.
Every grid is turned by a few degrees per case (``GridSpec.tilt_deg``). Case ``k`` belongs to
centre ``"ABC"[(k - 1) % 3]``, so any three consecutive cases cover all centres and a case's
centre never depends on how many cases were asked for.

``size="tiny"`` keeps every grid's field of view and orientation and shrinks its matrix (DWI
24×24×12, 24×24×8 and 22×22×10), for tests only.

Random streams are keyed by ``(seed, kind, case)``: one for the case's anatomy, pose, grids and
lesions, one for its noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.errors import ConfigurationError
from datamodules.isles2022_layout import MASK
from datamodules.synth import common
from datamodules.synth.common import Size

MAX_CASES = 250
SESSION = "0001"
DEFAULT_CASES = 40

Acquisition = Literal["2D", "3D"]
_RNG_KIND = {"case": 0, "noise": 1}


@dataclass(frozen=True)
class GridSpec:
    """One image grid of a centre.

    Attributes:
        shape: Voxels at full size.
        spacing: Voxel size in mm at full size.
        axes: Direction each voxel axis points to (nibabel axis codes), e.g. ``"LAS"``.
        tiny_shape: Voxels at tiny size; the field of view stays, so the spacing grows.
        tilt_deg: Largest random rotation of the grid about the scanner's x, y and z axes, in
            degrees (the slices' obliquity; about x is the usual AC-PC angulation).
        acquisition: ``"2D"`` (thick slices) or ``"3D"``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axes: str
    tiny_shape: tuple[int, int, int]
    tilt_deg: tuple[float, float, float]
    acquisition: Acquisition

    def grid(self, size: Size) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
        """Shape and spacing at ``size``: tiny keeps the field of view."""
        if size == "full":
            return self.shape, self.spacing
        spacing = tuple(
            n * s / t for n, s, t in zip(self.shape, self.spacing, self.tiny_shape, strict=True)
        )
        return self.tiny_shape, (spacing[0], spacing[1], spacing[2])


@dataclass(frozen=True)
class Centre:
    """One centre's scanner, protocol, grids, on-disk dtypes and intensity scales.

    Attributes:
        name: ``"A"``, ``"B"`` or ``"C"``.
        manufacturer: The ``Manufacturer`` of the sidecars.
        field_tesla: ``MagneticFieldStrength`` (1.5 or 3).
        dwi: The grid of DWI, ADC and mask.
        flair: The FLAIR grid (never co-registered to the DWI grid).
        dtypes: On-disk dtype of ``"DWI"``, ``"ADC"``, ``"FLAIR"`` and the mask (:data:`MASK`).
        timing: ``(EchoTime, RepetitionTime, InversionTime or None)`` in s, per channel.
        dwi_level: Typical DWI value of grey matter.
        flair_level: Typical FLAIR value of grey matter.
    """

    name: str
    manufacturer: str
    field_tesla: float
    dwi: GridSpec
    flair: GridSpec
    dtypes: dict[str, type[np.generic]]
    timing: dict[str, tuple[float, float, float | None]]
    dwi_level: float
    flair_level: float


CENTRES: dict[str, Centre] = {
    "A": Centre(
        name="A",
        manufacturer="Siemens",
        field_tesla=3.0,
        dwi=GridSpec((112, 112, 73), (2.0, 2.0, 2.0), "LAS", (24, 24, 12), (6, 3, 3), "2D"),
        flair=GridSpec((176, 144, 128), (1.2, 1.2, 1.2), "ASL", (22, 18, 16), (4, 4, 4), "3D"),
        dtypes={"DWI": np.int16, "ADC": np.int16, "FLAIR": np.int16, MASK: np.uint8},
        timing={
            "DWI": (0.068, 5.2, None),
            "ADC": (0.068, 5.2, None),
            "FLAIR": (0.386, 5.0, 1.8),
        },
        dwi_level=350.0,
        flair_level=420.0,
    ),
    "B": Centre(
        name="B",
        manufacturer="Philips",
        field_tesla=3.0,
        dwi=GridSpec((192, 192, 32), (1.15, 1.15, 5.0), "RAS", (24, 24, 8), (8, 2, 2), "2D"),
        flair=GridSpec((224, 224, 28), (0.98, 0.98, 5.5), "RAS", (24, 24, 7), (10, 3, 3), "2D"),
        dtypes={"DWI": np.float32, "ADC": np.float32, "FLAIR": np.float32, MASK: np.float32},
        timing={
            "DWI": (0.062, 3.4, None),
            "ADC": (0.062, 3.4, None),
            "FLAIR": (0.125, 11.0, 2.8),
        },
        dwi_level=120.0,
        flair_level=310.0,
    ),
    "C": Centre(
        name="C",
        manufacturer="Siemens",
        field_tesla=1.5,
        dwi=GridSpec((128, 128, 40), (1.8, 1.8, 4.0), "LAS", (22, 22, 10), (6, 3, 3), "2D"),
        flair=GridSpec((256, 256, 24), (0.9, 0.9, 6.5), "LPS", (24, 24, 6), (12, 3, 3), "2D"),
        dtypes={"DWI": np.int16, "ADC": np.float32, "FLAIR": np.int16, MASK: np.float64},
        timing={
            "DWI": (0.089, 6.1, None),
            "ADC": (0.089, 6.1, None),
            "FLAIR": (0.087, 8.5, 2.4),
        },
        dwi_level=600.0,
        flair_level=800.0,
    ),
}


@dataclass(frozen=True)
class Case:
    """One case of the twin: its number, BIDS labels and centre."""

    number: int
    centre: Centre

    @property
    def subject(self) -> str:
        """The ``sub-`` label, e.g. ``"strokecase0001"``."""
        return f"strokecase{self.number:04d}"

    @property
    def session(self) -> str:
        """The ``ses-`` label (every case has the one session ``"0001"``)."""
        return SESSION


def check_cases(cases: object) -> None:
    """Raise ``ConfigurationError`` unless ``cases`` is an int from 1 to 250."""
    if not (isinstance(cases, int) and 1 <= cases <= MAX_CASES):
        raise ConfigurationError(
            f"cases must be an integer from 1 to {MAX_CASES} (ISLES 2022 has {MAX_CASES} "
            f"training cases), got {cases!r}"
        )


def plan_cases(cases: int) -> list[Case]:
    """Cases 1 … ``cases``, each with its centre (round-robin over A, B, C)."""
    names = sorted(CENTRES)
    return [Case(k, CENTRES[names[(k - 1) % len(names)]]) for k in range(1, cases + 1)]


def rng(seed: int, kind: str, case: int) -> np.random.Generator:
    """The random stream of a case's anatomy (``"case"``) or noise (``"noise"``)."""
    return common.generator(seed, (_RNG_KIND[kind], case))
