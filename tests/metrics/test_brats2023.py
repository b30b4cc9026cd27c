"""BraTS 2023 lesion-wise scores on hand-made cases whose values are computed by hand in the comments,
against a plain reading of the rules on random cases, and through ``attnseg evaluate --convention``."""

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from attnseg.cli import main
from attnseg.errors import ConfigError
from attnseg.metrics import brats2023_lesion_wise, dice, evaluate_case, hausdorff_distance
from attnseg.metrics.brats2023 import (
    challenge_parameters,
    lesion_wise_match,
    lesion_wise_scores,
)
from attnseg.metrics.stats import higher_is_better


def hand_case():
    """2023 labels (1 NETC, 2 SNFH, 3 ET) on a 48^3 grid at 1 mm; lesions at least 12 voxels apart.

    A (label 1, 64 voxels): predicted exactly.           Dice 1,   HD95 0
    B (label 3, 4x4x10 = 160): predicted without the slab z = 8-9, i.e. in two pieces of 64 voxels,
      both matched: Dice 2 * 128 / (128 + 160) = 8/9; HD95 1 (the slab's faces are 1 mm from a piece;
      the pieces' inner faces are 1 mm from B's side walls; > 5% of either surface, so p95 = 1).
    C (label 2, 64): missed.                             Dice 0,   HD95 374
    F (label 2, 64): predicted where no truth is: one false positive, Dice 0, HD95 374.
    D (label 3, 3x3x3 = 27 <= 50): predicted exactly, but under the volume threshold: dropped, and
      its predicted component is no false positive.
    """
    truth = np.zeros((48, 48, 48), np.uint8)
    pred = np.zeros_like(truth)
    truth[4:8, 4:8, 4:8] = pred[4:8, 4:8, 4:8] = 1  # A
    truth[20:24, 4:8, 4:14] = pred[20:24, 4:8, 4:14] = 3  # B
    pred[20:24, 4:8, 8:10] = 0  # B split in two
    truth[36:40, 4:8, 4:8] = 2  # C, missed
    pred[36:40, 36:40, 36:40] = 2  # F, false positive
    truth[4:7, 36:39, 4:7] = pred[4:7, 36:39, 4:7] = 3  # D, small
    return pred, truth


def counts(row):
    """(TP, FN, FP, dropped) lesions of one region's scores."""
    return tuple(row[f"lesionwise_{k}"] for k in ("tp", "fn", "fp", "dropped"))


def box(shape=(40, 40, 40), *boxes):
    m = np.zeros(shape, bool)
    for b in boxes:
        m[b] = True
    return m


def test_hand_case_per_region():
    pred, truth = hand_case()
    r = brats2023_lesion_wise(pred, truth, (1.0, 1.0, 1.0))
    assert list(r) == ["WT", "TC", "ET"]
    # WT {1, 2, 3}: kept A, B, C; one FP (F); D dropped
    wt = r["WT"]
    assert wt["lesionwise_dice"] == pytest.approx((1 + 8 / 9 + 0 + 0) / 4)  # 17/36
    assert wt["lesionwise_hd95_mm"] == pytest.approx((0 + 1 + 374 + 374) / 4)  # 187.25
    assert counts(wt) == (2, 1, 1, 1)
    # TC {1, 3}: A and B (C and F are label 2, outside TC)
    tc = r["TC"]
    assert tc["lesionwise_dice"] == pytest.approx((1 + 8 / 9) / 2)  # 17/18
    assert tc["lesionwise_hd95_mm"] == pytest.approx((0 + 1) / 2)
    assert counts(tc) == (2, 0, 0, 1)
    # ET {3}: B only (D dropped)
    et = r["ET"]
    assert et["lesionwise_dice"] == pytest.approx(8 / 9)
    assert et["lesionwise_hd95_mm"] == pytest.approx(1.0)
    assert counts(et) == (1, 0, 0, 1)
    # the legacy scores beside them, of the whole region: WT truth 64+160+64+27 = 315 voxels,
    # pred 64+128+64+27 = 283, overlap 64+128+27 = 219; TC 251 / 219 / 219; ET 187 / 155 / 155
    assert wt["dice"] == pytest.approx(2 * 219 / (315 + 283))
    assert tc["dice"] == pytest.approx(2 * 219 / (251 + 219))
    assert et["dice"] == pytest.approx(2 * 155 / (187 + 155))
    assert et["hd95_mm"] == pytest.approx(1.0)
    assert wt["hd95_mm"] == pytest.approx(hausdorff_distance(pred > 0, truth > 0, 1.0, 95))


def test_hand_case_per_lesion_table():
    pred, truth = hand_case()
    m = lesion_wise_match(pred > 0, truth > 0)
    order = np.lexsort((m.dice, m.truth_volume_mm3))
    np.testing.assert_array_equal(m.truth_volume_mm3[order], [27, 64, 64, 160])  # D, C, A, B
    np.testing.assert_allclose(m.dice[order], [1, 0, 1, 8 / 9])
    np.testing.assert_array_equal(m.hd95_mm[order], [0, np.inf, 0, 1])
    np.testing.assert_array_equal(m.n_matched[order], [1, 0, 1, 2])
    assert m.n_pred == 5 and m.n_unmatched_pred == 1  # A, B's two pieces, D, F; F unmatched


def test_empty_regions():
    empty = np.zeros((30, 30, 30), bool)
    lesion = box((30, 30, 30), np.s_[5:10, 5:10, 5:10])  # 125 voxels
    small = box((30, 30, 30), np.s_[5:8, 5:8, 5:8])  # 27 voxels
    # nothing anywhere: Dice 1, HD95 0, nothing counted
    assert lesion_wise_scores(empty, empty) == {
        "lesionwise_dice": 1.0,
        "lesionwise_hd95_mm": 0.0,
        "lesionwise_tp": 0.0,
        "lesionwise_fn": 0.0,
        "lesionwise_fp": 0.0,
        "lesionwise_dropped": 0.0,
    }
    # a prediction on an empty truth: one false positive
    s = lesion_wise_scores(lesion, empty)
    assert (s["lesionwise_dice"], s["lesionwise_hd95_mm"], s["lesionwise_fp"]) == (0.0, 374.0, 1.0)
    # a missed lesion
    s = lesion_wise_scores(empty, lesion)
    assert (s["lesionwise_dice"], s["lesionwise_hd95_mm"], s["lesionwise_fn"]) == (0.0, 374.0, 1.0)
    # only a lesion under the threshold, missed: nothing to score -> Dice 1, HD95 0
    s = lesion_wise_scores(empty, small)
    assert (s["lesionwise_dice"], s["lesionwise_hd95_mm"], s["lesionwise_dropped"]) == (1.0, 0.0, 1.0)
    # the legacy distances use the same 374 mm under the convention (not the 51.96 mm diagonal)
    r = brats2023_lesion_wise(empty.astype(np.uint8), lesion.astype(np.uint8) * 3)
    assert r["ET"]["hd95_mm"] == 374.0 and r["ET"]["dice"] == 0.0 and r["ET"]["lesionwise_fn"] == 1
    assert r["WT"]["hd95_mm"] == 374.0
    both_empty = brats2023_lesion_wise(empty.astype(np.uint8), empty.astype(np.uint8))
    assert all(row["dice"] == 1.0 and row["hd95_mm"] == 0.0 for row in both_empty.values())
    assert all(
        row["lesionwise_dice"] == 1.0 and row["lesionwise_hd95_mm"] == 0.0 for row in both_empty.values()
    )


@pytest.mark.parametrize(("iterations", "gap_merged", "gap_apart"), [(3, 6, 7), (1, 2, 3)])
def test_truth_fragments_closer_than_the_dilation_are_one_lesion(iterations, gap_merged, gap_apart):
    # two 4x4x4 fragments along x with `gap` empty voxels between them: each grows by `iterations`
    # voxels, so they touch (26-connected) when gap <= 2 * iterations
    empty = np.zeros((40, 20, 20), bool)
    for gap, lesions in ((gap_merged, 1), (gap_apart, 2)):
        truth = box((40, 20, 20), np.s_[5:9, 8:12, 8:12], np.s_[9 + gap : 13 + gap, 8:12, 8:12])
        s = lesion_wise_scores(empty, truth, dilation_iterations=iterations)
        assert s["lesionwise_fn"] == lesions


def test_dilation_element_is_18_connected_not_26():
    # fragments touching diagonally: corner voxels (7, 7, 7) and (7 + k, ...)^3. Three dilations by
    # the 18-neighbourhood reach offsets with |d|_inf <= 3 and |d|_1 <= 6, so the grown fragments
    # touch for k <= 5; the 26-neighbourhood (a cube) would merge them up to k = 7.
    empty = np.zeros((32, 32, 32), bool)
    for k, lesions in ((5, 1), (6, 2), (7, 2)):
        truth = box((32, 32, 32), np.s_[4:8, 4:8, 4:8], np.s_[7 + k : 11 + k, 7 + k : 11 + k, 7 + k : 11 + k])
        assert lesion_wise_scores(empty, truth)["lesionwise_fn"] == lesions


def test_prediction_near_a_lesion_matches_within_the_dilation():
    truth = box((40, 20, 20), np.s_[10:14, 8:12, 8:12])  # x = 10..13, 64 voxels
    # x = 16..19: two voxels of gap, inside the lesion grown by 3 (up to x = 16) -> a true positive
    # with Dice 0; HD95: truth faces at x = 10, 11, 12, 13 (16, 12, 12, 16 voxels) lie 6, 5, 4, 3 mm
    # from the prediction's face x = 16; p95 of the 56 values is 6 (and symmetrically)
    near = box((40, 20, 20), np.s_[16:20, 8:12, 8:12])
    s = lesion_wise_scores(near, truth)
    assert (s["lesionwise_tp"], s["lesionwise_fn"], s["lesionwise_fp"]) == (1, 0, 0)
    assert s["lesionwise_dice"] == 0.0 and s["lesionwise_hd95_mm"] == pytest.approx(6.0)
    # x = 17..20: outside the grown lesion -> a missed lesion and a false positive
    far = box((40, 20, 20), np.s_[17:21, 8:12, 8:12])
    s = lesion_wise_scores(far, truth)
    assert (s["lesionwise_tp"], s["lesionwise_fn"], s["lesionwise_fp"]) == (0, 1, 1)
    assert s["lesionwise_dice"] == 0.0 and s["lesionwise_hd95_mm"] == pytest.approx((374 + 374) / 2)


def test_one_component_over_two_lesions_is_scored_whole_against_each():
    # truth: two 4x4x4 lesions 16 voxels apart; prediction: one bar of 4x24x4 = 384 voxels over both
    truth = box((20, 40, 20), np.s_[8:12, 8:12, 8:12], np.s_[8:12, 28:32, 8:12])
    bar = box((20, 40, 20), np.s_[8:12, 8:32, 8:12])
    s = lesion_wise_scores(bar, truth)
    assert (s["lesionwise_tp"], s["lesionwise_fn"], s["lesionwise_fp"]) == (2, 0, 0)
    assert s["lesionwise_dice"] == pytest.approx(2 * 64 / (64 + 384))  # 2/7 for each lesion
    first = box((20, 40, 20), np.s_[8:12, 8:12, 8:12])
    assert s["lesionwise_hd95_mm"] == pytest.approx(hausdorff_distance(bar, first, None, 95))


def test_volume_threshold_is_in_mm3_and_strict():
    empty = np.zeros((20, 20, 20), bool)
    fifty = box((20, 20, 20), np.s_[5:10, 5:10, 5:7])  # 50 voxels
    assert lesion_wise_scores(empty, fifty, (1.0, 1.0, 1.0))["lesionwise_dropped"] == 1  # 50 <= 50
    s = lesion_wise_scores(empty, fifty, (1.0, 1.0, 1.02))  # 51 mm^3 > 50: scored (and missed)
    assert (s["lesionwise_dropped"], s["lesionwise_fn"]) == (0, 1)
    assert lesion_wise_scores(empty, fifty, min_lesion_volume_mm3=49.0)["lesionwise_fn"] == 1


def test_metric_directions_for_paired_tests():
    assert higher_is_better("lesionwise_dice") and higher_is_better("lesionwise_tp")
    assert not higher_is_better("lesionwise_hd95_mm") and not higher_is_better("lesionwise_fp")
    with pytest.raises(ValueError):
        higher_is_better("lesionwise_dropped")  # fewer or more small lesions is no one's merit


def test_challenge_parameters_and_bad_arguments():
    assert challenge_parameters("GLI") == (3, 50.0) and challenge_parameters("BraTS-MET") == (1, 2.0)
    assert challenge_parameters("men") == (1, 50.0)
    with pytest.raises(ValueError, match="GLI"):
        challenge_parameters("XYZ")
    a = np.zeros((5, 5), bool)
    with pytest.raises(ValueError, match="3D"):
        lesion_wise_scores(a, a)
    with pytest.raises(ValueError, match="dilation"):
        lesion_wise_scores(a[None], a[None], dilation_iterations=1.5)
    # a 6-voxel MET lesion is scored (> 2 mm^3), and ET fragments 3 voxels apart stay two lesions
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[5:7, 5:8, 5:6] = 3
    truth[5:7, 11:14, 5:6] = 3
    r = brats2023_lesion_wise(np.zeros_like(truth), truth, challenge="MET")
    assert r["ET"]["lesionwise_fn"] == 2 and r["ET"]["lesionwise_dropped"] == 0
    gli = brats2023_lesion_wise(np.zeros_like(truth), truth)  # GLI: one lesion of 12 voxels, dropped
    assert counts(gli["ET"]) == (0, 0, 0, 1)


def reference_scores(pred, truth, spacing, iterations, min_volume_mm3, penalty=374.0):
    """The rules read plainly: whole volume, scipy's labelling, one dilation per lesion."""
    s18 = ndimage.generate_binary_structure(3, 2)
    full = np.ones((3, 3, 3), bool)

    def grow(m):
        return ndimage.binary_dilation(m, s18, iterations=iterations)

    grown, n_truth = ndimage.label(grow(truth), full)
    comps, n_pred = ndimage.label(pred, full)
    used, kept = set(), []
    for j in range(1, n_truth + 1):
        lesion = truth & (grown == j)
        ids = set(np.unique(comps[grow(lesion)]).tolist()) - {0}
        used |= ids
        found = np.isin(comps, list(ids))
        volume = lesion.sum() * float(np.prod(spacing))
        if volume > min_volume_mm3:
            hd = hausdorff_distance(found, lesion, spacing, 95) if ids else penalty
            kept.append((dice(found, lesion), hd, bool(ids)))
    n_fp = n_pred - len(used)
    n = len(kept) + n_fp
    return {
        "lesionwise_dice": sum(k[0] for k in kept) / n if n else 1.0,
        "lesionwise_hd95_mm": (sum(k[1] for k in kept) + penalty * n_fp) / n if n else 0.0,
        "lesionwise_tp": float(sum(k[2] for k in kept)),
        "lesionwise_fn": float(sum(not k[2] for k in kept)),
        "lesionwise_fp": float(n_fp),
        "lesionwise_dropped": float(n_truth - len(kept)),
    }


def test_equals_a_plain_reading_of_the_rules_on_random_cases():
    rng = np.random.default_rng(7)
    shape = (28, 24, 20)

    def blobs(sigma, level):
        return ndimage.gaussian_filter(rng.random(shape), sigma) > level

    totals = dict.fromkeys(("lesionwise_tp", "lesionwise_fn", "lesionwise_fp", "lesionwise_dropped"), 0.0)
    for i in range(8):
        truth = blobs(1.5, 0.56)
        pred = (truth & ~blobs(2.0, 0.53)) | blobs(1.5, 0.585)  # parts removed, blobs added
        truth[0, :3, :3] = True  # lesions at the array border
        pred[-2:, -3:, -1] = True
        spacing = (1.0, 1.2, 0.8)
        iterations = (1, 3)[i % 2]
        got = lesion_wise_scores(
            pred, truth, spacing, dilation_iterations=iterations, min_lesion_volume_mm3=6.0
        )
        want = reference_scores(pred, truth, spacing, iterations, 6.0)
        assert got == pytest.approx(want, rel=1e-12), i
        totals = {k: v + got[k] for k, v in totals.items()}
    assert all(v > 0 for v in totals.values()), totals  # every kind of lesion occurred


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # its scipy.ndimage.filters imports
def test_hd95_agrees_with_deepmind_surface_distance_on_the_hand_cases():
    # the challenge computes HD95 with DeepMind's surface-distance package; on these shapes ours agrees
    sd = pytest.importorskip("surface_distance")

    def challenge_hd95(pred, truth):
        return sd.compute_robust_hausdorff(sd.compute_surface_distances(truth, pred, (1.0, 1.0, 1.0)), 95)

    pred, truth = hand_case()
    b_truth, b_pred = truth == 3, pred == 3
    b_truth[4:7, 36:39, 4:7] = b_pred[4:7, 36:39, 4:7] = False  # lesion B alone
    assert challenge_hd95(b_pred, b_truth) == hausdorff_distance(b_pred, b_truth, 1.0, 95) == 1.0
    truth = box((40, 20, 20), np.s_[10:14, 8:12, 8:12])
    near = box((40, 20, 20), np.s_[16:20, 8:12, 8:12])
    assert challenge_hd95(near, truth) == hausdorff_distance(near, truth, 1.0, 95) == 6.0


def test_evaluate_case_convention():
    pred, truth = hand_case()
    r = evaluate_case(pred, truth, (1.0, 1.0, 1.0), convention="brats2023")
    assert list(r) == ["WT", "TC", "ET"]  # the 2023 regions by default
    lw = brats2023_lesion_wise(pred, truth, (1.0, 1.0, 1.0))
    for name in r:
        assert {k: r[name][k] for k in lw[name]} == lw[name]
        assert "lesion_sensitivity" in r[name] and "assd_mm" in r[name]  # the other metrics stay
    assert "lesionwise_dice" not in evaluate_case(pred, truth, regions="brats2023")["WT"]
    # one penalty for every one-sided distance: --empty-distance-mm replaces 374 in both
    only_truth = np.zeros_like(truth)
    only_truth[36:40, 4:8, 4:8] = 2
    r = evaluate_case(np.zeros_like(truth), only_truth, convention="brats2023", empty_distance_mm=100.0)
    assert r["WT"]["hd95_mm"] == 100.0 and r["WT"]["assd_mm"] == 100.0
    assert r["WT"]["lesionwise_hd95_mm"] == 100.0
    # without the convention the default stays the diagonal, and the option still applies
    r = evaluate_case(np.zeros_like(truth), only_truth, regions="brats2023")
    assert r["WT"]["hd95_mm"] == pytest.approx(math.sqrt(3 * 48**2))
    r = evaluate_case(np.zeros_like(truth), only_truth, regions="brats2023", empty_distance_mm=374.0)
    assert r["WT"]["hd95_mm"] == 374.0
    with pytest.raises(ConfigError, match="3D"):
        evaluate_case(pred[0], truth[0], convention="brats2023")
    with pytest.raises(ConfigError, match="convention"):
        evaluate_case(pred, truth, convention="brats2021")
    with pytest.raises(ConfigError, match="challenge"):
        evaluate_case(pred, truth, convention="brats2023", brats_challenge="XYZ")
    with pytest.raises(ConfigError, match="empty_distance_mm"):
        evaluate_case(pred, truth, empty_distance_mm=-1.0)


def save(path, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(path))


def test_cli_convention_brats2023(tmp_path, capsys):
    pred, truth = hand_case()
    save(tmp_path / "pred" / "case_a.nii.gz", pred)
    save(tmp_path / "truth" / "case_a_seg.nii.gz", truth)
    empty = np.zeros_like(truth)
    save(tmp_path / "pred" / "case_b.nii.gz", empty)  # case b: truth is C alone, prediction empty
    only_c = empty.copy()
    only_c[36:40, 4:8, 4:8] = 2
    save(tmp_path / "truth" / "case_b_seg.nii.gz", only_c)
    out = tmp_path / "out"
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth"), "--out", str(out)]
    assert main([*args, "--convention", "brats2023"]) == 0
    printed = capsys.readouterr().out
    assert "lesionwise_dice" in printed and "BraTS 2023 lesion-wise" in printed
    assert "2 TP, 2 FN, 1 FP lesions" in printed  # WT pooled: (2, 1, 1) + (0, 1, 0)
    rows = {(r["case_id"], r["target"]): r for r in csv.DictReader(open(out / "metrics_per_case.csv"))}
    assert float(rows["case_a", "WT"]["lesionwise_dice"]) == pytest.approx(17 / 36)
    assert float(rows["case_a", "WT"]["lesionwise_hd95_mm"]) == pytest.approx(187.25)
    assert float(rows["case_a", "TC"]["lesionwise_hd95_mm"]) == pytest.approx(0.5)
    assert float(rows["case_b", "WT"]["lesionwise_hd95_mm"]) == 374.0
    assert float(rows["case_b", "WT"]["hd95_mm"]) == 374.0  # legacy: the 2023 penalty
    # TC and ET of case b: empty in both maps -> 1 and 0
    assert float(rows["case_b", "ET"]["lesionwise_dice"]) == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["convention"] == "brats2023"
    assert summary["settings"]["lesionwise"] == {
        "dilation_iterations": 3,
        "min_lesion_volume_mm3": 50.0,
        "penalty_mm": 374.0,
    }
    mean = summary["targets"]["WT"]["lesionwise_dice"]["mean"]
    assert mean == pytest.approx((17 / 36 + 0) / 2)
    assert summary["pooled"]["WT"]["lesionwise_fn"] == 2
    # --empty-distance-mm without the convention
    assert main([*args, "--regions", "brats2023", "--empty-distance-mm", "99.5"]) == 0
    capsys.readouterr()
    rows = {(r["case_id"], r["target"]): r for r in csv.DictReader(open(out / "metrics_per_case.csv"))}
    assert float(rows["case_b", "WT"]["hd95_mm"]) == 99.5 and "lesionwise_dice" not in rows["case_b", "WT"]
    assert json.loads((out / "summary.json").read_text())["settings"]["empty_distance_mm"] == 99.5
