"""A deterministic CT torso phantom with lesions and chest abnormalities whose truth is known.

Every synthetic cohort renders its scans here. The phantom is a patient-shaped stack of analytic
shapes (ellipses in each axial plane, swept along z) with realistic HU values, textured lungs and
bowel, and mild noise, so that the pictures look like CT in the abdomen and lung windows and the
lesions are visible at the small sizes the tests use (64 px in-plane by default).

Coordinates are patient millimetres in the DICOM (LPS) sense:

- ``x`` grows toward the patient's **left**, ``y`` toward **posterior**, ``z`` toward **superior**;
- ``z = 0`` is the floor of the pelvis and ``z = anatomy.length_mm`` is just above the lung apex;
- an image is returned in display orientation, ``[Z, Y, X]`` with rows anterior→posterior and
  columns patient right→left, so pixel ``(row i, col j)`` of an ``n``-pixel image with spacing ``px``
  centred at ``center_mm = (cx, cy)`` sits at ``x = cx + (j - (n-1)/2)·px``, ``y = cy + (i - (n-1)/2)·px``
  (see :func:`pixel_grid`; a DICOM writer uses ``ImageOrientationPatient = [1,0,0,0,1,0]`` and
  ``ImagePositionPatient = (x[0], y[0], z)``).

Public API::

    anatomy = sample_anatomy(rng)                      # one patient, from a numpy Generator
    hu = render(anatomy, z_mm, size=64, features=[...])  # int16 HU [Z, Y, X]
    lesion = place_lesion(anatomy, "liver", rng)       # one of the 8 DeepLesion coarse types
    ann = lesion.annotate(z_mm, size=64)               # key slice index and 0-based box
    finding = chest_finding(anatomy, "emphysema", rng) # RAD-ChestCT abnormality, with its label columns
    tumour = lung_tumour(anatomy, 45.0, rng)           # NSCLC primary of a given diameter

Rendering is a pure function of the anatomy, the features, the z positions and the grid: the same
z rendered in two calls (or in two z sets) gives identical pixels, because the noise of each slice is
seeded by the anatomy's seed and the slice position. Everything random is drawn from the Generator
passed in, so a cohort is reproducible from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from clearbench.scans.scan import LESION_TYPES

# --- tissues -----------------------------------------------------------------------------------
# Typical HU in a portal-venous phase CT; the lesion values are chosen so that each coarse type has
# its own contrast against the tissue around it.
HU: dict[str, float] = {
    "air": -1000.0,
    "skin": 10.0,
    "fat": -100.0,
    "visceral_fat": -90.0,
    "muscle": 50.0,
    "lung": -850.0,
    "airway_wall": 30.0,
    "liver": 95.0,
    "spleen": 105.0,
    "kidney": 160.0,
    "renal_sinus": -60.0,
    "pancreas": 75.0,
    "stomach": 20.0,
    "bowel": 35.0,
    "bladder": 8.0,
    "blood": 150.0,
    "vein": 115.0,
    "myocardium": 55.0,
    "esophagus": 40.0,
    "csf": 15.0,
    "disc": 80.0,
    "cancellous": 230.0,
    "cortical": 800.0,
    "cartilage": 120.0,
    "fluid": 12.0,
}

# Integer tissue codes of the label map (:func:`tissue_map`), in painting order of importance.
TISSUES: tuple[str, ...] = (
    "air",
    "skin",
    "fat",
    "muscle",
    "visceral_fat",
    "lung",
    "airway",
    "heart",
    "vessel",
    "esophagus",
    "liver",
    "spleen",
    "kidney",
    "pancreas",
    "stomach",
    "bowel",
    "bladder",
    "bone",
    "disc",
    "canal",
    "lesion",
    "finding",
)
_T = {name: i for i, name in enumerate(TISSUES)}

# Each DeepLesion coarse type: HU of the lesion and its diameter range in mm.
LESION_HU: dict[str, float] = {
    "bone": 30.0,  # lytic, dark inside bright bone
    "abdomen": 45.0,  # nodal mass in retroperitoneal / mesenteric fat
    "mediastinum": 50.0,  # paratracheal / subcarinal node in mediastinal fat
    "liver": 20.0,  # hypodense metastasis or cyst in enhancing liver
    "lung": 35.0,  # soft-tissue nodule in aerated lung
    "kidney": 5.0,  # cystic renal mass in enhancing cortex
    "soft_tissue": 120.0,  # enhancing subcutaneous or intramuscular mass
    "pelvis": 25.0,  # pelvic side-wall mass beside the bladder
}
LESION_DIAMETER_MM: dict[str, tuple[float, float]] = {
    "bone": (22.0, 38.0),
    "abdomen": (25.0, 50.0),
    "mediastinum": (22.0, 40.0),
    "liver": (20.0, 50.0),
    "lung": (15.0, 40.0),
    "kidney": (20.0, 40.0),
    "soft_tissue": (30.0, 60.0),
    "pelvis": (25.0, 50.0),
}

# The CLEAR paper's 8 RAD-ChestCT abnormalities, and the extra findings the phantom can draw.
CHEST_ABNORMALITIES: tuple[str, ...] = (
    "emphysema",
    "bronchiectasis",
    "pleural_effusion",
    "atelectasis",
    "fibrosis",
    "opacity",
    "calcification",
    "nodule",
)
EXTRA_CHEST_FINDINGS: tuple[str, ...] = ("cardiomegaly", "pericardial_effusion", "lymphadenopathy")
LOBES: tuple[str, ...] = ("right_upper", "right_mid", "right_lower", "left_upper", "left_mid", "left_lower")


# --- shapes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """An ellipse in one axial plane: centre (mm), semi-axes ``a`` (along ``angle``) and ``b``."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float = 0.0

    def scaled(self, k: float) -> Section:
        return Section(self.cx, self.cy, self.a * k, self.b * k, self.angle)

    def inset(self, mm: float) -> Section | None:
        if self.a <= mm or self.b <= mm:
            return None
        return Section(self.cx, self.cy, self.a - mm, self.b - mm, self.angle)

    def half_extent(self) -> tuple[float, float]:
        """Half width along x and half height along y of the rotated ellipse."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return math.hypot(self.a * c, self.b * s), math.hypot(self.a * s, self.b * c)


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid, optionally cut below ``z_min`` (the flat base of a lung)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle: float = 0.0
    z_min: float = -math.inf

    def section(self, z: float) -> Section | None:
        if z < self.z_min:
            return None
        t = (z - self.center[2]) / self.radii[2]
        s = 1.0 - t * t
        if s <= 0.0:
            return None
        k = math.sqrt(s)
        return Section(self.center[0], self.center[1], self.radii[0] * k, self.radii[1] * k, self.angle)

    @property
    def z_range(self) -> tuple[float, float]:
        return max(self.center[2] - self.radii[2], self.z_min), self.center[2] + self.radii[2]


@dataclass(frozen=True)
class Tube:
    """An elliptic tube from ``z0`` to ``z1`` whose centre and radii change linearly along z."""

    z0: float
    z1: float
    start: tuple[float, float]
    end: tuple[float, float]
    radii: tuple[float, float]
    end_radii: tuple[float, float] | None = None
    angle: float = 0.0

    def section(self, z: float) -> Section | None:
        if not self.z0 <= z <= self.z1:
            return None
        t = (z - self.z0) / (self.z1 - self.z0)
        r1 = self.end_radii or self.radii
        return Section(
            self.start[0] + t * (self.end[0] - self.start[0]),
            self.start[1] + t * (self.end[1] - self.start[1]),
            self.radii[0] + t * (r1[0] - self.radii[0]),
            self.radii[1] + t * (r1[1] - self.radii[1]),
            self.angle,
        )

    @property
    def z_range(self) -> tuple[float, float]:
        return self.z0, self.z1


Shape = Ellipsoid | Tube


def _section_inside(shape: Shape, z: float) -> Section:
    """The section of ``shape`` at a height drawn inside its z range, where it is never empty."""
    sec = shape.section(z)
    if sec is None:
        raise ValueError(f"z={z:.1f} mm is outside {shape}")
    return sec


def _resized(shape: Ellipsoid, size: Callable[[float], float]) -> Ellipsoid:
    """``shape`` (centre and angle kept) with each radius mapped through ``size``."""
    rx, ry, rz = shape.radii
    return Ellipsoid(shape.center, (size(rx), size(ry), size(rz)), shape.angle)


@dataclass(frozen=True, eq=False)
class Field:
    """A smooth random texture: a sum of random 3-D cosines, unit variance, features of ``scale_mm``.

    Defined in patient millimetres, so it looks the same at any image size and spacing.
    """

    freqs: np.ndarray  # (k, 3) radians per mm
    phases: np.ndarray  # (k,)

    @classmethod
    def sample(cls, rng: np.random.Generator, scale_mm: float, k: int = 10) -> Field:
        dirs = rng.normal(size=(k, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        mags = rng.uniform(0.7, 1.3, size=k) * (2.0 * math.pi / scale_mm)
        return cls(dirs * mags[:, None], rng.uniform(0.0, 2.0 * math.pi, size=k))

    def __call__(self, xs: np.ndarray, ys: np.ndarray, z: float) -> np.ndarray:
        out = np.zeros((ys.size, xs.size), dtype=np.float32)
        for (fx, fy, fz), ph in zip(self.freqs, self.phases, strict=True):
            out += np.cos((fy * ys + (fz * z + ph))[:, None] + (fx * xs)[None, :]).astype(np.float32)
        out *= np.float32(math.sqrt(2.0 / len(self.phases)))
        return out


# --- the patient -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Anatomy:
    """One synthetic patient: body shape, organ shapes, textures and noise level.

    ``regions`` maps ``pelvis``, ``abdomen``, ``chest`` and ``lungs`` to their ``(z_lo, z_hi)`` in mm,
    so writers can choose a field of view (a chest CT covers ``chest``).
    """

    seed: int
    sex: str
    length_mm: float
    scale: float  # overall body size relative to an average adult
    fov_mm: float
    noise_hu: float
    fat_mm: float
    muscle_mm: float
    body_z: np.ndarray  # knots along z (mm) ...
    body_rx: np.ndarray  # ... of the half width of the body without fat (mm)
    body_ry: np.ndarray  # ... and its half depth
    parts: dict[str, Shape]
    rib_pitch_mm: float
    rib_slope_mm: float
    disc_period_mm: float
    textures: dict[str, Field]
    regions: dict[str, tuple[float, float]] = field(default_factory=dict)

    def ellipsoid(self, name: str) -> Ellipsoid:
        """The part ``name``, which the anatomy builds as an ellipsoid (a lung, the heart, an organ)."""
        part = self.parts[name]
        if not isinstance(part, Ellipsoid):
            raise TypeError(f"part '{name}' is a {type(part).__name__}, not an Ellipsoid")
        return part

    def tube(self, name: str) -> Tube:
        """The part ``name``, which the anatomy builds as a tube (an airway, a vessel, a bone of the pelvis)."""
        part = self.parts[name]
        if not isinstance(part, Tube):
            raise TypeError(f"part '{name}' is a {type(part).__name__}, not a Tube")
        return part

    def body_section(self, z: float) -> Section:
        """The outer body ellipse (skin surface) at ``z``."""
        rx = float(np.interp(z, self.body_z, self.body_rx)) + self.fat_mm
        ry = float(np.interp(z, self.body_z, self.body_ry)) + 0.9 * self.fat_mm
        return Section(0.0, 0.0, rx, ry)

    def core_section(self, z: float) -> Section:
        """The body without subcutaneous fat: the outer surface of the muscle wall."""
        return Section(
            0.0, 0.0, float(np.interp(z, self.body_z, self.body_rx)), float(np.interp(z, self.body_z, self.body_ry))
        )

    def cavity_section(self, z: float) -> Section:
        """Inside the muscle wall: the abdominal cavity, or the chest inside the ribs."""
        core = self.core_section(z)
        return Section(0.0, 0.0, core.a - self.muscle_mm, core.b - self.muscle_mm)

    def spine_y(self, z: float) -> float:
        """The y of the vertebral body centre at ``z``."""
        return self.core_section(z).b - 58.0 * self.scale

    def lung_lobe(self, side: str, z: float) -> str:
        """The lobe name (RAD-ChestCT location) of height ``z`` in the ``right`` or ``left`` lung."""
        lo, hi = self.regions["lungs"]
        frac = (z - lo) / (hi - lo)
        level = "lower" if frac < 0.33 else ("mid" if frac < 0.62 else "upper")
        return f"{side}_{level}"


def _jitter(rng: np.random.Generator, value: float, rel: float) -> float:
    return float(value * rng.uniform(1.0 - rel, 1.0 + rel))


@dataclass(frozen=True)
class _Frame:
    """One patient's body outline and thoracic landmarks (mm); every part is placed relative to them."""

    length: float
    scale: float
    muscle: float
    body_z: np.ndarray
    rx: np.ndarray
    ry: np.ndarray
    lung_base: float
    lung_apex: float
    carina: float
    diaphragm: float
    cavity: tuple[float, float]  # the cavity's half-axes at 72 % of the length, where the lungs are widest
    lung_radii: tuple[float, float]

    def core(self, z: float) -> tuple[float, float]:
        return float(np.interp(z, self.body_z, self.rx)), float(np.interp(z, self.body_z, self.ry))

    def spine_y(self, z: float) -> float:
        return self.core(z)[1] - 58.0 * self.scale

    @property
    def trachea_y(self) -> float:
        return self.spine_y(self.carina) - 32.0 * self.scale


def _frame(rng: np.random.Generator, sex: str, L: float, s: float, mus: float) -> _Frame:
    """The body outline (wider hips for F, a wider waist for M) and the heights of lungs, carina and diaphragm."""
    frac = np.array([0.0, 0.12, 0.25, 0.40, 0.55, 0.70, 0.85, 0.95, 1.0])
    rx = np.array([158, 156, 142, 136, 145, 152, 150, 136, 122], dtype=float)
    ry = np.array([100, 100, 94, 94, 100, 106, 106, 98, 90], dtype=float)
    if sex == "F":
        rx[:3] *= 1.06
    else:
        rx[4:7] *= 1.05
    rx = rx * s * rng.uniform(0.96, 1.04, size=rx.size)
    ry = ry * s * rng.uniform(0.96, 1.04, size=ry.size)
    body_z = frac * L
    lung_base = L * float(rng.uniform(0.55, 0.59))
    carina = L * float(rng.uniform(0.79, 0.82))
    diaphragm = lung_base + float(rng.uniform(35.0, 55.0))
    a, b = float(np.interp(0.72 * L, body_z, rx)) - mus, float(np.interp(0.72 * L, body_z, ry)) - mus
    lung_radii = (0.40 * a * _jitter(rng, 1.0, 0.05), 0.86 * b * _jitter(rng, 1.0, 0.05))
    return _Frame(L, s, mus, body_z, rx, ry, lung_base, L * 0.985, carina, diaphragm, (a, b), lung_radii)


def _thorax_parts(rng: np.random.Generator, f: _Frame) -> dict[str, Shape]:
    """Lungs, heart, great vessels and airways."""
    L, s, spine_y = f.length, f.scale, f.spine_y
    lung_base, lung_apex, carina, diaphragm = f.lung_base, f.lung_apex, f.carina, f.diaphragm
    ca, cb = f.cavity
    lung_rx, lung_ry = f.lung_radii
    lung_cx = 0.53 * ca
    trachea_y = f.trachea_y
    aorta_x = 18.0 * s
    return {
        "lung_right": Ellipsoid(
            (-lung_cx, 0.05 * cb, lung_base), (lung_rx, lung_ry, lung_apex - lung_base), z_min=lung_base
        ),
        "lung_left": Ellipsoid(
            (lung_cx, 0.05 * cb, lung_base + 8.0),
            (lung_rx * 0.95, lung_ry, lung_apex - lung_base - 8.0),
            z_min=lung_base + 8.0,
        ),
        "heart": Ellipsoid(
            (22.0 * s, -22.0 * s, lung_base + 0.22 * (lung_apex - lung_base)),
            (_jitter(rng, 62.0, 0.08) * s, _jitter(rng, 48.0, 0.08) * s, 55.0 * s),
            angle=0.5,
        ),
        "aorta_ascending": Tube(
            lung_base + 60.0, carina + 12.0, (-4.0, -28.0 * s), (-2.0, -18.0 * s), (15.0 * s, 15.0 * s)
        ),
        "aorta_arch": Tube(
            carina + 8.0,
            carina + 22.0,
            (6.0, trachea_y - 8.0),
            (6.0, trachea_y - 8.0),
            (30.0 * s, 10.0 * s),
            angle=-0.9,
        ),
        "aorta_descending": Tube(
            0.27 * L,
            carina + 12.0,
            (8.0, spine_y(0.27 * L) - 30.0 * s),
            (aorta_x, spine_y(carina) - 22.0 * s),
            (11.0 * s, 11.0 * s),
            end_radii=(13.0 * s, 13.0 * s),
        ),
        "pulmonary_trunk": Tube(
            carina - 45.0, carina - 15.0, (18.0 * s, -38.0 * s), (20.0 * s, -25.0 * s), (14.0 * s, 13.0 * s)
        ),
        "svc": Tube(carina - 40.0, carina + 45.0, (-24.0 * s, -22.0 * s), (-22.0 * s, -20.0 * s), (9.0 * s, 9.0 * s)),
        "ivc": Tube(
            0.26 * L,
            diaphragm,
            (-18.0 * s, spine_y(0.26 * L) - 30.0 * s),
            (-22.0 * s, spine_y(diaphragm) - 30.0 * s),
            (12.0 * s, 10.0 * s),
        ),
        "trachea": Tube(carina, L + 20.0, (0.0, trachea_y), (0.0, trachea_y - 8.0), (9.0 * s, 8.0 * s)),
        "bronchus_right": Tube(
            carina - 25.0, carina, (-42.0 * s, trachea_y + 8.0), (-4.0, trachea_y), (6.5 * s, 6.0 * s)
        ),
        "bronchus_left": Tube(
            carina - 35.0, carina, (44.0 * s, trachea_y + 10.0), (4.0, trachea_y), (6.0 * s, 5.5 * s)
        ),
        "esophagus": Tube(
            diaphragm - 20.0,
            L + 20.0,
            (20.0 * s, spine_y(diaphragm) - 34.0 * s),
            (6.0 * s, trachea_y + 13.0 * s),
            (8.0 * s, 7.0 * s),
        ),
    }


def _abdomen_parts(rng: np.random.Generator, f: _Frame) -> dict[str, Shape]:
    """Abdominal organs, bowel and psoas muscles."""
    L, s, spine_y, diaphragm = f.length, f.scale, f.spine_y, f.diaphragm
    return {
        "liver": Ellipsoid(
            (-55.0 * s, -5.0 * s, diaphragm - 72.0 * s),
            (_jitter(rng, 88.0, 0.08) * s, 78.0 * s, _jitter(rng, 80.0, 0.08) * s),
            angle=0.3,
        ),
        "liver_left": Ellipsoid(
            (18.0 * s, -48.0 * s, diaphragm - 45.0 * s), (52.0 * s, 30.0 * s, 42.0 * s), angle=-0.2
        ),
        "spleen": Ellipsoid(
            (85.0 * s, 42.0 * s, diaphragm - 75.0 * s), (_jitter(rng, 28.0, 0.1) * s, 48.0 * s, 50.0 * s), angle=-0.6
        ),
        "stomach": Ellipsoid((55.0 * s, -30.0 * s, diaphragm - 55.0 * s), (42.0 * s, 34.0 * s, 45.0 * s), angle=0.4),
        "pancreas": Ellipsoid((12.0 * s, 2.0 * s, diaphragm - 120.0 * s), (62.0 * s, 12.0 * s, 16.0 * s), angle=-0.15),
        "kidney_right": Ellipsoid(
            (-68.0 * s, spine_y(0.37 * L) - 2.0 * s, diaphragm - 150.0 * s), (28.0 * s, 35.0 * s, 55.0 * s), angle=0.35
        ),
        "kidney_left": Ellipsoid(
            (68.0 * s, spine_y(0.37 * L) - 2.0 * s, diaphragm - 135.0 * s), (28.0 * s, 35.0 * s, 55.0 * s), angle=-0.35
        ),
        "bladder": Ellipsoid((0.0, -48.0 * s, 0.075 * L), (_jitter(rng, 45.0, 0.15) * s, 34.0 * s, 42.0 * s)),
        "rectum": Tube(0.0, 0.2 * L, (0.0, 40.0 * s), (0.0, 55.0 * s), (17.0 * s, 15.0 * s)),
        "colon_right": Tube(0.22 * L, diaphragm - 110.0 * s, (-95.0 * s, -5.0), (-92.0 * s, 0.0), (22.0 * s, 22.0 * s)),
        "colon_left": Tube(0.22 * L, diaphragm - 80.0 * s, (97.0 * s, 10.0), (88.0 * s, 25.0), (19.0 * s, 19.0 * s)),
        "bowel_region": Tube(
            0.09 * L,
            diaphragm - 90.0 * s,
            (0.0, -20.0 * s),
            (0.0, -35.0 * s),
            (95.0 * s, 62.0 * s),
            end_radii=(90.0 * s, 50.0 * s),
        ),
        "psoas_right": Tube(
            0.12 * L,
            0.42 * L,
            (-55.0 * s, spine_y(0.12 * L) - 40.0 * s),
            (-30.0 * s, spine_y(0.42 * L) - 5.0 * s),
            (22.0 * s, 20.0 * s),
            end_radii=(12.0 * s, 12.0 * s),
        ),
        "psoas_left": Tube(
            0.12 * L,
            0.42 * L,
            (55.0 * s, spine_y(0.12 * L) - 40.0 * s),
            (30.0 * s, spine_y(0.42 * L) - 5.0 * s),
            (22.0 * s, 20.0 * s),
            end_radii=(12.0 * s, 12.0 * s),
        ),
    }


def _wall_parts(f: _Frame) -> dict[str, Shape]:
    """Gluteal muscles, the sternum and the pelvic bones."""
    L, s, mus, spine_y, core, lung_base = f.length, f.scale, f.muscle, f.spine_y, f.core, f.lung_base
    return {
        "gluteal_right": Tube(
            0.0, 0.2 * L, (-70.0 * s, 55.0 * s), (-62.0 * s, 60.0 * s), (50.0 * s, 38.0 * s), angle=0.3
        ),
        "gluteal_left": Tube(
            0.0, 0.2 * L, (70.0 * s, 55.0 * s), (62.0 * s, 60.0 * s), (50.0 * s, 38.0 * s), angle=-0.3
        ),
        "sternum": Tube(
            lung_base + 40.0,
            L * 0.93,
            (0.0, -(core(0.7 * L)[1] - mus - 6.0 * s)),
            (0.0, -(core(0.9 * L)[1] - mus - 4.0 * s)),
            (14.0 * s, 7.0 * s),
        ),
        "iliac_right": Tube(
            0.10 * L,
            0.25 * L,
            (-65.0 * s, 38.0 * s),
            (-85.0 * s, 10.0 * s),
            (38.0 * s, 9.0 * s),
            end_radii=(48.0 * s, 8.0 * s),
            angle=-0.9,
        ),
        "iliac_left": Tube(
            0.10 * L,
            0.25 * L,
            (65.0 * s, 38.0 * s),
            (85.0 * s, 10.0 * s),
            (38.0 * s, 9.0 * s),
            end_radii=(48.0 * s, 8.0 * s),
            angle=0.9,
        ),
        "sacrum": Tube(
            0.09 * L,
            0.22 * L,
            (0.0, spine_y(0.1 * L) + 18.0 * s),
            (0.0, spine_y(0.22 * L)),
            (22.0 * s, 14.0 * s),
            end_radii=(42.0 * s, 18.0 * s),
        ),
        "femoral_head_right": Ellipsoid((-88.0 * s, 2.0 * s, 0.06 * L), (23.0 * s, 23.0 * s, 23.0 * s)),
        "femoral_head_left": Ellipsoid((88.0 * s, 2.0 * s, 0.06 * L), (23.0 * s, 23.0 * s, 23.0 * s)),
        "acetabulum_right": Ellipsoid((-80.0 * s, 4.0 * s, 0.075 * L), (34.0 * s, 32.0 * s, 30.0 * s)),
        "acetabulum_left": Ellipsoid((80.0 * s, 4.0 * s, 0.075 * L), (34.0 * s, 32.0 * s, 30.0 * s)),
        "pubis": Tube(0.0, 0.045 * L, (0.0, -70.0 * s), (0.0, -68.0 * s), (45.0 * s, 9.0 * s)),
    }


def sample_anatomy(rng: np.random.Generator, *, sex: str | None = None) -> Anatomy:
    """Draw one patient: size, fat, organ positions and textures all vary from patient to patient."""
    sex = sex if sex in ("F", "M") else ("F" if rng.random() < 0.5 else "M")
    L = float(rng.uniform(560.0, 640.0))
    s = float(rng.uniform(0.9, 1.1))
    fat = float(rng.uniform(6.0, 30.0))
    mus = float(rng.uniform(9.0, 14.0))
    f = _frame(rng, sex, L, s, mus)
    # One dict in this order: later parts paint over earlier ones, and the draws follow it.
    parts = {**_thorax_parts(rng, f), **_abdomen_parts(rng, f), **_wall_parts(f)}
    regions = {
        "pelvis": (0.0, 0.22 * L),
        "abdomen": (0.22 * L, f.diaphragm),
        "chest": (f.lung_base - 40.0, L),
        "lungs": (f.lung_base, f.lung_apex),
    }
    textures = {
        "lung": Field.sample(rng, 30.0),
        "vessel": Field.sample(rng, 16.0, k=14),
        "bowel": Field.sample(rng, 38.0),
        "gas": Field.sample(rng, 22.0),
    }
    body_width = 2.0 * (float(f.rx.max()) + fat)
    return Anatomy(
        seed=int(rng.integers(0, 2**31 - 1)),
        sex=sex,
        length_mm=L,
        scale=s,
        fov_mm=float(body_width + rng.uniform(25.0, 70.0)),
        noise_hu=float(rng.uniform(6.0, 12.0)),
        fat_mm=fat,
        muscle_mm=mus,
        body_z=f.body_z,
        body_rx=f.rx,
        body_ry=f.ry,
        parts=parts,
        rib_pitch_mm=float(rng.uniform(24.0, 30.0)) * s,
        rib_slope_mm=float(rng.uniform(70.0, 90.0)) * s,
        disc_period_mm=float(rng.uniform(27.0, 33.0)) * s,
        textures=textures,
        regions=regions,
    )


# --- painting ----------------------------------------------------------------------------------
class SliceCanvas:
    """One axial plane being painted: HU values, a tissue label map, and the pixel grid in mm.

    Features (lesions, findings) receive this object in their ``paint`` method. Painting blends with a
    partial-volume weight at the edges (``alpha``), so small structures keep their size on coarse grids.
    """

    def __init__(self, anatomy: Anatomy, z: float, xs: np.ndarray, ys: np.ndarray, px: float) -> None:
        self.anatomy = anatomy
        self.z = float(z)
        self.xs = xs.astype(np.float64)
        self.ys = ys.astype(np.float64)
        self.px = float(px)
        self.hu = np.full((ys.size, xs.size), HU["air"], dtype=np.float32)
        self.labels = np.zeros((ys.size, xs.size), dtype=np.int8)

    def _bounds(self, sec: Section) -> tuple[slice, slice] | None:
        hx, hy = sec.half_extent()
        pad = self.px
        cols = np.searchsorted(self.xs, [sec.cx - hx - pad, sec.cx + hx + pad])
        rows = np.searchsorted(self.ys, [sec.cy - hy - pad, sec.cy + hy + pad])
        if cols[0] >= cols[1] or rows[0] >= rows[1]:
            return None
        return slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1]))

    def alpha(self, sec: Section) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """The sub-block covered by ``sec`` and the fraction of each pixel inside it."""
        box = self._bounds(sec)
        if box is None:
            return None
        dx = (self.xs[box[1]] - sec.cx)[None, :]
        dy = (self.ys[box[0]] - sec.cy)[:, None]
        c, s = math.cos(sec.angle), math.sin(sec.angle)
        u = (dx * c + dy * s) / sec.a
        v = (dy * c - dx * s) / sec.b
        rho = np.sqrt(u * u + v * v)
        dist = (1.0 - rho) * min(sec.a, sec.b)  # mm inside the edge (approximate)
        return box, np.clip(0.5 + dist / self.px, 0.0, 1.0).astype(np.float32)

    def paint(
        self,
        sec: Section | None,
        hu: float | Callable[[np.ndarray, np.ndarray], np.ndarray],
        tissue: str,
        *,
        where: np.ndarray | None = None,
    ) -> None:
        """Blend ``hu`` (a value, or a function of the sub-block's xs, ys) into the ellipse ``sec``.

        ``where`` (a full-size weight map) restricts painting, e.g. to the lungs.
        """
        if sec is None:
            return
        got = self.alpha(sec)
        if got is None:
            return
        box, a = got
        if where is not None:
            a = a * where[box]
        self.blend(box, a, hu, tissue)

    def blend(
        self,
        box: tuple[slice, slice],
        a: np.ndarray,
        hu: float | Callable[[np.ndarray, np.ndarray], np.ndarray],
        tissue: str,
    ) -> None:
        """Blend into the sub-block ``box`` with weights ``a``; the label follows where ``a > 0.5``."""
        value = hu(self.xs[box[1]], self.ys[box[0]]) if callable(hu) else np.float32(hu)
        block = self.hu[box]
        block += a * (value - block)
        self.labels[box][a > 0.5] = _T[tissue]

    def mask(self, *tissues: str) -> np.ndarray:
        """A float32 map that is 1 where the label is one of ``tissues``."""
        codes = [_T[t] for t in tissues]
        return np.isin(self.labels, codes).astype(np.float32)


class Feature(Protocol):
    """Anything painted on top of the anatomy: a lesion, a chest finding, a tumour.

    ``layer`` is ``"soft"`` (painted before the bones, e.g. an effusion) or ``"top"`` (after them, e.g.
    a lytic bone lesion).
    """

    @property
    def layer(self) -> str: ...

    def paint(self, canvas: SliceCanvas) -> None: ...


def _paint_anatomy(c: SliceCanvas, features: Sequence[Feature]) -> None:
    an, z, p = c.anatomy, c.z, c.anatomy.parts
    body = an.body_section(z)
    c.paint(body, HU["skin"], "skin")
    c.paint(body.inset(2.0), HU["fat"], "fat")
    core = an.core_section(z)
    c.paint(core, HU["muscle"], "muscle")
    c.paint(core.inset(an.muscle_mm), HU["visceral_fat"], "visceral_fat")

    for name in ("gluteal_right", "gluteal_left", "psoas_right", "psoas_left"):
        c.paint(p[name].section(z), HU["muscle"], "muscle")
    _paint_bowel(c)
    for name in ("colon_right", "colon_left", "rectum"):
        sec = p[name].section(z)
        c.paint(sec, HU["bowel"], "bowel")
        c.paint(sec.scaled(0.65) if sec else None, HU["air"], "bowel")
    _paint_lungs(c)
    _paint_paraspinal(c)
    c.paint(p["bladder"].section(z), HU["bladder"], "bladder")
    for name, hu, tissue in (
        ("liver", HU["liver"], "liver"),
        ("liver_left", HU["liver"], "liver"),
        ("spleen", HU["spleen"], "spleen"),
        ("pancreas", HU["pancreas"], "pancreas"),
    ):
        c.paint(p[name].section(z), hu, tissue)
    stomach = p["stomach"].section(z)
    if stomach is not None:
        c.paint(stomach, HU["muscle"], "stomach")
        c.paint(stomach.inset(4.0), HU["stomach"], "stomach")
        # an air cap at the anterior (non-dependent) side of the lumen
        inner = stomach.inset(4.0)
        if inner is not None:
            cap = Section(inner.cx, inner.cy - 0.65 * inner.b, inner.a * 0.55, inner.b * 0.3, inner.angle)
            c.paint(cap, HU["air"], "stomach")
    for side in ("right", "left"):
        kid = p[f"kidney_{side}"].section(z)
        c.paint(kid, HU["kidney"], "kidney")
        if kid is not None:
            medial = 1.0 if side == "right" else -1.0
            sinus = Section(kid.cx + medial * 0.35 * kid.a, kid.cy, kid.a * 0.45, kid.b * 0.5, kid.angle)
            c.paint(sinus, HU["renal_sinus"], "kidney")
    heart = p["heart"].section(z)
    c.paint(heart, HU["myocardium"], "heart")
    c.paint(heart.scaled(0.72) if heart else None, HU["blood"], "heart")
    for name in ("aorta_ascending", "aorta_arch", "aorta_descending", "pulmonary_trunk"):
        c.paint(p[name].section(z), HU["blood"], "vessel")
    for name in ("svc", "ivc"):
        c.paint(p[name].section(z), HU["vein"], "vessel")
    eso = p["esophagus"].section(z)
    c.paint(eso, HU["esophagus"], "esophagus")
    c.paint(eso.scaled(0.3) if eso else None, HU["air"], "esophagus")
    for name in ("trachea", "bronchus_right", "bronchus_left"):
        sec = p[name].section(z)
        c.paint(sec, HU["airway_wall"], "airway")
        c.paint(sec.inset(2.0) if sec else None, HU["air"], "airway")

    for feature in features:
        if feature.layer == "soft":
            feature.paint(c)
    _paint_bones(c)
    for feature in features:
        if feature.layer != "soft":
            feature.paint(c)


def _paint_bowel(c: SliceCanvas) -> None:
    region = c.anatomy.parts["bowel_region"].section(c.z)
    got = c.alpha(region) if region is not None else None
    if got is None:
        return
    box, a = got
    loops = np.clip(c.anatomy.textures["bowel"](c.xs[box[1]], c.ys[box[0]], c.z) * 1.6 + 0.6, 0.0, 1.0)
    c.blend(box, a * loops, HU["bowel"], "bowel")
    gas = np.clip((c.anatomy.textures["gas"](c.xs[box[1]], c.ys[box[0]], c.z) - 1.3) * 2.0, 0.0, 1.0)
    c.blend(box, a * loops * gas, HU["air"], "bowel")


def _lung_hu(c: SliceCanvas) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Parenchyma with a gentle texture and a vessel tree that thins toward the periphery."""
    an = c.anatomy

    def hu(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        base = HU["lung"] + 22.0 * an.textures["lung"](xs, ys, c.z)
        v = an.textures["vessel"](xs, ys, c.z)
        carina = an.tube("trachea").z0
        hx = np.minimum(np.abs(np.abs(xs) - 45.0), 200.0)[None, :]
        d = np.sqrt(hx**2 + (ys[:, None] - 10.0) ** 2 + (c.z - carina + 20.0) ** 2)
        vessel = np.clip((v - 1.35) * 1.5, 0.0, 1.0) * np.exp(-d / 130.0).astype(np.float32)
        return base + vessel * (HU["blood"] - HU["lung"])

    return hu


def _paint_lungs(c: SliceCanvas) -> None:
    hu = _lung_hu(c)
    for side in ("right", "left"):
        c.paint(c.anatomy.parts[f"lung_{side}"].section(c.z), hu, "lung")


def _paint_paraspinal(c: SliceCanvas) -> None:
    an, z = c.anatomy, c.z
    s = an.scale
    y = an.spine_y(z)
    for sign in (-1.0, 1.0):
        c.paint(Section(sign * 30.0 * s, y + 36.0 * s, 25.0 * s, 23.0 * s), HU["muscle"], "muscle")


def _bone(c: SliceCanvas, sec: Section | None, cortex_mm: float = 2.5) -> None:
    if sec is None:
        return
    c.paint(sec, HU["cortical"], "bone")
    c.paint(sec.inset(cortex_mm), HU["cancellous"], "bone")


def _paint_bones(c: SliceCanvas) -> None:
    an, z, p = c.anatomy, c.z, c.anatomy.parts
    s = an.scale
    L = an.length_mm
    # spine: vertebral bodies with discs, canal and posterior arch, from S1 up
    if 0.2 * L <= z <= L + 20.0:
        y = an.spine_y(z)
        body = Section(0.0, y, 20.0 * s, 16.0 * s)
        if (z % an.disc_period_mm) < 0.24 * an.disc_period_mm:
            c.paint(body, HU["disc"], "disc")
        else:
            _bone(c, body)
        arch = Section(0.0, y + 27.0 * s, 13.0 * s, 12.0 * s)
        c.paint(arch, HU["cortical"] * 0.7, "bone")
        c.paint(Section(0.0, y + 45.0 * s, 5.0 * s, 13.0 * s), HU["cortical"] * 0.7, "bone")
        c.paint(Section(0.0, y + 25.0 * s, 8.0 * s, 8.0 * s), HU["csf"], "canal")
    for name in (
        "sacrum",
        "iliac_right",
        "iliac_left",
        "acetabulum_right",
        "acetabulum_left",
        "femoral_head_right",
        "femoral_head_left",
        "pubis",
        "sternum",
    ):
        _bone(c, p[name].section(z), cortex_mm=2.0)
    _paint_ribs(c)


def _paint_ribs(c: SliceCanvas) -> None:
    """Ribs: a band around the chest wall, sloping down anteriorly and repeating along z."""
    an, z = c.anatomy, c.z
    lo, hi = an.regions["lungs"][0] - 40.0, an.length_mm * 0.97
    if not lo <= z <= hi:
        return
    cav = an.cavity_section(z)
    outer = Section(0.0, 0.0, cav.a + 9.0, cav.b + 9.0)
    got = c.alpha(outer)
    if got is None:
        return
    box, a_out = got
    got_in = c.alpha(cav)
    inner = np.zeros_like(a_out)
    if got_in is not None:
        inner[
            got_in[0][0].start - box[0].start : got_in[0][0].stop - box[0].start,
            got_in[0][1].start - box[1].start : got_in[0][1].stop - box[1].start,
        ] = got_in[1]
    ring = np.clip(a_out - inner, 0.0, 1.0)
    xs, ys = c.xs[box[1]], c.ys[box[0]]
    theta = np.arctan2(xs[None, :] / cav.a, ys[:, None] / cav.b)  # 0 = posterior, ±pi = anterior
    zz = z + an.rib_slope_mm * np.abs(theta) / math.pi
    rib_h = 10.0
    phase = np.mod(zz, an.rib_pitch_mm)
    across = np.clip(0.5 + (rib_h / 2.0 - np.abs(phase - rib_h / 2.0)) / c.px, 0.0, 1.0)
    anterior = np.abs(theta) > 2.6
    w = ring * across * ~anterior
    c.blend(box, w.astype(np.float32), HU["cortical"] * 0.55, "bone")
    c.blend(box, (ring * across * anterior).astype(np.float32), HU["cartilage"], "muscle")


# --- rendering ---------------------------------------------------------------------------------
def pixel_grid(
    size: int, spacing_mm: float, center_mm: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """The x (columns, right→left) and y (rows, anterior→posterior) of pixel centres, in mm."""
    offsets = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * spacing_mm
    return center_mm[0] + offsets, center_mm[1] + offsets


def _noise(anatomy: Anatomy, z: float, shape: tuple[int, int], noise_seed: int | None) -> np.ndarray:
    seed = anatomy.seed if noise_seed is None else noise_seed
    zkey = round(z * 1000.0) + 2**40
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zkey, shape[0], shape[1]])
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(anatomy.noise_hu)


def render(
    anatomy: Anatomy,
    z_mm: Sequence[float] | np.ndarray,
    *,
    size: int = 64,
    spacing_mm: float | None = None,
    center_mm: tuple[float, float] = (0.0, 0.0),
    features: Sequence[Feature] = (),
    noise: bool = True,
    noise_seed: int | None = None,
) -> np.ndarray:
    """Render axial slices at ``z_mm`` as int16 HU ``[Z, Y, X]`` in display orientation.

    ``spacing_mm`` defaults to ``anatomy.fov_mm / size``. The slices are returned in the order of
    ``z_mm`` (callers choose ascending or descending). ``noise_seed`` lets two series of the same
    patient have different noise.
    """
    spacing = anatomy.fov_mm / size if spacing_mm is None else float(spacing_mm)
    xs, ys = pixel_grid(size, spacing, center_mm)
    zs = np.asarray(z_mm, dtype=np.float64).reshape(-1)
    out = np.empty((zs.size, size, size), dtype=np.int16)
    for k, z in enumerate(zs):
        canvas = SliceCanvas(anatomy, float(z), xs, ys, spacing)
        _paint_anatomy(canvas, features)
        img = canvas.hu
        if noise:
            img = img + _noise(anatomy, float(z), img.shape, noise_seed)
        out[k] = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    return out


def tissue_map(
    anatomy: Anatomy,
    z: float,
    *,
    size: int = 64,
    spacing_mm: float | None = None,
    center_mm: tuple[float, float] = (0.0, 0.0),
    features: Sequence[Feature] = (),
) -> np.ndarray:
    """The int8 tissue label of every pixel of one slice (codes index :data:`TISSUES`)."""
    spacing = anatomy.fov_mm / size if spacing_mm is None else float(spacing_mm)
    xs, ys = pixel_grid(size, spacing, center_mm)
    canvas = SliceCanvas(anatomy, float(z), xs, ys, spacing)
    _paint_anatomy(canvas, features)
    return canvas.labels


def tissue_at(anatomy: Anatomy, x: float, y: float, z: float) -> str:
    """The tissue name at one point (mm), as rendered without features."""
    canvas = SliceCanvas(anatomy, z, np.array([x]), np.array([y]), 0.01)
    _paint_anatomy(canvas, ())
    return TISSUES[int(canvas.labels[0, 0])]


# --- lesions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LesionAnnotation:
    """Where a lesion shows in a rendered stack, in 0-based pixel coordinates of the key slice.

    ``box`` is ``(x1, y1, x2, y2)`` (x = column, y = row; pixel centres at integers) around the
    lesion's cross-section; ``recist`` holds the long-axis then short-axis end points
    ``(x11, y11, x12, y12, x21, y21, x22, y22)`` as in DeepLesion; ``diameters_px`` = (long, short).
    """

    key_index: int
    z_mm: float
    box: tuple[float, float, float, float]
    recist: tuple[float, ...]
    diameters_px: tuple[float, float]
    center_px: tuple[float, float]


@dataclass(frozen=True)
class PhantomLesion:
    """A solid ellipsoidal lesion of one coarse type (a DeepLesion type name, or ``lung`` for a tumour)."""

    type: str
    shape: Ellipsoid
    hu: float
    layer: str = "top"

    @property
    def diameter_mm(self) -> float:
        return 2.0 * max(self.shape.radii[0], self.shape.radii[1])

    def paint(self, canvas: SliceCanvas) -> None:
        canvas.paint(self.shape.section(canvas.z), self.hu, "lesion")

    def annotate(
        self,
        z_mm: Sequence[float] | np.ndarray,
        *,
        size: int = 64,
        spacing_mm: float | None = None,
        fov_mm: float | None = None,
        center_mm: tuple[float, float] = (0.0, 0.0),
    ) -> LesionAnnotation:
        """The key slice (closest to the lesion centre) among ``z_mm`` and the lesion's box on it.

        Give ``spacing_mm``, or ``fov_mm`` (then spacing = fov / size).
        """
        if spacing_mm is None:
            if fov_mm is None:
                raise ValueError("annotate needs spacing_mm or fov_mm")
            spacing_mm = fov_mm / size
        zs = np.asarray(z_mm, dtype=np.float64)
        key = int(np.argmin(np.abs(zs - self.shape.center[2])))
        sec = self.shape.section(float(zs[key]))
        if sec is None:
            raise ValueError(f"{self.type} lesion at z={self.shape.center[2]:.1f} mm is on none of the slices")
        px = float(spacing_mm)
        mid = (size - 1) / 2.0
        col = (sec.cx - center_mm[0]) / px + mid
        row = (sec.cy - center_mm[1]) / px + mid
        hx, hy = sec.half_extent()
        box = (col - hx / px, row - hy / px, col + hx / px, row + hy / px)
        a, b, ang = sec.a, sec.b, sec.angle
        if b > a:
            a, b, ang = b, a, ang + math.pi / 2.0
        ca, sa = math.cos(ang), math.sin(ang)
        lx, ly = a * ca / px, a * sa / px
        sx, sy = -b * sa / px, b * ca / px
        recist = (col - lx, row - ly, col + lx, row + ly, col - sx, row - sy, col + sx, row + sy)
        return LesionAnnotation(key, float(zs[key]), box, recist, (2 * a / px, 2 * b / px), (col, row))


def _lesion_shape(rng: np.random.Generator, center: tuple[float, float, float], diameter: float) -> Ellipsoid:
    a = diameter / 2.0
    return Ellipsoid(
        center,
        (a, a * float(rng.uniform(0.72, 1.0)), a * float(rng.uniform(0.8, 1.1))),
        angle=float(rng.uniform(0.0, math.pi)),
    )


def _in_section(rng: np.random.Generator, sec: Section, max_rho: float, min_rho: float = 0.0) -> tuple[float, float]:
    rho = math.sqrt(float(rng.uniform(min_rho**2, max_rho**2)))
    t = float(rng.uniform(0.0, 2.0 * math.pi))
    u, v = rho * sec.a * math.cos(t), rho * sec.b * math.sin(t)
    c, s = math.cos(sec.angle), math.sin(sec.angle)
    return sec.cx + u * c - v * s, sec.cy + u * s + v * c


def _fits(anatomy: Anatomy, center: tuple[float, float, float], radius: float, allowed: set[str], need: int) -> bool:
    """Whether the centre and at least ``need`` of 8 points around it lie in ``allowed`` tissue."""
    x, y, z = center
    if tissue_at(anatomy, x, y, z) not in allowed:
        return False
    hits = 0
    for k in range(8):
        t = k * math.pi / 4.0
        dz = (0.5 * radius) if k % 2 else (-0.5 * radius if k % 4 == 2 else 0.0)
        if tissue_at(anatomy, x + 0.7 * radius * math.cos(t), y + 0.7 * radius * math.sin(t), z + dz) in allowed:
            hits += 1
    return hits >= need


def _propose(
    anatomy: Anatomy, kind: str, rng: np.random.Generator, radius: float
) -> tuple[tuple[float, float, float], set[str], int] | None:
    """A candidate centre for a lesion of ``kind``, the tissues it must sit in, and how many ring points."""
    p, L, s = anatomy.parts, anatomy.length_mm, anatomy.scale
    if kind == "lung":
        side = "right" if rng.random() < 0.5 else "left"
        lung = p[f"lung_{side}"]
        lo, hi = lung.z_range
        z = float(rng.uniform(lo + 0.12 * (hi - lo) + radius, hi - 0.1 * (hi - lo) - radius))
        sec = lung.section(z)
        if sec is None:
            return None
        return (*_in_section(rng, sec, 0.7), z), {"lung"}, 7
    if kind == "liver":
        liver = p["liver"]
        lo, hi = liver.z_range
        z = float(rng.uniform(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo)))
        sec = _section_inside(liver, z)
        return (*_in_section(rng, sec, 0.55), z), {"liver"}, 7
    if kind == "kidney":
        kid = p["kidney_right" if rng.random() < 0.5 else "kidney_left"]
        lo, hi = kid.z_range
        z = float(rng.uniform(lo + 0.3 * (hi - lo), hi - 0.3 * (hi - lo)))
        sec = _section_inside(kid, z)
        return (*_in_section(rng, sec, 0.8, 0.3), z), {"kidney"}, 3
    if kind == "bone":
        u = rng.random()
        if u < 0.6:
            z = float(rng.uniform(0.26 * L, 0.9 * L))
            x, y = float(rng.uniform(-5.0, 5.0)) * s, anatomy.spine_y(z) + float(rng.uniform(-4.0, 4.0)) * s
        elif u < 0.85:
            iliac = anatomy.tube("iliac_right" if rng.random() < 0.5 else "iliac_left")
            z = float(rng.uniform(iliac.z0 + 0.3 * (iliac.z1 - iliac.z0), iliac.z1 - 0.2 * (iliac.z1 - iliac.z0)))
            x, y = _in_section(rng, _section_inside(iliac, z), 0.5)
        else:
            head = anatomy.ellipsoid("femoral_head_right" if rng.random() < 0.5 else "femoral_head_left")
            z = float(head.center[2] + rng.uniform(-8.0, 8.0))
            x, y = head.center[0], head.center[1]
        return (x, y, z), {"bone"}, 0
    if kind == "mediastinum":
        trachea = anatomy.tube("trachea")
        z = float(rng.uniform(trachea.z0 - 25.0, trachea.z0 + 40.0))
        ty = trachea.start[1]
        x = float(rng.uniform(-30.0, 30.0)) * s
        y = ty - float(rng.uniform(12.0, 38.0)) * s
        return (x, y, z), {"visceral_fat", "vessel", "esophagus", "heart"}, 3
    if kind == "abdomen":
        z = float(rng.uniform(0.28 * L, 0.45 * L))
        if rng.random() < 0.5:
            aorta = _section_inside(p["aorta_descending"], z)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            x = aorta.cx + sign * float(rng.uniform(22.0, 40.0)) * s
            y = aorta.cy + float(rng.uniform(-25.0, 0.0)) * s
        else:
            # The bowel region can end below 0.45 L in a short patient: no place at this z, draw again.
            sec = p["bowel_region"].section(z)
            if sec is None:
                return None
            x, y = _in_section(rng, sec, 0.6)
        return (x, y, z), {"visceral_fat"}, 4
    if kind == "soft_tissue":
        z = float(rng.uniform(0.1 * L, 0.92 * L))
        body = anatomy.body_section(z)
        t = float(rng.uniform(0.0, 2.0 * math.pi))
        depth = anatomy.fat_mm * 0.5 + radius * 0.4
        k_x, k_y = max(body.a - depth, 1.0), max(body.b - depth, 1.0)
        return (k_x * math.cos(t), k_y * math.sin(t), z), {"fat", "muscle", "skin"}, 2
    if kind == "pelvis":
        z = float(rng.uniform(0.04 * L, 0.16 * L))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        x = sign * float(rng.uniform(35.0, 60.0)) * s
        y = float(rng.uniform(-45.0, 10.0)) * s
        return (x, y, z), {"visceral_fat", "bowel", "bladder", "muscle"}, 3
    raise ValueError(f"unknown lesion type '{kind}': use one of {', '.join(LESION_TYPES.values())}")


def place_lesion(
    anatomy: Anatomy,
    lesion_type: str,
    rng: np.random.Generator,
    *,
    diameter_mm: float | None = None,
) -> PhantomLesion:
    """A lesion of one DeepLesion coarse type, placed in its own region of this patient.

    ``lesion_type`` is a name from :data:`clearbench.scans.scan.LESION_TYPES` (bone, abdomen,
    mediastinum, liver, lung, kidney, soft_tissue, pelvis). Its HU (:data:`LESION_HU`) contrasts with
    the surrounding tissue in the abdomen window (and, for lung, also in the lung window).
    """
    if lesion_type not in LESION_HU:
        raise ValueError(f"unknown lesion type '{lesion_type}': use one of {', '.join(LESION_HU)}")
    lo, hi = LESION_DIAMETER_MM[lesion_type]
    diameter = float(rng.uniform(lo, hi)) if diameter_mm is None else float(diameter_mm)
    for attempt in range(400):
        d = diameter * (0.97 ** (attempt // 40))  # shrink slowly if the region is too tight
        proposal = _propose(anatomy, lesion_type, rng, d / 2.0)
        if proposal is None:
            continue
        center, allowed, need = proposal
        if _fits(anatomy, center, d / 2.0, allowed, need):
            return PhantomLesion(lesion_type, _lesion_shape(rng, center, d), LESION_HU[lesion_type])
    raise RuntimeError(f"could not place a {lesion_type} lesion in this phantom (seed {anatomy.seed})")


def lung_tumour(
    anatomy: Anatomy,
    diameter_mm: float,
    rng: np.random.Generator,
    *,
    side: str | None = None,
) -> PhantomLesion:
    """A primary lung tumour of the given diameter (for NSCLC), centred in the lung.

    Large tumours may reach the pleura or mediastinum, as real T3/T4 tumours do; the centre is
    always in aerated lung.
    """
    side = side if side in ("right", "left") else ("right" if rng.random() < 0.5 else "left")
    lung = anatomy.parts[f"lung_{side}"]
    lo, hi = lung.z_range
    radius = diameter_mm / 2.0
    center: tuple[float, float, float] | None = None
    for attempt in range(400):
        z = float(rng.uniform(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo)))
        sec = lung.section(z)
        if sec is None:
            continue
        center = (*_in_section(rng, sec, 0.45), z)
        need = max(0, 7 - attempt // 50)
        if _fits(anatomy, center, min(radius, 0.45 * sec.b), {"lung"}, need):
            break
    assert center is not None
    shape = Ellipsoid(
        center,
        (radius, radius * float(rng.uniform(0.8, 1.0)), radius * float(rng.uniform(0.85, 1.1))),
        angle=float(rng.uniform(0.0, math.pi)),
    )
    return PhantomLesion("lung", shape, 38.0)


# --- chest abnormalities (RAD-ChestCT) ---------------------------------------------------------
def _side_mask(canvas: SliceCanvas, side: str) -> np.ndarray:
    """The lung pixels of one side (patient right = negative x) as painted so far."""
    lung = canvas.mask("lung")
    right = (canvas.xs < 0.0)[None, :]
    return lung * (right if side == "right" else ~right)


def _lobe_z(anatomy: Anatomy, lobe: str) -> tuple[float, float]:
    lo, hi = anatomy.regions["lungs"]
    span = hi - lo
    level = lobe.split("_")[1]
    a, b = {"lower": (0.0, 0.33), "mid": (0.33, 0.62), "upper": (0.62, 0.92)}[level]
    return lo + a * span, lo + b * span


@dataclass(frozen=True, eq=False)
class LungTexture:
    """A patchy change of the lung parenchyma inside an envelope, restricted to one lung.

    ``hu`` replaces the lung where the texture ``field`` exceeds ``threshold`` (emphysema, ground glass);
    with ``reticular=True`` thin lines of ``hu`` appear where the field crosses zero (fibrosis), and
    ``peripheral`` keeps only the subpleural rim of the lung.
    """

    side: str
    envelope: Ellipsoid
    field: Field
    threshold: float
    hu: float
    reticular: bool = False
    peripheral: float = 0.0
    layer: str = "soft"

    def paint(self, canvas: SliceCanvas) -> None:
        sec = self.envelope.section(canvas.z)
        if sec is None:
            return
        got = canvas.alpha(sec)
        if got is None:
            return
        box, a = got
        a = a * _side_mask(canvas, self.side)[box]
        xs, ys = canvas.xs[box[1]], canvas.ys[box[0]]
        f = self.field(xs, ys, canvas.z)
        if self.reticular:
            w = np.clip(1.0 - np.abs(f) / self.threshold, 0.0, 1.0)
        else:
            w = np.clip((f - self.threshold) * 2.0, 0.0, 1.0)
        if self.peripheral > 0.0:
            lung = canvas.anatomy.parts[f"lung_{self.side}"].section(canvas.z)
            if lung is None:
                return
            rho = np.sqrt(((xs[None, :] - lung.cx) / lung.a) ** 2 + ((ys[:, None] - lung.cy) / lung.b) ** 2)
            w = w * np.clip((rho - (1.0 - self.peripheral)) / 0.08, 0.0, 1.0)
        canvas.blend(box, (a * w).astype(np.float32), self.hu, "finding")


@dataclass(frozen=True, eq=False)
class Effusion:
    """Pleural fluid in the dependent (posterior) lung base, deepest at the base and thinning upward."""

    side: str
    depth_mm: float
    height_mm: float
    hu: float = HU["fluid"]
    layer: str = "soft"

    def paint(self, canvas: SliceCanvas) -> None:
        lung = canvas.anatomy.parts[f"lung_{self.side}"]
        sec = lung.section(canvas.z)
        if sec is None:
            return
        rise = (canvas.z - lung.z_range[0]) / self.height_mm
        depth = self.depth_mm * (1.0 - rise)
        if depth <= 0.0:
            return
        level = sec.cy + sec.b - depth
        w = np.clip(0.5 + (canvas.ys - level) / canvas.px, 0.0, 1.0)[:, None] * _side_mask(canvas, self.side)
        full = (slice(0, canvas.ys.size), slice(0, canvas.xs.size))
        canvas.blend(full, w.astype(np.float32), self.hu, "finding")


@dataclass(frozen=True, eq=False)
class Blob:
    """A uniform ellipsoid (atelectasis, node, calcification); ``lung_only`` clips it to one lung."""

    shape: Ellipsoid
    hu: float
    lung_only: str | None = None
    layer: str = "soft"

    def paint(self, canvas: SliceCanvas) -> None:
        where = _side_mask(canvas, self.lung_only) if self.lung_only else None
        canvas.paint(self.shape.section(canvas.z), self.hu, "finding", where=where)


@dataclass(frozen=True, eq=False)
class Airway:
    """A dilated bronchus running along z: an air lumen inside a thick soft-tissue wall."""

    tube: Tube
    wall_mm: float
    side: str
    layer: str = "soft"

    def paint(self, canvas: SliceCanvas) -> None:
        sec = self.tube.section(canvas.z)
        if sec is None:
            return
        where = _side_mask(canvas, self.side)
        canvas.paint(sec, HU["airway_wall"], "finding", where=where)
        canvas.paint(sec.inset(self.wall_mm), HU["air"], "finding", where=where)


@dataclass(frozen=True, eq=False)
class ChestFinding:
    """One chest abnormality as painted primitives, with the RAD-ChestCT label columns it sets.

    ``labels`` are ``"{abnormality}*{location}"`` names, e.g. ``"nodule*right_upper"``.
    """

    name: str
    labels: tuple[str, ...]
    parts: tuple[Feature, ...]
    layer: str = "soft"

    def paint(self, canvas: SliceCanvas) -> None:
        for part in self.parts:
            part.paint(canvas)


def _point_in_lobe(
    anatomy: Anatomy, lobe: str, rng: np.random.Generator, max_rho: float, margin: float = 0.0
) -> tuple[float, float, float]:
    side = lobe.split("_")[0]
    lung = anatomy.parts[f"lung_{side}"]
    lo, hi = _lobe_z(anatomy, lobe)
    for _ in range(200):
        z = float(rng.uniform(lo + margin * 0.5, hi - margin * 0.5)) if hi - lo > margin else (lo + hi) / 2
        sec = lung.section(z)
        if sec is None:
            continue
        x, y = _in_section(rng, sec, max_rho)
        if tissue_at(anatomy, x, y, z) == "lung":
            return x, y, z
    return x, y, z


def _pick_lobes(rng: np.random.Generator, candidates: Sequence[str], n_max: int) -> list[str]:
    n = int(rng.integers(1, n_max + 1))
    return sorted(str(v) for v in rng.choice(list(candidates), size=min(n, len(candidates)), replace=False))


def _sides(rng: np.random.Generator, p_both: float) -> list[str]:
    """Both lungs with probability ``p_both``, else one of them at random."""
    return ["right", "left"] if rng.random() < p_both else [("right", "left")[int(rng.integers(2))]]


def _emphysema(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    lo_lung, hi_lung = anatomy.regions["lungs"]
    labels: list[str] = []
    parts: list[Feature] = []
    sides = _sides(rng, 0.7)
    for side in sides:
        lung = anatomy.ellipsoid(f"lung_{side}")
        z_lo = lo_lung + 0.4 * (hi_lung - lo_lung)
        env = Ellipsoid(
            (lung.center[0], lung.center[1], hi_lung), (lung.radii[0] * 1.1, lung.radii[1] * 1.1, hi_lung - z_lo)
        )
        parts.append(LungTexture(side, env, Field.sample(rng, 28.0), float(rng.uniform(-0.6, -0.2)), -975.0))
        for _ in range(int(rng.integers(1, 3))):
            c = _point_in_lobe(anatomy, f"{side}_upper", rng, 0.75)
            r = float(rng.uniform(9.0, 16.0))
            parts.append(Blob(Ellipsoid(c, (r, r, r)), HU["air"], lung_only=side))
        labels += [f"emphysema*{side}_upper", f"emphysema*{side}_mid", f"emphysema*{side}_lung"]
    labels.append("emphysema*lung")
    return labels, parts


def _pleural_effusion(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    s = anatomy.scale
    labels: list[str] = []
    parts: list[Feature] = []
    sides = _sides(rng, 0.4)
    for side in sides:
        parts.append(Effusion(side, float(rng.uniform(45.0, 80.0)) * s, float(rng.uniform(90.0, 140.0))))
        labels.append(f"pleural_effusion*{side}")
    return labels, parts


def _atelectasis(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    s = anatomy.scale
    labels: list[str] = []
    parts: list[Feature] = []
    for lobe in _pick_lobes(rng, ("right_lower", "left_lower", "right_mid", "left_mid"), 2):
        side = lobe.split("_")[0]
        lung = anatomy.parts[f"lung_{side}"]
        lo, hi = _lobe_z(anatomy, lobe)
        sec = lung.section((lo + hi) / 2)
        if sec is None:
            continue
        c = (sec.cx + float(rng.uniform(-0.3, 0.3)) * sec.a, sec.cy + 0.75 * sec.b, (lo + hi) / 2)
        parts.append(
            Blob(
                Ellipsoid(c, (sec.a * 0.75, float(rng.uniform(18.0, 28.0)) * s, (hi - lo) * 0.6)),
                40.0,
                lung_only=side,
            )
        )
        labels.append(f"atelectasis*{lobe}")
    return labels, parts


def _fibrosis(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    lo_lung, hi_lung = anatomy.regions["lungs"]
    labels: list[str] = []
    parts: list[Feature] = []
    sides = _sides(rng, 0.8)
    for side in sides:
        lung = anatomy.ellipsoid(f"lung_{side}")
        env = Ellipsoid(
            (lung.center[0], lung.center[1], lo_lung),
            (lung.radii[0] * 1.1, lung.radii[1] * 1.1, 0.65 * (hi_lung - lo_lung)),
        )
        parts.append(LungTexture(side, env, Field.sample(rng, 14.0), 0.5, -150.0, reticular=True, peripheral=0.45))
        labels += [f"fibrosis*{side}_lower", f"fibrosis*{side}_mid", f"reticulation*{side}_lower"]
    labels.append("fibrosis*lung")
    return labels, parts


def _opacity(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    labels: list[str] = []
    parts: list[Feature] = []
    for lobe in _pick_lobes(rng, LOBES, 3):
        side = lobe.split("_")[0]
        c = _point_in_lobe(anatomy, lobe, rng, 0.5)
        r = float(rng.uniform(35.0, 60.0))
        env = Ellipsoid(c, (r, r * 0.9, r))
        parts.append(LungTexture(side, env, Field.sample(rng, 25.0), -0.9, float(rng.uniform(-620.0, -480.0))))
        labels += [f"opacity*{lobe}", f"groundglass*{lobe}"]
    return labels, parts


def _calcification(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    s = anatomy.scale
    lo_lung = anatomy.regions["lungs"][0]
    labels: list[str] = []
    parts: list[Feature] = []
    sites = ["lung", "hilum", "aorta", "heart"]
    chosen = sorted(str(v) for v in rng.choice(sites, size=int(rng.integers(1, 3)), replace=False))
    for site in chosen:
        if site == "lung":
            for lobe in _pick_lobes(rng, LOBES, 4) * 3:
                c = _point_in_lobe(anatomy, lobe, rng, 0.7)
                r = float(rng.uniform(6.5, 9.5))
                parts.append(Blob(Ellipsoid(c, (r, r, r)), 1100.0, layer="top"))
                labels.append(f"calcification*{lobe}")
        elif site == "hilum":
            trachea = anatomy.tube("trachea")
            for sign in (-1.0, 1.0):
                c = (sign * 40.0 * s, trachea.start[1] + 12.0, trachea.z0 - float(rng.uniform(10, 25)))
                parts.append(Blob(Ellipsoid(c, (9.0, 8.0, 9.0)), 1000.0, layer="top"))
            labels += ["calcification*hilum", "calcification*mediastinum"]
        elif site == "aorta":
            aorta = anatomy.tube("aorta_descending")
            z0 = float(rng.uniform(lo_lung, aorta.z1 - 40.0))
            sec = _section_inside(aorta, z0 + 20.0)
            for k in range(4):
                t = float(rng.uniform(0, 2 * math.pi))
                c = (sec.cx + sec.a * math.cos(t), sec.cy + sec.b * math.sin(t), z0 + 12.0 * k)
                parts.append(Blob(Ellipsoid(c, (6.0, 6.0, 7.0)), 1000.0, layer="top"))
            labels += ["calcification*aorta", "atherosclerosis*aorta"]
        else:
            heart = anatomy.ellipsoid("heart")
            cz = heart.center[2] + 0.4 * heart.radii[2]
            for k in range(3):
                t = -2.2 + 0.6 * k
                c = (
                    heart.center[0] + heart.radii[0] * 0.8 * math.cos(t),
                    heart.center[1] + heart.radii[1] * 0.8 * math.sin(t),
                    cz - 8.0 * k,
                )
                parts.append(Blob(Ellipsoid(c, (6.0, 6.0, 8.0)), 1000.0, layer="top"))
            labels += ["calcification*heart", "coronary_artery_disease*heart"]
    return labels, parts


def _nodule(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    labels: list[str] = []
    parts: list[Feature] = []
    for _ in range(int(rng.integers(3, 9))):
        lobe = LOBES[int(rng.integers(len(LOBES)))]
        d = float(rng.uniform(16.0, 30.0))
        c = _point_in_lobe(anatomy, lobe, rng, 0.7, margin=d)
        parts.append(Blob(_lesion_shape(rng, c, d), 35.0, layer="top"))
        labels.append(f"nodule*{lobe}")
        if d > 10.0:
            labels.append(f"nodulegr1cm*{lobe}")
    return labels, parts


def _bronchiectasis(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    labels: list[str] = []
    parts: list[Feature] = []
    for lobe in _pick_lobes(rng, ("right_lower", "left_lower", "right_mid", "left_mid"), 2):
        side = lobe.split("_")[0]
        for _ in range(int(rng.integers(4, 8))):
            x, y, z = _point_in_lobe(anatomy, lobe, rng, 0.75)
            r = float(rng.uniform(7.0, 11.0))
            length = float(rng.uniform(40.0, 70.0))
            tube = Tube(z - length / 2, z + length / 2, (x, y), (x + float(rng.uniform(-10, 10)), y - 5.0), (r, r))
            parts.append(Airway(tube, 3.0, side))
        labels.append(f"bronchiectasis*{lobe}")
    labels.append("bronchiectasis*airways")
    return labels, parts


def _cardiomegaly(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    labels: list[str] = []
    parts: list[Feature] = []
    heart = anatomy.ellipsoid("heart")
    big = _resized(heart, lambda r: r * 1.3)
    inner = _resized(heart, lambda r: r * 1.3 * 0.75)
    parts += [Blob(big, HU["myocardium"]), Blob(inner, HU["blood"])]
    labels.append("cardiomegaly*heart")
    return labels, parts


def _pericardial_effusion(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    labels: list[str] = []
    parts: list[Feature] = []
    heart = anatomy.ellipsoid("heart")
    sac = _resized(heart, lambda r: r + 12.0)
    inner = _resized(heart, lambda r: r * 0.72)
    parts += [Blob(sac, HU["fluid"]), Blob(heart, HU["myocardium"]), Blob(inner, HU["blood"])]
    labels.append("pericardial_effusion*heart")
    return labels, parts


def _lymphadenopathy(anatomy: Anatomy, rng: np.random.Generator) -> tuple[list[str], list[Feature]]:
    s = anatomy.scale
    labels: list[str] = []
    parts: list[Feature] = []
    trachea = anatomy.tube("trachea")
    for _ in range(int(rng.integers(2, 4))):
        c = (
            float(rng.uniform(-30.0, 30.0)) * s,
            trachea.start[1] - float(rng.uniform(5.0, 30.0)) * s,
            trachea.z0 + float(rng.uniform(-30.0, 35.0)),
        )
        d = float(rng.uniform(20.0, 32.0))
        parts.append(Blob(_lesion_shape(rng, c, d), 45.0))
    labels += ["lymphadenopathy*mediastinum", "lymphadenopathy*hilum"]
    return labels, parts


_CHEST_FINDINGS: dict[str, Callable[[Anatomy, np.random.Generator], tuple[list[str], list[Feature]]]] = {
    "emphysema": _emphysema,
    "pleural_effusion": _pleural_effusion,
    "atelectasis": _atelectasis,
    "fibrosis": _fibrosis,
    "opacity": _opacity,
    "calcification": _calcification,
    "nodule": _nodule,
    "bronchiectasis": _bronchiectasis,
    "cardiomegaly": _cardiomegaly,
    "pericardial_effusion": _pericardial_effusion,
    "lymphadenopathy": _lymphadenopathy,
}


def chest_finding(anatomy: Anatomy, name: str, rng: np.random.Generator) -> ChestFinding:
    """A chest abnormality of ``name`` (:data:`CHEST_ABNORMALITIES` or :data:`EXTRA_CHEST_FINDINGS`).

    Each is drawn where it typically occurs and made visible at 64 px in the lung window: emphysema as
    low-HU upper-lobe lung with bullae, pleural effusion as fluid at the dependent lung base,
    atelectasis as collapsed (soft-tissue) posterior basal lung, fibrosis as subpleural reticulation,
    opacity as patchy ground glass, calcification as very dense foci (granulomas, nodes, aortic or
    coronary), nodules as round soft-tissue lesions, bronchiectasis as dilated thick-walled airways.
    """
    make = _CHEST_FINDINGS.get(name)
    if make is None:
        known = ", ".join((*CHEST_ABNORMALITIES, *EXTRA_CHEST_FINDINGS))
        raise ValueError(f"unknown chest finding '{name}': use one of {known}")
    labels, parts = make(anatomy, rng)
    return ChestFinding(name, tuple(dict.fromkeys(labels)), tuple(parts))
