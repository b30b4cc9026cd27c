"""attnseg.metrics.stats on hand-made values: the metric directions, the Wilcoxon signed-rank test,
the bootstrap interval, and the paired units (mean over runs, slices pooled into patients)."""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.metrics import evaluate_case
from attnseg.metrics.stats import (
    HIGHER_IS_BETTER,
    bootstrap_mean_ci,
    group_values,
    higher_is_better,
    mean_over_runs,
    paired_statistics,
)

# what evaluate_case reports that has no better side: sizes, and the signed volume difference
NO_DIRECTION = {
    "pred_volume_mm3",
    "truth_volume_mm3",
    "volume_diff_mm3",
    "volume_diff_ml",
    "volume_diff_rel",
    "n_truth_lesions",
    "n_pred_lesions",
    "n_small_lesions",
    *(f"n_truth_{b}" for b in ("lt3mm", "3to5mm", "5to10mm", "ge10mm")),  # truth lesions per size bin
}


# --- the one direction table --------------------------------------------------------------------------
def test_directions_by_hand():
    for metric in ("dice", "volume_dice", "iou", "sensitivity", "precision", "specificity", "tp_vox",
                   "lesion_sensitivity", "lesion_precision", "n_detected_lesions", "n_small_detected",
                   "small_lesion_sensitivity", "small_lesion_detection", "nsd_1mm", "nsd_0.5mm", "nsd_2mm"):  # fmt: skip
        assert higher_is_better(metric) is True, metric
    for metric in ("hd_mm", "hd95_mm", "hd97.5_mm", "hd100_mm", "assd_mm", "fpr", "fnr", "fp_vox", "fn_vox",
                   "n_fp_lesions", "small_lesion_fnr"):  # fmt: skip
        assert higher_is_better(metric) is False, metric


def test_metrics_without_a_direction_are_refused():
    for metric in (*NO_DIRECTION, "hd_95_mm", "DICE", "", "nsd_1_mm", "nsd1mm", "nsd_mm"):
        with pytest.raises(ValueError, match="no better direction"):
            higher_is_better(metric)


def test_every_metric_of_evaluate_case_has_a_direction_or_none_on_purpose():
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    pred = np.zeros_like(truth)
    pred[3:7, 2:6, 2:6] = 1
    for percentile in (95.0, 97.5):
        row = evaluate_case(
            pred, truth, (1.0, 1.0, 2.0), classes=[1], percentile=percentile, nsd_tolerances_mm=(0.5, 3)
        )["1"]
        directed = {m for m in row if m not in NO_DIRECTION}
        assert {"nsd_0.5mm", "nsd_3mm"} <= directed
        size_bins = {
            f"{c}_{b}" for c in ("n_detected", "n_fp") for b in ("lt3mm", "3to5mm", "5to10mm", "ge10mm")
        }
        assert size_bins <= directed
        assert directed == {
            m for m in directed if m in HIGHER_IS_BETTER or m.startswith(("hd", "nsd_")) or m in size_bins
        }
        for m in directed:
            assert isinstance(higher_is_better(m), bool), m


# --- the paired test and its interval -----------------------------------------------------------------
def test_wilcoxon_all_positive_differences():
    # 5 positive differences: W- = 0, exact two-sided p = 2 * P(W <= 0) = 2 / 2^5
    st = paired_statistics([0, 0, 0, 0, 0], [1, 2, 3, 4, 5])
    assert st["mean_diff"] == pytest.approx(3.0)
    assert st["mean_a"] == 0.0 and st["mean_b"] == pytest.approx(3.0)
    assert st["p_value"] == pytest.approx(2 / 32)
    assert st["min_p"] == pytest.approx(2 / 32)
    assert st["wilcoxon_statistic"] == 0.0
    assert (st["b_better"], st["b_worse"], st["n"], st["n_nonzero"]) == (5, 0, 5, 5)
    # the same numbers for a lower-is-better metric (a distance): B is worse in every case
    st = paired_statistics([0, 0, 0, 0, 0], [1, 2, 3, 4, 5], higher_is_better=False)
    assert (st["b_better"], st["b_worse"]) == (0, 5)


def test_wilcoxon_mixed_signs_by_hand():
    # differences 1, -2, 3, 4, 5, 6: ranks equal |d|; W- = 2; subsets of {1..6} with sum <= 2 are
    # {}, {1}, {2}: P(W <= 2) = 3/64, two-sided p = 6/64
    a = [10.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    b = [11.0, 8.0, 13.0, 14.0, 15.0, 16.0]
    st = paired_statistics(a, b)
    assert st["wilcoxon_statistic"] == 2.0
    assert st["p_value"] == pytest.approx(6 / 64)
    assert st["mean_diff"] == pytest.approx(17 / 6)
    assert (st["b_better"], st["b_worse"]) == (5, 1)


def test_no_difference_gives_p_one_and_a_point_interval():
    st = paired_statistics([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert st["p_value"] == 1.0 and st["n_nonzero"] == 0 and st["min_p"] == 1.0
    assert (st["ci_low"], st["ci_high"]) == (0.0, 0.0)
    assert (st["b_better"], st["b_worse"]) == (0, 0)


def test_zero_differences_are_dropped_from_the_test():
    # differences 0, 1, 2, 3, 4, 5 -> the test sees 1..5 only: the p of the all-positive case
    st = paired_statistics([0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5])
    assert st["n_nonzero"] == 5 and st["p_value"] == pytest.approx(2 / 32)
    assert st["mean_diff"] == pytest.approx(15 / 6)  # the mean difference keeps every case


def test_bootstrap_interval_by_hand():
    # constant differences: every resample has the same mean
    assert bootstrap_mean_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)
    # two cases with differences 0 and 2: resample means are 0, 1, 2 with probabilities 1/4, 1/2,
    # 1/4, so the 2.5% and 97.5% quantiles are 0 and 2
    assert bootstrap_mean_ci([0.0, 2.0], n_boot=4000, seed=3) == (0.0, 2.0)
    # an interval around the mean, reproducible for a seed
    x = [0.1, -0.2, 0.3, 0.05, 0.0, 0.15, -0.05, 0.2]
    lo, hi = bootstrap_mean_ci(x, seed=1)
    assert lo < np.mean(x) < hi
    assert bootstrap_mean_ci(x, seed=1) == (lo, hi)
    st = paired_statistics(np.zeros(8), x, seed=1)
    assert (st["ci_low"], st["ci_high"]) == (lo, hi)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        paired_statistics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_statistics([], [])
    with pytest.raises(ValueError):
        paired_statistics([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError):
        bootstrap_mean_ci([1.0], confidence=1.5)


def test_group_values_sums_counts_and_averages_rates():
    per_case = {
        "p1_1": {"x": {"dice": 1.0, "hd95_mm": 0.0, "n_small_detected": 1.0, "fp_vox": 3.0}},
        "p1_2": {"x": {"dice": 0.5, "hd95_mm": 4.0, "n_small_detected": 0.0, "fp_vox": 5.0}},
        "p2_1": {"x": {"dice": 0.2, "hd95_mm": 2.0, "n_small_detected": 2.0, "fp_vox": 0.0}},
    }
    groups = {"p1_1": "p1", "p1_2": "p1", "p2_1": "p2"}
    out = group_values(per_case, groups)
    assert list(out) == ["p1", "p2"]
    assert out["p1"]["x"] == {"dice": 0.75, "hd95_mm": 2.0, "n_small_detected": 1.0, "fp_vox": 8.0}
    assert out["p2"]["x"] == per_case["p2_1"]["x"]


def test_group_values_volume_dice_pools_the_slices_voxel_counts():
    # slice 1: tumour, half found; slice 2: tumour-free with 2 false-positive voxels (slice Dice 0)
    per_case = {
        "p1_1": {"t": {"dice": 2 * 4 / (2 * 4 + 0 + 4), "tp_vox": 4.0, "fp_vox": 0.0, "fn_vox": 4.0}},
        "p1_2": {"t": {"dice": 0.0, "tp_vox": 0.0, "fp_vox": 2.0, "fn_vox": 0.0}},
        "p2_1": {"t": {"dice": 1.0, "tp_vox": 0.0, "fp_vox": 0.0, "fn_vox": 0.0}},  # both empty
    }
    out = group_values(per_case, {"p1_1": "p1", "p1_2": "p1", "p2_1": "p2"})
    assert out["p1"]["t"]["dice"] == pytest.approx((2 / 3 + 0.0) / 2)  # the mean of slice Dice
    assert out["p1"]["t"]["volume_dice"] == pytest.approx(8 / (8 + 2 + 4))  # the patient's volume
    assert out["p2"]["t"]["volume_dice"] == 1.0


def test_a_lower_is_better_metric_counts_decreases_as_improvements():
    # HD95 of A and B on 4 cases: B is 1 mm better, 1 mm better, 2 mm worse, equal
    st = paired_statistics(
        [5.0, 6.0, 3.0, 4.0], [4.0, 5.0, 5.0, 4.0], higher_is_better=higher_is_better("hd95_mm")
    )
    assert (st["b_better"], st["b_worse"], st["n_nonzero"]) == (2, 1, 3)
    assert st["mean_diff"] == pytest.approx(0.0)
    # differences -1, -1, +2: ranks 1.5, 1.5, 3 (a tie), W = min(W+, W-) = 3
    assert st["wilcoxon_statistic"] == 3.0 and st["p_value"] == pytest.approx(1.0)


# --- paired units ---------------------------------------------------------------------------------------
def test_mean_over_runs_by_hand():
    per_run = {
        0: {"c1": {"t": {"dice": 0.5, "n_fp_lesions": 1.0}}, "c2": {"t": {"dice": 1.0, "n_fp_lesions": 0.0}}},
        1: {"c1": {"t": {"dice": 0.7, "n_fp_lesions": 2.0}}, "c2": {"t": {"dice": 0.8, "n_fp_lesions": 0.0}}},
    }
    out = mean_over_runs(per_run)
    assert list(out) == ["c1", "c2"]
    assert out["c1"]["t"] == {"dice": pytest.approx(0.6), "n_fp_lesions": 1.5}
    assert out["c2"]["t"] == {"dice": pytest.approx(0.9), "n_fp_lesions": 0.0}
    assert mean_over_runs({7: per_run[0]}) == per_run[0]
    with pytest.raises(ValueError):
        mean_over_runs({})
