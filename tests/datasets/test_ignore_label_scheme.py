"""The ignore label: declared in dataset.json (nnU-Net v2's "ignore") or by data.ignore_label, known
to the label scheme, reported by check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.datasets.conftest import channel_volume, write_nifti

from attnseg.cli import main
from attnseg.datasets import LabelScheme, declared_labels, discover
from attnseg.datasets.check import check
from attnseg.datasets.label_scheme import IGNORE_REGION_VALUE
from attnseg.errors import ConfigError

SHAPE = (6, 5, 4)  # 120 voxels


# --- the label scheme ---------------------------------------------------------------------------------
def test_the_ignore_name_makes_an_ignore_label_not_a_class():
    s = LabelScheme.from_labels({"background": 0, "liver": 1, "tumour": 2, "ignore": 3})
    assert (s.values, s.names, s.ignore_label) == ((0, 1, 2), ("background", "liver", "tumour"), 3)
    assert s.out_channels == 3 and s.file_values == (0, 1, 2, 3) and s.ignore_index == 3
    assert s.describe() == "classes background=0, liver=1, tumour=2; ignore label 3"
    assert s.encode(np.array([0, 3, 2, 1, 3])).tolist() == [0, 3, 2, 1, 3]
    masks = s.masks_from_labels(np.array([0, 3, 2, 1, 3]))
    assert masks.tolist() == [[False, False, False, True, False], [False, False, True, False, False]]
    assert s.ignored(np.array([0, 3, 2])).tolist() == [False, True, False]
    assert LabelScheme.from_dict(s.to_dict()) == s and s.to_dict()["ignore_label"] == 3
    assert "ignore_label" not in LabelScheme.from_labels({"background": 0, "a": 1}).to_dict()


def test_non_consecutive_values_and_regions_encode_the_ignore_index():
    s = LabelScheme.from_labels({"background": 0, "a": 2, "b": 5, "ignore": 9})
    assert s.encode(np.array([5, 9, 0, 2])).tolist() == [2, 3, 0, 1]  # ignore index K = 3
    r = LabelScheme.from_labels({"background": 0, "ignore": 4}, {"WT": [1, 2], "TC": [2]}, kind="regions")
    assert r.ignore_label == 4 and r.ignore_index == IGNORE_REGION_VALUE
    assert r.encode(np.array([0, 1, 2, 4])).tolist() == [[0, 1, 1, 255], [0, 0, 1, 255]]
    assert r.masks_from_labels(np.array([0, 2, 4])).tolist() == [[False, True, False], [False, True, False]]


def test_the_setting_and_the_declaration_must_agree_and_be_the_highest():
    labels = {"background": 0, "a": 1, "label_3": 3}  # e.g. inferred from the label maps
    s = LabelScheme.from_labels(labels, ignore_label=3)  # data.ignore_label=3: taken out of the classes
    assert (s.values, s.ignore_label) == ((0, 1), 3)
    assert LabelScheme.from_labels({"background": 0, "a": 1, "ignore": 3}, ignore_label=3).ignore_label == 3
    with pytest.raises(ConfigError, match="data.ignore_label=4 but the dataset declares 'ignore' = 3"):
        LabelScheme.from_labels({"background": 0, "a": 1, "ignore": 3}, ignore_label=4)
    with pytest.raises(ConfigError, match="must be the highest label value"):
        LabelScheme.from_labels({"background": 0, "a": 1, "ignore": 2, "b": 5})
    with pytest.raises(ValueError, match="must be the highest label value"):
        LabelScheme("labels", (0, 1, 2), ("background", "a", "b"), ignore_label=1)
    assert LabelScheme.declared_ignore_label({"background": 0, "a": 1}) is None


# --- dataset.json -------------------------------------------------------------------------------------
def sparse_label(ignored_voxels: int) -> np.ndarray:
    """Classes 1 and 2 on a few voxels, the last ``ignored_voxels`` voxels (C order) label 3."""
    label = np.zeros(SHAPE, np.uint8)
    flat = label.reshape(-1)
    flat[:4], flat[4:8] = 1, 2
    if ignored_voxels:
        flat[-ignored_voxels:] = 3
    return label


def write_nnunet_sparse(root, labels, ignored=(60, 0, 120)):
    for i, n in enumerate(ignored):
        write_nifti(root / "imagesTr" / f"pt{i}_0000.nii.gz", channel_volume(float(i)))
        write_nifti(root / "labelsTr" / f"pt{i}.nii.gz", sparse_label(n))
    meta = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(ignored),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_dataset_json_with_ignore_is_parsed(tmp_path):
    root = write_nnunet_sparse(tmp_path / "Dataset002_Sparse", {"background": 0, "a": 1, "b": 2, "ignore": 3})
    dataset = discover(root)
    assert dataset.labels == {"background": 0, "a": 1, "b": 2, "ignore": 3}
    assert declared_labels(root) == dataset.labels and declared_labels(tmp_path) == {}
    s = LabelScheme.from_labels(dataset.labels, dataset.regions)
    assert (s.kind, s.values, s.ignore_label) == ("labels", (0, 1, 2), 3)


def test_region_based_nnunet_dataset_json_keeps_ignore_out_of_the_regions(tmp_path):
    labels = {"background": 0, "whole": [1, 2], "core": [2], "ignore": 3}
    dataset = discover(write_nnunet_sparse(tmp_path / "Dataset003_Regions", labels))
    assert dataset.regions == {"whole": [1, 2], "core": [2]}
    s = LabelScheme.from_labels(dataset.labels, dataset.regions)
    assert (s.kind, s.names, s.ignore_label) == ("regions", ("whole", "core"), 3)


def test_msd_dataset_json_with_an_ignore_label(tmp_path):
    root = tmp_path / "Task98_Sparse"
    write_nifti(root / "imagesTr" / "c0.nii.gz", channel_volume(1.0))
    write_nifti(root / "labelsTr" / "c0.nii.gz", sparse_label(10))
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "a", "2": "b", "3": "ignore"},
        "training": [{"image": "./imagesTr/c0.nii.gz", "label": "./labelsTr/c0.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    assert LabelScheme.from_labels(discover(root).labels).ignore_label == 3


# --- check --------------------------------------------------------------------------------------------
def test_check_reports_the_share_of_ignored_voxels_per_case(tmp_path, capsys):
    root = write_nnunet_sparse(tmp_path / "Dataset002_Sparse", {"background": 0, "a": 1, "b": 2, "ignore": 3})
    report = check(root)
    assert report.ok and report.ignore_label == 3
    assert report.ignored_share == {"pt0": 0.5, "pt1": 0.0, "pt2": 1.0}
    assert any("1 case(s) have no annotated voxel (all 3): pt2" in n for n in report.notes)
    text = report.format()
    assert "ignore label 3 (not annotated): share of voxels ignored per case: min 0.0%, median 50.0%" in text
    assert "pt0 50.0%, pt1 0.0%, pt2 100.0%" in text
    out = tmp_path / "check.json"
    assert main(["check", str(root), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ignored_share"]["pt0"] == 0.5


def test_check_with_a_bad_or_a_given_ignore_label(tmp_path):
    root = write_nnunet_sparse(
        tmp_path / "Dataset004_Bad", {"background": 0, "a": 1, "ignore": 2, "b": 3}, ignored=(0, 0)
    )
    bad = [p for p in check(root).problems if p.kind == "bad_ignore_label"]
    assert len(bad) == 1 and "must be the highest label value" in bad[0].message
    # a dataset that declares no ignore label: --ignore-label names it, and 3 is no longer undeclared
    plain = write_nnunet_sparse(tmp_path / "Dataset005_Plain", {"background": 0, "a": 1, "b": 2}, (30, 0))
    assert [p.kind for p in check(plain).problems] == ["undeclared_labels"]
    given = check(plain, ignore_label=3)
    assert given.ok and given.ignored_share == {"pt0": 0.25, "pt1": 0.0}
