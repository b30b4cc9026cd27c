"""Sliding-window inference: pure window positions, a gaussian importance map, accumulation in pieces.

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
- Memory: windows run in ``itertools.product`` order (the first axis slowest) and a region's sums are
  divided and handed out once its last window is done (:func:`sliding_window_blocks`), so only the
  regions some later window still covers are alive; :func:`plan_accumulation` says how many bytes
  that is for each way of splitting. MONAI keeps ``K x volume`` float32 (plus a count map) whatever
  the split; the numbers are the same either way, as every voxel sums its windows in the same order.

A *predictor* is any callable ``batch (B, C, *patch) -> logits (B, K, *patch)``: a torch module, or
a wrapper around an onnxruntime session. Tuples/lists (deep supervision) yield their first item.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import mmap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attnseg.heap import keep_freed_memory
from attnseg.progress import progress as progress_lines

Predictor = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "AccumulationPlan",
    "Predictor",
    "axis_starts",
    "flip_sets",
    "gaussian_importance_map",
    "plan_accumulation",
    "sliding_window_blocks",
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
    # one piece: the whole volume, K x volume float32, as a plain accumulation
    ((_, logits),) = sliding_window_blocks(
        volume,
        predictor,
        patch_size,
        overlap,
        batch_size,
        mode,
        tta,
        levels=0,
        slice_axis=slice_axis,
        sigma_scale=sigma_scale,
        min_weight=min_weight,
        autocast=autocast,
        device=device,
        channels_last=channels_last,
        progress=progress,
    )
    return logits.contiguous()


def sliding_window_blocks(
    volume: torch.Tensor | np.ndarray,
    predictor: Predictor,
    patch_size: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 2,
    mode: str = "gaussian",
    tta: bool | Iterable[int] = False,
    *,
    levels: int = 1,
    slice_axis: int | None = None,
    sigma_scale: float | Sequence[float] = 0.125,
    min_weight: float | None = None,
    autocast: bool = False,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> Iterator[tuple[tuple[slice, ...], torch.Tensor]]:
    """:func:`sliding_window_inference` in pieces: yields ``(region, logits)`` where ``region`` is a
    tuple of slices over the volume's spatial axes and ``logits`` the float32 ``(K, *region)``, each
    piece as soon as the last window covering it is done; the pieces tile the volume once.

    Numbers equal :func:`sliding_window_inference`'s (same windows, same order of summation per voxel),
    while only the accumulators of the pieces still open are alive: ``levels`` as in
    :func:`plan_accumulation` (0: one piece, the whole volume). A piece is a view into an accumulator
    freed once the consumer moves on: copy what you keep. Example::

        labels = np.zeros(volume.shape[1:], np.uint8)
        for region, logits in sliding_window_blocks(volume, model, (96, 96, 96), levels=3):
            labels[region] = logits.argmax(0).numpy()
    """
    images, patch = _images(volume, patch_size, slice_axis, batch_size)
    if levels < 0:
        raise ValueError(f"levels={levels}: pass 0 (whole volume) or more")
    pieces = _blocks(
        images,
        predictor,
        patch,
        overlap,
        levels=levels,
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
    # the network's activations have the same sizes window after window: reuse them instead of letting
    # glibc unmap them and the kernel zero-fill them again (attnseg.heap)
    with keep_freed_memory():
        for region, logits in pieces:
            if slice_axis is None:
                yield region[1:], logits[0]
            else:  # (slices, K, *2D) -> (K, *3D)
                where = list(region[1:])
                where.insert(slice_axis, region[0])
                yield tuple(where), logits.movedim(0, 1).movedim(1, 1 + slice_axis)
            del logits  # a suspended generator's locals keep the cell alive: drop it before the next batch


def _images(
    volume: torch.Tensor | np.ndarray, patch_size: Sequence[int], slice_axis: int | None, batch_size: int
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The checked input as ``(N, C, *window axes)`` images and the window size."""
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
    return images, patch


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


# --- accumulation in cells: memory bounded by the windows still open ------------------------------------
# The images are ``(N, C, *S)``: N = 1 for a volume, N = slices for a 2D model over a 3D volume. The
# "dims" below are ``(n, *S)``; a window covers one n and ``patch`` along S. Windows are processed in
# the order of ``itertools.product`` (n, then the first spatial axis, ...), the order whole-volume
# accumulation always used, so every voxel receives its windows in the same order and the sums are
# the same float32 numbers. Splitting the first ``levels`` splittable dims at every window edge gives
# cells; a cell is covered by a fixed set of windows, is allocated at the first of them and divided by
# its weight sum and handed out (then freed) after the last. Only the cells of windows still to come
# are alive: with ``levels = 1`` a slab one window thick along the slowest axis, with more levels
# little more than the overlap "frontier" (``overlap * patch`` thick) of the slowest axis.
Key = tuple[int, ...]


@dataclass(frozen=True)
class _Schedule:
    jobs: list[tuple[int, ...]]  # (n, *origin), in processing order
    boxes: dict[Key, tuple[tuple[int, int], ...]]  # cell -> (lo, hi) per dim (n, *S), padded coords
    touches: list[list[Key]]  # per job: the cells it overlaps
    finals: dict[int, list[Key]]  # job index -> the cells it is the last window of


def _split_dims(n_images: int, spatial_dims: int) -> list[int]:
    """The dims cells may be split along, slowest first: n (only when there are several images), then
    the spatial axes in order."""
    return ([0] if n_images > 1 else []) + list(range(1, spatial_dims + 1))


def _schedule(n_images: int, padded: Sequence[int], patch: Sequence[int], starts, levels: int) -> _Schedule:
    sizes = (n_images, *padded)
    sizes_patch = (1, *patch)
    starts_all = [list(range(n_images)), *starts]
    split = _split_dims(n_images, len(padded))[:levels]
    edges = {}
    for d in split:
        edges[d] = sorted({0, sizes[d], *starts_all[d], *(s + sizes_patch[d] for s in starts_all[d])})
    index = {d: {e: i for i, e in enumerate(edges[d])} for d in split}
    jobs = list(itertools.product(*starts_all))
    boxes: dict[Key, tuple[tuple[int, int], ...]] = {}
    touches: list[list[Key]] = []
    last: dict[Key, int] = {}
    for j, job in enumerate(jobs):
        ranges = [range(index[d][job[d]], index[d][job[d] + sizes_patch[d]]) for d in split]
        keys = list(itertools.product(*ranges))
        for key in keys:
            if key not in boxes:
                cell = dict(zip(split, key))
                boxes[key] = tuple(
                    (edges[d][cell[d]], edges[d][cell[d] + 1]) if d in cell else (0, sizes[d])
                    for d in range(len(sizes))
                )
            last[key] = j
        touches.append(keys)
    finals: dict[int, list[Key]] = {}
    for key, j in last.items():
        finals.setdefault(j, []).append(key)
    return _Schedule(jobs, boxes, touches, finals)


def _cell_bytes(box: tuple[tuple[int, int], ...], classes: int) -> int:
    spatial = math.prod(hi - lo for lo, hi in box[1:])
    n = box[0][1] - box[0][0]
    return 4 * spatial * (n * classes + 1)  # float32 logit sums and one weight sum


def _peak_bytes(schedule: _Schedule, classes: int, batch_size: int) -> int:
    """Bytes of the cells alive at once at the worst moment (cells are freed after each batch)."""
    alive: set[Key] = set()
    now = peak = 0
    for first in range(0, len(schedule.jobs), batch_size):
        for j in range(first, min(first + batch_size, len(schedule.jobs))):
            for key in schedule.touches[j]:
                if key not in alive:
                    alive.add(key)
                    now += _cell_bytes(schedule.boxes[key], classes)
        peak = max(peak, now)
        for j in range(first, min(first + batch_size, len(schedule.jobs))):
            for key in schedule.finals.get(j, ()):
                alive.discard(key)
                now -= _cell_bytes(schedule.boxes[key], classes)
    return peak


@dataclass(frozen=True)
class AccumulationPlan:
    """How finely the accumulators are split (see :func:`plan_accumulation`)."""

    levels: int
    accumulator_bytes: int  # live accumulators at the peak
    whole_bytes: int  # what whole-volume accumulation (levels=0) needs
    budget_bytes: int | None
    split: str  # the axes split, in words

    def describe(self) -> str:
        gb = 1e9
        how = "whole volume at once" if self.levels == 0 else f"cells split along {self.split}"
        budget = "no budget" if self.budget_bytes is None else f"budget {self.budget_bytes / gb:.2f} GB"
        over = (
            ""
            if self.budget_bytes is None or self.accumulator_bytes <= self.budget_bytes
            else ", OVER budget"
        )
        return (
            f"accumulating {how}: {self.accumulator_bytes / gb:.2f} GB of accumulators at the peak "
            f"(whole volume: {self.whole_bytes / gb:.2f} GB; {budget}{over})"
        )


def plan_accumulation(
    spatial_size: Sequence[int],
    patch_size: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    *,
    classes: int,
    batch_size: int = 2,
    slice_axis: int | None = None,
    budget_bytes: int | None = None,
) -> AccumulationPlan:
    """The coarsest split whose live accumulators fit ``budget_bytes`` (the finest when none does).

    ``levels = 0`` accumulates the whole volume (``K x volume`` float32, the fastest when it fits);
    ``levels = L`` splits the first ``L`` of (slices for a 2D model over a 3D volume, then the
    spatial axes in order) at every window edge. The byte counts are exact for the accumulators
    (``K`` logit sums and one weight sum per voxel alive), found by replaying the window order.
    Example: a 512 x 512 x 400 volume, 64^3 windows, overlap 0.5, K = 64: 26.8 GB whole, about 3.4
    GB with one level (a slab one window thick), about 1.8 GB with three.
    """
    spatial = tuple(int(s) for s in spatial_size)
    patch = tuple(int(p) for p in patch_size)
    if slice_axis is not None:
        n_images = spatial[slice_axis]
        spatial = tuple(s for a, s in enumerate(spatial) if a != slice_axis)
    else:
        n_images = 1
    if len(spatial) != len(patch):
        raise ValueError(f"patch_size {patch} does not match the window axes of {tuple(spatial_size)}")
    padded = tuple(max(s, p) for s, p in zip(spatial, patch))
    starts = window_positions(padded, patch, overlap)
    split = ["slices"] if n_images > 1 else []
    split += [f"axis {a}" for a in range(3) if slice_axis is None or a != slice_axis][: len(padded)]
    peaks = [
        _peak_bytes(_schedule(n_images, padded, patch, starts, levels), classes, batch_size)
        for levels in range(len(split) + 1)
    ]
    levels = next(
        (i for i, b in enumerate(peaks) if budget_bytes is not None and b <= budget_bytes),
        len(peaks) - 1 if budget_bytes is not None else 0,
    )
    return AccumulationPlan(levels, peaks[levels], peaks[0], budget_bytes, ", ".join(split[:levels]))


def _zeros(shape: Sequence[int], own_map: bool = True) -> torch.Tensor:
    """float32 zeros for an accumulator cell of a split volume. Cells of 64 KiB and more get their own
    anonymous memory map (zero-filled by the OS, returned to it when the cell is freed): from the heap,
    the thousands of cells of a fine split (a few MB each) fragment it and the process keeps the holes
    (0.25 GB of RSS at K = 64 on a 512 x 512 x 400 volume). A single whole-volume accumulator does not
    fragment anything and fills faster from torch (0.28 s vs 0.34 s for a 4 x 240 x 240 x 155 volume
    with an elementwise predictor): ``own_map=False``."""
    nbytes = 4 * math.prod(shape)
    if not own_map or nbytes < 1 << 16:
        return torch.zeros(tuple(shape), dtype=torch.float32)
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.float32).view(tuple(shape))


def _blocks(
    images: torch.Tensor,
    predictor: Predictor,
    patch: tuple[int, ...],
    overlap: float | Sequence[float],
    *,
    levels: int,
    batch_size: int,
    mode: str,
    flips: list[tuple[int, ...]],
    sigma_scale: float | Sequence[float],
    min_weight: float | None,
    autocast: bool,
    device: torch.device,
    channels_last: bool,
    progress: bool,
) -> Iterator[tuple[tuple[slice, ...], torch.Tensor]]:
    """``images (N, C, *S)`` -> ``(region over (n, *S), float32 logits (n, K, *region S))`` per cell,
    each as soon as no later window covers it; the cells tile the images exactly once."""
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
    if mode == "gaussian" and math.prod(len(s) for s in starts) > 1:
        weight = gaussian_importance_map(patch, sigma_scale, min_weight)
    elif mode in ("gaussian", "constant"):
        weight = torch.ones(patch)
    else:
        raise ValueError(f"mode={mode!r}: pass 'gaussian' or 'constant'")
    schedule = _schedule(n_images, padded, patch, starts, levels)
    jobs = schedule.jobs
    split = levels > 0  # many cells: each in its own map; one accumulator: plain torch zeros (see _zeros)

    memory_format = torch.contiguous_format
    if channels_last:
        memory_format = {2: torch.channels_last, 3: torch.channels_last_3d}.get(
            len(patch), torch.contiguous_format
        )
    buffer = torch.empty(
        (min(batch_size, len(jobs)), channels, *patch), dtype=images.dtype, device=device
    ).contiguous(memory_format=memory_format)
    cells: dict[Key, tuple[torch.Tensor, torch.Tensor]] = {}
    # the unpadded extent per dim (n, *S), in padded coordinates
    keep = [(0, n_images), *((d // 2, d // 2 + s) for d, s in zip(pad, size))]

    batches = range(0, len(jobs), batch_size)
    if progress:
        batches = progress_lines(batches, desc="windows", unit="batch", nested=True)
    for first in batches:
        chunk = jobs[first : first + batch_size]
        with torch.no_grad():
            batch = buffer[: len(chunk)]
            for j, (n, *origin) in enumerate(chunk):
                batch[j].copy_(images[(n, slice(None), *_region(origin, patch))])
            logits = _predict(predictor, batch, flips, autocast)
            if logits.ndim != batch.ndim or logits.shape[0] != len(chunk) or tuple(logits.shape[2:]) != patch:
                raise ValueError(
                    f"the predictor returned shape {tuple(logits.shape)} for a batch of shape "
                    f"{tuple(batch.shape)}; expected ({len(chunk)}, K, {', '.join(map(str, patch))})"
                )
            # weighted once per window, so each piece is a plain addition; in place when the output is a
            # plain dense float32 CPU tensor (a fresh network output), else into a copy
            weighted = logits.to(device="cpu", dtype=torch.float32)
            dense = weighted.is_contiguous() or weighted.is_contiguous(memory_format=memory_format)
            weighted = weighted.mul_(weight) if dense else weighted * weight
            classes = weighted.shape[1]
            for j, (n, *origin) in enumerate(chunk):
                for key in schedule.touches[first + j]:
                    box = schedule.boxes[key]
                    if key not in cells:
                        extent = [hi - lo for lo, hi in box]
                        cells[key] = (
                            _zeros((extent[0], classes, *extent[1:]), split),
                            _zeros(extent[1:], split),
                        )
                    total, weight_sum = cells[key]
                    inside = [(max(lo, o), min(hi, o + p)) for (lo, hi), o, p in zip(box[1:], origin, patch)]
                    in_cell = tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(inside, box[1:]))
                    in_window = tuple(slice(a - o, b - o) for (a, b), o in zip(inside, origin))
                    total[(n - box[0][0], slice(None), *in_cell)].add_(weighted[(j, slice(None), *in_window)])
                    if n == box[0][0]:  # the weight sum is the same for every image: count it once
                        weight_sum[in_cell] += weight[in_window]
            # free this batch's outputs before the next forward allocates its own (K x batch x window each)
            del logits, weighted
        for j in range(first, first + len(chunk)):
            for key in schedule.finals.get(j, ()):
                total, weight_sum = cells.pop(key)
                box = schedule.boxes[key]
                inside = [(max(lo, k0), min(hi, k1)) for (lo, hi), (k0, k1) in zip(box, keep)]
                if any(a >= b for a, b in inside):
                    continue  # padding only
                total.div_(weight_sum)
                crop = (
                    slice(inside[0][0] - box[0][0], inside[0][1] - box[0][0]),
                    slice(None),
                    *(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(inside[1:], box[1:])),
                )
                region = tuple(slice(a - k0, b - k0) for (a, b), (k0, _) in zip(inside, keep))
                yield region, total[crop]
                del total, weight_sum  # freed once the consumer drops the piece, not at the next cell's end
