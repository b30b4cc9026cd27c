"""Per-case preprocessing: resampling to a target spacing (one value or one per axis), NaN check, z-score."""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.config import PreprocessConfig
from attnseg.errors import ConfigError, DataError
from attnseg.transforms.preprocess import preprocess, target_spacing


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


def test_target_spacing_is_one_value_for_all_axes_or_one_per_axis():
    assert target_spacing([1.5], 3) == (1.5, 1.5, 1.5)
    assert target_spacing((2.0,), 2) == (2.0, 2.0)
    assert target_spacing([0.8, 0.8, 2.0], 3) == (0.8, 0.8, 2.0)
    with pytest.raises(ConfigError, match=r"pass one positive value \(isotropic\) or 3"):
        target_spacing([1.0, 1.0], 3)
    with pytest.raises(ConfigError, match="positive"):
        target_spacing([0.0], 2)


def test_one_target_spacing_value_resamples_every_axis():
    image = np.arange(8 * 6 * 4, dtype=np.float32).reshape(1, 8, 6, 4) + 1
    label = np.zeros((8, 6, 4), np.uint8)
    label[2:6, 2:4, 0:2] = 2  # whole 2x2x2 blocks
    one = PreprocessConfig(normalization="none", target_spacing_mm=(2.0,))
    per_axis = PreprocessConfig(normalization="none", target_spacing_mm=(2.0, 2.0, 2.0))
    a_img, a_lbl, a_spacing = preprocess(image, label, (1.0, 1.0, 1.0), one, classes=[0, 2])
    b_img, b_lbl, b_spacing = preprocess(image, label, (1.0, 1.0, 1.0), per_axis, classes=[0, 2])
    assert a_img.shape == (1, 4, 3, 2) and a_spacing == b_spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lbl, b_lbl)
    # a 2x2x2 block average of a linear ramp is the ramp at the block centre
    assert a_img[0, 0, 0, 0] == pytest.approx(image[0, :2, :2, :2].mean())
    expected = np.zeros((4, 3, 2), np.uint8)
    expected[1:3, 1, 0] = 2
    np.testing.assert_array_equal(a_lbl, expected)
    assert a_lbl.dtype == np.uint8
    with pytest.raises(ConfigError, match=r"case c3 has 3 spatial axes"):
        preprocess(image, None, (1.0, 1.0, 1.0), PreprocessConfig(target_spacing_mm=(1.0, 1.0)), case_id="c3")
