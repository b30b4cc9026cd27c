"""A 2D dataset's masks decoded by one decision for the dataset (``attnseg.datasets.masks2d``), the same
in ``load_case`` and ``attnseg check``; check fails, one line per file, on what does not fit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attnseg.cli import main
from attnseg.datasets import discover, load_case
from attnseg.datasets.check import check


def disc(n=48, r=10.0, cy=24.0, cx=24.0):
    yy, xx = np.mgrid[:n, :n]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def paired(root, masks: dict[str, np.ndarray], *, suffix=".png", quality=95):
    """images/<id>.png (grey) + masks/<id><suffix> holding ``masks[id]`` as stored values."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for case_id, mask in masks.items():
        Image.fromarray((40 + 100 * (mask > 0)).astype(np.uint8)).save(root / "images" / f"{case_id}.png")
        if suffix == ".jpg":
            Image.fromarray(mask).save(root / "masks" / f"{case_id}.jpg", quality=quality)
        else:
            Image.fromarray(mask).save(root / "masks" / f"{case_id}{suffix}")
    return root


def shifted_discs(n=4, scale=1, dtype=np.uint8):
    return {f"c{i}": (disc(r=8 + 2 * i, cy=20 + i, cx=24 - i) * scale).astype(dtype) for i in range(n)}


def labels_of(root):
    ds = discover(root)
    return [load_case(c, ds)[1] for c in ds.cases]


def test_jpeg_class_index_masks_load_as_their_discs(tmp_path):
    # what cv2.imwrite("m.jpg", mask) writes for a 0/1 mask (quality 95): values 0, 1 and ringing 2s
    masks = shifted_discs()
    root = paired(tmp_path / "d", masks, suffix=".jpg", quality=95)
    for label, truth in zip(labels_of(root), masks.values()):
        assert set(np.unique(label).tolist()) == {0, 1}
        assert abs(int(label.sum()) - int(truth.sum())) <= 0.05 * truth.sum()
    report = check(root)
    assert report.ok, report.format()
    assert report.inferred_labels == [0, 1]
    assert "note: 4 of 4 masks are JPEG binary 0/1 with compression noise" in report.format()


def test_resized_0_255_pngs_are_one_class_with_a_note(tmp_path):
    big = {
        k: np.asarray(Image.fromarray(v).resize((36, 36), Image.BILINEAR))
        for k, v in shifted_discs(scale=255).items()
    }
    assert all(len(np.unique(m)) > 10 for m in big.values())
    root = paired(tmp_path / "d", big)
    assert {v for label in labels_of(root) for v in np.unique(label).tolist()} == {0, 1}
    report = check(root)
    assert report.ok and report.inferred_labels == [0, 1], report.format()
    assert report.notes and "resized with smoothing" in report.notes[0] and "half" in report.notes[0]


def test_16_bit_0_255_masks_are_binary(tmp_path):
    # before: a 16-bit PNG holding 0/255 was class 255 (binary only for {0, 65535})
    root = paired(tmp_path / "d", shifted_discs(scale=255, dtype=np.uint16))
    assert all(set(np.unique(label).tolist()) == {0, 1} for label in labels_of(root))
    assert check(root).ok


def test_check_names_each_file_that_does_not_fit(tmp_path):
    masks = shifted_discs(scale=255)
    masks["c1"] = (masks["c1"] > 0).astype(np.uint8)  # 0/1 among 0/255
    root = paired(tmp_path / "d", masks)
    report = check(root)
    bad = [p for p in report.problems if p.kind == "mask_encoding"]
    assert [p.case_id for p in bad] == ["c1"]
    assert bad[0].message.startswith(
        "masks/c1.png: binary 0/1 (1 -> 1); the dataset's masks are binary 0/255"
    )
    assert np.unique(load_case(discover(root).case("c1"), discover(root))[1]).tolist() == [0, 1]


def test_check_fails_on_an_encoding_accident_one_line_per_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    masks = {f"g{i}": rng.integers(0, 256, (48, 48), dtype=np.uint8) for i in range(3)}
    root = paired(tmp_path / "d", masks)
    code = main(["check", str(root)])
    out = capsys.readouterr().out
    assert code == 1
    lines = [line for line in out.splitlines() if "mask_encoding" in line]
    assert len(lines) == 3 and all("neither class indices" in line for line in lines)
    assert "masks/g0.png: 256 distinct values 0..255" in lines[0]


def test_check_fails_when_a_declared_class_occurs_nowhere_or_all_is_background(tmp_path):
    root = paired(tmp_path / "d", shifted_discs(scale=255))
    report = check(root, labels=[0, 1, 2])
    assert [(p.kind, p.message) for p in report.problems] == [
        ("absent_label", "declared label label_2 = 2 occurs in none of the 4 label maps read")
    ]
    # 0/1 class indices saved as JPEG at quality 30: nothing but 0 survives the compression
    empty = paired(tmp_path / "e", shifted_discs(), suffix=".jpg", quality=30)
    report = check(empty)
    assert [p.kind for p in report.problems] == ["no_foreground"]
    assert "every label map (4 read) is background only" in report.format()


@pytest.mark.parametrize("quality", [90, 95])
def test_jpeg_multiclass_indices(tmp_path, quality):
    masks = {}
    for i in range(3):
        m = disc(r=18, cy=24, cx=22 + i).astype(np.uint8)
        m[disc(r=7, cy=18, cx=18 + i)] = 2
        m[disc(r=6, cy=31, cx=31 - i)] = 3
        masks[f"m{i}"] = m
    root = paired(tmp_path / "d", masks, suffix=".jpg", quality=quality)
    assert len(np.unique(np.asarray(Image.open(root / "masks" / "m0.jpg")))) >= 4
    for (case_id, truth), label in zip(masks.items(), labels_of(root)):
        assert set(np.unique(label).tolist()) == {0, 1, 2, 3}  # overshoot to 4 read as 3
        stored = np.asarray(Image.open(root / "masks" / f"{case_id}.jpg"))
        # as good as the stored values clipped to the classes: what the compression left
        assert np.sum(label != truth) == np.sum(np.minimum(stored, 3) != truth)
        assert np.mean(label == truth) > 0.9
