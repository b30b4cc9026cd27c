from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from attnseg.errors import DataError
from attnseg.io.nifti import (
    ImageMeta,
    channels_in_file,
    load_image,
    load_label,
    read_header,
    reorient,
    reorient_to_ras,
    save_image,
    undo_reorientation,
)

# BraTS 2015/2018 files: diag(-1, -1, 1) with translation (0, 239, 0) mm -> axis codes L, P, S
LPS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def _write(path, data, affine, *, qcode=1, scode=1, dtype=None, zooms=None):
    img = nib.Nifti1Image(data, affine, dtype=dtype or data.dtype)
    img.header.set_qform(affine, code=qcode)
    img.header.set_sform(affine, code=scode)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_round_trip_keeps_affine_spacing_dtype(tmp_path, suffix, dtype):
    affine = np.array([[0.0, 0, 2.5, -10], [-0.8, 0, 0, 20], [0, 1.2, 0, 5], [0, 0, 0, 1]])
    data = (np.arange(4 * 5 * 6) % 7).reshape(4, 5, 6).astype(dtype)
    src = _write(tmp_path / f"src{suffix}", data, affine, qcode=2, scode=1)
    image, meta = load_image(src)
    assert image.shape == (1, 4, 5, 6) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], data.astype(np.float32))
    np.testing.assert_allclose(meta.affine, affine, atol=1e-6)
    assert meta.spacing_mm == pytest.approx((0.8, 1.2, 2.5))
    assert meta.dtype == np.dtype(dtype).name
    assert meta.shape == (4, 5, 6)

    out = save_image(tmp_path / f"out{suffix}", image[0].astype(dtype), meta)
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert back.header.get_data_dtype() == np.dtype(dtype)
    assert back.header.get_zooms() == pytest.approx((0.8, 1.2, 2.5))
    assert int(back.header["qform_code"]) == 2 and int(back.header["sform_code"]) == 1
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    # no temporary files left next to the output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"src{suffix}", f"out{suffix}"])


def test_gz_output_is_really_gzip(tmp_path):
    out = save_image(tmp_path / "a.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with gzip.open(out) as handle:
        assert len(handle.read()) == 352 + 27  # header + 27 uint8 voxels (vox_offset 352)


def test_4d_msd_image_splits_into_channels_first(tmp_path):
    data = np.zeros((3, 4, 5, 2), np.float32)
    data[..., 0] = 1.0
    data[..., 1] = np.arange(60).reshape(3, 4, 5)
    src = _write(tmp_path / "case.nii.gz", data, np.eye(4))
    assert channels_in_file(read_header(src)) == 2
    image, meta = load_image(src)
    assert image.shape == (2, 3, 4, 5)
    assert meta.shape == (3, 4, 5) and len(meta.spacing_mm) == 3
    np.testing.assert_array_equal(image[0], 1.0)
    np.testing.assert_array_equal(image[1], np.arange(60).reshape(3, 4, 5))

    # a (C, *spatial) probability map goes back with channels last on disk
    out = save_image(tmp_path / "probs.nii.gz", image, meta)
    on_disk = np.asanyarray(nib.load(str(out)).dataobj)
    assert on_disk.shape == (3, 4, 5, 2)
    np.testing.assert_array_equal(on_disk, data)


def test_one_file_per_channel_and_mismatch_errors(tmp_path):
    a = _write(tmp_path / "a_0000.nii.gz", np.full((2, 3, 4), 1, np.int16), np.eye(4))
    b = _write(tmp_path / "a_0001.nii.gz", np.full((2, 3, 4), 2, np.int16), np.eye(4))
    image, meta = load_image([a, b])
    assert image.shape == (2, 2, 3, 4)
    assert image[0].max() == 1 and image[1].min() == 2
    assert meta.path == str(a)

    c = _write(tmp_path / "c.nii.gz", np.zeros((2, 3, 5), np.int16), np.eye(4))
    with pytest.raises(DataError, match=r"c\.nii\.gz: shape \(2, 3, 5\) differs"):
        load_image([a, c])
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    d = _write(tmp_path / "d.nii.gz", np.zeros((2, 3, 4), np.int16), shifted)
    with pytest.raises(DataError, match=r"d\.nii\.gz: affine differs"):
        load_image([a, d])


def test_scaled_float_labels_become_integers(tmp_path):
    # BraTS 2015 stores labels as float32 whole numbers
    data = np.array([0, 1, 2, 3, 4, 4], np.float32).reshape(1, 2, 3)
    src = _write(tmp_path / "OT.nii.gz", data, LPS_AFFINE)
    label, meta = load_label(src)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label.ravel(), [0, 1, 2, 3, 4, 4])
    assert meta.axcodes == ("L", "P", "S")

    big = _write(tmp_path / "big.nii.gz", np.array([[[0, 300]]], np.int16), np.eye(4))
    assert load_label(big)[0].dtype == np.int32

    frac = _write(tmp_path / "frac.nii.gz", np.array([[[0.0, 0.5]]], np.float32), np.eye(4))
    with pytest.raises(DataError, match="frac.nii.gz: label map has non-integer values"):
        load_label(frac)


def test_missing_and_truncated_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="nope.nii.gz: file not found"):
        load_image(tmp_path / "nope.nii.gz")
    src = _write(
        tmp_path / "full.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4)
    )
    raw = src.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.nii.gz: truncated or corrupt"):
        load_image(cut)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti file at all")
    with pytest.raises(DataError, match="junk.nii.gz"):
        load_image(junk)


def test_reorient_lps_to_ras_and_back(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    src = _write(tmp_path / "lps.nii.gz", data, LPS_AFFINE, qcode=0, scode=2, zooms=(1.0, 1.0, 1.0))
    image, meta = load_image(src)
    assert meta.axcodes == ("L", "P", "S")
    ras, ras_meta, change = reorient_to_ras(image, meta)
    assert ras_meta.axcodes == ("R", "A", "S")
    assert ras.shape == (1, 3, 4, 5) and ras.flags.c_contiguous
    # diag(-1, -1, 1): the first two axes are reversed, nothing is permuted
    np.testing.assert_array_equal(ras[0], data[::-1, ::-1, :])
    # every voxel keeps its world coordinate
    for index in [(0, 0, 0), (2, 1, 4), (1, 3, 2)]:
        world = meta.affine @ np.array([*index, 1.0])
        new_index = np.rint(np.linalg.solve(ras_meta.affine, world)[:3]).astype(int)
        assert ras[0][tuple(new_index)] == data[index]
    np.testing.assert_allclose(ras_meta.affine[:3, :3], np.eye(3))
    np.testing.assert_allclose(ras_meta.affine[:3, 3], [-2.0, 236.0, 0.0])

    back, back_meta = undo_reorientation(ras, change)
    np.testing.assert_array_equal(back, image)
    assert back_meta is meta
    # a prediction made on the RAS grid, written with the source meta, overlays the source file
    out = save_image(
        tmp_path / "pred.nii.gz", undo_reorientation((ras[0] > 30).astype(np.uint8), change)[0], meta
    )
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, LPS_AFFINE)
    assert int(written.header["qform_code"]) == 0 and int(written.header["sform_code"]) == 2
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (data > 30).astype(np.uint8))


def test_reorient_with_permutation_permutes_spacing(tmp_path):
    # axis 0 points S, axis 1 points R, axis 2 points A: spacing (3, 1, 2)
    affine = np.array([[0.0, 1, 0, 0], [0, 0, 2, 0], [3, 0, 0, 0], [0, 0, 0, 1]])
    data = np.random.default_rng(1).random((2, 3, 4)).astype(np.float32)
    src = _write(tmp_path / "perm.nii.gz", data, affine)
    image, meta = load_image(src)
    assert meta.spacing_mm == pytest.approx((3.0, 1.0, 2.0))
    ras, ras_meta, change = reorient(image[0], meta, "RAS")
    assert ras.shape == (3, 4, 2)
    assert ras_meta.spacing_mm == pytest.approx((1.0, 2.0, 3.0))
    np.testing.assert_array_equal(ras, np.transpose(data, (1, 2, 0)))
    np.testing.assert_allclose(ras_meta.affine, np.diag([1.0, 2.0, 3.0, 1.0]))
    assert not change.is_identity
    np.testing.assert_array_equal(undo_reorientation(ras, change)[0], data)


def test_save_without_meta_and_dtype_defaults(tmp_path):
    labels = np.array([[[0, 1], [2, 3]]], dtype=np.int64)
    out = save_image(tmp_path / "l.nii.gz", labels, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    img = nib.load(str(out))
    assert img.header.get_data_dtype() == np.uint8
    assert img.header.get_zooms() == pytest.approx((2.0, 2.0, 2.0))
    assert int(img.header["sform_code"]) == 1
    out = save_image(tmp_path / "b.nii", np.ones((2, 2, 2), bool))
    assert nib.load(str(out)).header.get_data_dtype() == np.uint8
    out = save_image(tmp_path / "f.nii", np.ones((2, 2, 2), np.float64))
    assert nib.load(str(out)).header.get_data_dtype() == np.float32
    with pytest.raises(DataError, match="differs from the source"):
        meta = ImageMeta(affine=np.eye(4), spacing_mm=(1, 1, 1), dtype="uint8", shape=(2, 2, 3))
        save_image(tmp_path / "x.nii.gz", np.zeros((2, 2, 2)), meta)
    with pytest.raises(DataError, match=r"\.nii or \.nii\.gz"):
        save_image(tmp_path / "x.png", np.zeros((2, 2, 2)))


def test_scaling_of_source_header_is_not_reapplied(tmp_path):
    # brainmask-like source: int32 with scl_slope; a float output written with its meta must not be rescaled
    img = nib.Nifti1Image(np.array([[[0, 1]]], np.int32), np.eye(4))
    img.header.set_slope_inter(2.0, 0.5)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    image, meta = load_image(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(image.ravel(), [0.5, 2.5])
    out = save_image(tmp_path / "o.nii.gz", image[0], meta)
    np.testing.assert_allclose(np.asanyarray(nib.load(str(out)).dataobj).ravel(), [0.5, 2.5])
    assert nib.load(str(out)).header.get_data_dtype() == np.float32


@pytest.mark.data
def test_real_brats2015_label_and_overlay(tmp_path):
    from tests.conftest import shared_dataset

    case = shared_dataset("brats2015_flair_t1c") / "brats_2013_pat0004_1"
    label, meta = load_label(case / "OTMultiClass.nii.gz")
    assert label.shape == (240, 240, 155) and label.dtype == np.uint8
    counts = np.bincount(label.ravel(), minlength=5)
    assert counts[1:].tolist() == [12956, 45203, 44699, 17816]  # SOURCE.md table
    assert meta.axcodes == ("L", "P", "S")
    image, image_meta = load_image(
        [case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"]
    )
    assert image.shape == (2, 240, 240, 155)
    out = save_image(tmp_path / "pred.nii.gz", label, image_meta)
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, image_meta.affine)
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (0, 2)
