"""DICOM SEG as truth (and as prediction): dcmqi's files give the per-segment pixel counts their
SOURCE.md lists, overlapping segments each keep their pixels, and a SEG we write scores Dice 1."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tests.conftest import shared_dataset

from attnseg.cli import main
from attnseg.io.dicom_seg import read_seg, write_seg
from attnseg.io.dicom_series import find_series, read_series
from attnseg.io.nifti import save_image
from attnseg.metrics.evaluate_dicom import evaluate_dicom_folders

PARTIAL_OVERLAP_COUNTS = {
    "GREEN": 9602,
    "ORANGE": 11888,
    "PURPLE": 117 + 117 + 10509,
    "LIGHT_BLUE": 6693,
    "DARK_BLUE": 4713,
}


@pytest.fixture
def liver_data():
    return shared_dataset("dicom_seg_dcmqi_liver")


def _liver_volume(root):
    series = find_series(root / "ct").series[0]
    return series, read_series(series)


@pytest.mark.data
def test_liver_seg_as_truth_counts_107098_pixels(liver_data, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(liver_data / "seg" / "liver.dcm", pred / "any_name.dcm")  # matched by series, not name
    out = tmp_path / "eval"
    code = main(["evaluate", str(pred), str(liver_data), "--truth-pattern", "liver.dcm", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == ["CT_s002"]
    pooled = summary["pooled"]["Liver"]
    assert pooled["tp_vox"] == 107_098 and pooled["fn_vox"] == 0 and pooled["fp_vox"] == 0
    assert summary["targets"]["Liver"]["dice"]["mean"] == 1.0
    assert "Liver" in capsys.readouterr().out


@pytest.mark.data
def test_liver_frames_land_on_their_source_slices(liver_data):
    series, volume = _liver_volume(liver_data)
    truth = read_seg(liver_data / "seg" / "liver.dcm", volume, series.uid)
    per_slice = {volume.slice_files[k].name: int(truth.masks[0][:, :, k].sum()) for k in range(3)}
    assert per_slice == {"03.dcm": 36_233, "02.dcm": 35_645, "01.dcm": 35_220}


@pytest.mark.data
def test_overlapping_segments_are_scored_each_with_all_their_pixels(liver_data, tmp_path):
    series, volume = _liver_volume(liver_data)
    truth = read_seg(liver_data / "seg" / "partial_overlaps.dcm", volume, series.uid)
    assert truth.voxel_counts() == PARTIAL_OVERLAP_COUNTS and truth.overlaps()
    m = truth.masks
    pairs = {
        (a, b): int((m[a] & m[b]).sum()) for a in range(5) for b in range(a + 1, 5) if (m[a] & m[b]).any()
    }
    assert pairs == {(0, 1): 3017, (0, 2): 95, (1, 2): 50}  # segments 1&2, 1&3, 2&3 (SOURCE.md)
    shared = m.sum(axis=0) > 1
    k02 = volume.slice_files.index(liver_data / "ct" / "02.dcm")
    assert int(shared[:, :, k02].sum()) == int(shared.sum()) > 0  # every overlap lies on 02.dcm

    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(liver_data / "seg" / "partial_overlaps.dcm", pred / "p.dcm")
    result = evaluate_dicom_folders(pred, liver_data, truth_pattern="partial_overlaps.dcm", lesions=False)
    rows = result.per_case["CT_s002"]
    assert {name: int(row["tp_vox"]) for name, row in rows.items()} == PARTIAL_OVERLAP_COUNTS
    assert all(row["dice"] == 1.0 for row in rows.values())


@pytest.mark.data
def test_our_seg_and_a_label_map_scored_against_the_dcmqi_truth(liver_data, tmp_path):
    series, volume = _liver_volume(liver_data)
    truth = read_seg(liver_data / "seg" / "liver.dcm", volume, series.uid).masks[0]
    # a prediction missing the liver on one slice (01.dcm, 35,220 pixels)
    pred = truth.copy()
    k01 = volume.slice_files.index(liver_data / "ct" / "01.dcm")
    pred[:, :, k01] = False
    expected_dice = 2 * (107_098 - 35_220) / (2 * 107_098 - 35_220)

    seg_dir = tmp_path / "seg_pred"
    write_seg(seg_dir / "CT_s002.seg.dcm", pred[None], volume, ["liver"])
    nifti_dir = tmp_path / "nifti_pred"
    save_image(nifti_dir / "CT_s002.nii.gz", pred.astype(np.uint8), volume.meta)
    for folder in (seg_dir, nifti_dir):
        result = evaluate_dicom_folders(folder, liver_data, truth_pattern="liver.dcm", lesions=False)
        row = result.per_case["CT_s002"]["Liver"]
        assert row["dice"] == pytest.approx(expected_dice, abs=1e-12)
        assert (row["tp_vox"], row["fn_vox"], row["fp_vox"]) == (107_098 - 35_220, 35_220, 0)


@pytest.mark.data
def test_truth_without_prediction_is_listed_missing(liver_data, tmp_path):
    pred = tmp_path / "pred"
    save_image(pred / "another_case.nii.gz", np.zeros((4, 4, 4), np.uint8))
    result = evaluate_dicom_folders(pred, liver_data, truth_pattern="liver.dcm")
    assert result.missing_predictions == ["CT_s002"] and result.per_case == {}


def test_predict_with_probabilities_then_evaluate_against_a_seg_truth(tmp_path):
    import torch
    from tests.dicom_helpers import phantom, write_series

    from attnseg.config import PreprocessConfig
    from attnseg.datasets.label_scheme import LabelScheme
    from attnseg.inference.predict import InferenceSettings, LoadedModel, predict_folder

    write_series(tmp_path / "data" / "series", phantom())
    series = find_series(tmp_path / "data").series[0]
    volume = read_series(series)
    truth = volume.image[0] > volume.image[0].mean()
    truth[:, :, 0] = False  # the truth leaves out what the model finds on slice 0
    write_seg(tmp_path / "data" / "truth.dcm", truth[None], volume, ["tissue"])

    settings = InferenceSettings(
        3,
        1,
        2,
        (12, 10, 6),
        PreprocessConfig(normalization="zscore"),
        LabelScheme("labels", (0, 1), ("bg", "tissue")),
    )
    model = LoadedModel(lambda batch: torch.cat([torch.zeros_like(batch), batch], dim=1), settings)
    out = tmp_path / "pred"
    predict_folder(model, tmp_path / "data" / "series", out, save_probabilities=True, progress=False)
    assert (out / "probabilities" / f"{series.case_id}.seg.dcm").is_file()  # a FRACTIONAL SEG beside
    result = evaluate_dicom_folders(out, tmp_path / "data", lesions=False)
    row = result.per_case[series.case_id]["tissue"]
    predicted = volume.image[0] > volume.image[0].mean()
    extra = int(predicted[:, :, 0].sum())
    assert (row["tp_vox"], row["fp_vox"], row["fn_vox"]) == (int(truth.sum()), extra, 0)
