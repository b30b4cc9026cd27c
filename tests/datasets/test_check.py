from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image
from tests.datasets.conftest import channel_volume, label_volume, write_nifti

from attnseg.cli import main
from attnseg.datasets import discover
from attnseg.datasets.check import check, check_dataset


def kinds(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in report.problems:
        out.setdefault(p.case_id, set()).add(p.kind)
    return out


def test_clean_datasets_pass(
    msd_root, nnunet_root, brats2018_root, deepmedic_root, paired_2d_root, slices_root
):
    for root in (msd_root, nnunet_root, brats2018_root, deepmedic_root, paired_2d_root, slices_root):
        report = check(root)
        assert report.ok, report.format()
        assert "OK:" in report.format()


def test_missing_files_and_orphans(paired_nifti_root, nnunet_root):
    (paired_nifti_root / "labels" / "hippo_001.nii.gz").unlink()
    write_nifti(paired_nifti_root / "labels" / "hippo_999.nii.gz", label_volume(), np.eye(4))
    report = check(paired_nifti_root, labels=[0, 1, 2])
    assert kinds(report) == {"hippo_001": {"missing_label"}, "hippo_999": {"missing_image"}}
    assert "labels/hippo_001.nii.gz" in report.format()
    assert check(paired_nifti_root, labels=[0, 1, 2], require_labels=False).bad_cases == ["hippo_999"]

    (nnunet_root / "imagesTr" / "pt1_0001.nii.gz").unlink()
    report = check(nnunet_root)
    assert kinds(report) == {"pt1": {"channel_count"}} and len(report.problems) == 1
    assert (
        "pt1: channel_count: has channel files [0]; dataset.json declares 2 (T2, ADC), missing ['0001']"
        in report.format()
    )


def test_msd_listed_file_missing_and_4d_channel_count(msd_root):
    (msd_root / "imagesTr" / "case_001.nii.gz").unlink()
    write_nifti(
        msd_root / "imagesTr" / "case_002.nii.gz", channel_volume(1.0)
    )  # 3D, but 2 modalities declared
    report = check(msd_root)
    assert kinds(report) == {"case_001": {"missing_image"}, "case_002": {"channel_count"}}
    assert "has 1 channel(s); the dataset declares 2 (FLAIR, T1w)" in report.format()


def test_shape_and_affine_mismatch(brats2018_root):
    case = brats2018_root / "HGG" / "Brats18_A_1"
    write_nifti(case / "Brats18_A_1_t2.nii.gz", channel_volume(4.0, shape=(6, 5, 3)))
    shifted = np.diag([-1.0, -1.0, 1.0, 1.0])  # translation differs from the images' (0, 239, 0)
    write_nifti(
        brats2018_root / "HGG" / "Brats18_B_1" / "Brats18_B_1_seg.nii.gz", label_volume((0, 1)), shifted
    )
    report = check(brats2018_root)
    assert kinds(report) == {"Brats18_A_1": {"shape_mismatch"}, "Brats18_B_1": {"affine_mismatch"}}
    text = report.format()
    assert "Brats18_A_1_t2.nii.gz has shape (6, 5, 3)" in text
    assert "largest difference 239" in text


def test_nan_truncated_and_bad_labels(deepmedic_root):
    pat1 = deepmedic_root / "brats_2013_pat0001_1"
    flair = channel_volume(1.0)
    flair[0, 0, 0] = np.nan
    flair[1, 0, 0] = np.inf
    write_nifti(pat1 / "Flair_subtrMeanDivStd.nii.gz", flair)
    label = label_volume((0, 1, 2, 3, 4)).astype(np.float32)
    label[2, 2, 2] = 0.5
    write_nifti(pat1 / "OTMultiClass.nii.gz", label)
    pat4 = deepmedic_root / "brats_2013_pat0004_1"
    raw = (pat4 / "T1c_subtrMeanDivStd.nii.gz").read_bytes()
    (pat4 / "T1c_subtrMeanDivStd.nii.gz").write_bytes(raw[:-20])
    report = check(deepmedic_root)
    assert kinds(report) == {
        "brats_2013_pat0001_1": {"nan_inf", "bad_label_values"},
        "brats_2013_pat0004_1": {"unreadable"},
    }
    text = report.format()
    assert "has 2 NaN/inf voxels" in text and "non-integer values, e.g. [0.5]" in text
    assert "T1c_subtrMeanDivStd.nii.gz: truncated or corrupt" in text


def test_truncated_uncompressed_nii_and_junk(paired_nifti_root):
    path = paired_nifti_root / "images" / "hippo_000.nii"
    write_nifti(path, channel_volume(1.0), np.eye(4))
    (paired_nifti_root / "images" / "hippo_000.nii.gz").unlink()
    path.write_bytes(path.read_bytes()[:400])
    (paired_nifti_root / "images" / "hippo_003.nii.gz").write_bytes(b"\x1f\x8bjunk")
    report = check(paired_nifti_root, labels=[0, 1, 2])
    assert kinds(report) == {"hippo_000": {"unreadable"}, "hippo_003": {"unreadable"}}


def test_undeclared_labels_declared_and_inferred(paired_nifti_root, brats2023_root):
    # declared (BraTS 2023 has no label 4)
    write_nifti(
        brats2023_root / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-seg.nii.gz", label_volume((0, 4))
    )
    report = check(brats2023_root)
    assert kinds(report) == {"BraTS-GLI-00000-000": {"undeclared_labels"}}
    assert "has value(s) [4] (4: 1 voxels); the dataset declares [0, 1, 2, 3]" in report.format()
    # inferred: 4 cases use {0, 1, 2}; one case has a 7 in 3 voxels
    write_nifti(
        paired_nifti_root / "labels" / "hippo_002.nii.gz", label_volume((0, 1, 2, 7, 7, 7)), np.eye(4)
    )
    report = check(paired_nifti_root)
    assert report.inferred_labels == [0, 1, 2]
    assert kinds(report) == {"hippo_002": {"undeclared_labels"}}
    assert "[7] (7: 3 voxels)" in report.format() and "--labels" in report.format()
    # declaring the labels makes the 7 an error against the declaration instead
    assert "declares [0, 1, 2]" in check(paired_nifti_root, labels=[0, 1, 2]).format()


def test_2d_mask_shape_mismatch_and_bad_file(paired_2d_root):
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(paired_2d_root / "masks" / "img1_mask.png")
    (paired_2d_root / "images" / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    report = check(paired_2d_root)
    assert kinds(report) == {"img1": {"shape_mismatch"}, "img2": {"unreadable"}}


def test_cli_exit_codes_and_json(msd_root, tmp_path, capsys):
    assert main(["check", str(msd_root)]) == 0
    assert "OK: 3 cases passed" in capsys.readouterr().out
    (msd_root / "labelsTr" / "case_000.nii.gz").unlink()
    out = tmp_path / "report.json"
    assert main(["check", str(msd_root), "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL case_000: missing_label" in printed and "1 of 3 cases: case_000" in printed
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["bad_cases"] == ["case_000"]
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_check_report_lists_every_case_in_a_big_dataset(tmp_path):
    root = tmp_path / "many"
    for i in range(30):
        write_nifti(root / "images" / f"c{i:02d}.nii.gz", channel_volume(i), np.eye(4))
        write_nifti(root / "labels" / f"c{i:02d}.nii.gz", label_volume(), np.eye(4))
    for i in (3, 17, 29):
        (root / "labels" / f"c{i:02d}.nii.gz").unlink()
    report = check_dataset(discover(root))
    assert report.bad_cases == ["c03", "c17", "c29"]


# --- the real data in ../shared/data -----------------------------------------------------------------
@pytest.mark.data
def test_hippocampus_broken_reports_all_three_faulty_files():
    from tests.conftest import shared_dataset

    report = check(shared_dataset("hippocampus_broken"))
    assert kinds(report) == {
        "hippocampus_143": {"shape_mismatch"},  # label (32, 45, 38) vs image (32, 45, 41)
        "hippocampus_160": {"unreadable"},  # image gzip stream cut short
        "hippocampus_221": {"undeclared_labels"},  # label value 5 in 12 voxels
    }
    text = report.format()
    assert (
        "labels/hippocampus_143.nii.gz has shape (32, 45, 38), image images/hippocampus_143.nii.gz has (32, 45, 41)"
        in text
    )
    assert "images/hippocampus_160.nii.gz: truncated or corrupt" in text
    assert "labels/hippocampus_221.nii.gz has value(s) [5] (5: 12 voxels)" in text


@pytest.mark.data
def test_task04_passes_quickly():
    from tests.conftest import shared_dataset

    start = time.perf_counter()
    report = check(shared_dataset("Task04_Hippocampus"))
    seconds = time.perf_counter() - start
    assert report.ok, report.format()
    assert report.n_cases == 200 and report.label_case_counts == {0: 200, 1: 200, 2: 200}
    assert report.shape_range == ((31, 40, 24), (43, 59, 47))  # SOURCE.md: about 31-43 x 40-59 x 24-47
    assert seconds < 20  # about 1.5 s here; generous for a shared, busy machine
