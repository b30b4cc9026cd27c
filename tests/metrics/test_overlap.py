"""Overlap metrics on hand-made masks: every value below is computed by hand in the comment."""

import numpy as np
import pytest
import torch

from attnseg.metrics.overlap import confusion, dice, iou, overlap_metrics


def test_two_by_two_table():
    # pred 1 1 / 0 0, truth 1 0 / 1 0: TP 1 (top-left), FP 1, FN 1, TN 1
    pred = np.array([[1, 1], [0, 0]])
    truth = np.array([[1, 0], [1, 0]])
    c = confusion(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 1)
    m = overlap_metrics(pred, truth, spacing_mm=(2.0, 3.0))
    assert m["dice"] == pytest.approx(0.5)  # 2*1 / (2 + 2)
    assert m["iou"] == pytest.approx(1 / 3)  # 1 / 3
    for key in ("sensitivity", "specificity", "precision", "fpr", "fnr"):
        assert m[key] == pytest.approx(0.5)
    assert m["pred_volume_mm3"] == pytest.approx(12.0)  # 2 voxels of 6 mm^3
    assert m["volume_diff_mm3"] == 0.0


def test_nested_masks_and_volumes():
    truth = np.zeros((10, 10, 10), bool)
    truth[2:4, 2:4, 2:4] = True  # 8 voxels
    pred = np.zeros_like(truth)
    pred[2:4, 2:4, 2:5] = True  # 12 voxels, 8 of them in the truth
    m = overlap_metrics(pred, truth, spacing_mm=(0.5, 0.5, 2.0))  # 0.5 mm^3 per voxel
    assert m["dice"] == pytest.approx(16 / 20)
    assert m["iou"] == pytest.approx(8 / 12)
    assert m["sensitivity"] == 1.0 and m["fnr"] == 0.0
    assert m["precision"] == pytest.approx(8 / 12)
    assert m["fpr"] == pytest.approx(4 / (1000 - 8))
    assert m["specificity"] == pytest.approx(1 - 4 / 992)
    assert m["truth_volume_mm3"] == pytest.approx(4.0)
    assert m["pred_volume_mm3"] == pytest.approx(6.0)
    assert m["volume_diff_mm3"] == pytest.approx(2.0)
    assert m["volume_diff_ml"] == pytest.approx(0.002)
    assert m["volume_diff_rel"] == pytest.approx(0.5)


def test_empty_conventions_never_nan():
    empty = np.zeros((4, 4), bool)
    full = np.zeros((4, 4), bool)
    full[1, 1] = True
    both = overlap_metrics(empty, empty)
    assert both["dice"] == 1.0 and both["iou"] == 1.0
    assert both["sensitivity"] == 1.0 and both["precision"] == 1.0 and both["specificity"] == 1.0
    assert both["fpr"] == 0.0 and both["fnr"] == 0.0 and both["volume_diff_rel"] == 0.0
    missed = overlap_metrics(empty, full)  # prediction empty, truth not
    assert missed["dice"] == 0.0 and missed["iou"] == 0.0
    assert missed["sensitivity"] == 0.0 and missed["fnr"] == 1.0
    assert missed["precision"] == 1.0  # nothing was falsely claimed
    assert missed["volume_diff_rel"] == -1.0
    extra = overlap_metrics(full, empty)  # truth empty, prediction not
    assert extra["dice"] == 0.0
    assert extra["sensitivity"] == 1.0 and extra["fnr"] == 0.0  # nothing to miss
    assert extra["precision"] == 0.0 and extra["fpr"] == pytest.approx(1 / 16)
    assert extra["volume_diff_rel"] == 1.0  # 1 voxel over a one-voxel floor
    for m in (both, missed, extra):
        assert all(np.isfinite(v) for v in m.values())


def test_specificity_when_truth_is_all_foreground():
    full = np.ones((3, 3), bool)
    m = overlap_metrics(full, full)
    assert m["specificity"] == 1.0 and m["fpr"] == 0.0


def test_torch_and_numpy_agree_and_nonzero_is_foreground():
    pred = torch.tensor([[0, 2, 2], [0, 0, 1]])
    truth = np.array([[0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    assert dice(pred, truth) == pytest.approx(2 * 2 / (3 + 2))
    assert iou(pred, torch.from_numpy(truth)) == pytest.approx(2 / 3)


def test_confusion_with_n_total_counts_outside_voxels_as_true_negatives():
    c = confusion(np.ones(2, bool), np.array([True, False]), n_total=10)
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 0, 8)
    with pytest.raises(ValueError):
        confusion(np.ones(2, bool), np.ones(2, bool), n_total=1)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))
