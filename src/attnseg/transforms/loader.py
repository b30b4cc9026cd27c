"""Cases to training batches: the one data pipeline, used by ``attnseg train`` and the Python API.

1. :class:`CaseStore` decodes and preprocesses each case once
   (:func:`attnseg.transforms.preprocess.preprocess`), finds where each class lies, and keeps the
   result in a :class:`~attnseg.transforms.cache.VolumeCache` (memory, or ``.npy`` memory maps that
   a later run reuses); it hands out :class:`PreparedCase` objects.
2. :class:`~attnseg.transforms.batch_plan.BatchPlan` says which case and patch size every sample of
   an epoch has, as keys ``(case_index, epoch, position, patch_size)``: a pure function of the seed,
   split exactly between DDP ranks.
3. :class:`PatchDataset` turns a key into a patch: the random choices are drawn from
   ``np.random.default_rng([seed, epoch, position])`` (``params_for`` returns them, the sampler's
   ``apply`` replays them), so a sample does not depend on the worker, the worker count or the rank.
4. :func:`make_loader` is the DataLoader over a dataset and one epoch's plan.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from attnseg.config import AugmentConfig, PreprocessConfig, to_dict
from attnseg.datasets import load_case
from attnseg.datasets.masks2d import mask_set_encoding
from attnseg.errors import ConfigError, DataError
from attnseg.transforms.batch_plan import BatchPlan
from attnseg.transforms.cache import VolumeCache, file_key
from attnseg.transforms.preprocess import preprocess
from attnseg.transforms.sampling import (
    ComponentLocations,
    PatchSampler,
    SampleParams,
    class_locations,
    component_locations,
)

PatchKey = tuple[int, int, int, tuple[int, ...]]  # (case_index, epoch, position, patch_size)


@dataclass
class PreparedCase:
    """One preprocessed case: image ``(C, *spatial)`` float32 (normalised), label ``(*spatial)`` with
    the dataset's label values (None for unlabelled cases), the voxel spacing after preprocessing
    (mm), and where each foreground class lies (``locations``: value -> voxel indices ``(N, D)``;
    None until :class:`PatchDataset` needs them) and each connected component of the foreground
    (``components``, for lesion-aware sampling; None until needed)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing_mm: tuple[float, ...]
    locations: dict[int, np.ndarray] | None = field(default=None, repr=False)
    components: ComponentLocations | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


class CaseStore:
    """Prepared cases of a dataset, decoded and preprocessed once and kept in a :class:`VolumeCache`.

    ``dataset``: an ``attnseg.datasets.Dataset``. ``classes``: the label values, background first
    (default: the dataset's declared values); a label with another value is refused. ``cache``:
    where prepared volumes live (default: in memory up to 2 GiB, no disk). ``store[i]`` is the
    prepared case ``case_ids[i]``, so a store can stand where a list of cases is expected.
    ``ignore_label``: unannotated voxels, never indexed as foreground locations or components.
    """

    def __init__(
        self,
        dataset: Any,
        preprocess: PreprocessConfig | None = None,
        cache: VolumeCache | None = None,
        *,
        classes: Sequence[int] | None = None,
        case_ids: Sequence[str] | None = None,
        ignore_label: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.ignore_label = None if ignore_label is None else int(ignore_label)
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
        if self.ignore_label is not None:  # entries cached without an ignore label keep their key
            self._settings += f"ignore={self.ignore_label}"
        if dataset.spatial_dims == 2:  # decide the 2D mask encoding once, before workers
            mask_set_encoding(dataset)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> PreparedCase:
        return self.get(self.case_ids[index])

    def key(self, case_id: str) -> str:
        case = self.dataset.case(case_id)
        files = list(case.images) + ([case.label] if case.label is not None else [])
        channels = self.dataset.info.get("channel_indices")
        return file_key(files, self._settings + repr(channels))

    def _check(self, case: Any, image: np.ndarray, label: np.ndarray | None) -> None:
        if image.ndim - 1 != self.dataset.spatial_dims:
            raise DataError(
                f"case {case.case_id}: image {case.images[0]} is {image.ndim - 1}D (shape "
                f"{tuple(image.shape[1:])}); the dataset is {self.dataset.spatial_dims}D, and one model "
                "trains on one kind (attnseg check lists the odd cases)"
            )
        if label is not None and self.classes is not None:
            # checked here, on the file's values: resampling and augmentation only ever produce
            # declared values, so an undeclared one would otherwise vanish or fail mid-training
            extra = sorted(set(np.unique(label).tolist()) - set(self.classes))
            if extra:
                voxels = ", ".join(f"{v}: {int((label == v).sum())} voxels" for v in extra[:5])
                raise DataError(
                    f"case {case.case_id}: label {case.label} has value(s) {extra} ({voxels}); the dataset "
                    f"declares {sorted(self.classes)}. Fix the label map or declare the value (attnseg check "
                    "lists every such case)"
                )

    def _produce(self, case_id: str) -> dict:
        case = self.dataset.case(case_id)
        image, label, meta = load_case(case, self.dataset)
        self._check(case, image, label)
        dims = image.ndim - 1
        spacing = tuple(meta.spacing_mm)[:dims] if meta.spacing_mm else (1.0,) * dims
        image, label, spacing = preprocess(image, label, spacing, self.preprocess, self.classes, case_id)
        entry: dict = {"image": image}
        fg = None if self.classes is None else self.classes[1:]
        if label is not None:
            entry["label"] = np.ascontiguousarray(label)
            for k, idx in class_locations(label, fg, ignore_label=self.ignore_label).items():
                entry[f"loc_{k}"] = idx
            components = component_locations(label, fg, ignore_label=self.ignore_label)
            entry["components_voxels"], entry["components_starts"] = components.voxels, components.starts
        entry["meta"] = {"spacing_mm": list(spacing)}
        return entry

    def get(self, case_id: str) -> PreparedCase:
        entry = self.cache.get(self.key(case_id), lambda: self._produce(case_id))
        locations = {int(k[4:]): v for k, v in entry.items() if k.startswith("loc_")}
        components = None
        if "components_starts" in entry:  # absent from entries cached before lesion-aware sampling
            components = ComponentLocations(entry["components_voxels"], entry["components_starts"])
        return PreparedCase(
            case_id,
            entry["image"],
            entry.get("label"),
            tuple(entry["meta"]["spacing_mm"]),
            locations if "label" in entry else None,
            components,
        )

    def preload(self) -> None:
        """Prepare every case now (in the main process, before DataLoader workers start)."""
        for case_id in self.case_ids:
            self.get(case_id)


class PatchDataset(torch.utils.data.Dataset):
    """Training patches by plan key: ``(case_index, epoch, position, patch_size) -> (image
    (C, *patch) float32, target, case_index)``.

    ``cases``: prepared cases (a list, or a :class:`CaseStore`, which prepares them on first use).
    ``augment``: the augmentation settings; None = plain crops (foreground oversampling at the
    default rate, no other change). ``classes``: the label values, background first (foreground
    oversampling and label interpolation use them; default: the values present). ``encode``: label
    patch -> training target, e.g. class indices or region masks (default: the label values as
    they are). ``seed``: with the key, it fixes every random choice of the patch.
    ``ignore_label``: the value of unannotated voxels (``LabelScheme.ignore_label``): interpolated
    like a class, never a foreground class to centre patches on.
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        augment: AugmentConfig | None,
        *,
        seed: int,
        classes: Sequence[int] | None = None,
        encode: Callable[[np.ndarray], np.ndarray] | None = None,
        ignore_label: int | None = None,
    ):
        if len(cases) == 0:
            raise ConfigError("no cases to sample patches from")
        self.cases = cases
        self.augment = augment if augment is not None else AugmentConfig()
        self.use_augment = augment is not None
        self.seed = int(seed)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.encode = encode
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self._samplers: dict[tuple[int, ...], PatchSampler] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def sampler(self, patch_size: Sequence[int]) -> PatchSampler:
        """The patch sampler for one patch size (multi-scale training uses several)."""
        patch_size = tuple(int(p) for p in patch_size)
        if patch_size not in self._samplers:
            self._samplers[patch_size] = PatchSampler(
                patch_size,
                self.augment,
                classes=self.classes,
                augment=self.use_augment,
                ignore_label=self.ignore_label,
            )
        return self._samplers[patch_size]

    def case(self, index: int) -> PreparedCase:
        """Case ``index``, labelled, with its class locations when foreground oversampling needs them."""
        case = self.cases[index]
        if case.label is None:
            raise DataError(f"case {case.case_id}: no label; training cases need one")
        if self.augment.fg_fraction > 0:
            fg = None if self.classes is None else self.classes[1:]
            if case.locations is None:
                case.locations = class_locations(case.label, fg, ignore_label=self.ignore_label)
            if case.components is None and self.augment.fg_sampling == "component":
                case.components = component_locations(case.label, fg, ignore_label=self.ignore_label)
        return case

    def params_for(self, key: PatchKey, case: PreparedCase | None = None) -> SampleParams:
        """The random choices behind the patch of ``key`` (``sampler(key[3]).apply`` replays them)."""
        index, epoch, position, patch_size = key
        case = self.case(index) if case is None else case
        rng = np.random.default_rng([self.seed, epoch, position])
        return self.sampler(patch_size).draw(
            rng,
            case.image.shape[1:],
            channels=case.image.shape[0],
            locations=case.locations,
            spacing_mm=case.spacing_mm,
            components=case.components,
        )

    def __getitem__(self, key: PatchKey) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, _, _, patch_size = key
        case = self.case(index)
        image, label = self.sampler(patch_size).apply(case.image, case.label, self.params_for(key, case))
        try:
            target = label if self.encode is None else self.encode(label)
        except DataError as exc:
            raise DataError(f"case {case.case_id}: {exc}") from None
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(target)),
            index,
        )


def seed_worker(worker_id: int) -> None:
    """Seed numpy's and Python's global generators in a worker from torch's per-worker seed
    (our transforms use explicit generators; this covers third-party code that does not)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: PatchDataset, plan: BatchPlan, num_workers: int = 0) -> DataLoader:
    """The DataLoader of one epoch: ``plan`` (that epoch's :class:`BatchPlan`) is its batch sampler.

    Workers are forked when the loader is iterated: cases already in memory (a list, or a store
    after ``preload()``) are shared copy-on-write; a disk cache's memory maps through the page cache.
    """
    return DataLoader(
        dataset,
        batch_sampler=plan,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=False,
        worker_init_fn=seed_worker if num_workers > 0 else None,
    )
