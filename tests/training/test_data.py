"""The data order and targets: pure functions of the seed, shared by every rank."""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.config import AugmentConfig, PreprocessConfig
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError, DataError
from attnseg.training.data import (
    BatchPlan,
    PatchDataset,
    draw_patch_size,
    epoch_case_order,
    preprocess,
    scaled_patch_size,
)
from attnseg.training.plan import derive_batch_size, derive_patch_size, median_shape


def test_scaled_patch_size_keeps_multiples_of_stride():
    assert scaled_patch_size((64, 64, 48), 1.0, 8) == (64, 64, 48)
    assert scaled_patch_size((52,), 1.0, 8) == (56,)  # 6.5 strides -> 7 (half up, not to even)
    assert scaled_patch_size((64, 64, 48), 1.25, 8) == (80, 80, 64)  # 60 / 8 = 7.5 rounds up
    assert scaled_patch_size((64, 64, 48), 0.75, 16) == (48, 48, 32)  # 36/16 = 2.25 -> 2
    assert scaled_patch_size((16,), 0.1, 8) == (8,)  # never below one stride


def test_draw_patch_size_is_seeded_and_in_range():
    sizes = {draw_patch_size(0, 3, m, (64, 64), (0.5, 1.5), 8) for m in range(50)}
    assert all(s[0] % 8 == 0 and 32 <= s[0] <= 96 and s[0] == s[1] for s in sizes)
    assert len(sizes) > 5
    assert draw_patch_size(0, 3, 7, (64, 64), (0.5, 1.5), 8) == draw_patch_size(
        0, 3, 7, (64, 64), (0.5, 1.5), 8
    )
    assert draw_patch_size(0, 3, 7, (64, 64), None, 8) == (64, 64)
    with pytest.raises(ConfigError):
        draw_patch_size(0, 0, 0, (64,), (1.5, 0.5), 8)


def test_epoch_case_order_visits_every_case_once_per_pass():
    order = epoch_case_order(5, 12, seed=1, epoch=0)
    assert sorted(order[:5]) == [0, 1, 2, 3, 4] and sorted(order[5:10]) == [0, 1, 2, 3, 4]
    assert len(order) == 12
    assert np.array_equal(order, epoch_case_order(5, 12, seed=1, epoch=0))
    assert not np.array_equal(order, epoch_case_order(5, 12, seed=1, epoch=1))


def test_ranks_split_the_same_global_batch():
    common = dict(
        n_cases=7, epoch=2, micro_batches=3, seed=0, base_patch=(32, 32), stride=8, multiscale=(0.5, 1.5)
    )
    single = list(BatchPlan(batch_size=4, **common))
    ranks = [list(BatchPlan(batch_size=2, rank=r, world_size=2, **common)) for r in range(2)]
    for m in range(3):
        assert single[m] == ranks[0][m] + ranks[1][m]
    # starting mid-epoch yields the tail of the same plan
    assert list(BatchPlan(batch_size=4, start=1, **common)) == single[1:]


def test_patch_dataset_is_deterministic_per_key(cases, target):
    train, _ = cases
    ds = PatchDataset(train, target, AugmentConfig(), seed=5)
    key = (1, 0, 3, (16, 16))
    a, b = ds[key], ds[key]
    assert np.array_equal(a[0].numpy(), b[0].numpy()) and np.array_equal(a[1].numpy(), b[1].numpy())
    assert a[0].shape == (1, 16, 16) and a[1].shape == (16, 16) and a[2] == 1
    other = ds[(1, 0, 4, (16, 16))]
    assert not np.array_equal(a[0].numpy(), other[0].numpy())


def test_target_encoding():
    brats = LabelScheme.from_labels(
        {"background": 0, "ncr": 1, "ed": 2, "et": 4}, {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    )
    assert brats.kind == "regions" and brats.out_channels == 3 and brats.activation == "sigmoid"
    label = np.array([[0, 1], [2, 4]])
    assert brats.encode(label).tolist() == [[[0, 1], [1, 1]], [[0, 1], [0, 1]], [[0, 0], [0, 1]]]
    classes = LabelScheme.from_labels({"background": 0, "ncr": 1, "ed": 2, "et": 4}, kind="labels")
    assert classes.encode(label).tolist() == [[0, 1], [2, 3]]
    assert classes.channel_names == ["ncr", "ed", "et"]
    with pytest.raises(DataError, match=r"\[3\]"):
        classes.encode(np.array([0, 3]))
    with pytest.raises(ConfigError):
        LabelScheme.from_labels({"background": 0, "a": 1}, kind="regions")


def test_preprocess_normalises_and_refuses_nan():
    image = np.zeros((1, 4, 4), np.float32)
    image[0, 1:3, 1:3] = [[1, 2], [3, 4]]
    out, _, spacing = preprocess(image, None, (1.0, 1.0), PreprocessConfig())
    inside = out[0, 1:3, 1:3]
    assert inside.mean() == pytest.approx(0.0, abs=1e-6) and inside.std() == pytest.approx(1.0, abs=1e-5)
    assert out[0, 0, 0] == 0.0 and spacing == (1.0, 1.0)
    image[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="case c7: image has 1 NaN"):
        preprocess(image, None, (1.0, 1.0), PreprocessConfig(), case_id="c7")


def test_derived_patch_and_batch_sizes():
    assert median_shape([(10, 20), (30, 40), (20, 60)]) == (20, 40)
    # hippocampus-like: the whole median case fits -> rounded up to the stride
    assert derive_patch_size((36, 50, 35), 8, 64**3) == (40, 56, 40)
    # BraTS-like within 128^3: shrink the largest axis first
    patch = derive_patch_size((240, 240, 155), 16, 128**3)
    assert all(p % 16 == 0 for p in patch) and np.prod(patch) <= 128**3
    assert patch == (128, 128, 128)
    assert derive_patch_size((100, 100), 16, 64**2) == (64, 64)
    assert derive_batch_size((40, 56, 40), 64**3) == 2
    assert derive_batch_size((16, 16), 64**2) == 8  # 16 fit the budget; capped at 8
    assert derive_batch_size((16, 16), 64**2, n_cases=5) == 5
    assert derive_batch_size((16, 16), 64**2, n_cases=1) == 2
