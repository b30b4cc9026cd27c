"""Lesion detection per size bin (< 3, 3-5, 5-10, >= 10 mm by equivalent diameter): spheres and
boxes whose volumes, and so whose bins, are computed by hand."""

import json
import math

import numpy as np
import pytest

from attnseg.metrics.evaluate import evaluate_case, format_summary, parse_size_bins, pooled_metrics, summarize
from attnseg.metrics.lesions import (
    lesion_metrics,
    match_lesions,
    size_bin_metrics_from_match,
    size_bin_names,
    size_bin_of,
)
from attnseg.metrics.stats import higher_is_better


def sphere(shape, centre, radius_vox):
    grid = np.indices(shape, dtype=np.float64)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return d2 <= radius_vox**2


def test_bin_names_and_edges():
    assert size_bin_names() == ["lt3mm", "3to5mm", "5to10mm", "ge10mm"]
    assert size_bin_names((2.5, 7)) == ["lt2.5mm", "2.5to7mm", "ge7mm"]
    assert size_bin_names(()) == []
    np.testing.assert_array_equal(
        size_bin_of([0.5, 2.999, 3.0, 4.99, 5.0, 9.99, 10.0, 40.0]), [0, 0, 1, 1, 2, 2, 3, 3]
    )
    with pytest.raises(ValueError, match="increasing"):
        size_bin_names((5, 3))
    assert parse_size_bins("3,5,10") == (3.0, 5.0, 10.0) and parse_size_bins("none") == ()


def test_4mm_sphere_detected_when_touched_missed_when_not():
    truth = sphere((24, 24, 24), (12, 12, 12), 2.0)  # a 4 mm sphere at 1 mm voxels: 33 voxels
    n = int(truth.sum())
    assert n == 33
    d = (6 * n / math.pi) ** (1 / 3)  # 3.98 mm: the 3-5 mm bin
    assert 3.0 <= d < 5.0
    touch = np.zeros_like(truth)
    touch[14, 12, 12] = True  # one voxel of the sphere's edge
    hit = lesion_metrics(touch, truth, 1.0)
    assert hit["n_truth_3to5mm"] == 1 and hit["n_detected_3to5mm"] == 1 and hit["n_fp_lt3mm"] == 0
    assert hit["small_lesion_sensitivity"] == 1.0
    near = np.zeros_like(truth)
    near[15, 12, 12] = True  # the next voxel out: touches the sphere's edge voxel by a face, but is not in it
    miss = lesion_metrics(near, truth, 1.0)
    assert miss["n_truth_3to5mm"] == 1 and miss["n_detected_3to5mm"] == 0
    assert miss["n_fp_lt3mm"] == 1  # the stray voxel (d = 1.24 mm) is a false positive under 3 mm
    assert miss["small_lesion_sensitivity"] == 0.0
    assert all(miss[f"n_truth_{b}"] == 0 for b in ("lt3mm", "5to10mm", "ge10mm"))


def test_bins_are_counted_by_equivalent_diameter_in_mm_with_anisotropic_spacing():
    truth = np.zeros((40, 40, 20), bool)
    truth[2:4, 2:4, 2:4] = True  # 8 voxels x 2 mm^3 = 16 mm^3: d = 3.13 mm -> 3-5
    truth[10, 10, 10] = True  # 2 mm^3: d = 1.56 mm -> < 3
    truth[20:26, 20:26, 2:8] = True  # 216 voxels x 2 = 432 mm^3: d = 9.38 mm -> 5-10
    truth[30:38, 30:38, 5:12] = True  # 448 voxels x 2 = 896 mm^3: d = 11.96 mm -> >= 10
    pred = np.zeros_like(truth)
    pred[2, 2, 2] = True  # detects the 3-5 mm lesion
    pred[20:26, 20:26, 2:8] = True  # detects the 5-10 mm lesion
    pred[12:16, 2:6, 15:18] = True  # false positive: 48 x 2 = 96 mm^3, d = 5.68 mm -> 5-10
    pred[2, 30, 15] = True  # false positive: d = 1.56 mm -> < 3
    spacing = (1.0, 1.0, 2.0)
    m = lesion_metrics(pred, truth, spacing)
    expected = {
        "lt3mm": (1, 0, 1),
        "3to5mm": (1, 1, 0),
        "5to10mm": (1, 1, 1),
        "ge10mm": (1, 0, 0),
    }
    for b, (n, det, fp) in expected.items():
        assert (m[f"n_truth_{b}"], m[f"n_detected_{b}"], m[f"n_fp_{b}"]) == (n, det, fp), b
    # the same masks at 1 mm isotropic: every volume halves, and two lesions change bins
    iso = lesion_metrics(pred, truth, 1.0)
    assert iso["n_truth_lt3mm"] == 2  # 8 mm^3 (d = 2.48) and 1 mm^3
    assert iso["n_truth_5to10mm"] == 2  # 216 mm^3 (7.44) and 448 mm^3 (9.49)
    assert iso["n_fp_3to5mm"] == 1  # 48 mm^3: d = 4.51 mm
    # other edges
    match = match_lesions(pred, truth, spacing)
    coarse = size_bin_metrics_from_match(match, (5.0,))
    assert coarse == {
        "n_truth_lt5mm": 2.0, "n_detected_lt5mm": 1.0, "n_fp_lt5mm": 1.0,
        "n_truth_ge5mm": 2.0, "n_detected_ge5mm": 1.0, "n_fp_ge5mm": 1.0,
    }  # fmt: skip


def test_evaluate_pools_bins_over_cases_and_prints_them():
    truth = np.zeros((30, 30, 30), np.uint8)
    truth[sphere(truth.shape, (8, 8, 8), 2.0)] = 1  # 4 mm
    truth[20, 20, 20] = 1  # 1.24 mm
    pred_a = np.zeros_like(truth)
    pred_a[8, 8, 8] = 1  # finds the 4 mm lesion
    pred_a[25:27, 2:4, 2:4] = 1  # false positive, 8 voxels: d = 2.48 mm
    pred_b = np.zeros_like(truth)
    pred_b[20, 20, 20] = 1  # finds the 1.24 mm lesion
    per_case = {
        "a": evaluate_case(pred_a, truth, 1.0, classes=[1]),
        "b": evaluate_case(pred_b, truth, 1.0, classes=[1]),
    }
    pooled = pooled_metrics([per_case["a"]["1"], per_case["b"]["1"]])
    assert pooled["n_truth_lt3mm"] == 2 and pooled["n_detected_lt3mm"] == 1
    assert pooled["detection_rate_lt3mm"] == 0.5 and pooled["detection_rate_3to5mm"] == 0.5
    assert pooled["fp_per_case_lt3mm"] == 0.5 and pooled["fp_per_case_3to5mm"] == 0.0
    assert pooled["detection_rate_ge10mm"] == 1.0 and pooled["n_truth_ge10mm"] == 0  # vacuous, counts beside
    assert "lesion_sensitivity" in pooled and "detection_rate_lesions" not in pooled
    text = format_summary(summarize(per_case))
    assert "lesions lt3mm" in text and "1/2 detected, 0.50 false-positive lesions per case" in text
    assert evaluate_case(pred_a, truth, 1.0, classes=[1], size_bins_mm=())["1"].get("n_truth_lt3mm") is None


def test_directions_of_the_bin_counts():
    assert higher_is_better("n_detected_lt3mm") is True
    assert higher_is_better("n_fp_5to10mm") is False
    with pytest.raises(ValueError):
        higher_is_better("n_truth_lt3mm")


def test_rate_interval_and_paired_rates_by_hand():
    from attnseg.metrics.stats import bootstrap_rate_ci, paired_rate_statistics

    # two cases of one lesion each, one found: resampled rates 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4
    assert bootstrap_rate_ci([1, 0], [1, 1]) == (0.5, 0.0, 1.0)
    rate, lo, hi = bootstrap_rate_ci([2, 0, 5], [2, 0, 5])  # case 2 has no lesion: left out
    assert (rate, lo, hi) == (1.0, 1.0, 1.0)
    st = paired_rate_statistics([0, 1, 0, 0], [1, 1, 1, 0], [1, 2, 1, 0])
    assert st["n"] == 3 and st["lesions"] == 4
    assert st["rate_a"] == 0.25 and st["rate_b"] == 0.75 and st["rate_diff"] == 0.5
    assert st["fn_reduction"] == pytest.approx(1 - 1 / 3)  # A misses 3 lesions, B 1
    assert st["b_better"] == 2 and st["b_worse"] == 0 and st["p_value"] == pytest.approx(0.5)  # 2 / 2^2
    assert 0.0 <= st["ci_low"] <= 0.5 <= st["ci_high"] <= 1.0
    with pytest.raises(ValueError, match="no case has a lesion"):
        bootstrap_rate_ci([0, 0], [0, 0])


@pytest.mark.data
def test_real_brats_enhancing_foci_by_size():
    """The counts docs/compare.md quotes: BraTS 2018 ET components by equivalent diameter (26-connected)."""
    from tests.conftest import shared_dataset

    from attnseg.io.nifti import load_label

    root = shared_dataset("brats2018_flair_t1_wt")
    counts = {}
    for case in ("Brats18_2013_3_1", "Brats18_CBICA_AQN_1", "Brats18_TCIA01_425_1", "Brats18_TCIA02_370_1"):
        label, meta = load_label(root / case / f"{case}_seg.nii.gz")
        et = label == 4
        m = lesion_metrics(et, et, meta.spacing_mm)
        counts[case] = tuple(int(m[f"n_truth_{b}"]) for b in ("lt3mm", "3to5mm", "5to10mm", "ge10mm"))
        match = match_lesions(et, et, meta.spacing_mm)
        assert int(m["n_small_lesions"]) == int(np.sum(match.truth_diameter_mm < 5.0))
    assert counts == {
        "Brats18_2013_3_1": (7, 0, 0, 1),
        "Brats18_CBICA_AQN_1": (3, 0, 0, 1),
        "Brats18_TCIA01_425_1": (2, 0, 0, 1),
        "Brats18_TCIA02_370_1": (1, 2, 0, 1),
    }


def test_cli_size_bins_option(tmp_path, capsys):
    from attnseg.cli import main
    from attnseg.io.nifti import save_image

    truth = np.zeros((20, 20, 20), np.uint8)
    truth[sphere(truth.shape, (10, 10, 10), 2.0)] = 1  # 33 mm^3 at 1 mm: d = 3.98 mm
    pred = np.zeros_like(truth)
    pred[10, 10, 10] = 1
    for folder, arr in (("pred", pred), ("truth", truth)):
        save_image(
            tmp_path / folder / "case.nii.gz", arr, affine=np.diag([1.0, 1.0, 1.0, 1.0]), dtype=np.uint8
        )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "pred"),
                str(tmp_path / "truth"),
                "--out",
                str(out),
                "--size-bins-mm",
                "2,4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "lesions 2to4mm" in printed and "1/1 detected" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["size_bins_mm"] == [2.0, 4.0]
    assert (
        summary["pooled"]["1"]["detection_rate_2to4mm"] == 1.0
        and summary["pooled"]["1"]["n_truth_lt2mm"] == 0
    )
    header = (out / "metrics_per_case.csv").read_text().splitlines()[0].split(",")
    assert {"n_truth_lt2mm", "n_detected_2to4mm", "n_fp_ge4mm"} <= set(header)
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--size-bins-mm", "4,2"]) == 2
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--size-bins-mm", "none"]) == 0
    assert "lesions lt" not in capsys.readouterr().out
