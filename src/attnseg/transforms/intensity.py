"""Intensity preprocessing (z-score, percentile clipping) and random intensity augmentation.

Preprocessing works on whole volumes ``(C, *spatial)`` once per case; augmentation works on patches
with parameters drawn beforehand (:class:`IntensityParams`), so a sample can be replayed exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


# --- preprocessing ---------------------------------------------------------------------------------
def nonzero_mask(image: np.ndarray) -> np.ndarray:
    """The non-zero region ``(*spatial)`` bool: voxels where any channel is non-zero.

    Skull-stripped MRI (BraTS) is exactly 0 outside the brain, so this is the brain mask.
    """
    return np.any(np.asarray(image) != 0, axis=0)


def clip_percentiles(
    image: np.ndarray,
    lower: float = 0.5,
    upper: float = 99.5,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Clip each channel to its ``[lower, upper]`` percentiles, computed inside ``mask`` (CT-style).

    Returns float32 ``(C, *spatial)``; the percentiles are of the voxels in ``mask`` (all voxels
    when None).
    """
    image = np.asarray(image, dtype=np.float32)
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        values = image[c][mask] if mask is not None else image[c].ravel()
        if values.size == 0:
            out[c] = image[c]
            continue
        lo, hi = np.percentile(values, [lower, upper])
        np.clip(image[c], lo, hi, out=out[c])
    return out


def normalize_zscore(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    nonzero: bool = True,
    clip: tuple[float, float] | None = None,
) -> np.ndarray:
    """Per-channel z-score ``(x - mean) / std`` with the statistics of the voxels in a mask.

    ``mask``: the region whose voxels define mean and std, and the only region normalised; outside
    it the result is 0. Default: the non-zero region (``nonzero=True``, for skull-stripped MRI) or
    the whole volume (``nonzero=False``, for CT). ``clip``: optional ``(lower, upper)`` percentiles
    to clip each channel to first (inside the mask), e.g. ``(0.5, 99.5)`` for CT. A constant channel
    (std 0) becomes 0 inside the mask. Returns float32 ``(C, *spatial)``.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim < 2:
        raise ValueError(f"image must be (C, *spatial), got shape {image.shape}")
    if mask is None and nonzero:
        mask = nonzero_mask(image)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape[1:]:
            raise ValueError(f"mask shape {mask.shape} does not match image spatial shape {image.shape[1:]}")
    if clip is not None:
        image = clip_percentiles(image, clip[0], clip[1], mask)
    out = np.zeros_like(image) if mask is not None else np.empty_like(image)
    for c in range(image.shape[0]):
        channel = image[c]
        values = channel[mask] if mask is not None else channel
        if values.size == 0:
            continue
        mean = float(values.mean(dtype=np.float64))
        std = _std_float64(values, mean)
        scale = 1.0 / std if std > 1e-8 else 0.0
        if mask is not None:
            out[c][mask] = (values - mean) * scale
        else:  # in place: no second full-size temporary (a CT volume is 420 MB per copy)
            np.subtract(channel, mean, out=out[c])
            out[c] *= scale
    return out


def _std_float64(values: np.ndarray, mean: float, chunk: int = 1 << 22) -> float:
    """Population std with float64 sums, chunk by chunk: ``np.std(dtype=float64)`` makes a float64
    copy of the whole array (8 bytes per voxel); this keeps the temporary to ``chunk`` values."""
    flat = values.reshape(-1)
    total = 0.0
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk].astype(np.float64)
        part -= mean
        total += float(np.dot(part, part))
    return math.sqrt(total / flat.size) if flat.size else 0.0


# --- random intensity augmentation (parameters drawn first, then a deterministic function) --------
@dataclass(frozen=True)
class IntensityParams:
    """Per-channel intensity changes for one patch, applied in this order by :func:`apply_intensity`.

    ``gamma``: exponent per channel on the patch rescaled to [0, 1] (and back to its range), or
    None. ``scale``/``shift``: ``x * scale + shift`` per channel, or None. ``noise_std``: std of
    additive Gaussian noise (0 = none), drawn from ``torch.Generator().manual_seed(noise_seed)``.
    """

    gamma: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    shift: tuple[float, ...] | None = None
    noise_std: float = 0.0
    noise_seed: int = 0

    @property
    def is_identity(self) -> bool:
        return (
            (self.gamma is None or all(g == 1 for g in self.gamma))
            and (self.scale is None or all(s == 1 for s in self.scale))
            and (self.shift is None or all(s == 0 for s in self.shift))
            and self.noise_std == 0
        )

    def to_dict(self) -> dict:
        def floats(v):
            return None if v is None else [float(x) for x in v]

        return {
            "gamma": floats(self.gamma),
            "scale": floats(self.scale),
            "shift": floats(self.shift),
            "noise_std": float(self.noise_std),
            "noise_seed": int(self.noise_seed),
        }

    @classmethod
    def from_dict(cls, data: dict) -> IntensityParams:
        def floats(v):
            return None if v is None else tuple(float(x) for x in v)

        return cls(
            gamma=floats(data.get("gamma")),
            scale=floats(data.get("scale")),
            shift=floats(data.get("shift")),
            noise_std=float(data.get("noise_std", 0.0)),
            noise_seed=int(data.get("noise_seed", 0)),
        )


def _per_channel(values: Sequence[float], channels: int, name: str) -> torch.Tensor:
    if len(values) == 1:
        values = list(values) * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values for {channels} channels")
    return torch.tensor(values, dtype=torch.float32)


def apply_intensity(patch: np.ndarray, params: IntensityParams, *, inplace: bool = False) -> np.ndarray:
    """Apply gamma, then scale/shift, then noise to a patch ``(C, *patch)``; returns float32.

    Gamma: each channel is mapped to [0, 1] by its own min and max in the patch, raised to the
    power, and mapped back, so the range is kept and a constant channel is unchanged.
    ``inplace=True`` reuses a float32 C-contiguous ``patch`` as the output (the sampler owns its
    patches); by default the input is left untouched.
    """
    if params.is_identity:
        return np.asarray(patch, dtype=np.float32)
    if inplace and patch.dtype == np.float32 and patch.flags.c_contiguous and patch.flags.writeable:
        x = torch.from_numpy(patch)
    else:
        x = torch.from_numpy(np.array(patch, dtype=np.float32, copy=True))
    c = x.shape[0]
    bshape = (c,) + (1,) * (x.dim() - 1)
    if params.gamma is not None and any(g != 1 for g in params.gamma):
        gamma = _per_channel(params.gamma, c, "gamma")
        lo, hi = torch.aminmax(x.reshape(c, -1), dim=1)
        rng = hi - lo
        for i in range(c):  # one channel at a time: in place, cache-friendly
            if rng[i] <= 0 or gamma[i] == 1:
                continue  # a constant channel has no range to bend
            ch = x[i]
            ch.sub_(lo[i]).mul_(1.0 / rng[i]).clamp_(0.0, 1.0).pow_(gamma[i]).mul_(rng[i]).add_(lo[i])
    if params.scale is not None:
        x.mul_(_per_channel(params.scale, c, "scale").reshape(bshape))
    if params.shift is not None:
        x.add_(_per_channel(params.shift, c, "shift").reshape(bshape))
    if params.noise_std > 0:
        gen = torch.Generator().manual_seed(int(params.noise_seed))
        x.add_(torch.randn(x.shape, generator=gen).mul_(float(params.noise_std)))
    return x.numpy()
