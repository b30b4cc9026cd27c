"""Normalized surface Dice (NSD, "surface Dice at tolerance tau"), and the surface it is measured on.

NSD (Nikolov et al. 2021, arXiv:1809.04430; DeepMind's ``surface-distance``, the reference the tests
compare with) is the fraction of both boundaries that lies within ``tolerance_mm`` of the other:

    NSD = (area of S_pred within tau of S_truth + area of S_truth within tau of S_pred)
          / (area of S_pred + area of S_truth)

Conventions (docs/metrics.md, "Normalized surface Dice"), DeepMind's unless said otherwise:

- The surface lives on the **corners** of the voxel grid. Corner ``k`` (an index per axis, 0 to
  ``shape[i]``) is the point shared by the voxels ``k - 1`` and ``k`` along every axis; its
  **neighbourhood** is those 2 x 2 x 2 voxels (2 x 2 pixels in 2D), voxels outside the array being
  background. Its **code** has bit ``b`` set when the neighbourhood voxel at offset
  ``np.unravel_index(b, (2,) * ndim)`` is foreground (offset 0 = voxel ``k - 1``, 1 = voxel ``k``).
- A corner is a **surface element** when its neighbourhood holds foreground and background.
- Its **area** is the area of the marching-cubes surface inside the voxel-sized cube around the
  corner: triangles whose vertices are the midpoints of the cube edges that join a foreground voxel
  centre to a background one, with ``spacing_mm`` applied (2D: marching squares, the length of the
  segments). Foreground voxels on a diagonal of the cube (touching only along an edge or at a
  corner) are cut off each on its own. Where the
  surface in the cube is not planar, the area depends on the triangulation; we use DeepMind's
  (lookup_tables.py of ``surface-distance``), which is invariant under the 48 symmetries of the cube
  and under exchanging inside and outside, so one triangulation per class of neighbourhoods fixes
  all 256 (``_CLASSES_3D``: 13 classes; 2D: 3 classes); the tables are built from them.
- **Distance** of an element: Euclidean, in mm, from its corner to the nearest surface corner of
  the other mask (corner indices x spacing). An element is within tolerance when that distance,
  computed as sqrt(sum_i (delta_i * spacing_i)^2) in float64 as scipy's distance transform in
  DeepMind's code does, is <= ``tolerance_mm``.
- **Empty masks** (never NaN): both empty -> 1 (as Dice); exactly one empty -> 0 (DeepMind gives
  0 too; for both empty it gives NaN, 0 / 0).

Example: a single voxel at spacing 1 mm has 8 surface corners, each holding one triangle of area
sqrt(3)/8 mm^2 (the surface is an octahedron of area sqrt(3) mm^2). Against the voxel next to it
along an axis of 2 mm, 4 corners of each are shared and 4 lie 2 mm from the other's: NSD at 1 mm
is 0.5, at 2 mm 1.0.

Speed: corner codes are computed in each mask's bounding box, one axis at a time; distances only
up to the largest tolerance. ``method="offsets"`` looks the integer offsets of the tolerance ball up
in a grid of the other surface's corners, nearest first, each corner stopping at its first hit;
``method="kdtree"`` queries a KD-tree over the other surface's corners in mm (scipy ``cKDTree`` with
``distance_upper_bound``) and recomputes each found distance from its integer offset. Both give
identical values; ``"auto"`` takes the offsets while the ball holds at most ``MAX_BALL_OFFSETS``
voxels.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from attnseg.metrics.overlap import ArrayLike, as_mask, check_pair, resolve_spacing
from attnseg.metrics.surface import bounding_box, default_threads

#: Tolerances of ``attnseg evaluate`` and ``evaluate_case`` by default (columns nsd_1mm, nsd_2mm).
DEFAULT_NSD_TOLERANCES_MM: tuple[float, ...] = (1.0, 2.0)
NSD_METHODS = ("auto", "offsets", "kdtree")
# "auto" looks the offsets of the tolerance ball up in a grid while the ball holds at most this
# many voxels (33 at 2 mm and 1 mm spacing), else queries a KD-tree; see docs/metrics.md
MAX_BALL_OFFSETS = 300

# One triangulation per class of 2x2x2 neighbourhoods, up to the symmetries of the cube and the
# exchange of inside and outside: (foreground corners, triangles). Corners are offsets in {0, 1}^3;
# triangle vertices are cube-edge midpoints in half-voxel units (coordinates 0, 1 or 2).
_CLASSES_3D: tuple[tuple[tuple[tuple[int, ...], ...], tuple[tuple[tuple[int, ...], ...], ...]], ...] = (
    # one corner: a triangle cuts it off
    (((1, 1, 1),), (((2, 2, 1), (2, 1, 2), (1, 2, 2)),)),
    # one edge: a planar quadrilateral
    (
        ((1, 1, 0), (1, 1, 1)),
        (((2, 1, 2), (1, 2, 2), (1, 2, 0)), ((2, 1, 0), (2, 1, 2), (1, 2, 0))),
    ),
    # two corners on a face diagonal: each cut off on its own
    (
        ((1, 0, 1), (1, 1, 0)),
        (((2, 1, 0), (2, 2, 1), (1, 2, 0)), ((2, 1, 2), (2, 0, 1), (1, 0, 2))),
    ),
    # three corners of one face: a non-planar pentagon, fanned from a vertex next to the middle corner
    (
        ((1, 0, 1), (1, 1, 0), (1, 1, 1)),
        (
            ((1, 0, 2), (1, 2, 2), (1, 2, 0)),
            ((2, 0, 1), (1, 0, 2), (1, 2, 0)),
            ((2, 1, 0), (2, 0, 1), (1, 2, 0)),
        ),
    ),
    # a whole face: a square
    (
        ((1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)),
        (((1, 0, 2), (1, 2, 2), (1, 2, 0)), ((1, 0, 0), (1, 0, 2), (1, 2, 0))),
    ),
    # three corners, pairwise on face diagonals: three triangles
    (
        ((0, 1, 1), (1, 0, 1), (1, 1, 0)),
        (
            ((0, 2, 1), (0, 1, 2), (1, 2, 2)),
            ((2, 1, 0), (2, 2, 1), (1, 2, 0)),
            ((2, 1, 2), (2, 0, 1), (1, 0, 2)),
        ),
    ),
    # a corner and its three neighbours: a planar hexagon
    (
        ((0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 1)),
        (
            ((2, 0, 1), (2, 1, 0), (1, 2, 0)),
            ((1, 0, 2), (2, 0, 1), (1, 2, 0)),
            ((0, 1, 2), (1, 0, 2), (1, 2, 0)),
            ((0, 2, 1), (0, 1, 2), (1, 2, 0)),
        ),
    ),
    # two opposite corners: two triangles
    (((0, 1, 1), (1, 0, 0)), (((0, 2, 1), (0, 1, 2), (1, 2, 2)), ((2, 1, 0), (2, 0, 1), (1, 0, 0)))),
    # an edge and a corner not touching it: a quadrilateral and a triangle
    (
        ((0, 1, 1), (1, 0, 0), (1, 1, 1)),
        (
            ((0, 1, 2), (2, 1, 2), (2, 2, 1)),
            ((0, 2, 1), (0, 1, 2), (2, 2, 1)),
            ((2, 0, 1), (2, 1, 0), (1, 0, 0)),
        ),
    ),
    # a path of four corners along three edges, not in one face: a non-planar hexagon
    (
        ((0, 1, 1), (1, 0, 0), (1, 1, 0), (1, 1, 1)),
        (
            ((0, 1, 2), (2, 1, 2), (2, 0, 1)),
            ((2, 0, 1), (1, 0, 0), (1, 2, 0)),
            ((0, 1, 2), (2, 0, 1), (1, 2, 0)),
            ((0, 2, 1), (0, 1, 2), (1, 2, 0)),
        ),
    ),
    # three corners of one face and the corner opposite the middle one: a pentagon and a triangle
    (
        ((0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0)),
        (
            ((0, 2, 1), (0, 1, 2), (1, 2, 2)),
            ((1, 0, 2), (1, 0, 0), (1, 2, 0)),
            ((2, 1, 2), (1, 0, 2), (1, 2, 0)),
            ((2, 2, 1), (2, 1, 2), (1, 2, 0)),
        ),
    ),
    # two opposite parallel edges: two quadrilaterals
    (
        ((0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1)),
        (
            ((0, 1, 2), (1, 2, 2), (1, 2, 0)),
            ((0, 1, 0), (0, 1, 2), (1, 2, 0)),
            ((2, 1, 2), (1, 0, 2), (1, 0, 0)),
            ((2, 1, 0), (2, 1, 2), (1, 0, 0)),
        ),
    ),
    # four corners, no two on an edge: four triangles
    (
        ((0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 1)),
        (
            ((0, 1, 0), (0, 2, 1), (1, 2, 0)),
            ((0, 1, 2), (0, 0, 1), (1, 0, 2)),
            ((2, 0, 1), (2, 1, 0), (1, 0, 0)),
            ((2, 2, 1), (2, 1, 2), (1, 2, 2)),
        ),
    ),
)

# 2D (marching squares): (foreground corners, segments), vertices in half-pixel units.
_CLASSES_2D: tuple[tuple[tuple[tuple[int, ...], ...], tuple[tuple[tuple[int, ...], ...], ...]], ...] = (
    (((1, 1),), (((2, 1), (1, 2)),)),  # one corner: a segment cuts it off
    (((1, 0), (1, 1)), (((1, 0), (1, 2)),)),  # one edge: a segment across the square
    (((0, 0), (1, 1)), (((1, 0), (0, 1)), ((2, 1), (1, 2)))),  # a diagonal: two corners cut off
)


def _code(corners: Sequence[Sequence[int]], ndim: int) -> int:
    return sum(1 << int(np.ravel_multi_index(tuple(c), (2,) * ndim)) for c in corners)


def _symmetry(perm: tuple[int, ...], flip: tuple[int, ...], point, size: int) -> tuple[int, ...]:
    """``point`` moved by a symmetry of the square or cube of side ``size``: axis ``i`` goes to
    axis ``perm[i]``, mirrored where ``flip[i]``."""
    out = [0] * len(point)
    for axis, value in enumerate(point):
        out[perm[axis]] = (size - value) if flip[axis] else value
    return tuple(out)


@functools.cache
def _element_vertices(ndim: int) -> np.ndarray:
    """Vertices of the surface elements of every code: ``(2 ** 2 ** ndim, n_max, ndim, ndim)`` in
    half-voxel units; unused slots are degenerate (all vertices 0, measure 0)."""
    classes = {2: _CLASSES_2D, 3: _CLASSES_3D}[ndim]
    n_codes = 2 ** (2**ndim)
    table: list[list | None] = [None] * n_codes
    table[0] = table[n_codes - 1] = []
    for corners, elements in classes:
        for perm in itertools.permutations(range(ndim)):
            for flip in itertools.product((0, 1), repeat=ndim):
                code = _code([_symmetry(perm, flip, c, 1) for c in corners], ndim)
                moved = [[_symmetry(perm, flip, v, 2) for v in element] for element in elements]
                for c in (code, n_codes - 1 - code):  # inside and outside exchanged: same surface
                    if table[c] is None:
                        table[c] = moved
    if any(t is None for t in table):  # a bug guard: the classes must cover every code
        raise AssertionError(f"surfel classes miss codes {[c for c, t in enumerate(table) if t is None]}")
    n_max = max(len(t) for t in table)
    out = np.zeros((n_codes, n_max, ndim, ndim), dtype=np.int8)
    for c, elements in enumerate(table):
        if elements:
            out[c, : len(elements)] = elements
    return out


@functools.lru_cache(maxsize=64)
def _measure_table(spacing: tuple[float, ...]) -> np.ndarray:
    vertices = _element_vertices(len(spacing)).astype(np.float64) * (np.asarray(spacing) / 2.0)
    edge1 = vertices[:, :, 1] - vertices[:, :, 0]
    if len(spacing) == 2:
        measure = np.linalg.norm(edge1, axis=-1)  # segment lengths
    else:
        edge2 = vertices[:, :, 2] - vertices[:, :, 0]
        measure = 0.5 * np.linalg.norm(np.cross(edge1, edge2), axis=-1)  # triangle areas
    table = measure.sum(axis=1)
    table.flags.writeable = False
    return table


def surfel_measure_table(spacing_mm: float | Sequence[float] | None, ndim: int = 3) -> np.ndarray:
    """Area in mm^2 (3D) or length in mm (2D) of the surface inside the neighbourhood of each code
    (see the module docstring): an array of 256 (3D) or 16 (2D) values, read-only.

    Example: ``surfel_measure_table(1.0)[1]`` is sqrt(3)/8 = 0.2165 (one corner cut off)."""
    if ndim not in (2, 3):
        raise ValueError(f"surface elements need a 2D or 3D mask, got {ndim}D")
    spacing = tuple(float(s) for s in resolve_spacing(spacing_mm, ndim))
    return _measure_table(spacing)


def neighbourhood_codes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the corners around a non-empty mask's bounding box and the index of the first one:
    ``(codes, origin)``; ``codes[j]`` is the code of corner ``origin + j`` (module docstring)."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("an empty mask has no surface elements")
    codes = np.pad(mask[box].astype(np.uint8), 1)  # zero border: outside the array is background
    # the code's weights factor over the axes (bit 4a + 2b + c = 16^a * 4^b * 2^c in 3D): combine the
    # two voxels along one axis at a time; every partial sum fits 8 bits
    for axis in range(mask.ndim):
        below = tuple(slice(None, -1) if a == axis else slice(None) for a in range(mask.ndim))
        above = tuple(slice(1, None) if a == axis else slice(None) for a in range(mask.ndim))
        combined = codes[above] * np.uint8(1 << (1 << (mask.ndim - 1 - axis)))
        combined += codes[below]
        codes = combined
    return codes, np.asarray([b.start for b in box], dtype=np.intp)


def surface_elements(
    mask: ArrayLike, spacing_mm: float | Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The surface elements of a 2D or 3D mask: ``(corners, measures)``, integer corner indices
    ``(S, ndim)`` and their areas in mm^2 (3D) or lengths in mm (2D), ``(S,)`` float64. An empty
    mask has none.

    Example: a single voxel at 1 mm has the 8 corners of its cube, each of area sqrt(3)/8 mm^2."""
    m = as_mask(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"surface elements need a 2D or 3D mask, got {m.ndim}D")
    if not m.any():
        return np.zeros((0, m.ndim), dtype=np.intp), np.zeros(0, dtype=np.float64)
    codes, origin = neighbourhood_codes(m)
    flat = codes.ravel()
    full = 2 ** (2**m.ndim) - 1
    idx = np.flatnonzero((flat - np.uint8(1)) < np.uint8(full - 1))  # 0 < code < full (uint8 wraps)
    corners = np.stack(np.unravel_index(idx, codes.shape), axis=1) + origin
    return corners, surfel_measure_table(spacing_mm, m.ndim)[flat[idx]]


# --- normalized surface Dice --------------------------------------------------------------------------
def nsd_key(tolerance_mm: float) -> str:
    """Column name of the NSD at a tolerance: 1 -> ``nsd_1mm``, 0.5 -> ``nsd_0.5mm``."""
    return f"nsd_{float(tolerance_mm):g}mm"


def check_tolerances(tolerances_mm: float | Sequence[float]) -> tuple[float, ...]:
    """The tolerances as floats, each finite and >= 0, duplicates dropped, order kept."""
    values = (tolerances_mm,) if np.ndim(tolerances_mm) == 0 else tuple(tolerances_mm)
    out: list[float] = []
    for v in values:
        f = float(v)
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"an NSD tolerance must be a finite number of mm >= 0, got {v!r}")
        if f not in out:
            out.append(f)
    return tuple(out)


def ball_offsets(spacing_mm: Sequence[float], radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets ``(N, ndim)`` whose length sqrt(sum_i (delta_i * spacing_i)^2) is at most
    ``radius_mm``, and those lengths ``(N,)``, nearest first (the zero offset first)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    reach = np.floor(radius_mm / spacing).astype(np.intp) + 1
    axes = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    offsets = np.stack([a.ravel() for a in axes], axis=1)
    scaled = offsets * spacing
    lengths = np.sqrt((scaled * scaled).sum(axis=1))
    keep = lengths <= radius_mm
    order = np.argsort(lengths[keep], kind="stable")
    return offsets[keep][order], lengths[keep][order]


def _ball_size(spacing: np.ndarray, radius_mm: float) -> float:
    """About how many offsets :func:`ball_offsets` returns (volume of the ellipsoid in voxels)."""
    if spacing.size == 2:
        return math.pi * radius_mm**2 / float(np.prod(spacing)) + 1
    return 4.0 / 3.0 * math.pi * radius_mm**3 / float(np.prod(spacing)) + 1


def _distances_by_offsets(
    src: np.ndarray, dst: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """For each corner of ``src``: the length of the shortest offset that reaches a corner of
    ``dst``, infinity when none does. Offsets nearest first, so each corner stops at its first hit."""
    pad = np.abs(offsets).max(axis=0)
    lo = np.minimum(src.min(axis=0), dst.min(axis=0)) - pad
    shape = tuple(int(n) for n in np.maximum(src.max(axis=0), dst.max(axis=0)) + pad - lo + 1)
    strides = np.array([int(np.prod(shape[i + 1 :])) for i in range(len(shape))], dtype=np.intp)
    flat = np.zeros(int(np.prod(shape)), dtype=bool)  # the grid of dst's corners, C order
    flat[(dst - lo) @ strides] = True
    position = (src - lo) @ strides
    shifts = offsets @ strides
    out = np.full(len(src), np.inf)
    remaining = np.arange(len(src))
    for shift, length in zip(shifts, lengths):
        hit = flat[position + shift]
        if hit.any():
            out[remaining[hit]] = length
            miss = ~hit
            remaining, position = remaining[miss], position[miss]
            if remaining.size == 0:
                break
    return out


def _distances_by_tree(
    src: np.ndarray, dst: np.ndarray, spacing: np.ndarray, bound_mm: float, threads: int
) -> np.ndarray:
    """For each corner of ``src``: the distance in mm to the nearest corner of ``dst`` when it is at
    most ``bound_mm``, else infinity (KD-tree over ``dst`` in mm)."""
    # the tree's distances carry rounding from the mm coordinates: search a little further, then
    # recompute each found distance from its integer offset, as ball_offsets does
    tree = cKDTree(dst * spacing, leafsize=32)
    reach = bound_mm * (1.0 + 1e-9) + 1e-9
    _, idx = tree.query(src * spacing, k=1, distance_upper_bound=reach, workers=threads)
    found = idx < len(dst)
    out = np.full(len(src), np.inf)
    delta = (src[found] - dst[idx[found]]).astype(np.float64) * spacing
    out[found] = np.sqrt((delta * delta).sum(axis=1))
    out[out > bound_mm] = np.inf
    return out


def surface_dice_metrics(
    pred: ArrayLike,
    truth: ArrayLike,
    spacing_mm: float | Sequence[float] | None = None,
    tolerances_mm: float | Sequence[float] = DEFAULT_NSD_TOLERANCES_MM,
    *,
    method: str = "auto",
    threads: int | None = None,
) -> dict[str, float]:
    """NSD at every tolerance from one surface computation: ``{"nsd_1mm": ..., "nsd_2mm": ...}``
    (keys: :func:`nsd_key`). Empty masks: both -> 1, one -> 0. No tolerances -> ``{}``.

    ``method``: ``"offsets"``, ``"kdtree"`` or ``"auto"`` (module docstring; same values);
    ``threads``: KD-tree workers (default: the CPUs this process may use)."""
    p, t = as_mask(pred, "pred"), as_mask(truth, "truth")
    check_pair(p, t)
    if p.ndim not in (2, 3):
        raise ValueError(f"the normalized surface Dice needs 2D or 3D masks, got {p.ndim}D")
    tolerances = check_tolerances(tolerances_mm)
    if method not in NSD_METHODS:
        raise ValueError(f"method must be one of {NSD_METHODS}, got {method!r}")
    spacing = np.asarray(resolve_spacing(spacing_mm, p.ndim), dtype=np.float64)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p and has_t):
        fixed = 1.0 if not has_p and not has_t else 0.0
        return {nsd_key(tol): fixed for tol in tolerances}
    if not tolerances:
        return {}
    corners_p, area_p = surface_elements(p, spacing)
    corners_t, area_t = surface_elements(t, spacing)
    bound = max(tolerances)
    if method == "auto":
        method = "offsets" if _ball_size(spacing, bound) <= MAX_BALL_OFFSETS else "kdtree"
    if method == "offsets":
        offsets, lengths = ball_offsets(spacing, bound)
        d_pt = _distances_by_offsets(corners_p, corners_t, offsets, lengths)
        d_tp = _distances_by_offsets(corners_t, corners_p, offsets, lengths)
    else:
        threads = default_threads() if threads is None else max(1, int(threads))
        d_pt = _distances_by_tree(corners_p, corners_t, spacing, bound, threads)
        d_tp = _distances_by_tree(corners_t, corners_p, spacing, bound, threads)
    total = float(area_p.sum() + area_t.sum())
    return {
        nsd_key(tol): float((area_p[d_pt <= tol].sum() + area_t[d_tp <= tol].sum()) / total)
        for tol in tolerances
    }


def normalized_surface_dice(
    pred: ArrayLike,
    truth: ArrayLike,
    spacing_mm: float | Sequence[float] | None,
    tolerance_mm: float,
    *,
    method: str = "auto",
    threads: int | None = None,
) -> float:
    """Normalized surface Dice of two 2D or 3D masks at ``tolerance_mm`` (module docstring): the
    area of both surfaces within the tolerance of the other over their total area, in [0, 1].
    Equals DeepMind's ``compute_surface_dice_at_tolerance``; both masks empty -> 1 (DeepMind: NaN),
    one empty -> 0.

    Example: a voxel and its neighbour along an axis of 2 mm: 0.5 at 1 mm, 1.0 at 2 mm."""
    (value,) = surface_dice_metrics(
        pred, truth, spacing_mm, (tolerance_mm,), method=method, threads=threads
    ).values()
    return value
