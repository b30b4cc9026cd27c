"""evaluate_case on hand-made label maps, and ``attnseg evaluate`` on folders of NIfTI files."""

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from tests.conftest import shared_dataset

from attnseg.cli import main
from attnseg.errors import ConfigError, DataError
from attnseg.metrics import (
    dice,
    evaluate_case,
    evaluate_folders,
    find_label_files,
    format_summary,
    hausdorff_distance,
    normalized_surface_dice,
)
from attnseg.metrics.evaluate import parse_classes, parse_regions, parse_tolerances


def brats_like_pair():
    """A 3-label map and a prediction; per-region Dice computed by hand in the tests."""
    truth = np.zeros((24, 24, 16), np.uint8)
    truth[4:16, 4:16, 4:12] = 2  # oedema shell, 12*12*8 = 1152 voxels in all
    truth[7:13, 7:13, 6:10] = 1  # core 6*6*4 = 144
    truth[9:11, 9:11, 7:9] = 4  # enhancing 2*2*2 = 8 (inside the core box)
    pred = truth.copy()
    pred[9:11, 9:11, 7:9] = 1  # enhancing predicted as necrosis: ET missed entirely
    pred[15, 4:16, 4:12] = 0  # one oedema slab of 12*8 = 96 voxels missed
    return pred, truth


def test_regions_by_hand():
    pred, truth = brats_like_pair()
    spacing = (1.0, 1.0, 2.0)
    r = evaluate_case(pred, truth, spacing, regions="brats")
    assert list(r) == ["WT", "TC", "ET"]
    # WT: truth 1152, pred 1152 - 96 = 1056, all inside -> Dice 2*1056 / 2208
    assert r["WT"]["dice"] == pytest.approx(2 * 1056 / 2208)
    assert r["WT"]["volume_diff_mm3"] == pytest.approx(-96 * 2.0)
    # TC = {1, 4}: identical in both maps (ET became label 1, still TC)
    assert r["TC"]["dice"] == 1.0 and r["TC"]["hd_mm"] == 0.0 and r["TC"]["hd95_mm"] == 0.0
    # ET: prediction empty -> Dice 0, distances = the volume diagonal in mm
    diagonal = math.sqrt(24**2 + 24**2 + (16 * 2) ** 2)
    assert r["ET"]["dice"] == 0.0
    assert r["ET"]["hd95_mm"] == pytest.approx(diagonal) and r["ET"]["assd_mm"] == pytest.approx(diagonal)
    assert r["ET"]["n_truth_lesions"] == 1 and r["ET"]["lesion_sensitivity"] == 0.0
    # WT HD: the removed slab at x = 15 is 1 mm from the new surface at x = 14
    assert r["WT"]["hd_mm"] == pytest.approx(1.0)
    for row in r.values():
        assert all(np.isfinite(v) for v in row.values())


def test_values_equal_the_single_mask_functions_on_the_full_volume():
    # evaluate_case works inside the box of non-zero labels; the result must not depend on it
    pred, truth = brats_like_pair()
    pred[0, 0, 0] = 2  # a stray voxel in the corner widens the box
    spacing = (0.7, 1.3, 2.5)
    r = evaluate_case(pred, truth, spacing, classes={"ed": 2, "ncr": 1})
    for name, value in (("ed", 2), ("ncr", 1)):
        p, t = pred == value, truth == value
        assert r[name]["dice"] == pytest.approx(dice(p, t))
        assert r[name]["hd95_mm"] == pytest.approx(hausdorff_distance(p, t, spacing, 95))
        assert r[name]["hd_mm"] == pytest.approx(hausdorff_distance(p, t, spacing))
        assert r[name]["specificity"] == pytest.approx(np.count_nonzero(~p & ~t) / np.count_nonzero(~t))
        for tolerance in (1.0, 2.0):  # the default NSD columns
            expected = normalized_surface_dice(p, t, spacing, tolerance)
            assert r[name][f"nsd_{tolerance:g}mm"] == pytest.approx(expected, abs=1e-12)


def test_nsd_columns_per_tolerance_and_empty_conventions():
    pred, truth = brats_like_pair()
    r = evaluate_case(pred, truth, (1.0, 1.0, 2.0), regions="brats", nsd_tolerances_mm=(0.5, 3))
    assert [m for m in r["WT"] if m.startswith("nsd")] == ["nsd_0.5mm", "nsd_3mm"]
    # WT: the missed slab's face is 1 mm from the new surface: within 3 mm, partly not within 0.5
    assert r["WT"]["nsd_3mm"] == 1.0 and 0.5 < r["WT"]["nsd_0.5mm"] < 1.0
    assert r["TC"]["nsd_0.5mm"] == 1.0  # identical
    assert r["ET"]["nsd_0.5mm"] == r["ET"]["nsd_3mm"] == 0.0  # prediction empty
    both_empty = evaluate_case(pred, truth, classes=[3])["3"]
    assert both_empty["nsd_1mm"] == both_empty["nsd_2mm"] == 1.0
    assert not any(m.startswith("nsd") for m in evaluate_case(pred, truth, nsd_tolerances_mm=())["1"])
    with pytest.raises(ConfigError, match="tolerance"):
        evaluate_case(pred, truth, nsd_tolerances_mm=(-1.0,))
    assert parse_tolerances("1,2") == (1.0, 2.0) and parse_tolerances(" 0.5 ") == (0.5,)
    assert parse_tolerances("none") == () and parse_tolerances("") == ()
    for bad in ("1;2", "-1", "nan", "mm"):
        with pytest.raises(ConfigError, match="--nsd-tolerance-mm"):
            parse_tolerances(bad)


def test_default_classes_torch_input_and_background_target():
    pred, truth = brats_like_pair()
    r = evaluate_case(torch.from_numpy(pred), torch.from_numpy(truth))
    assert list(r) == ["1", "2", "4"]
    r0 = evaluate_case(pred, truth, classes=[0])  # background as a target (no cropping)
    n_bg = np.count_nonzero(truth == 0)
    assert r0["0"]["dice"] == pytest.approx(
        2 * n_bg / (2 * n_bg + 96)
    )  # the missed slab is background in pred


def test_absent_class_is_both_empty_and_bad_inputs():
    pred, truth = brats_like_pair()
    r = evaluate_case(pred, truth, classes=[3])
    assert r["3"]["dice"] == 1.0 and r["3"]["hd95_mm"] == 0.0 and r["3"]["fpr"] == 0.0
    empty = np.zeros((5, 5), np.uint8)
    assert evaluate_case(empty, empty, classes=[1])["1"]["dice"] == 1.0
    with pytest.raises(DataError, match="shape"):
        evaluate_case(pred, truth[:-1])
    with pytest.raises(DataError, match="non-integer"):
        evaluate_case(pred.astype(float) + 0.5, truth)
    with pytest.raises(ConfigError, match="preset"):
        evaluate_case(pred, truth, regions="kits")
    with pytest.raises(ConfigError):
        evaluate_case(pred, truth, classes=[1], regions="brats")


def test_parsers():
    assert parse_regions("brats") == "brats"
    assert parse_regions("WT=1+2+4, ET=4") == {"WT": (1, 2, 4), "ET": (4,)}
    assert parse_classes("1,2,4") == [1, 2, 4]
    assert parse_classes("ncr=1,et=4") == {"ncr": 1, "et": 4}
    with pytest.raises(ConfigError):
        parse_regions("nope")
    with pytest.raises(ConfigError):
        parse_classes("a,b")


# --- folders and the command line -------------------------------------------------------------------
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))


@pytest.fixture
def folders(tmp_path):
    pred, truth = brats_like_pair()
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    save(pred_dir / "case_a.nii.gz", pred)
    save(truth_dir / "case_a" / "case_a_seg.nii.gz", truth)  # BraTS-style case folder
    save(truth_dir / "case_a" / "case_a_flair.nii.gz", truth)  # an image next to it: ignored
    save(pred_dir / "case_b.nii.gz", truth)  # a perfect prediction
    save(truth_dir / "case_b" / "case_b_seg.nii.gz", truth)
    save(truth_dir / "case_c" / "case_c_seg.nii.gz", truth)  # no prediction for this one
    return pred_dir, truth_dir


def test_find_label_files_layouts(folders, tmp_path):
    pred_dir, truth_dir = folders
    assert sorted(find_label_files(pred_dir)) == ["case_a", "case_b"]
    assert {k: p.name for k, p in find_label_files(truth_dir).items()} == {
        "case_a": "case_a_seg.nii.gz",
        "case_b": "case_b_seg.nii.gz",
        "case_c": "case_c_seg.nii.gz",
    }
    msd = tmp_path / "msd"
    save(msd / "labelsTr" / "hippo_001.nii.gz", np.zeros((3, 3, 3)))
    assert list(find_label_files(msd)) == ["hippo_001"]
    with pytest.raises(DataError, match="no label maps found"):
        find_label_files(tmp_path / "pred" / "..")


def test_evaluate_folders_writes_csv_and_json(folders, tmp_path):
    pred_dir, truth_dir = folders
    out = tmp_path / "out"
    result = evaluate_folders(pred_dir, truth_dir, out_dir=out, regions="brats")
    assert result.missing_predictions == ["case_c"]
    rows = list(csv.DictReader(result.csv_path.open()))
    assert [(r["case_id"], r["target"]) for r in rows] == [
        (c, t) for c in ("case_a", "case_b") for t in ("WT", "TC", "ET")
    ]
    wt_a = next(r for r in rows if r["case_id"] == "case_a" and r["target"] == "WT")
    assert float(wt_a["dice"]) == pytest.approx(2 * 1056 / 2208)
    summary = json.loads(result.json_path.read_text())
    assert summary["n_cases"] == 2 and summary["missing_predictions"] == ["case_c"]
    et = summary["targets"]["ET"]["dice"]
    assert et["mean"] == pytest.approx(0.5) and et["median"] == pytest.approx(0.5)
    assert et["std"] == pytest.approx(math.sqrt(0.5))  # sample std of [0, 1]
    # spacing from the header (2 mm along z): ET missing -> diagonal of 24 x 24 x 32 mm
    assert summary["targets"]["ET"]["hd95_mm"]["max"] == pytest.approx(math.sqrt(24**2 + 24**2 + 32**2))
    pooled = summary["pooled"]["ET"]
    assert pooled["n_truth_lesions"] == 2 and pooled["lesion_sensitivity"] == pytest.approx(0.5)
    assert summary["settings"]["targets"]["WT"] == [1, 2, 4]
    assert summary["settings"]["nsd_tolerances_mm"] == [1.0, 2.0]
    assert float(wt_a["nsd_2mm"]) == 1.0 and summary["targets"]["TC"]["nsd_1mm"]["min"] == 1.0
    # the printed table: NSD beside Dice and HD95, one line per tolerance
    lines = format_summary(summary).splitlines()
    names = [line[11:37].strip() for line in lines[3:]]
    assert names[:5] == ["dice", "iou", "hd95_mm", "nsd_1mm", "nsd_2mm"]


def test_default_targets_fill_absent_labels(tmp_path):
    a = np.zeros((6, 6, 6), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    b = a.copy()
    b[4, 4, 4] = 2  # label 2 only in case b
    save(tmp_path / "p" / "a.nii.gz", a)
    save(tmp_path / "t" / "a.nii.gz", a)
    save(tmp_path / "p" / "b.nii.gz", b)
    save(tmp_path / "t" / "b.nii.gz", b)
    result = evaluate_folders(tmp_path / "p", tmp_path / "t")
    assert list(result.per_case["a"]) == ["1", "2"]
    assert result.per_case["a"]["2"]["dice"] == 1.0 and result.per_case["a"]["2"]["hd95_mm"] == 0.0


def test_cli_prints_summary_and_reports_bad_inputs(folders, tmp_path, capsys):
    pred_dir, truth_dir = folders
    out = tmp_path / "out"
    code = main(["evaluate", str(pred_dir), str(truth_dir), "--out", str(out), "--regions", "brats"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "WT" in printed and "hd95_mm" in printed and "nsd_1mm" in printed and "case_c" in printed
    assert (out / "metrics_per_case.csv").is_file() and (out / "summary.json").is_file()
    assert not list(out.glob("*.tmp*"))
    assert main(["evaluate", str(pred_dir), str(truth_dir), "--nsd-tolerance-mm", "0.5,4"]) == 0
    printed = capsys.readouterr().out
    assert "nsd_0.5mm" in printed and "nsd_4mm" in printed and "nsd_1mm" not in printed
    assert main(["evaluate", str(pred_dir), str(truth_dir), "--nsd-tolerance-mm", "none"]) == 0
    assert "nsd_" not in capsys.readouterr().out
    assert main(["evaluate", str(pred_dir), str(truth_dir), "--nsd-tolerance-mm", "-1"]) == 2
    assert "--nsd-tolerance-mm" in capsys.readouterr().err

    # a prediction on another grid: error naming the case
    pred, _ = brats_like_pair()
    save(pred_dir / "case_b.nii.gz", pred, affine=np.diag([1.0, 1.0, 3.0, 1.0]))
    assert main(["evaluate", str(pred_dir), str(truth_dir)]) == 2
    assert "case_b" in capsys.readouterr().err
    save(pred_dir / "case_b.nii.gz", pred[:, :, :8])
    assert main(["evaluate", str(pred_dir), str(truth_dir)]) == 2
    err = capsys.readouterr().err
    assert "case_b" in err and "shape" in err
    # a prediction without truth
    save(pred_dir / "case_b.nii.gz", pred)
    save(pred_dir / "case_z.nii.gz", pred)
    assert main(["evaluate", str(pred_dir), str(truth_dir)]) == 2
    assert "case_z" in capsys.readouterr().err
    # output inside an input folder is refused
    assert main(["evaluate", str(pred_dir), str(truth_dir), "--out", str(truth_dir / "metrics")]) == 2
    assert "inside" in capsys.readouterr().err


@pytest.mark.data
def test_evaluate_real_brats_case(tmp_path):
    root = shared_dataset("brats2018_flair_t1_wt")
    case = "Brats18_TCIA01_425_1"
    img = nib.load(root / case / f"{case}_seg.nii.gz")
    seg = np.asanyarray(img.dataobj)
    pred = seg.copy()
    pred[pred == 1] = 2  # the small core (384 voxels) called oedema
    nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(tmp_path / f"{case}.nii.gz"))
    result = evaluate_folders(tmp_path, root, regions="brats")
    assert len(result.missing_predictions) == 3
    r = result.per_case[case]
    assert r["WT"]["dice"] == 1.0 and r["WT"]["hd95_mm"] == 0.0
    assert r["ET"]["dice"] == 1.0
    # TC = {1, 4} = 384 + 1662 voxels; the prediction keeps only ET's 1662
    assert r["TC"]["dice"] == pytest.approx(2 * 1662 / (1662 + 2046))
    assert r["TC"]["sensitivity"] == pytest.approx(1662 / 2046) and r["TC"]["precision"] == 1.0
