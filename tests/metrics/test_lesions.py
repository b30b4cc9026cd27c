"""Lesion counting and detection on synthetic multi-lesion masks with hand-counted answers."""

import math

import numpy as np
import pytest

from attnseg.metrics.lesions import (
    connected_components,
    equivalent_diameter_mm,
    lesion_metrics,
    match_lesions,
)


def test_connectivity_conventions():
    diag3 = np.zeros((4, 4, 4), bool)
    diag3[0, 0, 0] = diag3[1, 1, 1] = True  # touching by a corner
    assert connected_components(diag3)[1] == 1  # 26-connectivity by default
    assert connected_components(diag3, connectivity=6)[1] == 2
    diag2 = np.zeros((4, 4), bool)
    diag2[0, 0] = diag2[1, 1] = True
    assert connected_components(diag2)[1] == 1  # 8-connectivity by default in 2D
    assert connected_components(diag2, connectivity=4)[1] == 2
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(diag2, connectivity=26)


def test_equivalent_diameter():
    # a 5 mm sphere has volume pi/6 * 125 = 65.45 mm^3; a 5 mm disc has area pi/4 * 25
    assert equivalent_diameter_mm(math.pi / 6 * 125, 3) == pytest.approx(5.0)
    assert equivalent_diameter_mm(math.pi / 4 * 25, 2) == pytest.approx(5.0)
    assert equivalent_diameter_mm(1.0, 3) == pytest.approx((6 / math.pi) ** (1 / 3))


def multi_lesion_case():
    """Truth: 5 lesions; prediction: 4 components. Answers counted by hand below."""
    truth = np.zeros((40, 40, 40), bool)
    pred = np.zeros_like(truth)
    truth[2:8, 2:8, 2:8] = True  # A: 216 mm^3 (d = 7.4 mm), large, detected by P1
    pred[4:10, 4:10, 4:10] = True  # P1 overlaps A
    truth[20:23, 20:23, 20:23] = True  # B: 27 mm^3 (d = 3.7 mm), small, detected by P2
    pred[22, 22, 22] = True  # P2: one voxel inside B
    truth[30, 30, 30] = True  # C: 1 mm^3, small, missed
    truth[2:4, 30:32, 2:4] = True  # D: 8 mm^3 (d = 2.5 mm), small, detected by P3 together with E
    truth[2:4, 35:37, 2:4] = True  # E: 8 mm^3, small, detected by P3
    pred[2, 30:37, 2] = True  # P3: a bar joining D and E
    pred[35:38, 2:5, 30:33] = True  # P4: false positive
    return pred, truth


def test_multi_lesion_counts_by_hand():
    pred, truth = multi_lesion_case()
    m = lesion_metrics(pred, truth)
    assert m["n_truth_lesions"] == 5
    assert m["n_pred_lesions"] == 4
    assert m["n_detected_lesions"] == 4  # A, B, D, E
    assert m["n_fp_lesions"] == 1  # P4
    assert m["lesion_sensitivity"] == pytest.approx(4 / 5)
    assert m["lesion_precision"] == pytest.approx(3 / 4)
    assert m["n_small_lesions"] == 4  # B, C, D, E (< 5 mm)
    assert m["n_small_detected"] == 3
    assert m["small_lesion_sensitivity"] == pytest.approx(3 / 4)
    assert m["small_lesion_fnr"] == pytest.approx(1 / 4)


def test_small_lesion_threshold_and_spacing():
    pred, truth = multi_lesion_case()
    # raise the threshold above A's 7.4 mm: all 5 are small
    assert lesion_metrics(pred, truth, small_lesion_diameter_mm=8.0)["n_small_lesions"] == 5
    # with 2 mm voxels, B is 27 * 8 = 216 mm^3 (d = 7.4 mm): no longer small at 5 mm
    m = lesion_metrics(pred, truth, spacing_mm=2.0)
    assert m["n_small_lesions"] == 3  # C (8 mm^3), D and E (64 mm^3, d = 4.97 mm)
    match = match_lesions(pred, truth, spacing_mm=(1.0, 1.0, 2.0))
    assert sorted(match.truth_volume_mm3.tolist()) == [2.0, 16.0, 16.0, 54.0, 432.0]
    assert match.truth_detected.sum() == 4 and match.pred_matched.sum() == 3


def test_empty_masks_are_vacuous_not_nan():
    empty = np.zeros((5, 5, 5), bool)
    one = empty.copy()
    one[2, 2, 2] = True
    both = lesion_metrics(empty, empty)
    assert (
        both["n_truth_lesions"] == 0 and both["lesion_sensitivity"] == 1.0 and both["lesion_precision"] == 1.0
    )
    assert both["small_lesion_sensitivity"] == 1.0 and both["small_lesion_fnr"] == 0.0
    missed = lesion_metrics(empty, one)
    assert missed["lesion_sensitivity"] == 0.0 and missed["small_lesion_fnr"] == 1.0
    assert missed["lesion_precision"] == 1.0
    extra = lesion_metrics(one, empty)
    assert extra["lesion_precision"] == 0.0 and extra["n_fp_lesions"] == 1
    for m in (both, missed, extra):
        assert all(np.isfinite(v) for v in m.values())


def test_2d_lesions():
    truth = np.zeros((20, 20), bool)
    truth[1:3, 1:3] = True  # 4 mm^2 -> d = 2.26 mm: small
    truth[10:16, 10:16] = True  # 36 mm^2 -> d = 6.8 mm
    pred = np.zeros_like(truth)
    pred[12, 12] = True
    m = lesion_metrics(pred, truth)
    assert (m["n_truth_lesions"], m["n_detected_lesions"], m["n_small_lesions"], m["n_small_detected"]) == (
        2,
        1,
        1,
        0,
    )


def test_components_agree_with_scipy_on_random_masks():
    """Labels 1..n, every foreground voxel labelled, background 0, n equal to scipy's count; and the
    small-lesion count never exceeds the lesion count (cc3d 4.1.1 broke both on boolean input)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(200):
        ndim = int(rng.choice([2, 3]))
        mask = rng.random(tuple(rng.integers(5, 40, size=ndim))) < rng.uniform(0.05, 0.6)
        mask = mask[(slice(1, None),) * ndim]  # a non-contiguous view, like a cropped box
        labels, n = connected_components(mask)
        _, n_ref = ndimage.label(mask, structure=np.ones((3,) * ndim))
        assert n == n_ref and labels.max() == n
        np.testing.assert_array_equal(labels > 0, mask)
        m = lesion_metrics(mask, mask[::-1].copy() if ndim == 2 else mask, 1.0)
        assert m["n_small_lesions"] <= m["n_truth_lesions"]
