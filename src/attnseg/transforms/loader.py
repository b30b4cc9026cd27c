"""Cases to batches: preprocessing once per case (cached), then a torch Dataset of random patches.

Reproducibility: sample ``g`` (a global number, ``epoch * samples_per_epoch + i``) depends only on
``(seed, g)`` -- its case, its crop and its augmentation -- not on which worker made it or how many
workers there are. The :class:`EpochSampler` hands out global numbers from the main process, so
``loader.sampler.set_epoch(e)`` works with persistent workers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from attnseg.config import PreprocessConfig, to_dict
from attnseg.errors import ConfigError
from attnseg.transforms.cache import VolumeCache, file_key
from attnseg.transforms.intensity import normalize_zscore
from attnseg.transforms.sampling import PatchSampler, SampleParams, class_locations
from attnseg.transforms.spatial import resample_to_spacing


@dataclass
class PreparedCase:
    """A case ready for sampling: normalised image ``(C, *spatial)`` float32, label, where each
    foreground class lies (``locations``), and the geometry after preprocessing."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    locations: dict[int, np.ndarray]
    spacing_mm: tuple[float, ...]
    affine: np.ndarray


def preprocess_arrays(
    image: np.ndarray,
    label: np.ndarray | None,
    spacing_mm: Sequence[float],
    affine: np.ndarray,
    config: PreprocessConfig,
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...], np.ndarray]:
    """Resample (optional), then normalise: the pure part of :func:`prepare_case`."""
    spacing = tuple(float(s) for s in spacing_mm)
    if config.target_spacing_mm is not None:
        target = tuple(float(t) for t in config.target_spacing_mm)
        if len(target) == 1:
            target = target * len(spacing)
        if len(target) != len(spacing):
            raise ConfigError(
                f"target_spacing_mm {target} has {len(target)} values for {len(spacing)}D images"
            )
        image, new_affine = resample_to_spacing(image, spacing, target, affine=affine)
        if label is not None:
            label, _ = resample_to_spacing(label, spacing, target, is_label=True, classes=classes)
        spacing, affine = target, new_affine
    norm = config.normalization
    if norm == "zscore_nonzero":
        image = normalize_zscore(image, nonzero=True, clip=config.clip_percentiles)
    elif norm == "zscore":
        image = normalize_zscore(image, nonzero=False, clip=config.clip_percentiles)
    elif norm == "none":
        image = np.ascontiguousarray(image, dtype=np.float32)
    else:
        raise ConfigError(f"normalization must be zscore_nonzero, zscore or none, got {norm!r}")
    return image, label, spacing, np.asarray(affine, np.float64)


class CaseStore:
    """Prepared cases of a dataset, decoded and preprocessed once and kept in a :class:`VolumeCache`.

    ``dataset``: an ``attnseg.datasets.Dataset``. ``classes``: the label values, background first
    (default: the dataset's declared values). ``cache``: where prepared volumes live (default: in
    memory up to 2 GiB, no disk).
    """

    def __init__(
        self,
        dataset: Any,
        preprocess: PreprocessConfig | None = None,
        cache: VolumeCache | None = None,
        *,
        classes: Sequence[int] | None = None,
        case_ids: Sequence[str] | None = None,
    ) -> None:
        self.dataset = dataset
        self.preprocess = preprocess or PreprocessConfig()
        self.cache = cache or VolumeCache()
        self.classes = list(classes) if classes is not None else list(dataset.label_values) or None
        ids = list(case_ids) if case_ids is not None else list(dataset.case_ids)
        known = set(dataset.case_ids)
        missing = [c for c in ids if c not in known]
        if missing:
            raise ConfigError(f"case(s) {missing[:5]} are not in the dataset at {dataset.root}")
        self.case_ids = ids
        self._settings = repr(sorted(to_dict(self.preprocess).items())) + repr(self.classes)
        if getattr(dataset, "spatial_dims", None) == 2:  # decide the 2D mask encoding once, before workers
            from attnseg.datasets.masks2d import mask_set_encoding

            mask_set_encoding(dataset)

    def __len__(self) -> int:
        return len(self.case_ids)

    def key(self, case_id: str) -> str:
        case = self.dataset.case(case_id)
        files = list(case.images) + ([case.label] if case.label is not None else [])
        channels = self.dataset.info.get("channel_indices")
        return file_key(files, self._settings + repr(channels))

    def _produce(self, case_id: str) -> dict:
        from attnseg.datasets import load_case

        case = self.dataset.case(case_id)
        image, label, meta = load_case(case, self.dataset)
        image, label, spacing, affine = preprocess_arrays(
            image, label, meta.spacing_mm, meta.affine, self.preprocess, self.classes
        )
        entry: dict = {"image": np.ascontiguousarray(image, dtype=np.float32)}
        fg = None if self.classes is None else [c for c in self.classes[1:]]
        if label is not None:
            entry["label"] = np.ascontiguousarray(label)
            for k, idx in class_locations(label, fg).items():
                entry[f"loc_{k}"] = idx
        entry["meta"] = {"spacing_mm": list(spacing), "affine": np.asarray(affine).tolist()}
        return entry

    def get(self, case_id: str) -> PreparedCase:
        entry = self.cache.get(self.key(case_id), lambda: self._produce(case_id))
        locations = {int(k[4:]): v for k, v in entry.items() if k.startswith("loc_")}
        meta = entry["meta"]
        return PreparedCase(
            case_id,
            entry["image"],
            entry.get("label"),
            locations,
            tuple(meta["spacing_mm"]),
            np.asarray(meta["affine"]),
        )

    def preload(self) -> None:
        """Prepare every case now (in the main process, before DataLoader workers start)."""
        for case_id in self.case_ids:
            self.get(case_id)


def _targets(label: np.ndarray, target: str, classes: Sequence[int] | None, regions) -> np.ndarray:
    if target == "labels":
        return label
    from attnseg.datasets.regions import labels_to_indices, labels_to_regions

    if target == "indices":
        return labels_to_indices(label, classes).astype(np.int64)
    return labels_to_regions(label, regions).astype(np.float32)


class PatchDataset(torch.utils.data.Dataset):
    """Random training patches from a :class:`CaseStore`: item ``g`` is a dict with ``image``
    ``(C, *patch)`` float32, ``label`` (see ``target``), ``case_id`` and ``index``.

    ``target``: ``"labels"`` (int64 label values as stored), ``"indices"`` (int64 class indices
    0..K-1 over the store's classes) or ``"regions"`` (``(R, *patch)`` float32 masks for
    ``regions``, e.g. BraTS WT/TC/ET). ``samples_per_epoch`` patches make one epoch; each epoch
    visits the cases in a fresh seeded order, cycling when there are more samples than cases.
    """

    def __init__(
        self,
        store: CaseStore,
        sampler: PatchSampler,
        samples_per_epoch: int,
        *,
        seed: int = 0,
        target: str = "labels",
        regions: dict[str, list[int]] | None = None,
    ) -> None:
        if samples_per_epoch < 1:
            raise ConfigError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        if target not in ("labels", "indices", "regions"):
            raise ConfigError(f"target must be labels, indices or regions, got {target!r}")
        if target == "regions" and not regions:
            raise ConfigError(
                "target='regions' needs the regions, e.g. {'WT': [1, 2, 4], 'TC': [1, 4], 'ET': [4]}"
            )
        if target == "indices" and not store.classes:
            raise ConfigError("target='indices' needs the label values (the dataset declares none)")
        if len(store) == 0:
            raise ConfigError("no cases to sample patches from")
        self.store = store
        self.sampler = sampler
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.target = target
        self.regions = regions

    def __len__(self) -> int:
        return self.samples_per_epoch

    def case_for(self, g: int) -> str:
        """The case of global sample ``g``: a seeded permutation per epoch, cycled."""
        epoch, i = divmod(int(g), self.samples_per_epoch)
        order = np.random.default_rng([self.seed, epoch, 0xCA5E]).permutation(len(self.store))
        return self.store.case_ids[int(order[i % len(order)])]

    def params_for(self, g: int, case: PreparedCase | None = None) -> SampleParams:
        """The random choices behind sample ``g`` (replay with ``sampler.apply``)."""
        if case is None:
            case = self.store.get(self.case_for(g))
        rng = np.random.default_rng([self.seed, int(g)])
        return self.sampler.draw(
            rng,
            case.image.shape[1:],
            channels=case.image.shape[0],
            locations=case.locations,
            spacing_mm=case.spacing_mm,
        )

    def __getitem__(self, g: int) -> dict[str, Any]:
        case = self.store.get(self.case_for(g))
        params = self.params_for(g, case)
        image, label = self.sampler.apply(case.image, case.label, params)
        item: dict[str, Any] = {"image": torch.from_numpy(image), "case_id": case.case_id, "index": int(g)}
        if label is not None:
            item["label"] = torch.from_numpy(
                np.ascontiguousarray(_targets(label, self.target, self.store.classes, self.regions))
            )
        return item


class EpochSampler(Sampler[int]):
    """Global sample numbers of one epoch, ``epoch * n .. epoch * n + n - 1`` (call ``set_epoch``)."""

    def __init__(self, samples_per_epoch: int, epoch: int = 0) -> None:
        self.samples_per_epoch = int(samples_per_epoch)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self):
        start = self.epoch * self.samples_per_epoch
        return iter(range(start, start + self.samples_per_epoch))


def seed_worker(worker_id: int) -> None:
    """Seed numpy's and Python's global generators in a worker from torch's per-worker seed
    (our transforms use explicit generators; this covers third-party code that does not)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: PatchDataset,
    batch_size: int,
    *,
    num_workers: int = 0,
    epoch: int = 0,
    persistent_workers: bool = True,
    prefetch_factor: int | None = 2,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` with seeded workers; ``loader.sampler.set_epoch(e)`` per epoch.

    Workers are forked after the store's cases are prepared in memory if you call
    ``dataset.store.preload()`` first (shared copy-on-write); with a disk cache they share the
    memory maps through the page cache.
    """
    sampler = EpochSampler(len(dataset), epoch)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        kwargs["prefetch_factor"] = prefetch_factor
        kwargs["worker_init_fn"] = seed_worker
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        generator=torch.Generator().manual_seed(dataset.seed),
        **kwargs,
    )
