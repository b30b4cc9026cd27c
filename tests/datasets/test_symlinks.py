"""Datasets built of symlinks: case ids (and every file name shown) come from the listed name, never
from where a link leads, in every layout; two names for one file are reported, never merged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.datasets.conftest import channel_volume, label_volume, write_nifti

from attnseg.datasets import discover, load_case
from attnseg.datasets.check import check

EYE = np.eye(4)


def link(path: Path, target: Path) -> Path:
    """``path`` -> ``target`` as a relative symlink (how such folders are usually made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)
    return path


def raw_patients(root: Path, n: int, *, names=("image.nii.gz", "mask.nii.gz")) -> list[tuple[Path, Path]]:
    """``raw/patientN/{image,mask}.nii.gz``: every patient's files carry the same names; the image of
    patient i holds the value 10 * i, so a case's data tells which file it was read from."""
    out = []
    for i in range(1, n + 1):
        image = write_nifti(root / f"patient{i}" / names[0], channel_volume(10.0 * i), EYE)
        label = write_nifti(root / f"patient{i}" / names[1], label_volume((0, 1, 2)), EYE)
        out.append((image, label))
    return out


def msd_of_links(root: Path, targets: list[tuple[Path, Path]], ids: list[str]) -> Path:
    training = []
    for case_id, (image, label) in zip(ids, targets):
        link(root / "imagesTr" / f"{case_id}.nii.gz", image)
        link(root / "labelsTr" / f"{case_id}.nii.gz", label)
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "a", "2": "b"}}
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": len(ids), "training": training}))
    return root


def first_voxel(case, dataset) -> float:
    image, _, _ = load_case(case, dataset)
    return float(image[0, 0, 0, 0])


def test_msd_links_to_same_named_targets_keep_the_listed_ids(tmp_path):
    root = msd_of_links(tmp_path / "ds", raw_patients(tmp_path / "raw", 3), ["hip_001", "hip_002", "hip_003"])
    dataset = discover(root)
    assert dataset.case_ids == ["hip_001", "hip_002", "hip_003"]
    assert [c.images[0].name for c in dataset.cases] == ["hip_001.nii.gz", "hip_002.nii.gz", "hip_003.nii.gz"]
    assert [c.label.name for c in dataset.cases] == ["hip_001.nii.gz", "hip_002.nii.gz", "hip_003.nii.gz"]
    assert [first_voxel(c, dataset) for c in dataset.cases] == [10.0, 20.0, 30.0]  # each its own target
    report = check(root)
    assert report.ok and report.n_cases == 3, report.format()


def test_msd_links_to_distinct_target_names_keep_the_listed_ids(tmp_path):
    targets = raw_patients(tmp_path / "raw", 1, names=("scan_7f3a.nii.gz", "seg_7f3a.nii.gz"))
    targets += raw_patients(tmp_path / "raw2", 1, names=("scan_91bc.nii.gz", "seg_91bc.nii.gz"))
    dataset = discover(msd_of_links(tmp_path / "ds", targets, ["hip_001", "hip_002"]))
    assert dataset.case_ids == ["hip_001", "hip_002"]
    assert check(dataset.root).ok


def test_two_names_for_one_file_are_two_cases_and_a_check_failure(tmp_path):
    (image, label), _ = raw_patients(tmp_path / "raw", 2)
    root = msd_of_links(tmp_path / "ds", [(image, label), (image, label)], ["a", "b"])
    dataset = discover(root)
    assert dataset.case_ids == ["a", "b"]  # not merged, not renamed
    shared = [(p.case_id, p.kind) for p in dataset.problems]
    assert shared == [("b", "duplicate_file"), ("b", "duplicate_file")]  # its image and its label
    report = check(root)
    assert not report.ok and report.bad_cases == ["b"]
    text = report.format()
    assert "FAIL b: duplicate_file: imagesTr/b.nii.gz is the same file as imagesTr/a.nii.gz of case a" in text
    # a hard link is the same file too; b's label now leads to a file of its own
    (root / "imagesTr" / "b.nii.gz").unlink()
    os.link(image, root / "imagesTr" / "b.nii.gz")
    (root / "labelsTr" / "b.nii.gz").unlink()
    link(root / "labelsTr" / "b.nii.gz", tmp_path / "raw" / "patient2" / "mask.nii.gz")
    assert [(p.case_id, p.kind, p.path) for p in discover(root).problems] == [
        ("b", "duplicate_file", str((root / "imagesTr" / "b.nii.gz").absolute()))
    ]


def test_msd_same_case_id_from_two_paths_stays_two_cases(tmp_path):
    """``imagesTr/a`` and ``extra/a`` are two cases called ``a``: reported, neither dropped."""
    root = tmp_path / "ds"
    write_nifti(root / "imagesTr" / "a.nii.gz", channel_volume(1.0), EYE)
    write_nifti(root / "extra" / "a.nii.gz", channel_volume(2.0), EYE)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "MRI"},
                "training": [{"image": "./imagesTr/a.nii.gz"}, {"image": "extra/a.nii.gz"}],
            }
        )
    )
    dataset = discover(root)
    assert dataset.case_ids == ["a", "a"]
    assert [(p.case_id, p.kind) for p in dataset.problems] == [("a", "duplicate_case")]
    # the same entry twice (however spelt) is one case
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/a.nii.gz"}, {"image": "imagesTr//a.nii.gz"}]})
    )
    dataset = discover(root)
    assert dataset.case_ids == ["a"] and [p.message.startswith("listed twice") for p in dataset.problems] == [
        True
    ]


def test_msd_unlisted_link_is_reported_even_when_its_target_is_used(tmp_path):
    targets = raw_patients(tmp_path / "raw", 2)
    root = msd_of_links(tmp_path / "ds", targets, ["a", "b"])
    link(root / "imagesTr" / "c.nii.gz", targets[0][0])  # a third name for patient 1, not listed
    problems = [(p.kind, p.message.split(" is ")[0]) for p in discover(root).problems]
    assert problems == [("unlisted_file", "imagesTr/c.nii.gz")]


def test_nnunet_links_keep_their_names(tmp_path):
    targets = raw_patients(tmp_path / "raw", 2)
    root = tmp_path / "Dataset001_X"
    for case_id, (image, label) in zip(["pt_a", "pt_b"], targets):
        link(root / "imagesTr" / f"{case_id}_0000.nii.gz", image)
        link(root / "labelsTr" / f"{case_id}.nii.gz", label)
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "a": 1, "b": 2},
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    dataset = discover(root)
    assert dataset.case_ids == ["pt_a", "pt_b"]
    assert [c.images[0].name for c in dataset.cases] == ["pt_a_0000.nii.gz", "pt_b_0000.nii.gz"]
    assert [first_voxel(c, dataset) for c in dataset.cases] == [10.0, 20.0]
    assert check(root).ok
    # an explicit case list: the paths stay as listed (links not followed)
    explicit = {"pt_x": {"images": ["imagesTr/pt_a_0000.nii.gz"], "label": "labelsTr/pt_a.nii.gz"}}
    (root / "dataset.json").write_text(json.dumps({**meta, "dataset": explicit}))
    case = discover(root).cases[0]
    assert (case.case_id, case.images[0].name, case.label.name) == ("pt_x", "pt_a_0000.nii.gz", "pt_a.nii.gz")
    assert case.images[0].is_symlink()


def test_brats_case_folder_and_files_as_links(tmp_path):
    raw = tmp_path / "raw"
    for key, value in {"flair": 1.0, "t1": 2.0, "t1ce": 3.0, "t2": 4.0}.items():
        write_nifti(raw / "export_0042" / f"series_{key}.nii.gz", channel_volume(value), EYE)
    write_nifti(raw / "export_0042" / "series_seg.nii.gz", label_volume((0, 1, 2, 4)), EYE)
    root = tmp_path / "brats"
    # a case folder of file links named the BraTS way
    for key in ("flair", "t1", "t1ce", "t2", "seg"):
        link(root / "Brats18_A_1" / f"Brats18_A_1_{key}.nii.gz", raw / "export_0042" / f"series_{key}.nii.gz")
    # a case folder that is itself a link to a folder named otherwise
    (raw / "Brats18_B_1").mkdir()
    for key in ("flair", "t1", "t1ce", "t2", "seg"):
        write_nifti(raw / "Brats18_B_1" / f"Brats18_B_1_{key}.nii.gz", label_volume((0, 1, 2, 4)), EYE)
    link(root / "Brats18_C_1", raw / "Brats18_B_1")
    dataset = discover(root)
    assert dataset.case_ids == ["Brats18_A_1", "Brats18_C_1"]
    assert dataset.cases[1].images[0] == root / "Brats18_C_1" / "Brats18_B_1_flair.nii.gz"
    image, label, _ = load_case(dataset.cases[0], dataset)
    assert image[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0] and label.max() == 4


def test_paired_and_slice_folders_of_links(tmp_path):
    targets = raw_patients(tmp_path / "raw", 2)
    root = tmp_path / "paired"
    for case_id, (image, label) in zip(["left", "right"], targets):
        link(root / "images" / f"{case_id}.nii.gz", image)
        link(root / "labels" / f"{case_id}.nii.gz", label)
    dataset = discover(root)
    assert dataset.case_ids == ["left", "right"] and check(root).ok
    # 2D slices: patient folders of links to PNG files named otherwise
    png = tmp_path / "raw2d"
    png.mkdir()
    Image.fromarray(np.full((6, 7), 90, np.uint8)).save(png / "frame.png")
    Image.fromarray(np.where(np.arange(42).reshape(6, 7) < 9, 255, 0).astype(np.uint8)).save(png / "m.png")
    slices = tmp_path / "slices"
    link(slices / "P1" / "P1_1.png", png / "frame.png")
    link(slices / "P1" / "P1_1_mask.png", png / "m.png")
    dataset = discover(slices)
    assert (dataset.layout, dataset.case_ids) == ("slices2d", ["P1_1"])
    _, mask, _ = load_case(dataset.cases[0], dataset)
    assert int(mask.sum()) == 9


@pytest.mark.parametrize("layout", ["msd", "paired"])
def test_a_dangling_link_is_a_missing_file_named_as_listed(tmp_path, layout):
    targets = raw_patients(tmp_path / "raw", 2)
    if layout == "msd":
        root = msd_of_links(tmp_path / "ds", targets, ["a", "b"])
        where = "imagesTr/b.nii.gz"
    else:
        root = tmp_path / "ds"
        for case_id, (image, label) in zip(["a", "b"], targets):
            link(root / "images" / f"{case_id}.nii.gz", image)
            link(root / "labels" / f"{case_id}.nii.gz", label)
        where = None
    (tmp_path / "raw" / "patient2" / "image.nii.gz").unlink()
    report = check(root)
    assert report.bad_cases == ["b"]
    if where:
        assert f"FAIL b: missing_image: {where}: image file not found" in report.format()
