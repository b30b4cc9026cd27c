"""Dataset-level faults: missing labels or images, dataset.json that is malformed, lists missing
files or disagrees with the folder, repeated case ids, and the real faulty hippocampus_broken set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from robustness_helpers import (
    assert_clean_error,
    blob_label,
    brain,
    cli,
    failed_line,
    tree_digest,
    visible_files,
    write_nifti,
)
from tests.conftest import shared_dataset

from attnseg.datasets import discover, load_case
from attnseg.datasets.check import check
from attnseg.datasets.splits import make_splits
from attnseg.errors import DataError
from attnseg.inference.predict import predict_folder


def msd_folder(root, cases=("a", "b", "c"), listed=None, **json_extra):
    """An MSD folder with the given cases on disk and ``listed`` (default: the same) in dataset.json."""
    for case in cases:
        write_nifti(root / "imagesTr" / f"{case}.nii.gz", brain(seed=len(case)))
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", blob_label(), dtype=np.uint8)
    listed = list(cases) if listed is None else listed
    payload = {
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "anterior", "2": "posterior"},
        "numTraining": len(listed),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in listed],
        **json_extra,
    }
    (root / "dataset.json").write_text(json.dumps(payload))
    return root


def paired_folder(root, images=("a", "b"), labels=("a", "b")):
    for case in images:
        write_nifti(root / "images" / f"{case}.nii.gz", brain(seed=len(case)))
    for case in labels:
        write_nifti(root / "labels" / f"{case}.nii.gz", blob_label(), dtype=np.uint8)
    return root


def test_case_without_label(tmp_path, capsys):
    root = paired_folder(tmp_path / "data", images=("a", "b", "c"), labels=("a", "b"))
    dataset = discover(root)
    image, label, _ = load_case(dataset.case("c"), dataset)  # an image alone loads (test images)
    assert image.shape[0] == 1 and label is None
    code, out, _ = cli(capsys, "check", root)
    assert code == 1 and "FAIL c: missing_label: no label file (expected labels/c.nii.gz)" in out
    code, out, _ = cli(capsys, "check", root, "--no-labels")
    assert code == 0 and "OK: 3 cases passed" in out


def test_label_without_image(tmp_path, capsys):
    root = paired_folder(tmp_path / "data", images=("a", "b"), labels=("a", "b", "orphan"))
    assert discover(root).case_ids == ["a", "b"]  # discovery goes on; the orphan is a finding
    code, out, _ = cli(capsys, "check", root)
    assert code == 1 and "FAIL orphan: missing_image: label has no matching image in images/" in out


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"training": [', "dataset.json: not valid JSON"),
        ("[1, 2]", "dataset.json: expected a JSON object"),
        ('{"name": "x"}', "neither nnU-Net v2 (channel_names) nor MSD (training list)"),
        ('{"training": [{"label": "x.nii.gz"}]}', "training[0] must have an 'image' path"),
        ('{"training": [], "labels": {"one": "tumour"}}', "label value 'one' is not an integer"),
    ],
    ids=["truncated", "not_an_object", "neither_layout", "entry_without_image", "bad_label_table"],
)
def test_malformed_dataset_json(tmp_path, capsys, model_file, text, expected):
    root = msd_folder(tmp_path / "data")
    (root / "dataset.json").write_text(text)
    with pytest.raises(DataError, match="dataset.json"):
        discover(root)
    code, _, err = cli(capsys, "check", root)
    assert code == 2
    assert_clean_error(err, "dataset.json", expected)


def test_dataset_json_lists_missing_files(tmp_path, capsys, model_file):
    root = msd_folder(tmp_path / "data", cases=("a", "b"), listed=["a", "b", "gone"])
    dataset = discover(root)
    with pytest.raises(DataError, match="imagesTr/gone.nii.gz: file not found"):
        load_case(dataset.case("gone"), dataset)
    code, out, _ = cli(capsys, "check", root)
    assert code == 1
    assert "FAIL gone: missing_image: imagesTr/gone.nii.gz: image file not found" in out
    assert "FAIL gone: missing_label: labelsTr/gone.nii.gz: label file not found" in out
    code, out, err = cli(capsys, "predict", model_file, root, tmp_path / "pred", "--quiet")
    assert code == 1 and "predicted 2 case(s)" in out
    assert "gone.nii.gz: file not found" in failed_line(err, "gone")


def test_dataset_json_disagrees_with_the_folder(tmp_path, capsys):
    root = msd_folder(tmp_path / "data", cases=("a", "b", "c", "d"), listed=["a", "b"], numTraining=3)
    dataset = discover(root)
    assert dataset.case_ids == ["a", "b"]  # the list decides; the rest is reported, never used
    code, out, _ = cli(capsys, "check", root)
    assert code == 1
    assert "FAIL dataset: count_mismatch: numTraining is 3 but the list has 2 entries" in out
    for case in ("c", "d"):
        for folder in ("imagesTr", "labelsTr"):
            assert f"FAIL dataset: unlisted_file: {folder}/{case}.nii.gz is not in the 'training' list" in out
    assert "5 problem(s) in 0 of 2 cases" in out


def test_real_task04_lists_every_file():
    report = check(shared_dataset("Task04_Hippocampus"))
    assert report.ok and report.n_cases == 200


def test_duplicate_case_ids(tmp_path, capsys, model_file):
    # MSD: one case listed twice -> used once, reported
    root = msd_folder(tmp_path / "msd", cases=("a", "b"), listed=["a", "b", "b"])
    assert discover(root).case_ids == ["a", "b"]
    code, out, _ = cli(capsys, "check", root)
    assert code == 1 and "FAIL b: duplicate_case: listed twice in" in out

    # paired: a.nii next to a.nii.gz is two cases named 'a', not one case with two channels
    root = paired_folder(tmp_path / "paired", images=("a", "b"), labels=("a", "b"))
    write_nifti(root / "images" / "a.nii", brain(seed=7))
    dataset = discover(root)
    assert dataset.case_ids == ["a", "b", "a"] and dataset.channel_names == ["image"]
    code, out, _ = cli(capsys, "check", root)
    assert code == 1
    assert "FAIL a: duplicate_case: 2 cases share this id:" in out and "a.nii;" in out and "a.nii.gz" in out
    assert "channel_count" not in out
    with pytest.raises(DataError, match=r"case ids must be unique for splitting; repeated: \['a'\]"):
        make_splits(dataset.case_ids, 2)  # what training does first

    # BraTS: the same case folder under HGG/ and LGG/
    brats = tmp_path / "brats"
    for grade in ("HGG", "LGG"):
        for channel in ("flair", "t1", "t1ce", "t2", "seg"):
            write_nifti(brats / grade / "Brats18_X_1" / f"Brats18_X_1_{channel}.nii.gz", brain())
    report = check(brats)
    assert [(p.case_id, p.kind) for p in report.problems if p.kind == "duplicate_case"] == [
        ("Brats18_X_1", "duplicate_case")
    ]

    # predict: cases whose outputs would share a file name are refused, the rest is predicted
    before = tree_digest(root)
    out_dir = tmp_path / "pred"
    code, out, err = cli(capsys, "predict", model_file, root, out_dir, "--quiet")
    assert code == 1 and "predicted 1 case(s)" in out and "2 failed" in out
    assert "2 inputs would be written to the same output file a.nii.gz" in err
    assert visible_files(out_dir) == ["b.nii.gz"]
    assert tree_digest(root) == before
    report = predict_folder(model_file, root / "images", tmp_path / "pred2", progress=False)
    assert report.predicted == ["b"] and [c for c, _ in report.failed] == ["a", "a"]


def test_one_odd_file_sorting_first_does_not_set_the_channel_count(tmp_path, capsys):
    """Paired folders declare nothing: the channel count is the usual one among the first files."""
    root = paired_folder(tmp_path / "data", images=("b", "c"), labels=("a", "b", "c"))
    write_nifti(root / "images" / "a.nii.gz", np.stack([brain()] * 3, axis=-1))
    assert discover(root).channel_names == ["image"]
    code, out, _ = cli(capsys, "check", root)
    assert code == 1 and [line for line in out.splitlines() if line.startswith("FAIL")] == [
        "FAIL a: channel_count: has 3 channel(s); the dataset declares 1 (image)"
    ]


# --- the real faulty files ---------------------------------------------------------------------------------
BROKEN = {
    "hippocampus_143": ("shape_mismatch", "labels/hippocampus_143.nii.gz has shape (32, 45, 38)"),
    "hippocampus_160": ("unreadable", "images/hippocampus_160.nii.gz: truncated or corrupt data"),
    "hippocampus_221": ("undeclared_labels", "labels/hippocampus_221.nii.gz has value(s) [5]"),
}


def test_hippocampus_broken_python_api():
    root = shared_dataset("hippocampus_broken")
    dataset = discover(root)
    with pytest.raises(DataError, match="hippocampus_160.nii.gz: truncated or corrupt data"):
        load_case(dataset.case("hippocampus_160"), dataset)
    with pytest.raises(
        DataError, match=r"case hippocampus_143: label .* has shape \(32, 45, 38\), image has \(32, 45, 41\)"
    ):
        load_case(dataset.case("hippocampus_143"), dataset)
    _, label, _ = load_case(dataset.case("hippocampus_221"), dataset)
    assert int((label == 5).sum()) == 12  # loads; the undeclared value is what check reports
    report = check(root, labels=[0, 1, 2])
    found = {p.case_id: (p.kind, p.message) for p in report.problems}
    assert set(found) == set(BROKEN)
    for case, (kind, text) in BROKEN.items():
        assert found[case][0] == kind and text in found[case][1]


def test_hippocampus_broken_cli(tmp_path, capsys, model_file):
    root = shared_dataset("hippocampus_broken")
    code, out, err = cli(capsys, "check", root, "--labels", "0,1,2")
    assert code == 1 and "Traceback" not in err
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in fails] == [f"FAIL {case}" for case in sorted(BROKEN)]
    assert "3 problem(s) in 3 of 12 cases" in out

    # predict reads images only: the truncated one fails, every other case is predicted
    pred = tmp_path / "pred"
    before = tree_digest(root)
    window = ["--patch-size", "32", "32", "32", "--overlap", "0"]  # few windows: fast
    code, out, err = cli(capsys, "predict", model_file, root / "images", pred, "--quiet", *window)
    assert code == 1 and "predicted 11 case(s)" in out and "1 failed" in out
    assert "hippocampus_160.nii.gz: truncated or corrupt data" in failed_line(err, "hippocampus_160")
    assert len(visible_files(pred)) == 11 and "hippocampus_160.nii.gz" not in visible_files(pred)
    assert tree_digest(root) == before

    # evaluate against the labels stops at the first inconsistent pair, naming it
    code, _, err = cli(capsys, "evaluate", pred, root / "labels")
    assert code == 2
    assert_clean_error(err, "case hippocampus_143", "shape (32, 45, 41)", "(32, 45, 38)")
