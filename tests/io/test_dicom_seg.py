"""DICOM SEG written and read back on a series grid: overlaps, empty masks, codes, bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
from tests.dicom_helpers import oblique_iop, phantom, write_series

from attnseg.errors import DataError
from attnseg.io.dicom_seg import read_seg, segment_code, write_seg
from attnseg.io.dicom_series import find_series, read_series


@pytest.fixture
def series_volume(tmp_path):
    write_series(tmp_path / "s", phantom(), iop=oblique_iop(10.0))
    series = find_series(tmp_path / "s").series[0]
    return series, read_series(series)


def test_overlapping_segments_round_trip(tmp_path, series_volume):
    series, volume = series_volume
    a = volume.image[0] > 500
    b = volume.image[0] > 900  # inside a: overlaps it everywhere
    path = write_seg(tmp_path / "o.dcm", np.stack([a, b]), volume, ["Liver", "my tumour"])
    back = read_seg(path, volume, series.uid)
    assert back.numbers == [1, 2] and back.names == ["Liver", "my tumour"]
    assert np.array_equal(back.masks, np.stack([a, b])) and back.overlaps()
    assert back.voxel_counts() == {"Liver": int(a.sum()), "my tumour": int(b.sum())}
    with pytest.raises(DataError, match=f"overlap on {int(b.sum())} voxels"):
        back.label_map()


def test_empty_masks_round_trip(tmp_path, series_volume):
    series, volume = series_volume
    path = write_seg(tmp_path / "e.dcm", np.zeros((1, *volume.meta.shape), bool), volume, ["x"])
    back = read_seg(path, volume, series.uid)
    assert back.masks.shape == (1, *volume.meta.shape) and not back.masks.any()


def test_segment_codes():
    category, kind = segment_code("liver")
    assert (category.meaning, kind.meaning, kind.value) == ("Anatomical Structure", "Liver", "10200004")
    category, kind = segment_code("WT")
    assert category.meaning == kind.meaning == "Tissue"


def test_refuses_masks_off_the_series_grid(tmp_path, series_volume):
    _, volume = series_volume
    with pytest.raises(DataError, match=r"expected \(segments, \*\(12, 10, 6\)\)"):
        write_seg(tmp_path / "bad.dcm", np.zeros((1, 10, 12, 6), bool), volume, ["x"])


def test_refuses_a_seg_of_another_series(tmp_path, series_volume):
    series, volume = series_volume
    path = write_seg(tmp_path / "o.dcm", (volume.image > 500), volume, ["x"])
    write_series(tmp_path / "other", phantom(seed=3))
    other = find_series(tmp_path / "other").series[0]
    with pytest.raises(DataError, match="does not reference the series"):
        read_seg(path, read_series(other), other.uid)
