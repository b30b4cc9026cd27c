"""convert dicom round trip: series + SEG -> nnU-Net v2 dataset -> check passes -> predict -> SEG."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from tests.conftest import shared_dataset
from tests.dicom_helpers import oblique_iop, write_series

from attnseg.cli import main
from attnseg.config import PreprocessConfig
from attnseg.datasets import discover
from attnseg.datasets.convert_dicom import convert_dicom, grid_map, nifti_to_seg
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError, DataError
from attnseg.inference.predict import InferenceSettings, LoadedModel, predict_folder
from attnseg.io.dicom_seg import read_seg, write_seg
from attnseg.io.dicom_series import find_series, read_series
from attnseg.io.nifti import load_image, load_label, save_image


def sphere_volume(shape=(16, 14, 8), centre=(8, 7, 4), radius=4.0, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    inside = ((grid - np.asarray(centre)[:, None, None, None]) ** 2).sum(0) < radius**2
    image = np.where(inside, 800, 100) + rng.integers(0, 20, shape)
    return image.astype(np.uint16), inside


def threshold_model():
    def predictor(batch):
        return torch.cat([torch.zeros_like(batch), batch], dim=1)

    settings = InferenceSettings(
        3,
        1,
        2,
        (16, 16, 8),
        PreprocessConfig(normalization="zscore"),
        LabelScheme("labels", (0, 1), ("background", "lesion")),
    )
    return LoadedModel(predictor, settings)


@pytest.fixture
def pacs_export(tmp_path):
    """Two series with a SEG each (one oblique), one series without: what a PACS export holds."""
    src = tmp_path / "export"
    truths = {}
    for number, iop in ((3, None), (4, oblique_iop(30.0))):
        image, inside = sphere_volume(seed=number)
        kwargs = {"iop": iop} if iop is not None else {}
        write_series(
            src / f"series{number}",
            image,
            edit=lambda k, ds, n=number: setattr(ds, "SeriesNumber", n),
            **kwargs,
        )
        series = find_series(src / f"series{number}").series[0]
        write_seg(src / "segs" / f"seg{number}.dcm", inside[None], read_series(series), ["lesion"])
        truths[series.case_id] = (image, inside)
    image, _ = sphere_volume(seed=9)
    write_series(src / "unlabelled", image, edit=lambda k, ds: setattr(ds, "SeriesNumber", 8))
    return src, truths


def test_convert_dicom_round_trip(pacs_export, tmp_path, capsys):
    src, truths = pacs_export
    dst = tmp_path / "Dataset501_Pacs"
    report = convert_dicom(src, dst)
    assert (
        sorted(report.training) == sorted(truths)
        and report.test == ["MR_s008_synthetic_t1"]
        and not report.refused
    )
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "lesion": 1} and meta["numTraining"] == 2
    assert meta["channel_names"] == {"0": "MR"} and meta["file_ending"] == ".nii.gz"

    for case_id, (image, inside) in truths.items():
        loaded, img_meta = load_image(dst / "imagesTr" / f"{case_id}_0000.nii.gz")
        label, label_meta = load_label(dst / "labelsTr" / f"{case_id}.nii.gz")
        np.testing.assert_array_equal(loaded[0], image)
        np.testing.assert_array_equal(label, inside.astype(np.uint8))
        np.testing.assert_allclose(img_meta.affine, label_meta.affine)
    assert (dst / "imagesTs" / "MR_s008_synthetic_t1_0000.nii.gz").is_file()

    # the dataset passes attnseg check, as nnU-Net v2 layout
    assert main(["check", str(dst)]) == 0
    assert discover(dst).layout == "nnunet"

    # predict on the converted dataset -> NIfTI; back onto the series as SEG; equal masks
    pred = tmp_path / "pred"
    predict_folder(threshold_model(), dst / "imagesTr", pred, progress=False)
    for case_id, (_, inside) in truths.items():
        series_dir = src / ("series3" if "s003" in case_id else "series4")
        out = tmp_path / "segs_back" / f"{case_id}.dcm"
        assert main(["convert", "seg", str(pred / f"{case_id}.nii.gz"), str(series_dir), str(out)]) == 0
        series = find_series(series_dir).series[0]
        back = read_seg(out, read_series(series), series.uid)
        predicted, _ = load_label(pred / f"{case_id}.nii.gz")
        assert back.names == ["label_1"] and np.array_equal(back.masks[0], predicted.astype(bool))
        # the threshold model finds the bright sphere exactly
        assert np.array_equal(back.masks[0], inside)
    printed = capsys.readouterr()
    assert "Zyxwv" not in printed.out + printed.err


def test_convert_refuses_overlapping_segments_and_writes_the_rest(tmp_path):
    src = tmp_path / "export"
    image, inside = sphere_volume()
    write_series(src / "a", image, edit=lambda k, ds: setattr(ds, "SeriesNumber", 1))
    write_series(src / "b", image, edit=lambda k, ds: setattr(ds, "SeriesNumber", 2))
    a, b = (find_series(src / n).series[0] for n in "ab")
    write_seg(src / "a" / "seg.dcm", np.stack([inside, inside]), read_series(a), ["x", "y"])
    write_seg(src / "b" / "seg.dcm", np.stack([inside, np.zeros_like(inside)]), read_series(b), ["x", "y"])
    report = convert_dicom(src, tmp_path / "out")
    assert report.training == [b.case_id]
    assert len(report.refused) == 1 and report.refused[0][0] == a.case_id
    assert "overlap on" in report.refused[0][1]


def test_convert_writes_nothing_into_the_source(pacs_export):
    src, _ = pacs_export
    with pytest.raises(ConfigError, match="inside the DICOM folder"):
        convert_dicom(src, src / "dataset")


def test_grid_map_undoes_a_row_flip_like_dcm2niix(tmp_path):
    affine = np.array([[0, 0, 4.8, -81.6], [-1.0, 0, 0, 130], [0, -1.0, 0, 130], [0, 0, 0, 1]])
    flipped = affine.copy()
    flipped[:3, 1] *= -1
    flipped[:3, 3] = affine[:3, :3] @ [0, 9, 0] + affine[:3, 3]  # row 9 of a 10-row grid first
    axes, flips = grid_map(flipped, affine)
    assert axes == (0, 1, 2) and flips == (1,)
    assert grid_map(affine @ np.diag([1.0, 1.0, 0.5, 1.0]), affine) is None  # other spacing: no


def test_nifti_to_seg_places_a_flipped_label_map(tmp_path):
    image, inside = sphere_volume(centre=(5, 4, 3))  # off-centre: a flip would show
    write_series(tmp_path / "s", image)
    series = find_series(tmp_path / "s").series[0]
    volume = read_series(series)
    flipped_affine = volume.meta.affine.copy()
    flipped_affine[:3, 1] *= -1
    flipped_affine[:3, 3] = (
        volume.meta.affine[:3, :3] @ [0, inside.shape[1] - 1, 0] + volume.meta.affine[:3, 3]
    )
    nib.save(
        nib.Nifti1Image(inside[:, ::-1, :].astype(np.uint8), flipped_affine), str(tmp_path / "flip.nii.gz")
    )
    out = nifti_to_seg(tmp_path / "flip.nii.gz", tmp_path / "s", tmp_path / "flip.dcm")
    assert np.array_equal(read_seg(out, volume, series.uid).masks[0], inside)
    save_image(
        tmp_path / "wrong.nii.gz",
        inside.astype(np.uint8),
        affine=volume.meta.affine @ np.diag([2.0, 1, 1, 1]),
    )
    with pytest.raises(DataError, match="not the series' grid"):
        nifti_to_seg(tmp_path / "wrong.nii.gz", tmp_path / "s", tmp_path / "wrong.dcm")


@pytest.mark.data
def test_convert_the_dcmqi_liver_folder(tmp_path):
    root = shared_dataset("dicom_seg_dcmqi_liver")
    report = convert_dicom(root, tmp_path / "liver", seg_pattern="liver.dcm")
    assert report.training == ["CT_s002"] and report.labels == {"background": 0, "Liver": 1}
    label, meta = load_label(tmp_path / "liver" / "labelsTr" / "CT_s002.nii.gz")
    assert int(label.sum()) == 107_098 and label.shape == (512, 512, 3)
    image, _ = load_image(tmp_path / "liver" / "imagesTr" / "CT_s002_0000.nii.gz")
    assert image.min() == -3024 and image.max() == 1381  # after RescaleIntercept -1024
