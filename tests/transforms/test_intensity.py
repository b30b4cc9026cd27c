"""Normalisation and intensity augmentation on hand-made values."""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.transforms.intensity import (
    IntensityParams,
    apply_intensity,
    clip_percentiles,
    nonzero_mask,
    normalize_zscore,
)


def test_zscore_inside_the_nonzero_region():
    image = np.array([[[0.0, 0.0, 1.0, 3.0]], [[0.0, 0.0, 10.0, 10.0]]], np.float32)  # (2, 1, 4)
    out = normalize_zscore(image)
    # channel 0: values {1, 3} -> mean 2, std 1; channel 1 is constant inside -> 0
    np.testing.assert_allclose(out[0, 0], [0, 0, -1, 1])
    np.testing.assert_allclose(out[1, 0], [0, 0, 0, 0])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(nonzero_mask(image)[0], [False, False, True, True])


def test_zscore_whole_volume_and_explicit_mask():
    image = np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32)
    out = normalize_zscore(image, nonzero=False)
    std = np.std([1, 2, 3, 4])
    np.testing.assert_allclose(out[0, 0], (np.array([1, 2, 3, 4]) - 2.5) / std, rtol=1e-6)
    mask = np.array([[True, True, False, False]])
    out = normalize_zscore(image, mask)
    np.testing.assert_allclose(out[0, 0], [-1, 1, 0, 0])
    with pytest.raises(ValueError, match="mask shape"):
        normalize_zscore(image, np.ones((2, 2), bool))


def test_percentile_clipping():
    image = np.arange(101, dtype=np.float32).reshape(1, 101)
    out = clip_percentiles(image, 10, 90)
    assert out.min() == 10 and out.max() == 90
    out = normalize_zscore(image, nonzero=False, clip=(10, 90))
    clipped = np.clip(np.arange(101.0), 10, 90)
    np.testing.assert_allclose(out[0], (clipped - clipped.mean()) / clipped.std(), rtol=1e-5, atol=1e-6)


def test_intensity_identity_gamma_scale_shift():
    patch = np.array([[0.0, 0.5, 1.0], [2.0, 2.0, 2.0]], np.float32)
    np.testing.assert_array_equal(apply_intensity(patch, IntensityParams()), patch)
    np.testing.assert_array_equal(apply_intensity(patch, IntensityParams(gamma=(1.0, 1.0))), patch)
    out = apply_intensity(patch, IntensityParams(gamma=(2.0, 2.0)))
    np.testing.assert_allclose(out[0], [0.0, 0.25, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[1], [2.0, 2.0, 2.0])  # constant channel unchanged
    # range [-1, 3]: 1 -> 0.5 -> 0.25 -> -1 + 0.25 * 4 = 0
    out = apply_intensity(np.array([[-1.0, 1.0, 3.0]], np.float32), IntensityParams(gamma=(2.0,)))
    np.testing.assert_allclose(out[0], [-1.0, 0.0, 3.0], atol=1e-6)
    out = apply_intensity(patch, IntensityParams(scale=(2.0, 0.5), shift=(1.0, -1.0)))
    np.testing.assert_allclose(out, [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert patch[0, 1] == 0.5  # the input is not modified


def test_noise_is_replayable_from_its_seed():
    patch = np.zeros((2, 40, 40, 40), np.float32)
    a = apply_intensity(patch, IntensityParams(noise_std=0.1, noise_seed=7))
    b = apply_intensity(patch, IntensityParams(noise_std=0.1, noise_seed=7))
    c = apply_intensity(patch, IntensityParams(noise_std=0.1, noise_seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert abs(a.std() - 0.1) < 0.002


def test_params_round_trip():
    p = IntensityParams(gamma=(0.8, 1.2), scale=None, shift=(0.1, 0.0), noise_std=0.05, noise_seed=3)
    assert IntensityParams.from_dict(p.to_dict()) == p


def test_zscore_std_in_chunks_equals_numpy_and_needs_no_float64_copy():
    from attnseg.transforms.intensity import _std_float64

    rng = np.random.default_rng(7)
    values = (rng.standard_normal(10_001) * 3.0 + 50.0).astype(np.float32)
    mean = float(values.mean(dtype=np.float64))
    expected = float(values.std(dtype=np.float64))
    for chunk in (1, 64, 1000, 1 << 22):  # the chunking changes only the order of float64 sums
        assert abs(_std_float64(values, mean, chunk=chunk) - expected) <= 1e-12 * expected
    assert _std_float64(np.zeros(0, np.float32), 0.0) == 0.0
    # the whole-volume branch (no mask) normalises in place into the output: same float32 numbers
    image = values[:10_000].reshape(1, 100, 100)
    out = normalize_zscore(image, nonzero=False)
    np.testing.assert_array_equal(out[0], (image[0] - mean_of(image)) * np.float32(1.0 / std_of(image)))


def mean_of(image):
    return float(image.mean(dtype=np.float64))


def std_of(image):
    return float(image.std(dtype=np.float64))
