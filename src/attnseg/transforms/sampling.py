"""Training patches: foreground oversampling (by class or by lesion), random parameters, class weights.

:class:`PatchSampler` draws every random choice for one patch from an explicit
``np.random.Generator`` into a :class:`SampleParams` (crop, rotation, zoom, elastic field, mirror,
gamma, scale/shift, noise seed), then calls the deterministic transform with it. ``apply`` with a
recorded ``SampleParams`` replays the sample exactly; ``SampleParams.to_dict`` makes it JSON.

An ignore label (``LabelScheme.ignore_label``: unannotated voxels) is never a foreground class:
``class_locations`` does not index it and ``PatchSampler`` never centres a patch on it. Its voxels
are still cut and interpolated like a class's, so the target keeps them ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import edt
import numpy as np

from attnseg.config import AugmentConfig
from attnseg.transforms.components import connected_components
from attnseg.transforms.intensity import IntensityParams, apply_intensity
from attnseg.transforms.spatial import SpatialParams, control_grid_shape, sample_patch

ClassLocations = dict[int, np.ndarray]
FG_SAMPLING = ("class", "component")  # AugmentConfig.fg_sampling


@dataclass(frozen=True)
class ComponentLocations:
    """The voxels of each connected component of the foreground: component ``i`` is
    ``voxels[starts[i]:starts[i + 1]]`` (indices ``(N, D)`` int32); ``starts`` has ``n + 1`` entries."""

    voxels: np.ndarray
    starts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.starts.size - 1)


# --- where the classes are -------------------------------------------------------------------------
def class_locations(
    label: np.ndarray,
    classes: Sequence[int] | None = None,
    *,
    max_per_class: int = 20000,
    seed: int = 0,
    ignore_label: int | None = None,
) -> ClassLocations:
    """Voxel indices ``(N, D)`` int32 of each foreground class, at most ``max_per_class`` each.

    ``classes``: the values to index (default: every non-zero value present); ``ignore_label`` is
    never indexed. Large classes are subsampled with a fixed ``seed``, so the result is a pure
    function of the label map.
    """
    label = np.asarray(label)
    flat = label.reshape(-1)
    fg = np.flatnonzero(flat)
    values = flat[fg]
    if classes is None:
        classes = [int(v) for v in np.unique(values)]
    classes = [int(k) for k in classes if ignore_label is None or int(k) != int(ignore_label)]
    rng = np.random.default_rng(seed)
    out: ClassLocations = {}
    for k in classes:
        k = int(k)
        idx = fg[values == k] if k != 0 else np.flatnonzero(flat == 0)
        if idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        out[k] = np.stack(np.unravel_index(idx, label.shape), axis=1).astype(np.int32)
    return out


def component_locations(
    label: np.ndarray,
    classes: Sequence[int] | None = None,
    *,
    connectivity: int | None = None,
    max_per_component: int = 5000,
    seed: int = 0,
    ignore_label: int | None = None,
) -> ComponentLocations:
    """The voxels of each connected component of the foreground (label values in ``classes``,
    default every non-zero value; default connectivity 26 in 3D, 8 in 2D), components in label
    order, at most ``max_per_component`` voxels each (subsampled with a fixed ``seed``, so the
    result is a pure function of the label map). ``ignore_label`` is never foreground."""
    label = np.asarray(label)
    fg = label != 0 if classes is None else np.isin(label, [int(k) for k in classes if int(k) != 0])
    if ignore_label is not None:
        fg &= label != int(ignore_label)
    ids, n = connected_components(fg, connectivity)
    flat = ids.reshape(-1)
    idx = np.flatnonzero(flat)
    idx = idx[np.argsort(flat[idx], kind="stable")]  # grouped by component, voxel order inside
    counts = np.bincount(flat[idx], minlength=n + 1)[1:]
    rng = np.random.default_rng(seed)
    parts, sizes, offset = [], [], 0
    for c in counts:
        members = idx[offset : offset + c]
        offset += c
        if c > max_per_component:
            members = np.sort(rng.choice(members, size=max_per_component, replace=False))
        parts.append(members)
        sizes.append(members.size)
    chosen = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    voxels = np.stack(np.unravel_index(chosen, label.shape), axis=1).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return ComponentLocations(voxels.reshape(-1, label.ndim), starts)


def start_range(size: int, patch: int) -> tuple[int, int]:
    """Allowed patch starts along one axis: inside the volume, or centred-ish when it is smaller."""
    return (0, size - patch) if size >= patch else (size - patch, 0)


def _centred_on(voxel: Sequence[int], shape: Sequence[int], patch_size: Sequence[int]) -> list[int]:
    """The patch start that centres ``voxel``, moved inwards at the volume edge (the voxel stays inside)."""
    start = []
    for v, n, p in zip(voxel, shape, patch_size):
        lo, hi = start_range(n, p)
        start.append(int(np.clip(int(v) - (p - 1) // 2, lo, hi)))
    return start


def choose_patch_start(
    shape: Sequence[int],
    patch_size: Sequence[int],
    rng: np.random.Generator,
    locations: Mapping[int, np.ndarray] | None = None,
    fg_fraction: float = 0.0,
    *,
    components: ComponentLocations | None = None,
) -> tuple[tuple[int, ...], int | None]:
    """Patch start (integer per axis) and the class (or, with ``components``, the component) it was
    centred on (None: uniform random start).

    With probability ``fg_fraction`` (and when some class has voxels) a class is chosen uniformly
    among the classes present -- so rare classes are seen as often as common ones -- then one of
    its voxels, and the patch is centred on it (moved inwards at the volume edge; the voxel stays
    inside the patch). With ``components`` (lesion-aware sampling) a connected component is chosen
    uniformly instead, then one of its voxels, so small lesions are centred as often as large
    ones. Otherwise the start is uniform over the allowed range.
    """
    forced = None
    start: list[int] | None = None
    if components is not None:
        if rng.random() < fg_fraction and components.n > 0:
            forced = int(rng.integers(components.n))
            lo_i, hi_i = int(components.starts[forced]), int(components.starts[forced + 1])
            voxel = components.voxels[lo_i + int(rng.integers(hi_i - lo_i))]
            start = _centred_on(voxel, shape, patch_size)
    elif rng.random() < fg_fraction and locations:
        present = sorted(k for k, v in locations.items() if len(v))
        if present:
            forced = present[int(rng.integers(len(present)))]
            voxel = locations[forced][int(rng.integers(len(locations[forced])))]
            start = _centred_on(voxel, shape, patch_size)
    if start is None:
        start = []
        for n, p in zip(shape, patch_size):
            lo, hi = start_range(n, p)
            start.append(int(rng.integers(lo, hi + 1)))
    return tuple(start), forced


# --- class weights ---------------------------------------------------------------------------------
def label_counts(label: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Voxels of each class, ``(K,)`` int64, in the order of ``classes``."""
    label = np.asarray(label)
    values, counts = np.unique(label, return_counts=True)
    table = dict(zip(values.tolist(), counts.tolist()))
    return np.array([table.get(int(k), 0) for k in classes], dtype=np.int64)


def class_weights(counts: Sequence[int], method: str = "inverse") -> np.ndarray:
    """Loss weights ``(K,)`` float32 from class voxel counts (summed over the training set).

    ``"inverse"``: ``w_k = N / (K' n_k)`` with ``K'`` the classes present, so every class carries
    the same total weight and the mean weight per voxel is 1 (counts 90/10 -> 0.556/5.0).
    ``"median"``: median frequency balancing, ``w_k = median(f) / f_k`` over present classes.
    ``"none"``: all ones. Absent classes (count 0) get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError(f"counts must be a 1-D array of non-negative numbers, got {counts}")
    present = counts > 0
    w = np.zeros_like(counts)
    if method == "none":
        return np.ones_like(counts, dtype=np.float32)
    if not present.any():
        return w.astype(np.float32)
    freq = counts / counts.sum()
    if method == "inverse":
        w[present] = 1.0 / (present.sum() * freq[present])
    elif method == "median":
        w[present] = np.median(freq[present]) / freq[present]
    else:
        raise ValueError(f"method must be 'inverse', 'median' or 'none', got {method!r}")
    return w.astype(np.float32)


def voxel_weight_map(
    label: np.ndarray,
    classes: Sequence[int],
    weights: Sequence[float],
    *,
    border_weight: float = 0.0,
    border_sigma_mm: float = 5.0,
    spacing_mm: Sequence[float] | None = None,
) -> np.ndarray:
    """Per-voxel loss weights ``(*spatial)`` float32: class weight + optional border emphasis.

    ``w(x) = weights[class(x)] + border_weight * exp(-d(x)^2 / (2 sigma^2))`` where ``d`` is the
    distance in mm from the voxel centre to the nearest voxel of a different class (1 voxel for
    voxels on a boundary), as in U-Net's weight map (Ronneberger et al. 2015) for semantic labels.
    Values not in ``classes`` get weight 0.
    """
    label = np.asarray(label)
    lut_keys = np.asarray(list(classes))
    weights = np.asarray(weights, dtype=np.float32)
    if len(lut_keys) != len(weights):
        raise ValueError(f"{len(classes)} classes but {len(weights)} weights")
    out = np.zeros(label.shape, dtype=np.float32)
    for k, w in zip(lut_keys, weights):
        out[label == k] = w
    if border_weight:
        spacing = tuple(float(s) for s in (spacing_mm or (1.0,) * label.ndim))
        # edt on a multi-label image: distance to the nearest voxel with another value
        ids = (label.astype(np.int64) - int(label.min()) + 1).astype(np.uint32)
        if np.all(ids == ids.flat[0]):
            return out
        dist = edt.edt(np.ascontiguousarray(ids), anisotropy=spacing, black_border=False)
        out += float(border_weight) * np.exp(-(dist**2) / (2.0 * border_sigma_mm**2)).astype(np.float32)
    return out


# --- one training patch ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleParams:
    """Every random choice behind one training patch; ``PatchSampler.apply`` replays it exactly."""

    spatial: SpatialParams
    intensity: IntensityParams = IntensityParams()
    forced_class: int | None = None
    forced_component: int | None = None  # lesion-aware sampling: the component the patch is centred on

    def to_dict(self) -> dict:
        return {
            "spatial": self.spatial.to_dict(),
            "intensity": self.intensity.to_dict(),
            "forced_class": self.forced_class,
            "forced_component": self.forced_component,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SampleParams:
        forced = data.get("forced_class")
        component = data.get("forced_component")
        return cls(
            spatial=SpatialParams.from_dict(data["spatial"]),
            intensity=IntensityParams.from_dict(data.get("intensity", {})),
            forced_class=None if forced is None else int(forced),
            forced_component=None if component is None else int(component),
        )


def _two_sided(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor in [low, high] that is below 1 half the time when the range straddles 1."""
    if low < 1 < high and rng.random() < 0.5:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0) if low < 1 < high else low, high))


class PatchSampler:
    """Random training patches: ``(image (C, *spatial), label (*spatial)) + rng -> patch, label patch``.

    ``patch_size``: voxels per spatial axis. ``config``: :class:`AugmentConfig` (default settings
    when None). ``classes``: the declared label values, background first (used for foreground
    oversampling and ``label_mode="linear"``; list the ignore label among them so it is
    interpolated as a value of its own). ``ignore_label``: never a foreground class to centre on.
    ``augment=False`` gives plain random/foreground crops with no other change (validation patches).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        config: AugmentConfig | None = None,
        *,
        classes: Sequence[int] | None = None,
        augment: bool = True,
        ignore_label: int | None = None,
    ) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        if any(p < 1 for p in self.patch_size) or len(self.patch_size) not in (2, 3):
            raise ValueError(f"patch_size must be 2 or 3 positive sizes, got {patch_size}")
        self.config = config or AugmentConfig()
        self.classes = None if classes is None else [int(c) for c in classes]
        self.augment = augment
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        if self.config.label_mode not in ("nearest", "linear"):
            raise ValueError(f"label_mode must be 'nearest' or 'linear', got {self.config.label_mode!r}")
        if not 0.0 <= self.config.fg_fraction <= 1.0:
            raise ValueError(f"fg_fraction must be in [0, 1], got {self.config.fg_fraction}")
        if self.config.fg_sampling not in FG_SAMPLING:
            raise ValueError(
                f"augment.fg_sampling must be one of {FG_SAMPLING}, got {self.config.fg_sampling!r}"
            )

    @property
    def by_component(self) -> bool:
        """Lesion-aware foreground sampling (``augment.fg_sampling="component"``)."""
        return self.config.fg_sampling == "component"

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    def _is_foreground(self, value: int) -> bool:
        """Whether patches may be centred on ``value``: a declared class other than the background
        (any value when none are declared), never the ignore label."""
        if value == self.ignore_label:
            return False
        return self.classes is None or (value in self.classes and value != self.classes[0])

    def draw(
        self,
        rng: np.random.Generator,
        shape: Sequence[int],
        *,
        channels: int = 1,
        locations: Mapping[int, np.ndarray] | None = None,
        spacing_mm: Sequence[float] | None = None,
        components: ComponentLocations | None = None,
    ) -> SampleParams:
        """Draw the parameters of one patch from ``rng`` for a volume of spatial ``shape``
        (``components``: where the lesions are, for ``fg_sampling="component"``)."""
        cfg, d = self.config, self.spatial_dims
        shape = tuple(int(s) for s in shape[-d:])
        if locations is not None:
            locations = {k: v for k, v in locations.items() if self._is_foreground(k)}
        if self.by_component and components is None and cfg.fg_fraction > 0:
            raise ValueError('augment.fg_sampling="component" needs the components (component_locations)')
        start, centre = choose_patch_start(
            shape,
            self.patch_size,
            rng,
            locations,
            cfg.fg_fraction,
            components=components if self.by_component else None,
        )
        forced, component = (None, centre) if self.by_component else (centre, None)
        spacing = tuple(float(s) for s in spacing_mm) if spacing_mm is not None else (1.0,) * d
        if not self.augment:
            return SampleParams(SpatialParams(start_vox=start), IntensityParams(), forced, component)

        rotation: tuple[float, ...] = ()
        if rng.random() < cfg.p_rotate and cfg.rotate_deg > 0:
            limit = np.deg2rad(cfg.rotate_deg)
            rotation = tuple(float(a) for a in rng.uniform(-limit, limit, size=3 if d == 3 else 1))
        zoom: tuple[float, ...] = ()
        if rng.random() < cfg.p_zoom:
            zoom = (_two_sided(rng, *cfg.zoom_range),) * d
        elastic = None
        if rng.random() < cfg.p_elastic and cfg.elastic_std_mm > 0:
            grid_vox = min(cfg.elastic_grid_mm / s for s in spacing)
            ctrl_shape = control_grid_shape(self.patch_size, max(grid_vox, 2.0))
            std_vox = np.array([cfg.elastic_std_mm / s for s in spacing]).reshape(d, *[1] * d)
            elastic = (rng.standard_normal((d, *ctrl_shape)) * std_vox).astype(np.float32)
        flip = [False] * d
        for axis in cfg.flip_axes:
            if axis >= d:
                raise ValueError(f"flip axis {axis} does not exist in {d}D patches")
            flip[axis] = bool(rng.random() < cfg.p_flip)
        spatial = SpatialParams(
            start_vox=start,
            rotation_rad=rotation,
            zoom=zoom,
            flip=tuple(flip),
            elastic_vox=elastic,
            spacing_mm=spacing if spacing_mm is not None else None,
        )

        gamma = scale = shift = None
        if rng.random() < cfg.p_gamma:
            gamma = tuple(_two_sided(rng, *cfg.gamma_range) for _ in range(channels))
        if rng.random() < cfg.p_scale:
            scale = tuple(float(v) for v in rng.uniform(*cfg.scale_range, size=channels))
        if rng.random() < cfg.p_shift:
            shift = tuple(float(v) for v in rng.uniform(*cfg.shift_range, size=channels))
        noise_std = 0.0
        if rng.random() < cfg.p_noise:
            noise_std = float(rng.uniform(*cfg.noise_std_range))
        noise_seed = int(rng.integers(2**31 - 1))
        intensity = IntensityParams(gamma, scale, shift, noise_std, noise_seed if noise_std > 0 else 0)
        return SampleParams(spatial, intensity, forced, component)

    def apply(
        self, image: np.ndarray | None, label: np.ndarray | None, params: SampleParams
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The deterministic transform: same inputs and params give the same patch, bit for bit."""
        img, lbl = sample_patch(
            image,
            label,
            self.patch_size,
            params.spatial,
            label_mode=self.config.label_mode if self.augment else "nearest",
            classes=self.classes,
        )
        if img is not None:
            img = apply_intensity(img, params.intensity, inplace=True)
        return img, lbl

    def __call__(
        self,
        image: np.ndarray,
        label: np.ndarray | None,
        rng: np.random.Generator,
        *,
        locations: Mapping[int, np.ndarray] | None = None,
        spacing_mm: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Draw parameters and cut the patch. Without ``locations`` they are computed from ``label``
        (pass cached ones for large volumes)."""
        components = None
        if label is not None and self.config.fg_fraction > 0:
            fg_classes = None if self.classes is None else self.classes[1:]
            if self.by_component:
                components = component_locations(label, fg_classes, ignore_label=self.ignore_label)
            elif locations is None:
                locations = class_locations(label, fg_classes, ignore_label=self.ignore_label)
        params = self.draw(
            rng,
            image.shape[1:],
            channels=image.shape[0],
            locations=locations,
            spacing_mm=spacing_mm,
            components=components,
        )
        return self.apply(image, label, params)


TrainTransform = PatchSampler
