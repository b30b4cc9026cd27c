"""From loaded cases to training batches, with a data order that is a pure function of the seed.

Every patch is identified by a key ``(case_index, epoch, position, patch_size)`` and drawn with
``np.random.default_rng([seed, epoch, position])``; the case order of an epoch is a concatenation
of seeded permutations of the training cases. So:

- resuming at any epoch reproduces the data exactly without saving any generator state;
- worker processes (``num_workers > 0``) give the same batches as the main process;
- under DDP each rank takes its slice of the same global batch (what a DistributedSampler does),
  so N processes with batch B see exactly the patches one process with batch N*B sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from attnseg.config import AugmentConfig, PreprocessConfig
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError, DataError


@dataclass
class TrainingCase:
    """One preprocessed case in memory: image ``(C, *spatial)`` float32, label ``(*spatial)`` with the
    dataset's label values (None for unlabelled cases), voxel spacing."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing_mm: tuple[float, ...]
    locations: dict | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


def preprocess(
    image: np.ndarray,
    label: np.ndarray | None,
    spacing_mm: Sequence[float],
    config: PreprocessConfig,
    classes: Sequence[int] | None = None,
    case_id: str = "?",
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    """Resample (optional), then normalise per channel as ``config`` says."""
    from attnseg.transforms import normalize_zscore, resample_to_spacing

    spacing = tuple(float(s) for s in spacing_mm)
    if config.target_spacing_mm is not None:
        target = tuple(float(s) for s in config.target_spacing_mm)
        if len(target) != image.ndim - 1:
            raise ConfigError(
                f"preprocess.target_spacing_mm={list(target)} has {len(target)} values; "
                f"case {case_id} has {image.ndim - 1} spatial axes"
            )
        image, _ = resample_to_spacing(image, spacing, target)
        if label is not None:
            label, _ = resample_to_spacing(label, spacing, target, is_label=True, classes=classes)
        spacing = target
    if not np.all(np.isfinite(image)):
        bad = int((~np.isfinite(image)).sum())
        raise DataError(f"case {case_id}: image has {bad} NaN/inf voxel(s); fix or drop the case")
    clip = tuple(config.clip_percentiles) if config.clip_percentiles else None
    if config.normalization == "zscore_nonzero":
        image = normalize_zscore(image, nonzero=True, clip=clip)
    elif config.normalization == "zscore":
        image = normalize_zscore(image, nonzero=False, clip=clip)
    elif config.normalization != "none":
        raise ConfigError(
            f"preprocess.normalization={config.normalization!r}; pass zscore_nonzero, zscore or none"
        )
    return np.ascontiguousarray(image, dtype=np.float32), label, spacing


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
    """Batch sampler: yields, for micro-batches ``start .. stop - 1`` of an epoch, this rank's keys.

    Micro-batch ``m`` of the epoch holds global positions ``m * G .. m * G + G - 1`` (``G`` = global
    batch = ``batch_size * world_size``); rank ``r`` takes ``r * B .. r * B + B - 1`` of them.
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
        stride: int,
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


class PatchDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by plan keys: ``key -> (image (C, *patch) float32, target, case)``."""

    def __init__(
        self,
        cases: Sequence[TrainingCase],
        target: LabelScheme,
        augment: AugmentConfig | None,
        seed: int,
    ):
        self.cases = list(cases)
        self.target = target
        self.augment = augment if augment is not None else AugmentConfig()
        self.use_augment = augment is not None
        self.seed = seed
        self._samplers: dict[tuple[int, ...], object] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def sampler(self, patch_size: tuple[int, ...]):
        from attnseg.transforms import PatchSampler

        if patch_size not in self._samplers:
            self._samplers[patch_size] = PatchSampler(
                patch_size, self.augment, classes=list(self.target.values), augment=self.use_augment
            )
        return self._samplers[patch_size]

    def __getitem__(self, key):
        from attnseg.transforms import class_locations

        index, epoch, position, patch_size = key
        case = self.cases[index]
        if case.label is None:
            raise DataError(f"case {case.case_id}: no label; training cases need one")
        if case.locations is None and self.augment.fg_fraction > 0:
            case.locations = class_locations(case.label, list(self.target.values[1:]))
        rng = np.random.default_rng([self.seed, epoch, position])
        image, label = self.sampler(tuple(patch_size))(
            case.image, case.label, rng, locations=case.locations, spacing_mm=case.spacing_mm
        )
        try:
            encoded = self.target.encode(label)
        except DataError as exc:
            raise DataError(f"case {case.case_id}: {exc}") from None
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            torch.from_numpy(encoded),
            index,
        )


def make_loader(dataset: PatchDataset, plan: BatchPlan, num_workers: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=plan,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=False,
    )
