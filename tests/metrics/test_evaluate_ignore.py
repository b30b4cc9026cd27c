"""The ignore label in the metrics: where the truth is not annotated, nothing counts."""

import json

import nibabel as nib
import numpy as np
import pytest

from attnseg.cli import main
from attnseg.errors import ConfigError
from attnseg.metrics import evaluate_case, evaluate_folders
from attnseg.metrics.evaluate import parse_ignore_label

IGNORE = 3


def sparse_pair():
    """A truth with classes 1 and 2 and an unannotated slab (label 3); a prediction that is exact
    on the annotated voxels."""
    truth = np.zeros((12, 12, 10), np.uint8)
    truth[2:6, 2:6, 2:6] = 1  # 64 voxels
    truth[6:9, 2:6, 2:6] = 2  # 48 voxels
    truth[:, 9:, :] = IGNORE  # 12 * 3 * 10 = 360 voxels not annotated
    pred = np.where(truth == IGNORE, 0, truth).astype(np.uint8)
    return pred, truth


def test_a_prediction_inside_ignored_voxels_changes_no_metric():
    pred, truth = sparse_pair()
    other = pred.copy()
    rng = np.random.default_rng(0)
    ignored = truth == IGNORE
    other[ignored] = rng.integers(0, 3, int(ignored.sum()))  # anything where nothing is annotated
    for options in ({"classes": [1, 2]}, {}, {"classes": [0, 1, 2]}):
        a = evaluate_case(pred, truth, (1.0, 1.0, 2.0), ignore_label=IGNORE, **options)
        b = evaluate_case(other, truth, (1.0, 1.0, 2.0), ignore_label=IGNORE, **options)
        assert a == b
    assert a["1"]["dice"] == 1.0 and a["2"]["hd95_mm"] == 0.0
    # without the ignore label the same predictions differ: the ignored voxels counted
    plain = evaluate_case(other, truth, (1.0, 1.0, 2.0), classes=[1, 2])
    assert plain["1"]["dice"] < 1.0


def test_counts_exclude_the_ignored_voxels_by_hand():
    pred, truth = sparse_pair()
    pred[10, 0, 0] = 1  # one false positive on an annotated voxel
    row = evaluate_case(pred, truth, classes=[1], ignore_label=IGNORE, lesions=False)["1"]
    annotated = truth.size - 360  # 1080
    assert row["dice"] == pytest.approx(2 * 64 / (2 * 64 + 1))
    # TN = annotated voxels that are neither class 1 nor the false positive
    assert row["specificity"] == pytest.approx((annotated - 64 - 1) / (annotated - 64))
    # the background target is scored on the annotated voxels only
    bg = evaluate_case(pred, truth, classes=[0], ignore_label=IGNORE, lesions=False)["0"]
    n_bg_truth = annotated - 64 - 48
    assert (bg["tp_vox"], bg["fn_vox"], bg["fp_vox"]) == (n_bg_truth - 1, 1, 0)
    assert bg["sensitivity"] == pytest.approx((n_bg_truth - 1) / n_bg_truth)


def test_ignore_label_without_ignored_voxels_changes_nothing():
    pred, truth = sparse_pair()
    truth[truth == IGNORE] = 0
    pred[0, 11, 0] = 2
    assert evaluate_case(pred, truth, ignore_label=IGNORE) == evaluate_case(pred, truth)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), str(path))


@pytest.fixture
def nnunet_truth(tmp_path):
    """An nnU-Net v2 dataset folder whose dataset.json declares "ignore": 3, and predictions that
    differ from the truth only where it is not annotated."""
    pred, truth = sparse_pair()
    pred[truth == IGNORE] = 1
    root = tmp_path / "Dataset001_Sparse"
    save(root / "labelsTr" / "case_0.nii.gz", truth)
    save(root / "imagesTr" / "case_0_0000.nii.gz", truth)
    labels = {"background": 0, "a": 1, "b": 2, "ignore": IGNORE}
    (root / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": "MR"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
        )
    )
    save(tmp_path / "pred" / "case_0.nii.gz", pred)
    return tmp_path / "pred", root / "labelsTr"


def test_folders_read_the_ignore_label_of_the_dataset_json(nnunet_truth, tmp_path):
    pred_dir, truth_dir = nnunet_truth
    auto = evaluate_folders(pred_dir, truth_dir, classes=[1, 2], lesions=False)
    assert auto.summary["settings"]["ignore_label"] == IGNORE
    assert auto.per_case["case_0"]["1"]["dice"] == 1.0
    assert any("dataset.json" in n for n in auto.notes)
    off = evaluate_folders(pred_dir, truth_dir, classes=[1, 2], lesions=False, ignore_label=None)
    assert off.summary["settings"]["ignore_label"] is None
    assert off.per_case["case_0"]["1"]["dice"] == pytest.approx(2 * 64 / (2 * 64 + 360))


def test_cli_ignore_label_option(nnunet_truth, tmp_path, capsys):
    pred_dir, truth_dir = nnunet_truth
    out = tmp_path / "eval"
    assert main(["evaluate", str(pred_dir), str(truth_dir), "--labels", "1,2", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["settings"]["ignore_label"] == IGNORE
    assert "ignored (not annotated)" in capsys.readouterr().out
    args = ["evaluate", str(pred_dir), str(truth_dir), "--labels", "1,2", "--out", str(out)]
    assert main([*args, "--ignore-label", "none"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["ignore_label"] is None
    assert summary["targets"]["1"]["dice"]["mean"] < 1.0
    # an explicit value where no dataset.json says one (the folder of predictions as the truth)
    assert main(["evaluate", str(pred_dir), str(pred_dir), "--ignore-label", "1", "--no-lesions"]) == 0
    assert main([*args, "--ignore-label", "x"]) == 2
    assert parse_ignore_label(" 4 ") == 4 and parse_ignore_label("AUTO") == "auto"
    with pytest.raises(ConfigError):
        evaluate_folders(pred_dir, truth_dir, ignore_label="three")
