from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from attnseg.errors import DataError
from attnseg.io.images2d import (
    load_image2d,
    load_mask2d,
    mask_to_indices,
    read_size2d,
    save_image2d,
    save_mask2d,
)


def test_grey_and_rgb_png_become_channels_first(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, meta = load_image2d(tmp_path / "g.png")
    assert image.shape == (1, 3, 4) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], grey)
    assert meta.shape == (3, 4) and meta.spacing_mm == (1.0, 1.0) and meta.affine.shape == (4, 4)

    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    Image.fromarray(rgb).save(tmp_path / "c.png")
    image, _ = load_image2d(tmp_path / "c.png")
    assert image.shape == (3, 3, 4)
    assert image[:, 0, 0].tolist() == [10, 20, 30]
    assert read_size2d(tmp_path / "c.png") == ((3, 4), 3)

    rgba = np.dstack([rgb, np.full((3, 4), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert load_image2d(tmp_path / "a.png")[0].shape == (3, 3, 4)  # alpha dropped
    assert read_size2d(tmp_path / "a.png") == ((3, 4), 3)


def test_tiff_contig_and_planar_and_16bit(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "contig.tif", rgb, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"
    )
    a, _ = load_image2d(tmp_path / "contig.tif")
    b, _ = load_image2d(tmp_path / "planar.tif")
    np.testing.assert_array_equal(a, np.moveaxis(rgb, -1, 0))
    np.testing.assert_array_equal(b, a)
    assert read_size2d(tmp_path / "planar.tif") == ((5, 6), 3)
    grey16 = np.array([[0, 1000], [65535, 3]], np.uint16)
    tifffile.imwrite(tmp_path / "g16.tiff", grey16)
    image, meta = load_image2d(tmp_path / "g16.tiff")
    np.testing.assert_array_equal(image[0], grey16.astype(np.float32))
    assert meta.dtype == "uint16"
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((4, 5, 6), np.uint8), photometric="minisblack")
    with pytest.raises(DataError, match="stack.tif: TIFF has axes"):
        load_image2d(tmp_path / "stack.tif")


def test_mask_rules_hand_values():
    # lossless 0/255 -> 0/1
    np.testing.assert_array_equal(mask_to_indices(np.array([[0, 255]], np.uint8), lossy=False), [[0, 1]])
    # class indices stay as stored
    np.testing.assert_array_equal(mask_to_indices(np.array([[0, 1, 2]], np.uint8), lossy=False), [[0, 1, 2]])
    # lossy 0/255 (piles at 0 and 255, ringing values 8 and 247 on few pixels): nearest of 0/255,
    # i.e. thresholded at 128. (The old rule thresholded any JPEG at 128, whatever its values.)
    jpeg = np.array([[0, 8, 127, 128, 247, 255] + [0] * 40 + [255] * 20], np.uint8)
    np.testing.assert_array_equal(mask_to_indices(jpeg, lossy=True)[0, :6], [0, 0, 0, 1, 1, 1])
    # equal RGB channels are grey
    rgb = np.stack([np.array([[0, 255]], np.uint8)] * 3, axis=-1)
    np.testing.assert_array_equal(mask_to_indices(rgb, lossy=False), [[0, 1]])
    # 16-bit 0/65535 is binary
    np.testing.assert_array_equal(mask_to_indices(np.array([[0, 65535]], np.uint16), lossy=False), [[0, 1]])
    with pytest.raises(DataError, match="colour mask"):
        mask_to_indices(np.array([[[0, 10, 20]]], np.uint8), lossy=False)
    with pytest.raises(DataError, match="not class indices"):
        mask_to_indices(np.array([[0, 300, 7]], np.uint16), lossy=False)


def test_jpeg_mask_is_thresholded(tmp_path):
    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 10**2
    mask = np.where(disc, 255, 0).astype(np.uint8)
    Image.fromarray(mask).convert("RGB").save(tmp_path / "m.jpg", quality=50)
    raw = np.asarray(Image.open(tmp_path / "m.jpg"))
    assert len(np.unique(raw)) > 2  # the JPEG really is lossy
    loaded, _ = load_mask2d(tmp_path / "m.jpg")
    assert loaded.dtype == np.uint8 and set(np.unique(loaded)) == {0, 1}
    assert int(np.sum(loaded != disc)) <= 6  # at most a few edge pixels flip


def test_palette_png_mask_gives_indices(tmp_path):
    idx = np.array([[0, 1], [2, 2]], np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_mask2d(tmp_path / "p.png")[0], idx)


def test_save_round_trip_and_errors(tmp_path):
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    save_mask2d(tmp_path / "m.png", mask)
    assert np.asarray(Image.open(tmp_path / "m.png")).max() == 255
    np.testing.assert_array_equal(load_mask2d(tmp_path / "m.png")[0], mask)
    multi = np.array([[0, 1], [2, 3]], np.uint8)
    save_mask2d(tmp_path / "k.png", multi)
    np.testing.assert_array_equal(load_mask2d(tmp_path / "k.png")[0], multi)
    rgb = np.random.default_rng(2).integers(0, 255, (3, 4, 5), dtype=np.uint8)
    save_image2d(tmp_path / "i.png", rgb)
    np.testing.assert_array_equal(load_image2d(tmp_path / "i.png")[0], rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "k.png", "m.png"]
    with pytest.raises(DataError, match="use a .png name"):
        save_mask2d(tmp_path / "m.jpg", mask)
    with pytest.raises(DataError, match="missing.png: file not found"):
        load_image2d(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(Image.open(tmp_path / "i.png").tobytes()[:10])
    with pytest.raises(DataError, match="bad.png"):
        load_image2d(tmp_path / "bad.png")
    good = (tmp_path / "i.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.png: truncated or corrupt"):
        load_image2d(tmp_path / "cut.png")


@pytest.mark.data
def test_real_kvasir_and_lgg():
    from tests.conftest import shared_dataset

    kvasir = shared_dataset("kvasir_seg_5")
    image, meta = load_image2d(kvasir / "images" / "cju0qkwl35piu0993l0dewei2.jpg")
    assert image.shape == (3, 529, 622) and meta.shape == (529, 622)
    mask, _ = load_mask2d(kvasir / "masks" / "cju0qkwl35piu0993l0dewei2.jpg")
    assert mask.shape == (529, 622) and set(np.unique(mask)) == {0, 1}
    assert mask.mean() == pytest.approx(0.283, abs=0.002)  # SOURCE.md: 28.3 % with mask > 127

    lgg = shared_dataset("lgg_flair_2d") / "TCGA_CS_4941_19960909"
    image, _ = load_image2d(lgg / "TCGA_CS_4941_19960909_12.tif")
    assert image.shape == (3, 256, 256)
    mask, _ = load_mask2d(lgg / "TCGA_CS_4941_19960909_12_mask.tif")
    assert mask.shape == (256, 256) and set(np.unique(mask)) == {0, 1}
