"""Property tests (hypothesis) for what tests/metrics and tests/transforms do not already cover.

Already there: transforms keep labels in the declared set under any spatial augmentation
(tests/transforms/test_spatial.py::test_labels_stay_in_the_declared_set) and identity / mirror
params give exact crops (::test_identity_and_mirror_params_are_exact_crops). Added here: the metric
properties (symmetry, ranges, HD95 <= HD, padding invariance, scaling with spacing, never NaN),
label resampling keeping the declared set, and identity intensity params for any patch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attnseg.metrics import average_surface_distance, dice, hausdorff_distance, iou
from attnseg.transforms import IntensityParams, apply_intensity, resample_to_spacing

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mask_pairs(draw, nonempty=True):
    """Two boolean masks of one 2D or 3D shape (edges 1..7) and an anisotropic spacing."""
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=ndim, max_size=ndim)))
    a = draw(arrays(bool, shape))
    b = draw(arrays(bool, shape))
    if nonempty:
        a.flat[draw(st.integers(0, a.size - 1))] = True
        b.flat[draw(st.integers(0, b.size - 1))] = True
    spacing = tuple(draw(st.lists(st.floats(0.25, 7.0), min_size=ndim, max_size=ndim)))
    return a, b, spacing


def _distances(a, b, spacing, method="auto"):
    """HD, HD95 (max and pooled conventions) and ASSD in mm, one thread (the shapes are tiny)."""
    one = {"method": method, "threads": 1}
    return (
        hausdorff_distance(a, b, spacing, **one),
        hausdorff_distance(a, b, spacing, 95, **one),
        hausdorff_distance(a, b, spacing, 95, convention="pooled", **one),
        average_surface_distance(a, b, spacing, **one),
    )


# the distance transform works in float32: equal to ~1e-7 relative, not to the last bit
FLOAT32 = 1e-6


@FAST
@given(mask_pairs(nonempty=False))
def test_overlap_is_symmetric_bounded_and_consistent(pair):
    a, b, _ = pair
    d, j = dice(a, b), iou(a, b)
    assert d == dice(b, a) and j == iou(b, a)
    assert 0.0 <= j <= d <= 1.0
    assert d == pytest.approx(2 * j / (1 + j))
    assert dice(a, a) == 1.0  # also for an empty mask: both empty is a perfect match


@FAST
@given(mask_pairs(nonempty=False))
def test_distances_are_symmetric_ordered_and_never_nan(pair):
    a, b, spacing = pair
    hd, hd95, hd95_pooled, assd = _distances(a, b, spacing)
    assert (hd, hd95, hd95_pooled, assd) == pytest.approx(_distances(b, a, spacing), rel=FLOAT32)
    assert all(math.isfinite(v) and v >= 0 for v in (hd, hd95, hd95_pooled, assd))
    assert hd95 <= hd * (1 + FLOAT32) and hd95_pooled <= hd * (1 + FLOAT32) and assd <= hd * (1 + FLOAT32)
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(a.shape, spacing)))
    assert hd <= diagonal * (1 + FLOAT32)  # no distance inside the volume is longer than its diagonal
    assert _distances(a, a, spacing) == (0.0, 0.0, 0.0, 0.0)


@FAST
@given(mask_pairs(), st.integers(0, 3), st.integers(0, 3))
def test_padding_with_background_changes_nothing(pair, before, after):
    """The array border counts as background, so zeros around both masks leave every value as it
    is (for non-empty masks; the empty-mask distance is the volume diagonal, which padding grows)."""
    a, b, spacing = pair
    pad = [(before, after)] * a.ndim
    pa, pb = np.pad(a, pad), np.pad(b, pad)
    assert dice(pa, pb) == dice(a, b)
    assert _distances(pa, pb, spacing) == pytest.approx(_distances(a, b, spacing), rel=FLOAT32)


@FAST
@given(mask_pairs(), st.floats(0.1, 10.0))
def test_distances_scale_with_the_spacing(pair, factor):
    a, b, spacing = pair
    scaled = tuple(factor * s for s in spacing)
    expected = tuple(factor * v for v in _distances(a, b, spacing))
    assert _distances(a, b, scaled) == pytest.approx(expected, rel=FLOAT32)


@FAST
@given(mask_pairs())
def test_kdtree_and_distance_transform_agree(pair):
    a, b, spacing = pair
    assert _distances(a, b, spacing, "kdtree") == pytest.approx(_distances(a, b, spacing, "edt"), rel=FLOAT32)


@FAST
@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(2, 9)),
        elements=st.sampled_from([0, 1, 2, 4]),
    ),
    st.tuples(*[st.floats(0.5, 3.0)] * 3),
    st.tuples(*[st.floats(0.5, 3.0)] * 3),
)
def test_label_resampling_keeps_the_declared_values(label, spacing, target):
    out, _ = resample_to_spacing(label, spacing, target, is_label=True, classes=[0, 1, 2, 4])
    assert out.dtype == label.dtype
    assert set(np.unique(out).tolist()) <= {0, 1, 2, 4}


@FAST
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(-1e3, 1e3, width=32),
    ),
    st.integers(0, 2**31 - 1),
)
def test_identity_intensity_params_are_the_identity(patch, seed):
    channels = patch.shape[0]
    for params in (
        IntensityParams(),
        IntensityParams(
            gamma=(1.0,) * channels, scale=(1.0,) * channels, shift=(0.0,) * channels, noise_seed=seed
        ),
    ):
        assert params.is_identity
        np.testing.assert_array_equal(apply_intensity(patch, params), patch)
