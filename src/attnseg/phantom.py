"""Synthetic BraTS-like cases: the embedded demo data (no downloads).

Each case is a skull-stripped brain (as BraTS distributes it: 0 outside the brain) with white and
grey matter, a folded cortex, sulcal CSF, the interhemispheric fissure, lateral and third
ventricles with choroid plexus, deep grey matter; four MRI-like channels whose tissue contrasts
differ the way real ones do; a smooth multiplicative bias field per channel, Rician noise and
int16 storage. Tumours have vasogenic edema (spreading in white matter), an enhancing rim around a
necrotic core, or a solid enhancing or non-enhancing core, at varied sizes and positions, plus
small lesions under 5 mm across (enhancing nodules and FLAIR foci).

Labels follow BraTS 2017-2021: 0 background, 1 necrotic / non-enhancing core (NCR/NET), 2 edema
(ED), 4 enhancing tumour (ET). Relative intensities (white matter = reference):

=========  =====  =====  =====  =====  ======  =========  ========  ========
channel    CSF    GM     WM     edema  ET      necrosis   NET core  plexus
=========  =====  =====  =====  =====  ======  =========  ========  ========
FLAIR      dark   > WM   ref    bright bright  mid        bright    dark
T1         dark   < WM   ref    < WM   < WM    dark       < WM      like GM
T1ce       dark   < WM   ref    < WM   v.bright dark      < WM      bright
T2         bright > WM   ref    bright > WM    v.bright   bright    mid
=========  =====  =====  =====  =====  ======  =========  ========  ========

Geometry: the array axes are left-right, posterior-anterior, inferior-superior with the affine
``diag(-s, -s, s)`` (BraTS's axis codes L, P, S), the brain centre at world (0, 0, 0).

**Small-lesion mode** (:class:`SmallLesionSettings`, :func:`make_small_lesion_case`,
``attnseg demo-data --small-lesions``): a brain of adult size (``head_fov_mm``, default
140 x 172 x 136 mm) seen through a small field of view (default 64^3 voxels of 1 mm) centred at a
random point inside it, so the anatomy is at its real scale while a case stays small enough to
train on a CPU. No main tumour: ``lesions`` (inclusive count range, default 4-8) spheres of
diameter log-uniform in ``diameter_mm`` (default 2-10 mm, so about 25 % under 3 mm, 32 % 3-5 mm,
43 % 5-10 mm), each an enhancing nodule (label 4, bright in T1ce and FLAIR) with probability
``nodule_fraction`` else a FLAIR focus (label 2). ``contrast`` scales how far a lesion's intensities
move from the tissue around it towards the lesion tissue of the table above (1: all the way; 0.5:
half way; 0: invisible). A lesion lies inside the brain (its edge at least 2 mm below the surface),
off the ventricles, at least 3 mm from every other lesion and from the edge of the field of view; its
voxels are those whose centre lies inside the sphere (the centre voxel always), so its equivalent
diameter is close to the nominal one (a 3-5 mm lesion is 15-65 voxels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from attnseg.errors import ConfigError
from attnseg.io.atomic import atomic_write_text
from attnseg.io.nifti import save_image

CHANNELS = ("flair", "t1", "t1ce", "t2")
MSD_CHANNELS = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
LABELS = {"background": 0, "NCR/NET": 1, "ED": 2, "ET": 4}
# MSD Task01 numbers the same tissues differently: 1 edema, 2 non-enhancing, 3 enhancing
TO_MSD = {0: 0, 1: 2, 2: 1, 4: 3}
MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}

DEFAULT_SHAPE = (64, 64, 48)
DEFAULT_SPACING_MM = 2.5
SMALL_LESION_SHAPE = (64, 64, 64)
SMALL_LESION_SPACING_MM = 1.0

# tissue -> (FLAIR, T1, T1ce, T2), white matter ~ 0.45-0.8 (relative, before bias, noise and scale)
TISSUE = {
    "csf": (0.12, 0.25, 0.25, 1.00),
    "gm": (0.62, 0.56, 0.57, 0.64),
    "wm": (0.45, 0.80, 0.80, 0.45),
    "deep_gm": (0.56, 0.64, 0.65, 0.56),
    "plexus": (0.20, 0.55, 0.95, 0.60),
    "edema": (0.98, 0.58, 0.58, 0.86),
    "enhancing": (0.85, 0.55, 1.30, 0.74),
    "necrosis": (0.62, 0.28, 0.30, 0.97),
    "net_core": (0.90, 0.46, 0.50, 0.88),
}


@dataclass
class Lesion:
    """One lesion as generated: kind ``tumour`` or ``small``, centre, size and the labels it carries."""

    kind: str
    centre_mm: tuple[float, float, float]
    centre_vox: tuple[float, float, float]
    diameter_mm: float
    labels: list[int]
    voxels: int = 0

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "centre_mm": [round(float(v), 3) for v in self.centre_mm],
            "centre_vox": [round(float(v), 3) for v in self.centre_vox],
            "diameter_mm": round(float(self.diameter_mm), 3),
            "labels": [int(v) for v in self.labels],
            "voxels": int(self.voxels),
        }


@dataclass
class PhantomCase:
    """One synthetic case: ``image`` (4, *shape) float32 holding int16 values in FLAIR, T1, T1ce,
    T2 order, ``label`` (*shape) uint8 (0/1/2/4), the affine and the lesions."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    lesions: list[Lesion] = field(default_factory=list)
    channel_names: tuple[str, ...] = CHANNELS


# --- building blocks -------------------------------------------------------------------------------
def phantom_affine(
    shape: tuple[int, ...], spacing_mm: float, centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """``diag(-s, -s, s)`` (L, P, S like BraTS) with the volume centre at world ``centre_mm``
    (default (0, 0, 0), the brain centre)."""
    s = float(spacing_mm)
    affine = np.diag([-s, -s, s, 1.0])
    affine[:3, 3] = [(shape[0] - 1) / 2 * s, (shape[1] - 1) / 2 * s, -(shape[2] - 1) / 2 * s]
    affine[:3, 3] += np.asarray(centre_mm, dtype=np.float64)
    return affine


def _smooth_noise(rng: np.random.Generator, shape, sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (wavelength ~ 4 sigma)."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    return (field_ / (field_.std() + 1e-12)).astype(np.float32)


def _fraction(distance_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Partial-volume fraction of a voxel from a signed distance (mm, negative inside)."""
    return np.clip(0.5 - distance_mm / spacing_mm, 0.0, 1.0).astype(np.float32)


def _ellipsoid_distance(x: np.ndarray, centre, semi_axes, rotation: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid surface, measured along the ray from its centre."""
    d = x - np.asarray(centre, np.float32).reshape(3, 1, 1, 1)
    if rotation is not None:
        d = np.tensordot(rotation.astype(np.float32), d, axes=1)
    r = np.sqrt(sum((d[i] / semi_axes[i]) ** 2 for i in range(3))) + 1e-6
    length = np.sqrt((d**2).sum(0))
    return length * (1.0 - 1.0 / r)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    out = np.eye(3)
    for axis, angle in enumerate(a):
        i, j = (axis + 1) % 3, (axis + 2) % 3
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
        out = r @ out
    return out


# --- one case --------------------------------------------------------------------------------------
@dataclass
class _Head:
    """The head's geometry on the voxel grid: world and head coordinates, brain depth and mask."""

    affine: np.ndarray
    world: np.ndarray  # (3, *shape) scanner coordinates in mm
    x: np.ndarray  # (3, *shape) head coordinates (x right, y anterior, z superior)
    pose: np.ndarray
    axes: tuple[float, float, float]  # brain semi-axes ax, ay, az in mm
    depth: np.ndarray  # mm below the brain surface along the ray (negative outside)
    brain_frac: np.ndarray
    brain: np.ndarray


def _head(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    s: float,
    *,
    head_fov_mm: tuple[float, float, float] | None = None,
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> _Head:
    """A slightly tilted, lumpy egg-shaped brain filling most of the field of view ``head_fov_mm``
    (default: the grid's own), seen through the grid centred at world ``centre_mm``."""
    affine = phantom_affine(shape, s, centre_mm)
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = (affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:].astype(np.float32)).reshape(3, *shape)
    half_fov = (np.array(shape) * s if head_fov_mm is None else np.asarray(head_fov_mm, float)) / 2.0
    # head pose: a small tilt; anatomy is defined in head coordinates (x right, y anterior, z superior)
    pose = _rotation(rng, 6.0)
    x = np.tensordot(pose.astype(np.float32), world, axes=1)
    size = rng.uniform(0.9, 1.0)
    ax, ay, az = 0.80 * half_fov[0] * size, 0.88 * half_fov[1] * size, 0.82 * half_fov[2] * size
    # egg shape: wider at the back, flatter at the bottom, lumpy
    lump = _smooth_noise(rng, shape, 12.0 / s)
    ax_local = ax * (1.0 - 0.07 * x[1] / ay)
    az_local = np.where(x[2] < 0, az * 0.85, az)
    r_norm = np.sqrt((x[0] / ax_local) ** 2 + (x[1] / ay) ** 2 + (x[2] / az_local) ** 2) + 1e-6
    r_norm = r_norm * (1.0 + 0.025 * lump)
    radius = np.sqrt((x**2).sum(0))
    depth = radius * (1.0 / r_norm - 1.0)
    return _Head(affine, world, x, pose, (ax, ay, az), depth, _fraction(-depth, s), depth > 0)


def _cortex(rng: np.random.Generator, head: _Head, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Grey matter and CSF fractions: a ribbon under the surface and along sulci, and the fissure.

    Sulci are the zero-crossing sheets of band-pass noise (gyri ~ 15 mm apart), their distance
    ~ |n| / |grad n|.
    """
    shape, x, depth, az = head.depth.shape, head.x, head.depth, head.axes[2]
    fold = _smooth_noise(rng, shape, 4.5 / s) - 0.5 * _smooth_noise(rng, shape, 9.0 / s)
    grad = np.sqrt(sum(g**2 for g in np.gradient(fold, s))) + 1e-3
    sheet_mm = np.abs(fold) / grad
    sulcal_depth = 11.0 + 4.0 * _smooth_noise(rng, shape, 10.0 / s)
    in_sulcus_band = _fraction(depth - sulcal_depth, s)
    gm_frac = np.maximum(
        _fraction(depth - 3.0, s), _fraction(sheet_mm - 3.2, s) * _fraction(depth - sulcal_depth - 2.5, s)
    )
    csf_frac = np.maximum(_fraction(depth - 0.8, s), _fraction(sheet_mm - 0.9, s) * in_sulcus_band)
    # interhemispheric fissure above the corpus callosum
    fissure = (np.abs(x[0]) - 1.2).astype(np.float32)
    upper = x[2] > -0.15 * az
    csf_frac = np.maximum(csf_frac, np.where(upper, _fraction(fissure, s), 0.0))
    gm_frac = np.maximum(gm_frac, np.where(upper & (x[2] > 0.2 * az), _fraction(fissure - 4.0, s), 0.0))
    return gm_frac, csf_frac


def _ellipsoid_fraction(x, centre, radii, s: float, rotation: np.ndarray | None = None) -> np.ndarray:
    return _fraction(_ellipsoid_distance(x, centre, radii, rotation), s)


def _deep_structures(
    rng: np.random.Generator, head: _Head, s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deep grey matter (thalami, basal ganglia), lateral and third ventricles, choroid plexus."""
    shape, x = head.depth.shape, head.x
    ax, ay, az = head.axes
    deep = np.zeros(shape, np.float32)
    for side in (-1, 1):
        for centre, radii in (
            ((side * 0.18 * ax, -0.1 * ay, 0.05 * az), (0.13 * ax, 0.16 * ay, 0.16 * az)),
            ((side * 0.33 * ax, 0.12 * ay, 0.08 * az), (0.09 * ax, 0.15 * ay, 0.15 * az)),
        ):
            deep = np.maximum(deep, _ellipsoid_fraction(x, centre, radii, s))
    vent = np.zeros(shape, np.float32)
    plexus = np.zeros(shape, np.float32)
    vent_size = rng.uniform(0.8, 1.3)
    for side in (-1, 1):
        bend = _rotation(np.random.default_rng(int(rng.integers(2**31))), 8.0)
        c = (side * 0.13 * ax, 0.0, 0.2 * az)
        radii = (0.075 * ax * vent_size, 0.36 * ay, 0.13 * az * vent_size)
        vent = np.maximum(vent, _ellipsoid_fraction(x, c, radii, s, bend))
        plexus = np.maximum(
            plexus, _ellipsoid_fraction(x, (c[0], -0.2 * ay, c[2] - 0.02 * az), (2.2, 5.0, 2.2), s)
        )
    vent = np.maximum(vent, _ellipsoid_fraction(x, (0.0, -0.05 * ay, 0.0), (1.4, 0.15 * ay, 0.12 * az), s))
    return deep, vent, np.minimum(plexus, vent)


def _compose_tissues(rng: np.random.Generator, layers, shape, s: float) -> np.ndarray:
    """Four channels: white matter base, then each (tissue, fraction) layer blended on top."""
    texture = 1.0 + 0.03 * _smooth_noise(rng, shape, 1.5 / s)
    channels = np.empty((4, *shape), np.float32)
    for c in range(4):
        value = np.full(shape, TISSUE["wm"][c], np.float32)
        for name, frac in layers:
            value = value * (1 - frac) + TISSUE[name][c] * frac
        channels[c] = value * texture
    return channels


@dataclass
class _Canvas:
    """The channels and label map lesions are painted into."""

    channels: np.ndarray
    label: np.ndarray
    brain: np.ndarray
    s: float

    def paint(
        self, rng: np.random.Generator, name: str, frac: np.ndarray, value: int, contrast: float = 1.0
    ) -> None:
        """Blend tissue ``name`` in by ``frac`` (times ``contrast``: the share of the way from the
        tissue there to the lesion's), label ``value`` where ``frac > 0.5`` inside the brain."""
        het = 1.0 + 0.06 * _smooth_noise(rng, frac.shape, 2.0 / self.s)
        blend = frac if contrast == 1.0 else frac * np.float32(contrast)
        for c in range(4):
            self.channels[c] = self.channels[c] * (1 - blend) + TISSUE[name][c] * het * blend
        self.label[(frac > 0.5) & self.brain] = value


def _add_tumour(
    rng: np.random.Generator, canvas: _Canvas, head: _Head, tissue: dict[str, np.ndarray], t: int
) -> Lesion:
    """One main tumour centred well inside the brain: edema, then an enhancing/necrotic or NET core."""
    s, x = canvas.s, head.x
    ax, ay, az = head.axes
    shape = head.depth.shape
    for _ in range(100):
        c_head = rng.uniform(-0.55, 0.55, 3) * np.array([ax, ay, az])
        if np.sqrt(((c_head / [ax, ay, az]) ** 2).sum()) < 0.6:
            break
    core_r = rng.uniform(6.0, 18.0) * (0.7 if t else 1.0)
    edema_margin = rng.uniform(5.0, 18.0)
    kind = rng.choice(["ring", "solid", "non_enhancing"], p=[0.65, 0.15, 0.2])
    irregular = _smooth_noise(rng, shape, 5.0 / s)
    dist = np.sqrt(((x - c_head.reshape(3, 1, 1, 1).astype(np.float32)) ** 2).sum(0))
    d_core = dist * (1.0 + 0.18 * irregular) - core_r
    d_edema = dist * (1.0 + 0.3 * _smooth_noise(rng, shape, 6.0 / s)) - (core_r + edema_margin)
    core = _fraction(d_core, s)
    # vasogenic edema follows white matter: it stops ~6 mm short in grey matter, spares CSF
    d_edema = d_edema + 6.0 * np.clip(tissue["gm"] + tissue["deep"], 0, 1) * (d_core > 3.0)
    edema = _fraction(d_edema, s) * (1 - np.maximum(tissue["vent"], tissue["csf"]))
    canvas.paint(rng, "edema", np.minimum(edema, head.brain_frac), 2)
    if kind == "ring" and core_r > 7.5:
        rim = rng.uniform(2.5, 4.5)
        necrosis = _fraction(d_core + rim, s)
        canvas.paint(rng, "enhancing", core, 4)
        canvas.paint(rng, "necrosis", necrosis, 1)
        labels = [1, 2, 4]
    elif kind == "non_enhancing":
        canvas.paint(rng, "net_core", core, 1)
        labels = [1, 2]
    else:
        canvas.paint(rng, "enhancing", core, 4)
        labels = [2, 4]
    centre_vox = np.linalg.solve(head.affine[:3, :3], head.pose.T @ c_head - head.affine[:3, 3])
    return Lesion(
        "tumour", tuple(head.pose.T @ c_head), tuple(centre_vox), 2 * (core_r + edema_margin), labels
    )


def _add_small_lesion(
    rng: np.random.Generator, canvas: _Canvas, head: _Head, vent: np.ndarray, lesions: list[Lesion]
) -> Lesion:
    """An enhancing nodule or FLAIR focus under 5 mm, centred on a voxel so that it is labelled."""
    s, shape, affine = canvas.s, head.depth.shape, head.affine
    for _ in range(200):
        v = np.array([rng.integers(4, n - 4) for n in shape])
        if head.depth[tuple(v)] > 8.0 and canvas.label[tuple(v)] == 0 and vent[tuple(v)] < 0.1:
            # keep a small lesion away from the tumours so it stays a lesion of its own
            if all(
                np.abs(v - np.asarray(les.centre_vox)).max() * s > les.diameter_mm / 2 + 6 for les in lesions
            ):
                break
    diameter = rng.uniform(2.5, 4.8)
    centre_vox = v + rng.uniform(-0.2, 0.2, 3)
    centre_world = affine[:3, :3] @ centre_vox + affine[:3, 3]
    d = (
        np.sqrt(((head.world - centre_world.reshape(3, 1, 1, 1).astype(np.float32)) ** 2).sum(0))
        - diameter / 2
    )
    frac = _fraction(d, s)
    frac[tuple(v)] = max(frac[tuple(v)], 0.75)  # the centre voxel is mostly lesion
    is_nodule = rng.random() < 0.5
    name, value = ("enhancing", 4) if is_nodule else ("edema", 2)
    canvas.paint(rng, name, frac, value)
    return Lesion("small", tuple(centre_world), tuple(centre_vox), diameter, [value])


def _count_lesion_voxels(lesions: list[Lesion], label: np.ndarray, s: float) -> None:
    """Each lesion's labelled voxels within its extent."""
    for les in lesions:
        c = np.asarray(les.centre_vox)
        r_vox = les.diameter_mm / 2 / s + 1
        lo = np.maximum(np.floor(c - r_vox).astype(int), 0)
        hi = np.minimum(np.ceil(c + r_vox).astype(int) + 1, label.shape)
        box = label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        les.voxels = int(np.isin(box, les.labels).sum())


def _acquire(
    rng: np.random.Generator,
    channels: np.ndarray,
    brain_frac: np.ndarray,
    s: float,
    *,
    bias_sigma_vox: float | None = None,
) -> np.ndarray:
    """Bias field per channel (smoothness ``bias_sigma_vox``, default 25 mm), Rician noise, skull
    stripping, scaled to integer values."""
    shape = brain_frac.shape
    image = np.empty((4, *shape), np.float32)
    sigma_vox = 25.0 / s if bias_sigma_vox is None else bias_sigma_vox
    for c in range(4):
        bias = np.exp(0.12 * _smooth_noise(rng, shape, sigma_vox)).astype(np.float32)
        signal = channels[c] * bias * brain_frac
        sigma = rng.uniform(0.015, 0.03)
        noisy = np.sqrt(
            (signal + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2
        )
        noisy[brain_frac <= 0] = 0.0
        scale = rng.uniform(300.0, 1500.0)
        image[c] = np.round(noisy * scale)
    return image


def make_case(
    rng: np.random.Generator,
    case_id: str = "Phantom_000",
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing_mm: float = DEFAULT_SPACING_MM,
    *,
    small_lesions: tuple[int, int] = (1, 3),
) -> PhantomCase:
    """Generate one case from ``rng`` (see the module docstring).

    ``small_lesions``: inclusive range of lesions under 5 mm across added to the case.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ConfigError(f"phantom shape must be 3 sizes of at least 16 voxels, got {shape}")
    s = float(spacing_mm)
    if not 0.5 <= s <= 5.0:
        raise ConfigError(f"phantom spacing must be between 0.5 and 5 mm, got {spacing_mm}")
    head = _head(rng, shape, s)
    gm_frac, csf_frac = _cortex(rng, head, s)
    deep, vent, plexus = _deep_structures(rng, head, s)
    layers = [("gm", gm_frac), ("deep_gm", deep), ("csf", csf_frac), ("csf", vent), ("plexus", plexus)]
    canvas = _Canvas(_compose_tissues(rng, layers, shape, s), np.zeros(shape, np.uint8), head.brain, s)
    tissue = {"gm": gm_frac, "deep": deep, "vent": vent, "csf": csf_frac}
    lesions = [_add_tumour(rng, canvas, head, tissue, t) for t in range(1 + int(rng.random() < 0.25))]
    for _ in range(int(rng.integers(small_lesions[0], small_lesions[1] + 1))):
        lesions.append(_add_small_lesion(rng, canvas, head, vent, lesions))
    _count_lesion_voxels(lesions, canvas.label, s)
    image = _acquire(rng, canvas.channels, head.brain_frac, s)
    canvas.label[~head.brain] = 0
    return PhantomCase(case_id, image, canvas.label, head.affine, (s, s, s), lesions)


# --- small-lesion mode -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SmallLesionSettings:
    """Small-lesion mode (module docstring): the lesions' count range per case (inclusive), the
    range of their diameters (mm, drawn log-uniformly), their contrast (1: full lesion tissue), the
    share that are enhancing nodules (the rest are FLAIR foci) and the brain's field of view (mm)."""

    lesions: tuple[int, int] = (4, 8)
    diameter_mm: tuple[float, float] = (2.0, 10.0)
    contrast: float = 1.0
    nodule_fraction: float = 0.5
    head_fov_mm: tuple[float, float, float] = (140.0, 172.0, 136.0)

    def __post_init__(self) -> None:
        lo, hi = self.lesions
        if not 0 <= lo <= hi:
            raise ConfigError(f"lesions per case must be a range 0 <= low <= high, got {self.lesions}")
        dlo, dhi = self.diameter_mm
        if not 0.5 <= dlo <= dhi <= 40.0:
            raise ConfigError(
                f"lesion diameters must be a range 0.5 <= low <= high <= 40 mm, got {self.diameter_mm}"
            )
        if not 0.0 <= self.contrast <= 2.0:
            raise ConfigError(f"lesion contrast must be between 0 and 2, got {self.contrast}")
        if not 0.0 <= self.nodule_fraction <= 1.0:
            raise ConfigError(f"nodule fraction must be between 0 and 1, got {self.nodule_fraction}")
        if len(self.head_fov_mm) != 3 or min(self.head_fov_mm) < 40.0:
            raise ConfigError(f"head field of view must be 3 sizes of at least 40 mm, got {self.head_fov_mm}")

    def to_dict(self) -> dict:
        return {
            "lesions": list(self.lesions),
            "diameter_mm": [float(v) for v in self.diameter_mm],
            "contrast": float(self.contrast),
            "nodule_fraction": float(self.nodule_fraction),
            "head_fov_mm": [float(v) for v in self.head_fov_mm],
        }


def _crop_centre(rng: np.random.Generator, head_fov_mm) -> np.ndarray:
    """A world point well inside the brain (within 40 % of its semi-axes from its centre)."""
    semi = 0.8 * np.asarray(head_fov_mm, float) / 2.0
    while True:
        u = rng.uniform(-1.0, 1.0, 3)
        if (u**2).sum() <= 1.0:
            return 0.4 * semi * u


def _place_lesion(
    rng: np.random.Generator, head: _Head, vent: np.ndarray, s: float, radius_mm: float, placed
) -> np.ndarray | None:
    """A voxel for a lesion of ``radius_mm``: inside the brain (edge 2 mm deep), off the ventricles,
    3 mm from the field of view's edge and from every lesion in ``placed`` ((centre_vox, radius_mm))."""
    shape = np.array(head.depth.shape)
    margin = int(np.ceil((radius_mm + 3.0) / s))
    if np.any(shape - 2 * margin < 1):
        return None
    for _ in range(400):
        v = np.array([rng.integers(margin, n - margin) for n in shape])
        if head.depth[tuple(v)] < radius_mm + 2.0 or vent[tuple(v)] > 0.1:
            continue
        if all(np.linalg.norm((v - c) * s) > radius_mm + r + 3.0 for c, r in placed):
            return v
    return None


def make_small_lesion_case(
    rng: np.random.Generator,
    case_id: str = "Phantom_000",
    shape: tuple[int, int, int] = SMALL_LESION_SHAPE,
    spacing_mm: float = SMALL_LESION_SPACING_MM,
    settings: SmallLesionSettings | None = None,
) -> PhantomCase:
    """One small-lesion case (module docstring): the field of view ``shape`` at ``spacing_mm`` inside
    an adult-sized brain, with lesions only. A lesion that finds no free place (a field of view
    mostly outside the brain) is left out; ``case.lesions`` lists those placed."""
    settings = settings or SmallLesionSettings()
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ConfigError(f"phantom shape must be 3 sizes of at least 16 voxels, got {shape}")
    s = float(spacing_mm)
    if not 0.5 <= s <= 5.0:
        raise ConfigError(f"phantom spacing must be between 0.5 and 5 mm, got {spacing_mm}")
    centre = _crop_centre(rng, settings.head_fov_mm)
    head = _head(rng, shape, s, head_fov_mm=settings.head_fov_mm, centre_mm=tuple(centre))
    gm_frac, csf_frac = _cortex(rng, head, s)
    deep, vent, plexus = _deep_structures(rng, head, s)
    layers = [("gm", gm_frac), ("deep_gm", deep), ("csf", csf_frac), ("csf", vent), ("plexus", plexus)]
    canvas = _Canvas(_compose_tissues(rng, layers, shape, s), np.zeros(shape, np.uint8), head.brain, s)
    lo, hi = settings.lesions
    dlo, dhi = settings.diameter_mm
    lesions: list[Lesion] = []
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.integers(lo, hi + 1))):
        diameter = float(np.exp(rng.uniform(np.log(dlo), np.log(dhi))))
        is_nodule = bool(rng.random() < settings.nodule_fraction)
        v = _place_lesion(rng, head, vent, s, diameter / 2, placed)
        if v is None:
            continue
        centre_vox = v + rng.uniform(-0.3, 0.3, 3)
        centre_world = head.affine[:3, :3] @ centre_vox + head.affine[:3, 3]
        offset = head.world - centre_world.reshape(3, 1, 1, 1).astype(np.float32)
        frac = _fraction(np.sqrt((offset**2).sum(0)) - diameter / 2, s)
        frac[tuple(v)] = max(frac[tuple(v)], 0.75)  # the centre voxel is always lesion
        name, value = ("enhancing", 4) if is_nodule else ("edema", 2)
        canvas.paint(rng, name, frac, value, settings.contrast)
        placed.append((v, diameter / 2))
        lesions.append(Lesion("small", tuple(centre_world), tuple(centre_vox), diameter, [value]))
    _count_lesion_voxels(lesions, canvas.label, s)
    # a field of view smaller than the bias field's wavelength: a periodic field that smooth is almost
    # constant, and normalising it to unit deviation would blow it up; a quarter of the view is smooth enough
    image = _acquire(rng, canvas.channels, head.brain_frac, s, bias_sigma_vox=min(25.0 / s, min(shape) / 4))
    canvas.label[~head.brain] = 0
    return PhantomCase(case_id, image, canvas.label, head.affine, (s, s, s), lesions)


# --- writing datasets ------------------------------------------------------------------------------
def case_ids(n_cases: int) -> list[str]:
    return [f"Phantom_{i:03d}" for i in range(n_cases)]


def write_phantom_dataset(
    out: str | Path,
    n_cases: int = 20,
    seed: int = 0,
    *,
    layout: str = "brats",
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing_mm: float = DEFAULT_SPACING_MM,
    small_lesions: SmallLesionSettings | None = None,
) -> Path:
    """Write ``n_cases`` phantom cases under ``out`` and return ``out``.

    ``small_lesions``: the small-lesion mode's settings (module docstring; pass the mode's
    ``shape`` and ``spacing_mm`` too, e.g. ``SMALL_LESION_SHAPE`` at 1 mm), None: the default phantom.

    ``layout="brats"``: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (labels 0/1/2/4).
    ``layout="msd"``: ``imagesTr/<case>.nii.gz`` (4D, channels last: FLAIR, T1w, t1gd, T2w),
    ``labelsTr/<case>.nii.gz`` with MSD Task01's numbering (1 edema, 2 non-enhancing, 3 enhancing)
    and ``dataset.json``. Case ``i`` depends only on ``(seed, i)``, so more cases extend a set.
    ``phantom.json`` records the settings and every lesion (centre, diameter, labelled voxels).
    """
    if layout not in ("brats", "msd"):
        raise ConfigError(f"layout must be 'brats' or 'msd', got {layout!r}")
    if n_cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {n_cases}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {
        "generator": "attnseg.phantom",
        "seed": int(seed),
        "layout": layout,
        "shape": list(shape),
        "spacing_mm": float(spacing_mm),
        "mode": "default" if small_lesions is None else "small_lesions",
        **({} if small_lesions is None else {"small_lesions": small_lesions.to_dict()}),
        "labels": LABELS if layout == "brats" else {v: int(k) for k, v in MSD_LABELS.items()},
        "cases": {},
    }
    training = []
    for i, case_id in enumerate(case_ids(n_cases)):
        rng = np.random.default_rng([int(seed), i])
        if small_lesions is None:
            case = make_case(rng, case_id, shape, spacing_mm)
        else:
            case = make_small_lesion_case(rng, case_id, shape, spacing_mm, small_lesions)
        if layout == "brats":
            folder = out / case_id
            for c, name in enumerate(CHANNELS):
                save_image(
                    folder / f"{case_id}_{name}.nii.gz", case.image[c], affine=case.affine, dtype=np.int16
                )
            save_image(folder / f"{case_id}_seg.nii.gz", case.label, affine=case.affine, dtype=np.uint8)
        else:
            msd_label = np.zeros_like(case.label)
            for src, dst in TO_MSD.items():
                msd_label[case.label == src] = dst
            save_image(out / "imagesTr" / f"{case_id}.nii.gz", case.image, affine=case.affine, dtype=np.int16)
            save_image(out / "labelsTr" / f"{case_id}.nii.gz", msd_label, affine=case.affine, dtype=np.uint8)
            training.append(
                {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}
            )
        record["cases"][case_id] = {"lesions": [les.to_dict() for les in case.lesions]}
    if layout == "msd":
        dataset_json = {
            "name": "BrainTumourPhantom",
            "description": "Synthetic BraTS-like cases made by attnseg.phantom (seeded, no real patients)",
            "tensorImageSize": "4D",
            "modality": MSD_CHANNELS,
            "labels": MSD_LABELS,
            "numTraining": n_cases,
            "numTest": 0,
            "training": training,
            "test": [],
        }
        atomic_write_text(out / "dataset.json", json.dumps(dataset_json, indent=2) + "\n")
    atomic_write_text(out / "phantom.json", json.dumps(record, indent=2) + "\n")
    return out


__all__ = [
    "CHANNELS",
    "LABELS",
    "Lesion",
    "PhantomCase",
    "SmallLesionSettings",
    "case_ids",
    "make_case",
    "make_small_lesion_case",
    "phantom_affine",
    "write_phantom_dataset",
]
