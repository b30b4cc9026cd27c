"""A folder of DICOM series as a dataset: discovered as layout ``dicom``, one case per series, the
SEG that references a series as its label (segment number = label value)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import shared_dataset
from tests.dicom_helpers import phantom, write_series

from attnseg.cli import main
from attnseg.datasets import discover, load_case
from attnseg.datasets.check import check
from attnseg.io.dicom_seg import write_seg
from attnseg.io.dicom_series import find_series, read_series


def test_series_and_segs_become_cases_with_labels(tmp_path):
    write_series(tmp_path / "p1" / "t1", phantom(seed=1), edit=lambda k, ds: setattr(ds, "SeriesNumber", 2))
    write_series(tmp_path / "p2" / "t1", phantom(seed=2), edit=lambda k, ds: setattr(ds, "SeriesNumber", 3))
    s2, s3 = (find_series(tmp_path / p).series[0] for p in ("p1", "p2"))
    v2 = read_series(s2)
    masks = np.stack([v2.image[0] > 800, v2.image[0] > 1000])
    write_seg(
        tmp_path / "p1" / "seg.dcm", masks & ~np.stack([masks[1], np.zeros_like(masks[1])]), v2, ["a", "b"]
    )
    dataset = discover(tmp_path)
    assert dataset.layout == "dicom" and dataset.case_ids == ["MR_s002_synthetic_t1", "MR_s003_synthetic_t1"]
    assert dataset.labels == {"background": 0, "a": 1, "b": 2}
    image, label, meta = load_case(dataset.cases[0], dataset)
    np.testing.assert_array_equal(image, v2.image)
    assert int((label == 1).sum()) == int((masks[0] & ~masks[1]).sum()) and int((label == 2).sum()) == int(
        masks[1].sum()
    )
    image, label, _ = load_case(dataset.cases[1], dataset)
    assert label is None
    report = check(tmp_path)
    kinds = {(p.case_id, p.kind) for p in report.problems}
    assert kinds == {("MR_s003_synthetic_t1", "missing_label")}
    assert main(["check", str(tmp_path), "--no-labels"]) == 0


def test_check_reports_a_refused_series_with_the_reason(tmp_path):
    write_series(tmp_path / "tilted", edit=lambda k, ds: setattr(ds, "GantryDetectorTilt", 15.0))
    report = check(tmp_path, require_labels=False)
    [problem] = report.problems
    assert problem.kind == "unreadable" and "GantryDetectorTilt 15 degrees" in problem.message


@pytest.mark.data
def test_the_real_series_is_one_case_and_several_segs_are_reported():
    mr = shared_dataset("dicom_mr_t1_sag")
    assert discover(mr / "dicom").case_ids == ["MR_s003_t1_fl2d_sag"]
    liver = shared_dataset("dicom_seg_dcmqi_liver")
    dataset = discover(liver)
    assert [p.kind for p in dataset.problems] == ["several_segs"] and dataset.cases[0].label is None
    chosen = discover(liver, seg_pattern="liver*")
    _, label, _ = load_case(chosen.cases[0], chosen)
    assert int(label.sum()) == 107_098
