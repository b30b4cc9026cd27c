"""Decoded-volume cache, prepared cases, and the seeded Dataset/DataLoader path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from attnseg.config import AugmentConfig, PreprocessConfig
from attnseg.transforms.cache import VolumeCache, file_key
from attnseg.transforms.loader import CaseStore, PatchDataset, make_loader
from attnseg.transforms.sampling import PatchSampler


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
    # other preprocessing is another entry
    other = CaseStore(phantom_dataset, PreprocessConfig(target_spacing_mm=(10.0,)), cache=store.cache).get(
        "Phantom_001"
    )
    assert other.image.shape == (4, 16, 16, 12) and other.spacing_mm == (10.0, 10.0, 10.0)
    assert set(np.unique(other.label).tolist()) <= {0, 1, 2, 4}


def _dataset(phantom_dataset, target="labels", regions=None):
    cfg = AugmentConfig(p_rotate=1, p_elastic=1, p_gamma=1, p_noise=1, fg_fraction=0.5)
    sampler = PatchSampler((16, 16, 16), cfg, classes=[0, 1, 2, 4])
    store = CaseStore(phantom_dataset)
    return PatchDataset(store, sampler, samples_per_epoch=6, seed=11, target=target, regions=regions)


def test_items_are_replayable_and_targets(phantom_dataset):
    ds = _dataset(phantom_dataset)
    item = ds[7]
    assert item["image"].shape == (4, 16, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["index"] == 7
    again = _dataset(phantom_dataset)[7]
    assert torch.equal(item["image"], again["image"]) and torch.equal(item["label"], again["label"])
    case = ds.store.get(ds.case_for(7))
    img, lbl = ds.sampler.apply(case.image, case.label, ds.params_for(7))
    np.testing.assert_array_equal(img, item["image"].numpy())
    # each epoch visits every case (6 samples, 3 cases: each twice)
    assert sorted(ds.case_for(g) for g in range(6, 12)) == sorted(ds.store.case_ids * 2)
    idx = _dataset(phantom_dataset, "indices")[7]["label"]
    np.testing.assert_array_equal(idx.numpy(), np.searchsorted([0, 1, 2, 4], item["label"].numpy()))
    regions = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    reg = _dataset(phantom_dataset, "regions", regions)[7]["label"]
    assert reg.shape == (3, 16, 16, 16) and reg.dtype == torch.float32
    np.testing.assert_array_equal(reg[0].numpy() == 1, item["label"].numpy() > 0)


def test_loader_batches_do_not_depend_on_workers(phantom_dataset):
    ds = _dataset(phantom_dataset)
    ds.store.preload()
    serial = make_loader(ds, batch_size=3, num_workers=0)
    parallel = make_loader(ds, batch_size=3, num_workers=2)
    for epoch in (0, 1):
        serial.sampler.set_epoch(epoch)
        parallel.sampler.set_epoch(epoch)
        a, b = list(serial), list(parallel)
        assert len(a) == len(b) == 2
        for x, y in zip(a, b):
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
            assert x["case_id"] == y["case_id"]
    assert [b["index"].tolist() for b in a] == [[6, 7, 8], [9, 10, 11]]
