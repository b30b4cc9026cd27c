"""The data order of training: which case and patch size every sample has, a pure function of the seed.

Every patch is identified by a key ``(case_index, epoch, position, patch_size)``;
:class:`attnseg.transforms.loader.PatchDataset` draws it with ``np.random.default_rng([seed, epoch,
position])``. The case order of an epoch is a concatenation of seeded permutations of the training
cases. So:

- resuming at any epoch reproduces the data exactly without saving any generator state;
- worker processes (``num_workers > 0``) give the same batches as the main process;
- under DDP each rank takes its slice of the same global batch (what a DistributedSampler does),
  so N processes with batch B see exactly the patches one process with batch N*B sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from attnseg.errors import ConfigError, DataError


# --- patch sizes -------------------------------------------------------------------------------------
def scaled_patch_size(base: Sequence[int], scale: float, stride: int) -> tuple[int, ...]:
    """``base * scale`` per axis, rounded (half up) to a multiple of ``stride``, at least ``stride``."""
    return tuple(max(stride, math.floor(b * scale / stride + 0.5) * stride) for b in base)


def draw_patch_size(
    seed: int, epoch: int, step: int, base: Sequence[int], scale_range: Sequence[float] | None, stride: int
) -> tuple[int, ...]:
    """The patch size of micro-batch ``step`` of ``epoch``: one scale per batch (all ranks agree)."""
    if not scale_range:
        return tuple(int(b) for b in base)
    lo, hi = float(scale_range[0]), float(scale_range[-1])
    if not 0 < lo <= hi:
        raise ConfigError(f"train.multiscale={list(scale_range)}: expected [low, high] with 0 < low <= high")
    scale = float(np.random.default_rng([seed, 1, epoch, step]).uniform(lo, hi))
    return scaled_patch_size(base, scale, stride)


def epoch_case_order(n_cases: int, n_samples: int, seed: int, epoch: int) -> np.ndarray:
    """Case index of every sample of an epoch: seeded permutations of all cases, concatenated."""
    if n_cases < 1:
        raise DataError("no training cases")
    rng = np.random.default_rng([seed, 0, epoch])
    reps = math.ceil(n_samples / n_cases)
    return np.concatenate([rng.permutation(n_cases) for _ in range(reps)])[:n_samples]


class BatchPlan:
    """Batch sampler (a DataLoader's ``batch_sampler``): yields, for micro-batches ``start ..
    micro_batches - 1`` of ``epoch``, this rank's patch keys ``(case_index, epoch, position,
    patch_size)``.

    Micro-batch ``m`` of the epoch holds global positions ``m * G .. m * G + G - 1`` (``G`` = global
    batch = ``batch_size * world_size``); rank ``r`` takes ``r * B .. r * B + B - 1`` of them.
    ``multiscale``: ``[low, high]`` scale range of the patch, drawn once per micro-batch and rounded
    to a multiple of ``stride`` (the network's total down-sampling); None: always ``base_patch``.
    """

    def __init__(
        self,
        *,
        n_cases: int,
        epoch: int,
        micro_batches: int,
        batch_size: int,
        seed: int,
        base_patch: Sequence[int],
        stride: int = 1,
        multiscale: Sequence[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ):
        self.epoch = epoch
        self.micro_batches = micro_batches
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        self.seed = seed
        self.base_patch = tuple(base_patch)
        self.stride = stride
        self.multiscale = multiscale
        self.rank = rank
        self.start = start
        self.order = epoch_case_order(n_cases, micro_batches * self.global_batch, seed, epoch)

    def keys(self, m: int) -> list[tuple[int, int, int, tuple[int, ...]]]:
        size = draw_patch_size(self.seed, self.epoch, m, self.base_patch, self.multiscale, self.stride)
        first = m * self.global_batch + self.rank * self.batch_size
        return [(int(self.order[p]), self.epoch, p, size) for p in range(first, first + self.batch_size)]

    def __iter__(self) -> Iterator[list]:
        for m in range(self.start, self.micro_batches):
            yield self.keys(m)

    def __len__(self) -> int:
        return self.micro_batches - self.start
