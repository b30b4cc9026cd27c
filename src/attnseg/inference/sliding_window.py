"""Sliding-window inference: pure window positions, a gaussian importance map, batched accumulation.

Conventions (stated once, used everywhere in this module):

- Window starts along an axis are spread *evenly* between 0 and ``size - patch`` (the last window is
  flush with the end), with a step of at most ``patch * (1 - overlap)`` voxels before rounding to
  whole voxels (the overlap asked for, give or take one voxel; never a gap). MONAI instead steps by ``int(patch * (1 - overlap))`` and shifts the last
  window back; both give the same starts when ``size - patch`` is a multiple of that step.
- A volume smaller than the window along an axis is zero-padded on both sides (``floor(pad / 2)``
  before, the rest after, like MONAI) and the result is cropped back.
- The gaussian importance map is separable, centred at ``(patch - 1) / 2`` (so it is mirror
  symmetric), peak 1, ``sigma = sigma_scale * patch`` (0.125 like nnU-Net and MONAI). It is never
  zero: values are clamped from below to the smallest positive value (or to ``min_weight`` when
  given; MONAI clamps to ``1e-3``).
- Logits are accumulated in float32 as ``sum(logits * w)`` and ``sum(w)`` and divided once at the end.
  When there is a single window the weight is 1, so the result equals a plain forward bit for bit.

A *predictor* is any callable ``batch (B, C, *patch) -> logits (B, K, *patch)``: a torch module, or
a wrapper around an onnxruntime session. Tuples/lists (deep supervision) yield their first item.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from attnseg.progress import progress as progress_lines

Predictor = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "Predictor",
    "axis_starts",
    "flip_sets",
    "gaussian_importance_map",
    "sliding_window_inference",
    "window_positions",
]


def axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of length ``patch`` that cover ``range(size)``.

    ``n = ceil((size - patch) / max(patch * (1 - overlap), 1)) + 1`` windows, starts evenly spread from 0
    to ``size - patch`` (rounded half up). A size not larger than the patch gives ``[0]`` (the caller
    pads). Example: ``axis_starts(155, 96, 0.5) == [0, 30, 59]``.
    """
    size, patch = int(size), int(patch)
    if size < 1 or patch < 1:
        raise ValueError(f"size={size}, patch={patch}: both must be at least 1")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap={overlap!r}: pass a fraction in [0, 1), e.g. 0.5")
    span = size - patch
    if span <= 0:
        return [0]
    max_step = max(patch * (1.0 - overlap), 1.0)  # a window moves by at least one voxel
    n = math.ceil(span / max_step - 1e-9) + 1
    # round half up in integers: floor(i * span / (n - 1) + 1/2)
    return [(2 * i * span + (n - 1)) // (2 * (n - 1)) for i in range(n)]


def window_positions(
    image_size: Sequence[int], patch_size: Sequence[int], overlap: float | Sequence[float] = 0.5
) -> list[list[int]]:
    """Window starts per axis; the windows are the Cartesian product of the per-axis lists."""
    image_size, patch_size = tuple(image_size), tuple(patch_size)
    if len(image_size) != len(patch_size):
        raise ValueError(
            f"image_size {image_size} and patch_size {patch_size} have different numbers of axes"
        )
    overlaps = _per_axis(overlap, len(image_size), "overlap")
    return [axis_starts(s, p, o) for s, p, o in zip(image_size, patch_size, overlaps)]


def gaussian_importance_map(
    patch_size: Sequence[int], sigma_scale: float | Sequence[float] = 0.125, min_weight: float | None = None
) -> torch.Tensor:
    """Separable gaussian weights (float32, peak 1, centred at ``(p - 1) / 2``), never zero.

    ``sigma = sigma_scale * p`` per axis. Values below the smallest positive value (or below
    ``min_weight`` when given) are raised to it, so every voxel of a window counts a little.
    """
    patch_size = tuple(int(p) for p in patch_size)
    scales = _per_axis(sigma_scale, len(patch_size), "sigma_scale")
    weight = torch.ones((), dtype=torch.float64)
    for axis, (p, scale) in enumerate(zip(patch_size, scales)):
        if p < 1 or scale <= 0:
            raise ValueError(f"patch_size={patch_size}, sigma_scale={scale}: both must be positive")
        x = torch.arange(p, dtype=torch.float64) - (p - 1) / 2.0
        g = torch.exp(-0.5 * (x / (scale * p)) ** 2)
        weight = weight.unsqueeze(-1) * g.view((1,) * axis + (p,))
    weight = weight.to(torch.float32)
    positive = weight[weight > 0]
    floor = float(positive.min()) if positive.numel() else 1.0
    if min_weight is not None:
        floor = max(floor, float(min_weight))
    return weight.clamp_(min=floor)


def flip_sets(spatial_dims: int, axes: bool | Iterable[int] | None = True) -> list[tuple[int, ...]]:
    """Mirror TTA passes: every subset of ``axes`` (all spatial axes for ``True``), identity first.

    ``False``/``None`` gives only the identity. Axes are spatial (0 = first axis after channels).
    """
    if axes is None or axes is False:
        return [()]
    chosen = list(range(spatial_dims)) if axes is True else sorted({int(a) for a in axes})
    for a in chosen:
        if not 0 <= a < spatial_dims:
            raise ValueError(
                f"TTA axis {a} does not exist in a {spatial_dims}D window; pass 0..{spatial_dims - 1}"
            )
    return [c for r in range(len(chosen) + 1) for c in itertools.combinations(chosen, r)]


def sliding_window_inference(
    volume: torch.Tensor | np.ndarray,
    predictor: Predictor,
    patch_size: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 2,
    mode: str = "gaussian",
    tta: bool | Iterable[int] = False,
    *,
    slice_axis: int | None = None,
    sigma_scale: float | Sequence[float] = 0.125,
    min_weight: float | None = None,
    autocast: bool = False,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Predict a whole volume window by window; returns float32 logits ``(K, *spatial)`` on CPU.

    Args:
        volume: ``(C, *spatial)`` array or tensor.
        predictor: callable ``(B, C, *patch) -> (B, K, *patch)``.
        patch_size: the window, one size per axis the predictor sees.
        overlap: fraction of the window shared by neighbours (per axis or one value).
        batch_size: windows per predictor call (windows of all slices are batched together).
        mode: ``"gaussian"`` (weighted blending) or ``"constant"`` (plain average).
        tta: mirror test-time augmentation: ``True`` for all ``2**D`` flips, or an iterable of the
            window's spatial axes to flip (every subset of them is used). Logits are averaged.
        slice_axis: run a 2D predictor slice by slice over a 3D volume; the spatial axis (0, 1 or 2)
            the slices are taken along. ``patch_size`` and ``tta`` axes then refer to the 2D slice.
        sigma_scale, min_weight: see :func:`gaussian_importance_map`.
        autocast: run the predictor under bfloat16 autocast (accumulation stays float32).
        device: where windows are sent (default: the volume's device); the result is on CPU.
        channels_last: give the predictor channels-last windows (faster convolutions on some CPUs;
            the module's weights should be converted too).
        progress: show a tqdm bar over window batches.
    """
    # no_grad, not inference_mode: callers may modify the result in place afterwards
    with torch.no_grad():
        x = torch.as_tensor(volume)
        if not x.is_floating_point():
            x = x.float()
        if x.ndim < 2:
            raise ValueError(f"volume has shape {tuple(x.shape)}; expected (channels, *spatial)")
        if slice_axis is not None:
            if x.ndim != 4:
                raise ValueError(
                    f"slice_axis={slice_axis} needs a 3D volume (C, X, Y, Z); got shape {tuple(x.shape)}"
                )
            if not 0 <= slice_axis <= 2:
                raise ValueError(f"slice_axis={slice_axis}: pass 0, 1 or 2")
            images = x.movedim(1 + slice_axis, 0)  # (S, C, *2D)
        else:
            images = x.unsqueeze(0)  # (1, C, *spatial)
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != images.ndim - 2:
            raise ValueError(
                f"patch_size {patch} has {len(patch)} axes; the predictor sees {images.ndim - 2}D "
                f"windows of a volume with shape {tuple(x.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: pass at least 1")
        out = _accumulate(
            images,
            predictor,
            patch,
            overlap,
            batch_size=batch_size,
            mode=mode,
            flips=flip_sets(len(patch), tta),
            sigma_scale=sigma_scale,
            min_weight=min_weight,
            autocast=autocast,
            device=torch.device(device) if device is not None else images.device,
            channels_last=channels_last,
            progress=progress,
        )
        if slice_axis is not None:
            return out.movedim(0, 1 + slice_axis).contiguous()  # (K, *3D)
        return out[0]


def _per_axis(value: float | Sequence[float], n: int, name: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * n
    values = tuple(float(v) for v in value)
    if len(values) != n:
        raise ValueError(f"{name}={value!r}: give one value or {n} (one per axis)")
    return values


def _region(origin: Sequence[int], patch: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(o, o + p) for o, p in zip(origin, patch))


def _call(predictor: Predictor, batch: torch.Tensor) -> torch.Tensor:
    y = predictor(batch)
    if isinstance(y, (list, tuple)):
        y = y[0]
    return torch.as_tensor(y)


def _predict(
    predictor: Predictor, batch: torch.Tensor, flips: list[tuple[int, ...]], autocast: bool
) -> torch.Tensor:
    context = (
        torch.autocast(device_type=batch.device.type, dtype=torch.bfloat16)
        if autocast
        else contextlib.nullcontext()
    )
    with context:
        if len(flips) == 1:
            return _call(predictor, batch)
        total = None
        for axes in flips:
            dims = [2 + a for a in axes]
            y = _call(predictor, batch.flip(dims) if dims else batch)
            if dims:
                y = y.flip(dims)
            # copy on the first pass: the predictor may return (a view of) its input
            total = y.to(torch.float32, copy=True) if total is None else total.add_(y)
        return total.div_(len(flips))


def _accumulate(
    images: torch.Tensor,
    predictor: Predictor,
    patch: tuple[int, ...],
    overlap: float | Sequence[float],
    *,
    batch_size: int,
    mode: str,
    flips: list[tuple[int, ...]],
    sigma_scale: float | Sequence[float],
    min_weight: float | None,
    autocast: bool,
    device: torch.device,
    channels_last: bool,
    progress: bool,
) -> torch.Tensor:
    """``images (N, C, *S)`` -> float32 logits ``(N, K, *S)``; windows of all N images are batched."""
    n_images, channels = images.shape[:2]
    size = tuple(images.shape[2:])
    pad = [max(p - s, 0) for s, p in zip(size, patch)]
    if any(pad):
        spec: list[int] = []
        for d in reversed(pad):
            spec += [d // 2, d - d // 2]
        images = F.pad(images, spec)
    padded = tuple(images.shape[2:])

    starts = window_positions(padded, patch, overlap)
    origins = list(itertools.product(*starts))
    if mode == "gaussian" and len(origins) > 1:
        weight = gaussian_importance_map(patch, sigma_scale, min_weight)
    elif mode in ("gaussian", "constant"):
        weight = torch.ones(patch)
    else:
        raise ValueError(f"mode={mode!r}: pass 'gaussian' or 'constant'")

    # the weight sum depends only on the positions: accumulate it once, shared by all images
    weight_sum = torch.zeros(padded, dtype=torch.float32)
    for origin in origins:
        weight_sum[_region(origin, patch)] += weight

    jobs = [(n, origin) for n in range(n_images) for origin in origins]
    memory_format = torch.contiguous_format
    if channels_last:
        memory_format = {2: torch.channels_last, 3: torch.channels_last_3d}.get(
            len(patch), torch.contiguous_format
        )
    buffer = torch.empty(
        (min(batch_size, len(jobs)), channels, *patch), dtype=images.dtype, device=device
    ).contiguous(memory_format=memory_format)
    out: torch.Tensor | None = None

    batches = range(0, len(jobs), batch_size)
    if progress:
        batches = progress_lines(batches, desc="windows", unit="batch", nested=True)
    for first in batches:
        chunk = jobs[first : first + batch_size]
        batch = buffer[: len(chunk)]
        for j, (n, origin) in enumerate(chunk):
            batch[j].copy_(images[(n, slice(None), *_region(origin, patch))])
        logits = _predict(predictor, batch, flips, autocast)
        if logits.ndim != batch.ndim or logits.shape[0] != len(chunk) or tuple(logits.shape[2:]) != patch:
            raise ValueError(
                f"the predictor returned shape {tuple(logits.shape)} for a batch of shape "
                f"{tuple(batch.shape)}; expected ({len(chunk)}, K, {', '.join(map(str, patch))})"
            )
        if out is None:
            out = torch.zeros((n_images, logits.shape[1], *padded), dtype=torch.float32)
        logits = logits.to("cpu")
        for j, (n, origin) in enumerate(chunk):
            out[(n, slice(None), *_region(origin, patch))].addcmul_(logits[j], weight)
    assert out is not None
    out.div_(weight_sum)
    if any(pad):
        out = out[(slice(None), slice(None), *(slice(d // 2, d // 2 + s) for d, s in zip(pad, size)))]
    return out.contiguous()
