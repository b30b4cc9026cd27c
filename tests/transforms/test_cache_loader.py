"""Decoded-volume cache, prepared cases, and the seeded patch Dataset/DataLoader (the one training-data path)."""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import pytest
import torch

from attnseg.config import AugmentConfig, PreprocessConfig
from attnseg.datasets.regions import labels_to_indices, labels_to_regions
from attnseg.errors import ConfigError, DataError
from attnseg.transforms.batch_plan import BatchPlan
from attnseg.transforms.cache import VolumeCache, file_key
from attnseg.transforms.loader import CaseStore, PatchDataset, PreparedCase, make_loader


def test_file_key_follows_path_size_and_mtime(tmp_path):
    f = tmp_path / "a.nii.gz"
    f.write_bytes(b"12345")
    k1 = file_key([f])
    assert file_key([f]) == k1 and file_key([f], "zscore") != k1
    os.utime(f, ns=(1, 10**18))
    k2 = file_key([f])
    assert k2 != k1
    f.write_bytes(b"123456")
    os.utime(f, ns=(1, 10**18))
    assert file_key([f]) != k2


def test_memory_then_disk_then_warm_start(tmp_path):
    calls = []

    def produce(n):
        def make():
            calls.append(n)
            return {"image": np.full((2, 10, 10), n, np.float32), "meta": {"n": n}}

        return make

    cache = VolumeCache(tmp_path / "cache", memory_bytes=1000)  # one 800-byte entry fits
    a = cache.get("a", produce(1))
    assert cache.get("a", produce(1)) is a and calls == [1]
    b = cache.get("b", produce(2))  # over budget: written as .npy, read back as a memory map
    assert isinstance(b["image"], np.memmap) and b["image"].flags.writeable
    assert (tmp_path / "cache" / "b" / "image.npy").is_file()
    np.testing.assert_array_equal(b["image"], 2)
    assert b["meta"] == {"n": 2}
    b["image"][0, 0, 0] = 99  # copy-on-write: the file is untouched
    assert cache.stats == {"memory_hits": 1, "disk_hits": 0, "misses": 2}
    fresh = VolumeCache(tmp_path / "cache", memory_bytes=0)  # a later run
    np.testing.assert_array_equal(fresh.get("b", produce(3))["image"], 2)
    assert calls == [1, 2] and fresh.stats["disk_hits"] == 1
    nodisk = VolumeCache(None, memory_bytes=0)
    nodisk.get("c", produce(4))
    nodisk.get("c", produce(4))
    assert calls == [1, 2, 4, 4]
    with pytest.raises(ValueError, match="cache_dir"):
        VolumeCache(None, mode="disk")


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    from attnseg.datasets import discover
    from attnseg.phantom import write_phantom_dataset

    root = write_phantom_dataset(
        tmp_path_factory.mktemp("ph") / "demo", 3, seed=1, shape=(32, 32, 24), spacing_mm=5.0
    )
    return discover(root)


def test_case_store_normalises_once_and_locates_classes(phantom_dataset, tmp_path):
    store = CaseStore(phantom_dataset, cache=VolumeCache(tmp_path / "c", memory_bytes=0, mode="disk"))
    case = store.get("Phantom_001")
    brain = np.any(case.image != 0, axis=0)
    for c in range(4):
        assert abs(case.image[c][brain].mean()) < 1e-3 and abs(case.image[c][brain].std() - 1) < 1e-3
    assert case.spacing_mm == (5.0, 5.0, 5.0)
    for k, idx in case.locations.items():
        assert k in (1, 2, 4) and (case.label[tuple(idx.T)] == k).all()
    assert store.cache.stats["misses"] == 1
    store.get("Phantom_001")
    assert store.cache.stats["disk_hits"] == 1
    assert store[store.case_ids.index("Phantom_001")].case_id == "Phantom_001" and len(store) == 3
    # other preprocessing is another entry
    other = CaseStore(phantom_dataset, PreprocessConfig(target_spacing_mm=(10.0,)), cache=store.cache).get(
        "Phantom_001"
    )
    assert other.image.shape == (4, 16, 16, 12) and other.spacing_mm == (10.0, 10.0, 10.0)
    assert set(np.unique(other.label).tolist()) <= {0, 1, 2, 4}


def _dataset(phantom_dataset, encode=None, seed=11):
    cfg = AugmentConfig(p_rotate=1, p_elastic=1, p_gamma=1, p_noise=1, fg_fraction=0.5)
    store = CaseStore(phantom_dataset)
    return PatchDataset(store, cfg, seed=seed, classes=[0, 1, 2, 4], encode=encode)


def test_patches_are_a_function_of_the_key_and_replayable(phantom_dataset):
    ds = _dataset(phantom_dataset)
    key = (1, 0, 3, (16, 16, 16))
    image, label, index = ds[key]
    assert image.shape == (4, 16, 16, 16) and image.dtype == torch.float32
    assert label.shape == (16, 16, 16) and label.dtype == torch.int64 and index == 1
    again = ds[key]
    assert torch.equal(image, again[0]) and torch.equal(label, again[1])
    fresh = _dataset(phantom_dataset)[key]  # another process would build its own dataset
    assert torch.equal(image, fresh[0]) and torch.equal(label, fresh[1])
    other = ds[(1, 0, 4, (16, 16, 16))]  # same case, another position: other random choices
    assert not torch.equal(image, other[0])
    assert not torch.equal(image, _dataset(phantom_dataset, seed=12)[key][0])
    # the random choices come from default_rng([seed, epoch, position]) and replay exactly
    case = ds.case(1)
    params = ds.params_for(key)
    sampler = ds.sampler((16, 16, 16))
    drawn = sampler.draw(
        np.random.default_rng([11, 0, 3]),
        case.shape,
        channels=4,
        locations=case.locations,
        spacing_mm=case.spacing_mm,
    )
    assert params.to_dict() == drawn.to_dict()
    img, lbl = sampler.apply(case.image, case.label, params)
    np.testing.assert_array_equal(img, image.numpy())
    np.testing.assert_array_equal(lbl, label.numpy())
    # a patch of another size (multi-scale training) from the same key numbers
    assert ds[(1, 0, 3, (8, 16, 16))][0].shape == (4, 8, 16, 16)


def test_targets_are_encoded_by_the_given_function(phantom_dataset):
    key = (2, 1, 7, (16, 16, 16))
    _, label, _ = _dataset(phantom_dataset)[key]
    _, idx, _ = _dataset(phantom_dataset, partial(labels_to_indices, values=[0, 1, 2, 4]))[key]
    np.testing.assert_array_equal(idx.numpy(), np.searchsorted([0, 1, 2, 4], label.numpy()))
    regions = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    _, reg, _ = _dataset(phantom_dataset, partial(labels_to_regions, regions=regions))[key]
    assert reg.shape == (3, 16, 16, 16) and reg.dtype == torch.uint8
    np.testing.assert_array_equal(reg[0].numpy() == 1, label.numpy() > 0)
    np.testing.assert_array_equal(reg[2].numpy() == 1, label.numpy() == 4)
    undeclared = _dataset(phantom_dataset, partial(labels_to_indices, values=[0, 1, 2]))
    with pytest.raises(
        DataError, match=rf"case {undeclared.cases.case_ids[2]}: label values \[4\] are not among"
    ):
        undeclared[key]


def test_unlabelled_cases_are_refused_by_name():
    case = PreparedCase("u1", np.zeros((1, 8, 8), np.float32), None, (1.0, 1.0))
    with pytest.raises(DataError, match="case u1: no label"):
        PatchDataset([case], None, seed=0)[(0, 0, 0, (8, 8))]
    with pytest.raises(ConfigError, match="no cases"):
        PatchDataset([], None, seed=0)


def test_loader_batches_do_not_depend_on_workers(phantom_dataset):
    ds = _dataset(phantom_dataset)
    ds.cases.preload()

    def plan(epoch):
        return BatchPlan(
            n_cases=len(ds.cases), epoch=epoch, micro_batches=2, batch_size=3, seed=11, base_patch=(16,) * 3
        )

    for epoch in (0, 1):
        serial = list(make_loader(ds, plan(epoch), num_workers=0))
        parallel = list(make_loader(ds, plan(epoch), num_workers=2))
        assert len(serial) == len(parallel) == 2
        for (x, y, i), (xp, yp, ip) in zip(serial, parallel):
            assert torch.equal(x, xp) and torch.equal(y, yp) and torch.equal(i, ip)
            assert x.shape == (3, 4, 16, 16, 16)
        # each epoch visits every case (6 samples, 3 cases: each twice), in a seeded order per epoch
        indices = [i for _, _, batch in serial for i in batch.tolist()]
        assert sorted(indices) == [0, 0, 1, 1, 2, 2]
        assert indices == [k[0] for batch in plan(epoch) for k in batch]
