"""Settings derived from the data when the user leaves them unset: patch size, batch size,
channels, classes. Pure functions of shapes and counts, printed at the start of a run and saved."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def median_shape(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per-axis median of case shapes (rounded down to whole voxels)."""
    if not shapes:
        raise ValueError("no shapes to take the median of")
    return tuple(int(v) for v in np.median(np.asarray(shapes, dtype=np.float64), axis=0))


def derive_patch_size(median: Sequence[int], stride: int, budget_vox: int) -> tuple[int, ...]:
    """The median shape rounded up to a multiple of ``stride``, then shrunk one ``stride`` at a
    time on the largest axis (first on ties) until it holds at most ``budget_vox`` voxels.

    Every axis stays a positive multiple of ``stride`` (so the network needs no padding), and a
    patch never exceeds the median case by more than one stride.
    """
    if stride < 1 or budget_vox < 1:
        raise ValueError(f"stride={stride} and budget_vox={budget_vox} must be >= 1")
    patch = [max(stride, math.ceil(int(s) / stride) * stride) for s in median]
    while math.prod(patch) > budget_vox:
        axis = max(range(len(patch)), key=lambda i: (patch[i], -i))
        if patch[axis] <= stride:
            break
        patch[axis] -= stride
    return tuple(patch)


def derive_batch_size(
    patch: Sequence[int], budget_vox: int, n_cases: int | None = None, low: int = 2, high: int = 8
) -> int:
    """``budget_vox // prod(patch)`` clipped to ``[low, min(high, n_cases)]``: small patches get
    bigger batches, but never more patches per batch than there are training cases (nor below 2)."""
    cap = high if n_cases is None else max(low, min(high, n_cases))
    return int(min(cap, max(low, budget_vox // max(1, math.prod(patch)))))


def default_budget_vox(device_type: str, spatial_dims: int = 3) -> int:
    """Voxels per patch we aim for: 128**3 on a GPU, 64**3 on a CPU (2D: 512**2 / 256**2)."""
    if spatial_dims == 2:
        return 512**2 if device_type == "cuda" else 256**2
    return 128**3 if device_type == "cuda" else 64**3
