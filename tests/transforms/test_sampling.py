"""Foreground oversampling, replay, class weights and the weight map."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from attnseg.config import AugmentConfig
from attnseg.transforms.sampling import (
    PatchSampler,
    SampleParams,
    choose_patch_start,
    class_locations,
    class_weights,
    label_counts,
    voxel_weight_map,
)


def _label(shape=(40, 40, 40)):
    label = np.zeros(shape, np.uint8)
    label[5:15, 5:15, 5:15] = 2  # 1000 voxels
    label[25:27, 25:27, 25:27] = 1  # 8 voxels
    label[20, 28, 3] = 4  # a single voxel: the rare class
    return label


def test_class_locations_point_at_their_class_and_are_capped():
    label = _label()
    locs = class_locations(label)
    assert sorted(locs) == [1, 2, 4]
    assert locs[1].shape == (8, 3) and locs[4].tolist() == [[20, 28, 3]]
    for k, idx in locs.items():
        assert (label[tuple(idx.T)] == k).all()
    capped = class_locations(label, [2], max_per_class=100)
    assert capped[2].shape == (100, 3) and (label[tuple(capped[2].T)] == 2).all()
    np.testing.assert_array_equal(capped[2], class_locations(label, [2], max_per_class=100)[2])


def test_forced_voxel_is_inside_the_patch_even_at_the_edge():
    rng = np.random.default_rng(0)
    locs = {4: np.array([[0, 39, 20]])}
    for _ in range(20):
        start, forced = choose_patch_start((40, 40, 40), (16, 16, 16), rng, locs, fg_fraction=1.0)
        assert forced == 4
        assert start == (0, 24, 13)
    start, forced = choose_patch_start((10, 40, 40), (16, 16, 16), rng, None, fg_fraction=1.0)
    assert forced is None and -6 <= start[0] <= 0 and 0 <= start[1] <= 24


def test_foreground_oversampling_ratio_and_class_balance():
    label = _label()
    locs = class_locations(label)
    rng = np.random.default_rng(123)
    n, p = 3000, 0.33
    counts = {1: 0, 2: 0, 4: 0}
    forced_total = 0
    for _ in range(n):
        start, forced = choose_patch_start(label.shape, (8, 8, 8), rng, locs, fg_fraction=p)
        if forced is not None:
            forced_total += 1
            counts[forced] += 1
            patch = label[tuple(slice(s, s + 8) for s in start)]
            assert (patch == forced).any()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(forced_total - n * p) < 4 * sigma, forced_total
    # each class present is chosen with probability 1/3 given a forced draw, the 1-voxel class too
    for k in counts:
        q = forced_total / 3
        assert abs(counts[k] - q) < 4 * math.sqrt(forced_total * (1 / 3) * (2 / 3)), counts


def test_sampler_replay_is_exact_and_survives_json():
    rng = np.random.default_rng(5)
    image = rng.standard_normal((2, 40, 40, 40)).astype(np.float32)
    label = _label()
    cfg = AugmentConfig(
        p_rotate=1, p_zoom=1, p_elastic=1, p_flip=0.5, p_gamma=1, p_scale=1, p_shift=1, p_noise=1
    )
    sampler = PatchSampler((24, 20, 16), cfg, classes=[0, 1, 2, 4])
    params = sampler.draw(
        np.random.default_rng(9), image.shape[1:], channels=2, locations=class_locations(label)
    )
    img, lbl = sampler.apply(image, label, params)
    recorded = json.loads(json.dumps(params.to_dict()))
    replayed = SampleParams.from_dict(recorded)
    assert replayed == params
    img2, lbl2 = sampler.apply(image, label, replayed)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lbl, lbl2)
    # the same seed draws the same sample; another seed does not
    a = sampler(image, label, np.random.default_rng(9))
    b = sampler(image, label, np.random.default_rng(9))
    c = sampler(image, label, np.random.default_rng(10))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert img.shape == (2, 24, 20, 16) and img.dtype == np.float32 and lbl.dtype == np.int64
    assert set(np.unique(lbl).tolist()) <= {0, 1, 2, 4}


def test_full_augmentation_keeps_labels_in_the_set_both_modes():
    rng = np.random.default_rng(1)
    label = _label((30, 30, 30))
    image = rng.standard_normal((1, 30, 30, 30)).astype(np.float32)
    for mode in ("nearest", "linear"):
        cfg = AugmentConfig(
            p_rotate=1, p_zoom=1, p_elastic=1, fg_fraction=1.0, label_mode=mode, elastic_std_mm=3
        )
        sampler = PatchSampler((16, 16, 16), cfg, classes=[0, 1, 2, 4])
        for _ in range(10):
            _, lbl = sampler(image, label, rng)
            assert set(np.unique(lbl).tolist()) <= {0, 1, 2, 4}


def test_no_augmentation_is_a_plain_crop():
    rng = np.random.default_rng(2)
    image = rng.standard_normal((1, 30, 30, 30)).astype(np.float32)
    label = _label((30, 30, 30))
    sampler = PatchSampler((10, 10, 10), classes=[0, 1, 2, 4], augment=False)
    params = sampler.draw(np.random.default_rng(3), (30, 30, 30))
    img, lbl = sampler.apply(image, label, params)
    s = params.spatial.start_vox
    np.testing.assert_array_equal(img, image[:, s[0] : s[0] + 10, s[1] : s[1] + 10, s[2] : s[2] + 10])
    np.testing.assert_array_equal(lbl, label[s[0] : s[0] + 10, s[1] : s[1] + 10, s[2] : s[2] + 10])


def test_2d_sampler():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 64, 48)).astype(np.float32)
    label = np.zeros((64, 48), np.uint8)
    label[10:20, 10:20] = 1
    cfg = AugmentConfig(p_rotate=1, p_elastic=1, fg_fraction=1.0, flip_axes=(0, 1))
    img, lbl = PatchSampler((32, 32), cfg, classes=[0, 1])(image, label, rng)
    assert img.shape == (3, 32, 32) and lbl.shape == (32, 32) and lbl.any()


def test_class_weights_by_hand():
    np.testing.assert_allclose(class_weights([90, 10]), [1 / 1.8, 5.0], rtol=1e-6)
    np.testing.assert_allclose(class_weights([50, 30, 20], "median"), [0.6, 1.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(class_weights([90, 0, 10]), [1 / 1.8, 0.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(class_weights([1, 2], "none"), [1, 1])
    with pytest.raises(ValueError, match="method"):
        class_weights([1, 2], "bogus")
    assert label_counts(_label(), [0, 1, 2, 4]).tolist() == [64000 - 1009, 8, 1000, 1]


def test_voxel_weight_map_by_hand():
    label = np.array([[[0, 0, 0, 1, 1, 1]]])
    w = voxel_weight_map(label, [0, 1], [1.0, 2.0])
    np.testing.assert_allclose(w[0, 0], [1, 1, 1, 2, 2, 2])
    w = voxel_weight_map(label, [0, 1], [1.0, 2.0], border_weight=10.0, border_sigma_mm=1.0)
    d = np.array([3, 2, 1, 1, 2, 3], float)
    np.testing.assert_allclose(w[0, 0], np.array([1, 1, 1, 2, 2, 2]) + 10 * np.exp(-(d**2) / 2), rtol=1e-5)
    # spacing in mm: 2 mm voxels double the distances
    w = voxel_weight_map(
        label, [0, 1], [0.0, 0.0], border_weight=1.0, border_sigma_mm=2.0, spacing_mm=(1, 1, 2)
    )
    np.testing.assert_allclose(w[0, 0], np.exp(-((2 * d) ** 2) / 8), rtol=1e-5)


# --- the ignore label: never a foreground class ----------------------------------------------------
def _sparse_label(shape=(30, 30, 30)):
    """Classes 1 and 2 in small blocks, most of the volume label 3 (not annotated)."""
    label = np.full(shape, 3, np.uint8)
    label[:, :, :6] = 0  # an annotated background slab
    label[10:13, 10:13, 2:5] = 1
    label[20:22, 5:7, 1:3] = 2
    return label


def test_class_locations_never_index_the_ignore_label():
    label = _sparse_label()
    assert sorted(class_locations(label)) == [1, 2, 3]  # no ignore label: 3 is a class like any other
    assert sorted(class_locations(label, ignore_label=3)) == [1, 2]
    assert sorted(class_locations(label, [1, 2, 3], ignore_label=3)) == [1, 2]


@pytest.mark.parametrize("label_mode", ["nearest", "linear"])
def test_the_sampler_never_centres_on_ignored_voxels(label_mode):
    label = _sparse_label()
    image = np.zeros((1, *label.shape), np.float32)
    cfg = AugmentConfig(fg_fraction=1.0, p_rotate=1.0, rotate_deg=20.0, label_mode=label_mode)
    sampler = PatchSampler((8, 8, 8), cfg, classes=[0, 1, 2, 3], ignore_label=3)
    locations = class_locations(label)  # a cache may hold the ignore label's voxels: never used
    rng = np.random.default_rng(0)
    forced = [sampler.draw(rng, label.shape, locations=locations).forced_class for _ in range(300)]
    assert set(forced) == {1, 2}
    # a case with nothing annotated but background: uniform crops, never "foreground" on 3
    only_ignored = np.where(label == 3, 3, 0).astype(np.uint8)
    rng = np.random.default_rng(1)
    draws = [sampler(image, only_ignored, rng) for _ in range(5)]
    assert all(
        sampler.draw(rng, label.shape, locations=class_locations(only_ignored)).forced_class is None
        for _ in range(50)
    )
    # ignored voxels stay ignored through the (rotated) resampling of the label
    assert all(set(np.unique(lbl)) <= {0, 3} for _, lbl in draws)
    assert any((lbl == 3).any() for _, lbl in draws)
