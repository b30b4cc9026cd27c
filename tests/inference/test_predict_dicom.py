"""Predicting DICOM series: the NIfTI lands where dcm2niix's reference puts the scan, and the SEG
where highdicom and dcmqi's segimage2itkimage place it (second readers), on the same grid."""

from __future__ import annotations

import logging
import shutil
import subprocess
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from tests.conftest import shared_dataset
from tests.dicom_helpers import (
    LPS_TO_RAS,
    PATIENT_ID,
    PATIENT_NAME,
    oblique_iop,
    phantom,
    same_world_voxels,
    sitk_affine_ras,
    write_enhanced,
    write_series,
)

from attnseg.cli import main
from attnseg.config import PreprocessConfig
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import DataError
from attnseg.inference.predict import InferenceSettings, LoadedModel, find_cases, predict_folder
from attnseg.io.dicom_seg import read_seg
from attnseg.io.dicom_series import find_series, read_series
from attnseg.models import AttentionUNet, save_model


def threshold_model(names=("background", "brain")):
    """Class 1 where the z-scored intensity is above 0 (above the image mean): no training."""

    def predictor(batch):
        return torch.cat([torch.zeros_like(batch), batch], dim=1)

    settings = InferenceSettings(
        3, 1, 2, (32, 32, 16), PreprocessConfig(normalization="zscore"), LabelScheme("labels", (0, 1), names)
    )
    return LoadedModel(predictor, settings)


def sitk_read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), sitk_affine_ras(image)


def dcmqi_masks(seg_path, out_dir):
    """segimage2itkimage's reading of a SEG: {segment number: (mask, RAS affine)}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["segimage2itkimage", "--inputDICOM", str(seg_path), "--outputDirectory", str(out_dir), "-t", "nii"],
        check=True,
        capture_output=True,
    )
    masks = {}
    for path in sorted(out_dir.glob("*.nii.gz")):
        arr, affine = sitk_read(path)
        masks[int(path.name.split(".")[0])] = (arr > 0, affine)
    return masks


def highdicom_volume(seg_path, segment: int):
    """highdicom's own reading of a SEG as a volume: (mask, RAS affine) with its axes as it sees them."""
    seg = hd.seg.segread(str(seg_path))
    volume = seg.get_volume(segment_numbers=[segment], combine_segments=True)
    return np.asarray(volume.array) > 0, LPS_TO_RAS @ volume.affine


@pytest.mark.data
def test_real_series_predicts_nifti_and_seg_on_the_reference_grid(tmp_path, capsys, caplog):
    root = shared_dataset("dicom_mr_t1_sag")
    if shutil.which("segimage2itkimage") is None:
        pytest.skip("dcmqi (segimage2itkimage) is not installed")
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        report = predict_folder(
            threshold_model(), root / "dicom", out, output_format="both", progress=False, log=print
        )
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert report.predicted == ["MR_s003_t1_fl2d_sag"] and not report.failed
    nifti, seg_path = out / "MR_s003_t1_fl2d_sag.nii.gz", out / "MR_s003_t1_fl2d_sag.seg.dcm"

    # 1. the NIfTI: same world position per voxel as the dcm2niix reference, same voxels
    ours, ours_affine = sitk_read(nifti)
    ref, ref_affine = sitk_read(root / "reference" / "t1_fl2d_sag_20220407150138.nii")
    expected = (ref > ref.astype(np.float64).mean()).astype(np.uint8)  # the model: above the mean
    assert int(ours.sum()) == int(expected.sum()) > 100_000
    assert same_world_voxels(ours, ours_affine, expected, ref_affine)

    # 2. the SEG: highdicom and dcmqi both give the NIfTI's mask on the NIfTI's grid
    hd_mask, hd_affine = highdicom_volume(seg_path, 1)
    assert same_world_voxels(hd_mask.astype(np.uint8), hd_affine, ours, ours_affine)
    qi = dcmqi_masks(seg_path, tmp_path / "dcmqi")
    assert list(qi) == [1]
    qi_mask, qi_affine = qi[1]
    np.testing.assert_allclose(qi_affine, ours_affine, atol=1e-3)
    assert np.array_equal(qi_mask, ours.astype(bool))

    # 3. what the SEG says about itself: one named, coded segment; the source series and each instance
    seg = hd.seg.segread(str(seg_path))
    description = seg.get_segment_description(1)
    assert description.segment_label == "brain" and description.segmented_property_type.meaning == "Brain"
    assert seg.SegmentationType == "BINARY"
    # only the patient and study attributes a SEG needs
    patient = {e.keyword for e in seg if e.tag.group == 0x0010}
    assert patient == {"PatientName", "PatientID", "PatientBirthDate", "PatientSex"}
    assert (
        "StudyDescription" not in seg
        and seg.StudyInstanceUID
        == pydicom.dcmread(str(next((root / "dicom").iterdir())), stop_before_pixels=True).StudyInstanceUID
    )
    source = find_series(root / "dicom").series[0]
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [source.uid]
    assert seg.FrameOfReferenceUID == source.frame_of_reference != ""
    frames = seg.PerFrameFunctionalGroupsSequence
    referenced = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in frames
    }
    assert len(referenced) == len(frames) == 35

    # 4. no patient identifier in anything predict printed
    printed = capsys.readouterr()
    for identifier in ("crlab", "19700606", "HFS", "Rorden"):
        assert identifier not in printed.out + printed.err
        assert not [line for line in said if identifier in line]


@pytest.mark.parametrize("kind", ["oblique", "enhanced_per_frame_spacing"])
def test_seg_of_synthetic_series_reads_back_on_the_series(tmp_path, kind):
    vol = phantom(shape=(14, 12, 7))
    write_series(tmp_path / "classic", vol, iop=oblique_iop(25.0))
    source = tmp_path / "classic"
    if kind == "enhanced_per_frame_spacing":  # highdicom alone cannot build a SEG on this source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_enhanced(tmp_path / "enhanced", source, per_frame_measures=True)
        source = tmp_path / "enhanced"
    out = tmp_path / "out"
    report = predict_folder(threshold_model(), source, out, output_format="both", progress=False)
    assert not report.failed
    [case_id] = report.predicted
    nifti, nifti_affine = sitk_read(out / f"{case_id}.nii.gz")
    series = find_series(source).series[0]
    volume = read_series(series)
    np.testing.assert_allclose(nifti_affine, volume.meta.affine, atol=1e-4)
    expected = volume.image[0] > volume.image[0].mean()
    assert np.array_equal(nifti.astype(bool), expected)
    back = read_seg(out / f"{case_id}.seg.dcm", volume, series.uid)
    assert back.names == ["brain"] and np.array_equal(back.masks[0], expected)
    qi = dcmqi_masks(out / f"{case_id}.seg.dcm", tmp_path / "dcmqi")
    assert same_world_voxels(qi[1][0].astype(np.uint8), qi[1][1], nifti, nifti_affine)


def test_probabilities_become_a_fractional_seg(tmp_path):
    write_series(tmp_path / "s", phantom())
    out = tmp_path / "out"
    report = predict_folder(threshold_model(), tmp_path / "s", out, save_probabilities=True, progress=False)
    [case_id] = report.predicted
    assert not (out / f"{case_id}.nii.gz").exists()  # DICOM in: SEG out by default
    series = find_series(tmp_path / "s").series[0]
    volume = read_series(series)
    fractional = read_seg(out / "probabilities" / f"{case_id}.seg.dcm", volume, series.uid)
    binary = read_seg(out / f"{case_id}.seg.dcm", volume, series.uid)
    assert fractional.fractional and not binary.fractional
    # softmax(0, z) of class 1, stored in 255 steps: above 0.5 exactly where the label is 1
    assert np.array_equal(fractional.masks[0] > 0.5, binary.masks[0])
    assert 0.0 <= fractional.masks.min() and fractional.masks.max() <= 1.0


def test_nifti_input_refuses_seg_output(tmp_path):
    import nibabel as nib

    (tmp_path / "n").mkdir()
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(tmp_path / "n" / "a.nii.gz"))
    report = predict_folder(
        threshold_model(), tmp_path / "n", tmp_path / "out", output_format="dicom-seg", progress=False
    )
    assert report.failed and "a DICOM SEG needs a DICOM source series" in report.failed[0][1]


def test_one_file_of_a_series_predicts_that_series(tmp_path):
    paths = write_series(tmp_path / "s", phantom())
    write_series(tmp_path / "s" / "other", phantom(seed=4), edit=lambda k, ds: setattr(ds, "SeriesNumber", 9))
    dataset, input_folder = find_cases(paths[0])
    assert [c.case_id for c in dataset.cases] == ["MR_s005_synthetic_t1"] and input_folder == paths[0].parent


def test_cli_predict_series_folder_logs_no_patient_data(tmp_path, capsys):
    write_series(tmp_path / "s", phantom(shape=(16, 16, 8)))
    model = save_model(
        tmp_path / "model.pt",
        AttentionUNet(3, 1, 2, (4, 8)).eval(),
        {
            "target": {"kind": "labels", "values": [0, 1], "names": ["background", "liver"]},
            "preprocessing": {"patch_size": [16, 16, 8], "normalization": "zscore"},
        },
    )
    assert main(["predict", str(model), str(tmp_path / "s"), str(tmp_path / "out"), "--format", "both"]) == 0
    assert (tmp_path / "out" / "MR_s005_synthetic_t1.seg.dcm").is_file()
    assert (tmp_path / "out" / "MR_s005_synthetic_t1.nii.gz").is_file()
    printed = capsys.readouterr()
    assert PATIENT_NAME not in printed.out + printed.err and PATIENT_ID not in printed.out + printed.err
    assert "Zyxwv" not in printed.out + printed.err


def test_refused_series_fails_its_case_with_the_reason(tmp_path):
    write_series(tmp_path / "s", edit=lambda k, ds: setattr(ds, "GantryDetectorTilt", 8.0))
    report = predict_folder(threshold_model(), tmp_path / "s", tmp_path / "out", progress=False)
    assert len(report.failed) == 1 and "GantryDetectorTilt 8 degrees" in report.failed[0][1]
    with pytest.raises(DataError):
        read_series(find_series(tmp_path / "s").series[0])
