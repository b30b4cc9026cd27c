"""Training targets (label map -> classes or regions) and the patch and batch sizes derived from the data.

The data order, patches and preprocessing are tested with their code in ``tests/transforms``.
"""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError, DataError
from attnseg.training.plan import derive_batch_size, derive_patch_size, median_shape


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
