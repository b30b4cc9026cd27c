"""DICOM series in: geometry against SimpleITK (GDCM) and dcm2niix, every refusal on a synthetic series."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from tests.conftest import shared_dataset
from tests.dicom_helpers import (
    AXIAL,
    oblique_iop,
    phantom,
    same_world_voxels,
    sitk_affine_ras,
    sitk_series,
    write_enhanced,
    write_series,
)

from attnseg.errors import DataError
from attnseg.io.dicom_series import (
    LPS_TO_RAS,
    find_series,
    read_series,
    series_case_id,
    stack_geometry,
)
from attnseg.io.nifti import load_image, save_image


def _only_series(folder):
    found = find_series(folder)
    assert len(found.series) == 1
    return found.series[0]


# --- pure geometry ---------------------------------------------------------------------------------------
def test_stack_geometry_sorts_along_the_normal_and_measures_spacing():
    positions = np.array([[0, 0, 2.0], [0, 0, 0.0], [0, 0, 1.0]]) * 2.4
    g = stack_geometry(positions, AXIAL, (0.5, 0.7), slice_thickness_mm=3.0)
    assert g.order.tolist() == [1, 2, 0]
    assert g.spacing_mm == (0.7, 0.5, 2.4)  # column spacing, row spacing, step (not the thickness)
    np.testing.assert_allclose(g.affine_lps[:3, :3], np.diag([0.7, 0.5, 2.4]))
    np.testing.assert_allclose(g.affine_ras[:3, 3], [0, 0, 0])


def test_stack_geometry_refusals_say_why():
    with pytest.raises(ValueError, match="1 of 2 slices repeat the position"):
        stack_geometry(np.zeros((2, 3)), AXIAL, (1, 1))
    with pytest.raises(ValueError, match="gantry tilt"):
        stack_geometry(np.array([[0, 0, 0], [0, 0.5, 1], [0, 1.0, 2]]), AXIAL, (1, 1))
    with pytest.raises(ValueError, match="uneven slice spacing: step 2 mm"):
        stack_geometry(np.array([[0, 0, 0], [0, 0, 1], [0, 0, 3], [0, 0, 4]]), AXIAL, (1, 1))
    # within the tolerance (1 %): accepted, the median step
    g = stack_geometry(np.array([[0, 0, 0], [0, 0, 1.005], [0, 0, 2.0]]), AXIAL, (1, 1))
    assert g.spacing_mm[2] == pytest.approx(1.0, abs=0.006)


# --- the real series: equal to SimpleITK's reading and to the dcm2niix reference NIfTI --------------------
@pytest.mark.data
def test_real_sagittal_series_matches_simpleitk_and_dcm2niix(tmp_path):
    root = shared_dataset("dicom_mr_t1_sag")
    series = _only_series(root / "dicom")
    assert series.case_id == "MR_s003_t1_fl2d_sag" and len(series.files) == 35
    volume = read_series(series)
    assert volume.image.shape == (1, 256, 256, 35)
    assert volume.meta.spacing_mm == pytest.approx((1.015625, 1.015625, 4.8), abs=1e-5)
    # sorted along the normal (-1, 0, 0) LPS: patient left (x = +81.6 LPS) first, i.e. instance 35
    assert volume.slice_files[0].name.startswith("0035_") and volume.slice_files[-1].name.startswith("0001_")

    # the same array and voxel -> world map as SimpleITK (GDCM) reads from the same files
    arr, affine = sitk_series(root / "dicom")
    assert np.array_equal(volume.image[0], arr)
    np.testing.assert_allclose(volume.meta.affine, affine, atol=1e-4)

    # written as NIfTI and read back by SimpleITK: every voxel where dcm2niix's reference puts it
    ours = save_image(tmp_path / "t1.nii.gz", volume.image[0], volume.meta)
    ours_img = sitk.ReadImage(str(ours))
    ref_img = sitk.ReadImage(str(root / "reference" / "t1_fl2d_sag_20220407150138.nii"))
    ours_arr = sitk.GetArrayFromImage(ours_img).transpose(2, 1, 0)
    ref_arr = sitk.GetArrayFromImage(ref_img).transpose(2, 1, 0)
    assert int(ours_arr.astype(np.int64).sum()) == 516_841_282 == int(ref_arr.astype(np.int64).sum())
    assert same_world_voxels(ours_arr, sitk_affine_ras(ours_img), ref_arr, sitk_affine_ras(ref_img))
    # and nibabel agrees with SimpleITK on our file's placement
    img = nib.load(str(ours))
    np.testing.assert_allclose(img.affine, sitk_affine_ras(ours_img), atol=1e-4)
    assert nib.aff2axcodes(img.affine) == ("P", "I", "R")


# --- synthetic series: oblique, rescale, enhanced -----------------------------------------------------------
@pytest.mark.parametrize(
    "iop", [AXIAL, oblique_iop(20.0), (0, 1, 0, 0, 0, -1)], ids=["axial", "oblique", "sagittal"]
)
def test_synthetic_series_equal_simpleitk(tmp_path, iop):
    vol = phantom()
    write_series(tmp_path, vol, iop=iop, slope=2.0, intercept=-100.0)
    volume = read_series(_only_series(tmp_path))
    np.testing.assert_array_equal(volume.image[0], vol * 2.0 - 100.0)  # rescale applied, voxel order kept
    arr, affine = sitk_series(tmp_path)
    np.testing.assert_array_equal(volume.image[0], arr)
    np.testing.assert_allclose(volume.meta.affine, affine, atol=1e-4)
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    np.testing.assert_allclose(volume.meta.affine[:3, 2], (LPS_TO_RAS[:3, :3] @ normal) * 2.5, atol=1e-5)
    # NIfTI written from it: SimpleITK reads the same grid back
    img = sitk.ReadImage(
        str(save_image(tmp_path.parent / f"{tmp_path.name}.nii.gz", volume.image[0], volume.meta))
    )
    np.testing.assert_allclose(sitk_affine_ras(img), volume.meta.affine, atol=1e-4)


@pytest.mark.parametrize("per_frame_measures", [False, True])
def test_enhanced_multiframe_equals_the_classic_series(tmp_path, per_frame_measures):
    vol = phantom()
    write_series(tmp_path / "classic", vol, iop=oblique_iop(15.0), slope=0.5, intercept=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_enhanced(tmp_path / "enhanced", tmp_path / "classic", per_frame_measures=per_frame_measures)
    classic = read_series(_only_series(tmp_path / "classic"))
    enhanced = read_series(_only_series(tmp_path / "enhanced"))
    assert enhanced.enhanced and sorted(enhanced.slice_frames) == list(range(vol.shape[2]))
    np.testing.assert_array_equal(enhanced.image, classic.image)
    np.testing.assert_allclose(enhanced.meta.affine, classic.meta.affine, atol=1e-6)


def test_folder_with_two_series_gives_two_cases_with_readable_ids(tmp_path):
    write_series(tmp_path / "a", phantom(seed=1))
    write_series(tmp_path / "b", phantom(seed=2), edit=lambda k, ds: setattr(ds, "SeriesNumber", 6))
    write_series(tmp_path / "c", phantom(seed=3))  # same number and description as a: ids get a tag
    found = find_series(tmp_path)
    ids = [s.case_id for s in found.series]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert "MR_s006_synthetic_t1" in ids
    assert sum(i.startswith("MR_s005_synthetic_t1_") for i in ids) == 2
    for s in found.series:
        assert "SYN" not in s.case_id and "Zyxwv" not in s.case_id


def test_series_case_id_uses_no_patient_attribute(tmp_path):
    paths = write_series(tmp_path, phantom())
    import pydicom

    ds = pydicom.dcmread(str(paths[0]))
    assert series_case_id(ds) == "MR_s005_synthetic_t1"


# --- refusals: one synthetic series each, one line naming a file ------------------------------------------
def _refused(folder, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        read_series(_only_series(folder))
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    return message


def test_refuses_gantry_tilt_from_positions(tmp_path):
    iop = np.asarray(AXIAL)
    positions = [np.array([0.0, 0.3 * k, 2.5 * k]) for k in range(6)]  # sheared along y: tilted gantry
    write_series(tmp_path, iop=iop, positions=positions)
    _refused(tmp_path, "gantry tilt")


def test_refuses_gantry_tilt_tag(tmp_path):
    write_series(tmp_path, edit=lambda k, ds: setattr(ds, "GantryDetectorTilt", 12.0))
    _refused(tmp_path, "GantryDetectorTilt 12 degrees")


def test_refuses_uneven_spacing(tmp_path):
    positions = [np.array([0.0, 0.0, z]) for z in (0, 2.5, 5.0, 10.0, 12.5, 15.0)]  # a slice missing
    write_series(tmp_path, positions=positions)
    _refused(tmp_path, "uneven slice spacing: step 5 mm")


def test_refuses_mixed_orientations(tmp_path):
    def localizer(k, ds):
        if k == 3:
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]

    write_series(tmp_path, edit=localizer)
    _refused(tmp_path, "mixed orientations in one series")


def test_refuses_mixed_sizes(tmp_path):
    def smaller(k, ds):
        if k == 2:
            ds.Rows, ds.Columns = 4, 4
            ds.PixelData = np.zeros((4, 4), np.uint16).tobytes()

    write_series(tmp_path, edit=smaller)
    _refused(tmp_path, "mixed image sizes in one series")


def test_refuses_mixed_pixel_spacing(tmp_path):
    write_series(tmp_path, edit=lambda k, ds: k == 1 and setattr(ds, "PixelSpacing", [0.5, 0.5]))
    _refused(tmp_path, "mixed pixel sizes in one series")


def test_refuses_several_echoes(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_series(tmp_path / "e1", series_uid=uid, edit=lambda k, ds: setattr(ds, "EchoNumbers", 1))
    write_series(tmp_path / "e2", series_uid=uid, edit=lambda k, ds: setattr(ds, "EchoNumbers", 2))
    with pytest.raises(DataError, match="2 echoes"):
        read_series(_only_series(tmp_path))


def test_refuses_several_time_points(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.2"
    write_series(
        tmp_path / "t1", series_uid=uid, edit=lambda k, ds: setattr(ds, "TemporalPositionIdentifier", 1)
    )
    write_series(
        tmp_path / "t2", series_uid=uid, edit=lambda k, ds: setattr(ds, "TemporalPositionIdentifier", 2)
    )
    with pytest.raises(DataError, match="2 time points"):
        read_series(_only_series(tmp_path))


def test_refuses_repeated_positions_without_tags(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.3"
    write_series(tmp_path / "a", series_uid=uid)
    write_series(tmp_path / "b", series_uid=uid)
    with pytest.raises(
        DataError, match="6 of 12 slices repeat the position of another .*: several echoes, time points"
    ):
        read_series(_only_series(tmp_path))


def test_enhanced_refuses_mixed_orientations_and_time_points(tmp_path):
    write_series(tmp_path / "classic")

    def tilt_one_frame(ds):
        from pydicom.dataset import Dataset

        item = Dataset()
        item.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.PerFrameFunctionalGroupsSequence[2].PlaneOrientationSequence = [item]

    def two_time_points(ds):
        for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            item.FrameContentSequence[0].TemporalPositionIndex = 1 + f % 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_enhanced(tmp_path / "o", tmp_path / "classic", edit=tilt_one_frame)
        write_enhanced(tmp_path / "t", tmp_path / "classic", edit=two_time_points)
    with pytest.raises(DataError, match="frame 3 has ImageOrientationPatient .* mixed orientations"):
        read_series(_only_series(tmp_path / "o"))
    with pytest.raises(DataError, match="2 time points"):
        read_series(_only_series(tmp_path / "t"))


def test_refuses_undecodable_pixels_naming_the_file(tmp_path):
    paths = write_series(tmp_path)
    import pydicom

    ds = pydicom.dcmread(str(paths[0]))
    ds.PixelData = ds.PixelData[:10]  # truncated
    ds.save_as(str(paths[0]))
    with pytest.raises(DataError, match=f"{paths[0].name}: cannot decode the pixel data"):
        read_series(_only_series(tmp_path))


def test_nifti_written_from_series_reads_back_with_our_loader(tmp_path):
    vol = phantom()
    write_series(tmp_path / "s", vol, iop=oblique_iop())
    volume = read_series(_only_series(tmp_path / "s"))
    path = save_image(tmp_path / "x.nii.gz", volume.image[0], volume.meta)
    image, meta = load_image(path)
    np.testing.assert_array_equal(image, volume.image)
    np.testing.assert_allclose(meta.affine, volume.meta.affine, atol=1e-5)
