"""``attnseg evaluate`` on 2D label maps: PNG predictions (as ``predict`` writes them) against PNG,
JPEG and TIFF masks, decoded as their dataset is; spacing 1, distances in pixels."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from attnseg.cli import main
from attnseg.io.images2d import save_mask2d
from attnseg.metrics import evaluate_folders, find_label_files


def square(top=10, left=10, size=20, n=48, value=1):
    m = np.zeros((n, n), np.uint8)
    m[top : top + size, left : left + size] = value
    return m


def truth_dataset(root, masks, suffix):
    """A paired dataset: images/<id>.png and masks/<id><suffix>, masks 0/255."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for case_id, mask in masks.items():
        Image.fromarray(np.full(mask.shape, 90, np.uint8)).save(root / "images" / f"{case_id}.png")
        stored = (mask > 0).astype(np.uint8) * 255
        if suffix == ".tif":
            tifffile.imwrite(root / "masks" / f"{case_id}.tif", stored)
        elif suffix == ".jpg":
            Image.fromarray(stored).save(root / "masks" / f"{case_id}.jpg", quality=90)
        else:
            Image.fromarray(stored).save(root / "masks" / f"{case_id}{suffix}")
    return root


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_png_predictions_against_2d_masks(tmp_path, suffix, capsys):
    truths = {"a": square(), "b": square(top=5)}
    root = truth_dataset(tmp_path / "data", truths, suffix)
    pred = tmp_path / "pred"
    save_mask2d(pred / "a.png", square())  # written 0/255, as predict writes a binary model's output
    save_mask2d(pred / "b.png", square(top=7))  # shifted 2 px: 18 of 20 rows overlap
    assert sorted(find_label_files(root)) == ["a", "b"]  # the dataset root: its masks/ folder
    result = evaluate_folders(pred, root, out_dir=tmp_path / "eval")
    rows = result.per_case
    assert list(rows["a"]) == ["1"] and rows["a"]["1"]["dice"] == pytest.approx(1.0)
    assert rows["b"]["1"]["dice"] == pytest.approx(2 * 18 * 20 / (2 * 400))
    assert rows["b"]["1"]["hd_mm"] == pytest.approx(2.0)  # pixels
    assert result.summary["settings"]["distance_unit"] == "pixel"
    assert any("distances (hd_mm, hd95_mm, assd_mm) are in pixels" in n for n in result.notes)
    if suffix == ".jpg":
        assert any("truth:" in n and "JPEG binary 0/255" in n for n in result.notes)
    code = main(["evaluate", str(pred), str(root)])
    out = capsys.readouterr().out
    assert code == 0 and "note: 2D images carry no spacing" in out


def test_multiclass_predictions_are_read_with_the_truths_classes(tmp_path):
    truth = square(value=1)
    truth[30:40, 30:40] = 2
    root = tmp_path / "truth"
    save_mask2d(root / "a.png", truth)
    only_two = np.zeros_like(truth)
    only_two[30:40, 30:40] = 2
    save_mask2d(root / "b.png", only_two)
    pred = tmp_path / "pred"
    save_mask2d(pred / "a.png", truth)
    save_mask2d(pred / "b.png", only_two)  # alone {0, 2} would read as binary 0/1
    result = evaluate_folders(pred, root)
    assert sorted(result.per_case["b"]) == ["1", "2"]
    assert result.per_case["b"]["2"]["dice"] == 1.0 and result.per_case["a"]["1"]["dice"] == 1.0
