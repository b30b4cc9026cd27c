"""Lesion-aware foreground sampling: a component uniformly, then a voxel in it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnseg.config import AugmentConfig
from attnseg.transforms.sampling import (
    ComponentLocations,
    PatchSampler,
    SampleParams,
    choose_patch_start,
    class_locations,
    component_locations,
)


def _lesions(shape=(48, 48, 48)):
    """One 12^3 lesion (1728 voxels), one 2^3 lesion (8), one single voxel, all class 2 but one voxel
    of class 4 inside the big one (still one component)."""
    label = np.zeros(shape, np.uint8)
    label[4:16, 4:16, 4:16] = 2
    label[10, 10, 10] = 4
    label[30:32, 30:32, 30:32] = 2
    label[40, 8, 40] = 2
    return label


def test_component_locations_group_voxels_by_component():
    label = _lesions()
    comps = component_locations(label)
    assert comps.n == 3
    sizes = np.diff(comps.starts)
    assert sorted(sizes.tolist()) == [1, 8, 1728]
    for i in range(comps.n):
        vox = comps.voxels[comps.starts[i] : comps.starts[i + 1]]
        assert (label[tuple(vox.T)] > 0).all()
        span = vox.max(0) - vox.min(0)
        assert span.max() <= 11  # one component's voxels stay within its lesion
    capped = component_locations(label, max_per_component=100)
    assert sorted(np.diff(capped.starts).tolist()) == [1, 8, 100]
    np.testing.assert_array_equal(capped.voxels, component_locations(label, max_per_component=100).voxels)
    assert component_locations(label, classes=[4]).n == 1  # only the class-4 voxel
    assert component_locations(np.zeros((4, 4, 4), np.uint8)).n == 0


def test_small_components_are_centred_as_often_as_large_ones():
    label = _lesions()
    comps = component_locations(label)
    sizes = np.diff(comps.starts)
    n = 6000
    rng = np.random.default_rng(0)
    chosen = np.zeros(comps.n)
    for _ in range(n):
        start, comp = choose_patch_start(label.shape, (16, 16, 16), rng, None, 1.0, components=comps)
        chosen[comp] += 1
    # uniform over the 3 components whatever their size (1, 8 and 1728 voxels): each 1/3 (binomial
    # sd 0.006 at n = 6000); by voxel they would get 0.06 %, 0.5 % and 99.5 %
    assert sorted(sizes.tolist()) == [1, 8, 1728]
    np.testing.assert_allclose(chosen / n, 1 / 3, atol=0.025)


def test_sampler_in_component_mode_records_the_component_and_replays():
    label = _lesions()
    image = np.random.default_rng(1).standard_normal((1, *label.shape)).astype(np.float32)
    cfg = AugmentConfig(fg_fraction=1.0, fg_sampling="component")
    sampler = PatchSampler((16, 16, 16), cfg, classes=[0, 2, 4], augment=False)
    comps = component_locations(label, [2, 4])
    hits = set()
    for seed in range(30):
        params = sampler.draw(np.random.default_rng(seed), label.shape, components=comps)
        assert params.forced_class is None and params.forced_component in (0, 1, 2)
        hits.add(params.forced_component)
        _, lbl = sampler.apply(image, label, params)
        assert lbl.any()  # every patch holds its lesion, the single voxel included
        again = SampleParams.from_dict(params.to_dict())
        assert again == params
    assert hits == {0, 1, 2}
    # called with a label, the sampler finds the components itself
    _, lbl = sampler(image, label, np.random.default_rng(3))
    assert lbl.any()
    with pytest.raises(ValueError, match="fg_sampling"):
        PatchSampler((16, 16, 16), AugmentConfig(fg_sampling="lesion"))
    with pytest.raises(ValueError, match="component_locations"):
        sampler.draw(np.random.default_rng(0), label.shape)


def test_class_mode_is_unchanged_by_the_new_option():
    label = _lesions()
    locs = class_locations(label)
    cfg = AugmentConfig(fg_fraction=0.7)
    sampler = PatchSampler((16, 16, 16), cfg, classes=[0, 2, 4])
    comps = component_locations(label)
    for seed in range(10):
        a = sampler.draw(np.random.default_rng(seed), label.shape, locations=locs)
        b = sampler.draw(np.random.default_rng(seed), label.shape, locations=locs, components=comps)
        assert a == b and a.forced_component is None


def test_patch_dataset_samples_by_component(tmp_path):
    from attnseg.transforms.loader import PatchDataset, PreparedCase

    label = _lesions()
    image = np.zeros((1, *label.shape), np.float32)
    case = PreparedCase("c", image, label, (1.0, 1.0, 1.0))
    ds = PatchDataset(
        [case], AugmentConfig(fg_fraction=1.0, fg_sampling="component"), seed=0, classes=[0, 2, 4]
    )
    counts = np.zeros(3)
    for position in range(600):
        counts[ds.params_for((0, 0, position, (16, 16, 16))).forced_component] += 1
    assert isinstance(ds.case(0).components, ComponentLocations)
    np.testing.assert_allclose(counts / 600, 1 / 3, atol=0.07)


def test_case_store_keeps_the_components_of_a_small_lesion_phantom(tmp_path):
    from attnseg.datasets import discover
    from attnseg.phantom import SmallLesionSettings, write_phantom_dataset
    from attnseg.transforms.cache import VolumeCache
    from attnseg.transforms.loader import CaseStore

    root = write_phantom_dataset(
        tmp_path / "p",
        1,
        seed=2,
        shape=(32, 32, 32),
        spacing_mm=1.0,
        small_lesions=SmallLesionSettings(lesions=(3, 3)),
    )
    store = CaseStore(discover(root), cache=VolumeCache(tmp_path / "c", memory_bytes=0, mode="disk"))
    first = store.get("Phantom_000")
    again = store.get("Phantom_000")  # read back from disk
    assert store.cache.stats["disk_hits"] == 1
    assert first.components.n == again.components.n == component_locations(first.label > 0).n
    np.testing.assert_array_equal(first.components.voxels, again.components.voxels)
    n_lesions = len(json.loads((root / "phantom.json").read_text())["cases"]["Phantom_000"]["lesions"])
    assert first.components.n == n_lesions  # one component per placed lesion


def test_component_locations_leave_the_ignore_label_out():
    """Unannotated voxels (the ignore label) are never a lesion to centre a patch on."""
    label = np.zeros((10, 10, 10), np.uint8)
    label[1:3, 1:3, 1:3] = 1  # one lesion of 8 voxels
    label[5:9, 5:9, 5:9] = 2  # an unannotated block
    label[3, 1:3, 1:3] = 2  # touching the lesion: must not join it
    comps = component_locations(label, [1, 2], ignore_label=2)
    assert comps.starts.tolist() == [0, 8]
    assert set(label[tuple(comps.voxels.T)].tolist()) == {1}
    assert component_locations(label, [1, 2]).starts.tolist() == [0, 12, 76]
