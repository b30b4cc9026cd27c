"""``attnseg check`` reads every file the way training and prediction do (``io.nifti.read_nifti``
and the loaders' own checks), so a dataset that passes check loads, and one that loads passes;
and file extensions count in any letter case (``.NII.GZ``, ``.Nii``, ``.PNG``) in every layout."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from tests.datasets.conftest import channel_volume, label_volume, write_nifti

from attnseg.datasets import discover, load_case
from attnseg.datasets.check import check
from attnseg.errors import DataError
from attnseg.io.nifti import load_image, load_label

EYE = np.eye(4)


def write_as(path: Path, data: np.ndarray, *, compress: bool) -> Path:
    """A NIfTI file under any name: gzip-compressed or not by choice, whatever the name says."""
    tmp = write_nifti(path.parent / ("_tmp.nii.gz" if compress else "_tmp.nii"), data, EYE)
    tmp.rename(path)
    return path


@pytest.mark.parametrize("name, compress", [("a.NII.GZ", True), ("a.Nii", False), ("a.nii.Gz", True)])
def test_the_loaders_read_nifti_by_content_in_any_letter_case(tmp_path, name, compress):
    path = write_as(tmp_path / name, label_volume((0, 1, 2)), compress=compress)
    image, meta = load_image(path)
    label, _ = load_label(path)
    assert image.shape == (1, 6, 5, 4) and meta.shape == (6, 5, 4)
    assert label.ravel()[:3].tolist() == [0, 1, 2] and label.dtype == np.uint8


def test_every_layout_finds_checks_and_loads_upper_case_extensions(tmp_path):
    # MSD: listed in upper case
    msd = tmp_path / "msd"
    write_as(msd / "imagesTr" / "c1.NII.GZ", channel_volume(7.0), compress=True)
    write_as(msd / "labelsTr" / "c1.NII.GZ", label_volume(), compress=True)
    entry = {"image": "./imagesTr/c1.NII.GZ", "label": "./labelsTr/c1.NII.GZ"}
    (msd / "dataset.json").write_text(
        json.dumps({"labels": {"0": "b", "1": "x", "2": "y"}, "training": [entry]})
    )
    # MSD v1 listing x.nii.gz while the channel files on disk say .NII.GZ
    write_as(msd / "imagesTr" / "c2_0000.NII.GZ", channel_volume(8.0), compress=True)
    write_as(msd / "labelsTr" / "c2.nii.gz", label_volume(), compress=True)
    entries = [entry, {"image": "./imagesTr/c2.nii.gz", "label": "./labelsTr/c2.nii.gz"}]
    (msd / "dataset.json").write_text(
        json.dumps({"labels": {"0": "b", "1": "x", "2": "y"}, "training": entries})
    )
    # nnU-Net: file_ending .nii.gz, files in capitals
    nnunet = tmp_path / "nnunet"
    write_as(nnunet / "imagesTr" / "pt1_0000.NII.GZ", channel_volume(3.0), compress=True)
    write_as(nnunet / "labelsTr" / "pt1.NII.GZ", label_volume(), compress=True)
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "x": 1, "y": 2},
        "file_ending": ".nii.gz",
    }
    (nnunet / "dataset.json").write_text(json.dumps({**meta, "numTraining": 1}))
    # BraTS
    brats = tmp_path / "brats"
    for key in ("flair", "t1", "t1ce", "t2"):
        write_as(brats / "Brats18_A_1" / f"Brats18_A_1_{key}.NII.GZ", channel_volume(1.0), compress=True)
    write_as(brats / "Brats18_A_1" / "Brats18_A_1_seg.Nii", label_volume((0, 1, 2, 4)), compress=False)
    # paired, uncompressed .Nii
    paired = tmp_path / "paired"
    write_as(paired / "images" / "p1.Nii", channel_volume(5.0), compress=False)
    write_as(paired / "labels" / "p1.Nii", label_volume(), compress=False)
    # 2D slices, .PNG
    slices = tmp_path / "slices"
    (slices / "P1").mkdir(parents=True)
    Image.fromarray(np.full((6, 7), 50, np.uint8)).save(slices / "P1" / "P1_3.PNG", format="PNG")
    Image.fromarray(np.full((6, 7), 255, np.uint8)).save(slices / "P1" / "P1_3_mask.PNG", format="PNG")

    expected = {
        msd: ("msd", ["c1", "c2"]),
        nnunet: ("nnunet", ["pt1"]),
        brats: ("brats", ["Brats18_A_1"]),
        paired: ("paired", ["p1"]),
        slices: ("slices2d", ["P1_3"]),
    }
    for root, (layout, ids) in expected.items():
        dataset = discover(root)
        assert (dataset.layout, dataset.case_ids) == (layout, ids)
        report = check(root)
        assert report.ok, report.format()
        for case in dataset.cases:
            image, label, _ = load_case(case, dataset)
            assert label is not None and label.shape == image.shape[1:]
    msd_cases = discover(msd).cases
    assert [p.name for p in msd_cases[1].images] == ["c2_0000.NII.GZ"]
    assert float(load_case(msd_cases[1], discover(msd))[0].max()) == 8.0


def _one_case(root: Path, image=None, label=None) -> Path:
    """A paired dataset of one case; ``image``/``label``: writer(path) for a bad file, else a good one."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    (image or (lambda p: write_nifti(p, channel_volume(1.0), EYE)))(root / "images" / "x.nii.gz")
    (label or (lambda p: write_nifti(p, label_volume(), EYE)))(root / "labels" / "x.nii.gz")
    return root


def _nifti(data: np.ndarray, dtype=None):
    def write(path: Path) -> None:
        img = nib.Nifti1Image(data, EYE, dtype=dtype) if dtype is not None else nib.Nifti1Image(data, EYE)
        nib.save(img, str(path))

    return write


RGB = np.zeros((6, 5, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
BAD_FILES = {
    # what check used to pass while the loaders refused it (or crashed on it)
    "label 5D (X, Y, Z, 1, 1)": ({"label": _nifti(label_volume()[..., None, None])}, "unreadable"),
    "label of two volumes": ({"label": _nifti(np.stack([label_volume()] * 2, -1))}, "bad_label_values"),
    "RGB image": ({"image": _nifti(RGB)}, "unreadable"),
    "label values beyond int32": (
        {"label": _nifti(np.full((6, 5, 4), 2**40, np.int64), dtype=np.int64)},
        "bad_label_values",
    ),
    "float label with NaN": (
        {"label": _nifti(np.where(label_volume() == 1, np.nan, 0).astype(np.float32))},
        "bad_label_values",
    ),
}


@pytest.mark.parametrize("what", list(BAD_FILES))
def test_check_fails_exactly_where_the_loader_fails(tmp_path, what):
    writers, kind = BAD_FILES[what]
    root = _one_case(tmp_path / "data", **writers)
    report = check(root)
    assert [p.kind for p in report.problems] == [kind], report.format()
    dataset = discover(root)
    with pytest.raises(DataError, match=r"x\.nii\.gz"):
        load_case(dataset.cases[0], dataset)


def test_a_clean_case_passes_both(tmp_path):
    root = _one_case(tmp_path / "data")
    assert check(root).ok
    dataset = discover(root)
    image, label, _ = load_case(dataset.cases[0], dataset)
    assert float(image.max()) == 1.0 and label.ravel()[:3].tolist() == [0, 1, 2]


def test_a_gzip_stream_named_nii_fails_both_with_the_same_words(tmp_path):
    path = write_nifti(tmp_path / "y.nii.gz", channel_volume(1.0), EYE)
    wrong = tmp_path / "y.Nii"
    wrong.write_bytes(path.read_bytes())
    with pytest.raises(DataError, match=r"y\.Nii: gzip-compressed but named y\.Nii"):
        load_image(wrong)
    root = _one_case(tmp_path / "data")
    (root / "images" / "x.nii.gz").unlink()
    (root / "images" / "x.NII").write_bytes(path.read_bytes())
    report = check(root)
    assert [p.kind for p in report.problems] == ["unreadable"]
    assert "gzip-compressed but named x.NII" in report.problems[0].message


def test_msd_listing_finds_a_suffix_written_in_another_letter_case(tmp_path):
    """dataset.json says ``x.nii.gz``, the disk holds ``x.NII.GZ`` (made on a case-insensitive
    file system): the file is used, the case keeps the listed id; other names still go missing."""
    root = tmp_path / "msd"
    write_as(root / "imagesTr" / "x.NII.GZ", channel_volume(4.0), compress=True)
    write_as(root / "labelsTr" / "x.Nii.Gz", label_volume(), compress=True)
    write_as(root / "imagesTr" / "Y.nii.gz", channel_volume(4.0), compress=True)
    entries = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("x", "y")]
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"0": "b", "1": "u", "2": "v"}, "training": entries})
    )
    dataset = discover(root)
    assert dataset.case_ids == ["x", "y"]
    assert (dataset.cases[0].images[0].name, dataset.cases[0].label.name) == ("x.NII.GZ", "x.Nii.Gz")
    report = check(root)
    assert [(p.case_id, p.kind) for p in report.problems] == [
        (None, "unlisted_file"),  # Y.nii.gz: the stem differs, so it is not y's file
        ("y", "missing_image"),
        ("y", "missing_label"),
    ]
