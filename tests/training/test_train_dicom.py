"""`attnseg train` on a folder of DICOM series with SEG labels (layout dicom), then predict -> SEG."""

from __future__ import annotations

import numpy as np
from tests.dicom_helpers import write_series

from attnseg.cli import main
from attnseg.io.dicom_seg import read_seg, write_seg
from attnseg.io.dicom_series import find_series, read_series

TINY = [
    "--set", "model.features=[4,8]",
    "--set", "data.folds=3",
    "--set", "train.epochs=1",
    "--set", "train.iters_per_epoch=1",
    "--set", "train.val_every=1",
    "--set", "data.batch_size=2",
    "--set", "train.progress=false",
    "--set", "train.threads=2",
    "--set", "augment.p_elastic=0",
]  # fmt: skip


def test_train_on_dicom_series_and_predict_a_seg(tmp_path, capsys):
    shape = (16, 16, 8)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    for i in range(3):
        rng = np.random.default_rng(i)
        centre = np.array([8, 8, 4]) + rng.integers(-2, 3, 3)
        inside = ((grid - centre[:, None, None, None]) ** 2).sum(0) < 9
        image = (np.where(inside, 800, 200) + rng.integers(0, 50, shape)).astype(np.uint16)
        write_series(
            tmp_path / "data" / f"p{i}", image, edit=lambda k, ds, n=i: setattr(ds, "SeriesNumber", n + 1)
        )
        series = find_series(tmp_path / "data" / f"p{i}").series[0]
        write_seg(tmp_path / "data" / f"p{i}" / "seg.dcm", inside[None], read_series(series), ["lesion"])
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "data"), "--out", str(run), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "(dicom, 3 cases: 2 train, 1 val)" in printed and "target=labels (lesion)" in printed
    out = tmp_path / "pred"
    assert main(["predict", str(run / "model.pt"), str(tmp_path / "data" / "p0"), str(out)]) == 0
    series = find_series(tmp_path / "data" / "p0").series[0]
    seg = read_seg(out / f"{series.case_id}.seg.dcm", read_series(series), series.uid)
    assert seg.names == ["lesion"] and seg.masks.shape == (1, *shape)
