"""Spatial transforms: ONE fused sampling grid per patch, and resampling to a target spacing.

Convention. A patch of ``patch_size`` voxels is cut from a source volume ``(C, *spatial)``. Output
voxel ``p`` (integer index) has centred coordinates ``q = F(p) - (P - 1) / 2``, where ``F`` mirrors
the flipped axes (``F(p)_i = P_i - 1 - p_i``). Its source position, in source voxel indices, is

    x(p) = c + A (q + u(F(p)))        c = start_vox + (P - 1) / 2       (the patch centre)
    A    = S^-1 R Z^-1 S              S = diag(spacing_mm), R rotation, Z = diag(zoom)

``u`` is the elastic displacement (output voxels) interpolated by cubic B-splines from a coarse
control grid that spans the patch, so the deformation costs a few small matrix products instead of
smoothing a full-resolution noise field. Rotations act in millimetres, so anisotropic voxels are not
sheared. ``zoom > 1`` enlarges the anatomy (the patch covers less of the source).

This is exactly the sequential composition "rotate/zoom the volume about ``c``, crop the patch,
deform it elastically, mirror it" -- but the image is interpolated once (linear) and the label once
(nearest, or per-class linear + argmax), and only the source region the grid touches is read. Points
outside the volume read 0 (image) and background (label).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)
class SpatialParams:
    """Everything the deterministic spatial transform needs; drawn by a sampler, replayable.

    ``start_vox``: source index of the patch's first voxel when nothing rotates (integer per axis;
    may be negative or run past the end, the outside reads as zero). ``rotation_rad``: 3 angles
    (about axes 0, 1, 2, applied in that order) in 3D, 1 angle in 2D; empty = none.
    ``zoom``: one factor per axis (> 1 enlarges anatomy); empty = 1. ``flip``: one bool per axis;
    empty = none. ``elastic_vox``: control-point displacements ``(D, *control_shape)`` in output
    voxels (see :func:`elastic_displacement`), or None. ``spacing_mm``: the source voxel spacing
    (rotations act in mm); None = isotropic.
    """

    start_vox: tuple[int, ...]
    rotation_rad: tuple[float, ...] = ()
    zoom: tuple[float, ...] = ()
    flip: tuple[bool, ...] = ()
    elastic_vox: np.ndarray | None = field(default=None)
    spacing_mm: tuple[float, ...] | None = None

    @property
    def is_integer_shift(self) -> bool:
        """True when the grid is a pure crop (+ mirror): no rotation, zoom or deformation."""
        return (
            not any(a != 0 for a in self.rotation_rad)
            and not any(z != 1 for z in self.zoom)
            and (self.elastic_vox is None or not np.any(self.elastic_vox))
        )

    def to_dict(self) -> dict:
        """Plain data (JSON-ready); :meth:`from_dict` rebuilds an identical object."""
        return {
            "start_vox": [int(v) for v in self.start_vox],
            "rotation_rad": [float(v) for v in self.rotation_rad],
            "zoom": [float(v) for v in self.zoom],
            "flip": [bool(v) for v in self.flip],
            "elastic_vox": None if self.elastic_vox is None else np.asarray(self.elastic_vox).tolist(),
            "elastic_shape": None if self.elastic_vox is None else list(np.shape(self.elastic_vox)),
            "spacing_mm": None if self.spacing_mm is None else [float(v) for v in self.spacing_mm],
        }

    @classmethod
    def from_dict(cls, data: dict) -> SpatialParams:
        elastic = data.get("elastic_vox")
        if elastic is not None:
            elastic = np.asarray(elastic, dtype=np.float32).reshape(data["elastic_shape"])
        spacing = data.get("spacing_mm")
        return cls(
            start_vox=tuple(int(v) for v in data["start_vox"]),
            rotation_rad=tuple(float(v) for v in data.get("rotation_rad", ())),
            zoom=tuple(float(v) for v in data.get("zoom", ())),
            flip=tuple(bool(v) for v in data.get("flip", ())),
            elastic_vox=elastic,
            spacing_mm=None if spacing is None else tuple(float(v) for v in spacing),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpatialParams):
            return NotImplemented
        return self.to_dict() == other.to_dict()


# --- the maths: pure functions on small arrays --------------------------------------------------
def rotation_matrix(angles_rad: Sequence[float], spatial_dims: int) -> np.ndarray:
    """Rotation ``(D, D)`` in voxel-axis order. 3D: about axis 0, then 1, then 2 (R = R2 R1 R0).

    A positive angle about axis ``k`` turns axis ``(k+1)`` towards axis ``(k+2)`` (mod 3), e.g.
    90 deg about axis 0 maps the unit vector along axis 1 to axis 2. 2D: one angle, axis 0 -> axis 1.
    """
    if spatial_dims == 2:
        a = float(angles_rad[0]) if len(angles_rad) else 0.0
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, -s], [s, c]])
    if spatial_dims != 3:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    angles = list(angles_rad) + [0.0] * (3 - len(angles_rad))
    out = np.eye(3)
    for axis, a in enumerate(angles[:3]):
        i, j = (axis + 1) % 3, (axis + 2) % 3
        c, s = math.cos(a), math.sin(a)
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


def affine_matrix(params: SpatialParams, spatial_dims: int) -> np.ndarray:
    """``A = S^-1 R Z^-1 S``: output offset from the patch centre -> source offset, voxels."""
    d = spatial_dims
    rot = rotation_matrix(params.rotation_rad, d) if params.rotation_rad else np.eye(d)
    zoom = np.asarray(params.zoom if params.zoom else (1.0,) * d, dtype=np.float64)
    spacing = np.asarray(params.spacing_mm if params.spacing_mm else (1.0,) * d, dtype=np.float64)
    return np.diag(1.0 / spacing) @ rot @ np.diag(1.0 / zoom) @ np.diag(spacing)


def bspline_basis(n_out: int, n_intervals: int) -> np.ndarray:
    """Cubic B-spline weights ``(n_out, n_intervals + 3)`` from control points to output voxels.

    Control point ``k`` sits at ``(k - 1) * (n_out - 1) / n_intervals`` output voxels, so the
    control grid spans the output with one extra point beyond each end; the weights of every
    output voxel sum to 1 (a constant control field gives that constant displacement).
    """
    if n_out == 1:
        t = np.zeros(1)
    else:
        t = np.arange(n_out, dtype=np.float64) * (n_intervals / (n_out - 1))
    k = np.arange(n_intervals + 3, dtype=np.float64) - 1.0
    r = np.abs(t[:, None] - k[None, :])
    w = np.where(r < 1, 2.0 / 3.0 - r**2 + 0.5 * r**3, np.where(r < 2, (2 - r) ** 3 / 6.0, 0.0))
    return w


def control_grid_shape(patch_size: Sequence[int], grid_spacing_vox: float) -> tuple[int, ...]:
    """Control points per axis for a patch: one per ``grid_spacing_vox`` plus the B-spline border."""
    return tuple(max(1, math.ceil((p - 1) / grid_spacing_vox)) + 3 for p in patch_size)


def _evaluate_bspline(control: np.ndarray, patch_size: Sequence[int]) -> torch.Tensor:
    """Evaluate a B-spline vector field: control ``(*control_shape, K)`` -> ``(*patch_size, K)`` float32.

    Separable: one small matrix product per axis, last axis first, so the result comes out
    contiguous in grid_sample's ``(*spatial, K)`` layout without a transpose.
    """
    d = len(patch_size)
    out = torch.from_numpy(np.ascontiguousarray(control, dtype=np.float32))
    for axis in reversed(range(d)):
        n = out.shape[axis]
        basis = torch.from_numpy(bspline_basis(patch_size[axis], n - 3).astype(np.float32))
        lead, rest = out.shape[:axis], out.shape[axis + 1 :]
        out = torch.matmul(basis, out.reshape(*lead, n, -1)).reshape(*lead, patch_size[axis], *rest)
    return out


def elastic_displacement(control_vox: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """Dense displacement ``(D, *patch_size)`` (float32, output voxels) from B-spline control points."""
    ctrl = np.asarray(control_vox, dtype=np.float64)
    d = len(patch_size)
    if ctrl.shape[0] != d or ctrl.ndim != d + 1 or any(n < 4 for n in ctrl.shape[1:]):
        raise ValueError(
            f"elastic control field must be (D, *control) with D={d} and >= 4 points per axis, "
            f"got {ctrl.shape}"
        )
    return np.moveaxis(_evaluate_bspline(np.moveaxis(ctrl, 0, -1), patch_size).numpy(), -1, 0)


def _control_coordinates(patch_size: Sequence[int], params: SpatialParams) -> np.ndarray:
    """Source coordinates of the B-spline control points ``(*control_shape, D)``, float64.

    Cubic B-splines reproduce linear functions exactly, so the affine part (centre, rotation, zoom,
    anisotropic spacing) and the elastic displacement fold into the control points, and mirroring
    is reversing the control grid: the whole coordinate map is one small B-spline.
    """
    d = len(patch_size)
    if params.elastic_vox is not None:
        u = np.moveaxis(np.asarray(params.elastic_vox, dtype=np.float64), 0, -1)
        if u.shape[-1] != d or u.ndim != d + 1 or any(n < 4 for n in u.shape[:d]):
            raise ValueError(
                f"elastic control field must be (D={d}, *control >= 4), got {params.elastic_vox.shape}"
            )
        intervals = [n - 3 for n in u.shape[:d]]
    else:
        u, intervals = None, [1] * d
    axes = []
    for p, m in zip(patch_size, intervals):
        axes.append((np.arange(m + 3, dtype=np.float64) - 1.0) * ((p - 1) / m) - (p - 1) / 2.0)
    q = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    if u is not None:
        q = q + u
    centre = np.array([s + (p - 1) / 2.0 for s, p in zip(params.start_vox, patch_size)])
    x = q @ affine_matrix(params, d).T + centre
    flips = [i for i, f in enumerate(params.flip) if f]
    return np.flip(x, flips) if flips else x


def sampling_grid(patch_size: Sequence[int], params: SpatialParams) -> np.ndarray:
    """Source voxel coordinates ``(D, *patch_size)`` float32 of every output voxel (see module doc)."""
    patch_size = tuple(int(p) for p in patch_size)
    ctrl = _control_coordinates(patch_size, params)
    return np.moveaxis(_evaluate_bspline(ctrl, patch_size).numpy(), -1, 0)


def _source_bounds(patch_size: Sequence[int], params: SpatialParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis min/max source coordinate the grid can reach (exact for the affine part, plus a
    bound on the elastic displacement: a B-spline stays within its control values)."""
    d = len(patch_size)
    a = affine_matrix(params, d)
    half = np.array([(p - 1) / 2.0 for p in patch_size])
    centre = np.array([s for s in params.start_vox], dtype=np.float64) + half
    reach = np.abs(a) @ half
    if params.elastic_vox is not None:
        umax = np.abs(np.asarray(params.elastic_vox, np.float64)).reshape(d, -1).max(1)
        reach = reach + np.abs(a) @ umax
    return centre - reach, centre + reach


# --- sampling -------------------------------------------------------------------------------------
def _crop_with_zeros(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[..., start:start+size]`` along the last D axes, zeros where it runs outside."""
    d = len(size)
    spatial = array.shape[-d:]
    lead = array.shape[:-d]
    src, dst = [], []
    for s0, n, full in zip(start, size, spatial):
        a, b = max(s0, 0), min(s0 + n, full)
        if a >= b:
            return np.zeros((*lead, *size), dtype=array.dtype)
        src.append(slice(a, b))
        dst.append(slice(a - s0, b - s0))
    region = array[(Ellipsis, *src)]
    if region.shape[-d:] == tuple(size):
        return np.array(region, copy=True)
    out = np.zeros((*lead, *size), dtype=array.dtype)
    out[(Ellipsis, *dst)] = region
    return out


def _normalised_grid(ctrl: np.ndarray, patch_size: Sequence[int], lo: Sequence[int], size: Sequence[int]):
    """grid_sample's grid ``(1, *patch, D)`` (last axis first) for a source region at ``lo``."""
    d = len(patch_size)
    scale = np.array([2.0 / (n - 1) for n in size])
    g = (ctrl - np.asarray(lo, np.float64)) * scale - 1.0
    return _evaluate_bspline(g[..., ::-1], patch_size).unsqueeze(0).reshape(1, *patch_size, d)


def _region(array: np.ndarray, lead: int, lo: Sequence[int], hi: Sequence[int], size: Sequence[int]):
    r = array[(slice(None),) * lead + tuple(slice(a, b) for a, b in zip(lo, hi))]
    if any(n != b - a for n, a, b in zip(size, lo, hi)):
        r = np.pad(r, [(0, 0)] * lead + [(0, n - (b - a)) for n, a, b in zip(size, lo, hi)])
    return r


def sample_patch(
    image: np.ndarray | None,
    label: np.ndarray | None,
    patch_size: Sequence[int],
    params: SpatialParams,
    *,
    label_mode: str = "nearest",
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Cut one transformed patch: image ``(C, *patch)`` float32 and label ``(*patch)`` int64.

    One fused grid (crop + rotation + zoom + elastic + mirror), sampled once per array. A
    C-contiguous, writeable float32 image is sampled in place (no copy; only the voxels the grid
    touches are read, which suits memory maps); anything else is cut to the bounding region of
    the grid first. ``label_mode``: ``"nearest"`` (values stay those of the input; outside the
    volume reads 0) or ``"linear"`` (per-class linear interpolation + argmax over ``classes``; the
    first class is what lies outside the volume, so list background first). A pure crop/mirror
    takes an exact slicing path.
    """
    patch_size = tuple(int(p) for p in patch_size)
    d = len(patch_size)
    if label_mode not in ("nearest", "linear"):
        raise ValueError(f"label_mode must be 'nearest' or 'linear', got {label_mode!r}")
    if label_mode == "linear" and not classes:
        raise ValueError("label_mode='linear' needs the declared classes, background first")
    if image is not None and image.ndim != d + 1:
        raise ValueError(f"image must be (C, *spatial) with {d} spatial axes, got shape {image.shape}")
    if label is not None and label.ndim != d:
        raise ValueError(f"label must have {d} spatial axes, got shape {label.shape}")
    spatial = (image if image is not None else label).shape[-d:]

    if params.is_integer_shift:
        flip_axes = [i for i, f in enumerate(params.flip) if f]
        img = lbl = None
        if image is not None:
            img = _crop_with_zeros(image, params.start_vox, patch_size).astype(np.float32, copy=False)
            if flip_axes:
                img = np.ascontiguousarray(np.flip(img, [a + 1 for a in flip_axes]))
        if label is not None:
            lbl = _crop_with_zeros(label, params.start_vox, patch_size).astype(np.int64, copy=False)
            if flip_axes:
                lbl = np.ascontiguousarray(np.flip(lbl, flip_axes))
        return img, lbl

    ctrl = _control_coordinates(patch_size, params)
    # the bounding region of the grid (+1 voxel for linear interpolation), clipped to the volume
    bmin, bmax = _source_bounds(patch_size, params)
    lo = [max(int(math.floor(v)), 0) for v in bmin]
    hi = [min(int(math.floor(v)) + 2, n) for v, n in zip(bmax, spatial)]
    outside = any(b <= a for a, b in zip(lo, hi))
    size = [max(b - a, 2) for a, b in zip(lo, hi)]  # align_corners=True needs >= 2 samples per axis

    img = lbl = None
    if image is not None:
        if outside:
            img = np.zeros((image.shape[0], *patch_size), np.float32)
        elif (
            image.dtype == np.float32
            and image.flags.c_contiguous
            and image.flags.writeable
            and min(spatial) >= 2
        ):
            grid = _normalised_grid(ctrl, patch_size, [0] * d, spatial)
            src = torch.from_numpy(image).unsqueeze(0)
            img = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[
                0
            ].numpy()
        else:
            grid = _normalised_grid(ctrl, patch_size, lo, size)
            region = np.ascontiguousarray(_region(image, 1, lo, hi, size), dtype=np.float32)
            src = torch.from_numpy(region).unsqueeze(0)
            img = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[
                0
            ].numpy()
    if label is not None:
        if outside:
            lbl = np.full(patch_size, classes[0] if label_mode == "linear" else 0, np.int64)
            return img, lbl
        grid = _normalised_grid(ctrl, patch_size, lo, size)
        lab = _region(label, 0, lo, hi, size)
        if label_mode == "nearest":
            src = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.float32)).reshape(1, 1, *size)
            out = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=True)
            lbl = out[0, 0].to(torch.int64).numpy()
        else:
            lab_t = torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))
            onehot = torch.stack([(lab_t == c) for c in classes]).to(torch.float32).unsqueeze(0)
            prob = F.grid_sample(onehot, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
            values = torch.as_tensor(list(classes), dtype=torch.int64)
            lbl = values[prob.max(0).indices].numpy()  # = argmax(0), first on ties; 6x faster on CPU
    return img, lbl


# --- resampling to a target spacing -------------------------------------------------------------
def resampled_shape(
    shape: Sequence[int], spacing_mm: Sequence[float], target_spacing_mm: Sequence[float]
) -> tuple[int, ...]:
    """Voxels per axis after resampling: ``round(shape * spacing / target)``, at least 1."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing_mm, target_spacing_mm))


def resampled_affine(affine: np.ndarray, shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Affine of the resampled grid: the volume's outer edges stay where they were.

    New voxel ``i`` covers old index ``(i + 0.5) * n_old / n_new - 0.5`` (cell-centred, like
    ``align_corners=False``).
    """
    d = len(shape)
    step = np.array([o / n for o, n in zip(shape, new_shape)], dtype=np.float64)
    m = np.eye(d + 1)
    m[:d, :d] = np.diag(step)
    m[:d, d] = 0.5 * step - 0.5
    return np.asarray(affine, dtype=np.float64) @ m


def resample_to_spacing(
    array: np.ndarray,
    spacing_mm: Sequence[float],
    target_spacing_mm: Sequence[float],
    *,
    is_label: bool = False,
    classes: Sequence[int] | None = None,
    affine: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample an image ``(C, *spatial)`` (linear) or a label ``(*spatial)`` to a target spacing.

    Labels use per-class linear interpolation + argmax over ``classes`` (default: the values
    present), which keeps thin structures better than nearest neighbour and only yields declared
    values. Returns the array and, when ``affine`` is given, the new affine (edges preserved).
    """
    d = len(spacing_mm)
    spatial = array.shape[-d:]
    new_shape = resampled_shape(spatial, spacing_mm, target_spacing_mm)
    new_affine = None if affine is None else resampled_affine(affine, spatial, new_shape)
    if tuple(new_shape) == tuple(spatial):
        return array.copy(), (None if affine is None else np.asarray(affine, np.float64).copy())
    mode = "bilinear" if d == 2 else "trilinear"
    if is_label:
        values = list(classes) if classes is not None else [int(v) for v in np.unique(array)]
        lab = torch.from_numpy(np.asarray(array).astype(np.int64))
        best = torch.full(tuple(new_shape), -1.0)
        out = torch.full(tuple(new_shape), values[0], dtype=torch.int64)
        for v in values:  # one class at a time keeps memory at two volumes
            p = F.interpolate((lab == v).float()[None, None], size=new_shape, mode=mode, align_corners=False)
            p = p[0, 0]
            better = p > best
            out[better] = v
            best = torch.maximum(best, p)
        return out.numpy().astype(array.dtype, copy=False), new_affine
    src = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    out = F.interpolate(src, size=new_shape, mode=mode, align_corners=False)[0]
    return out.numpy(), new_affine
