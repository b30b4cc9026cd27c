"""A folder of DICOM series as a dataset: one case per image series, its label from a DICOM SEG.

``discover_dicom(root)`` lists every image series under ``root`` (``attnseg.io.dicom_series``:
grouped by SeriesInstanceUID, case ids from Modality, SeriesNumber and SeriesDescription) and the
SEG objects that reference each series (``ReferencedSeriesSequence``). A series with one SEG has it
as its label; with several, ``seg_pattern`` (a glob on file names) chooses, else the series is
reported (``several_segs``) and has no label. The labels are the segments: segment number =
label value, segment label = name (from the first SEG; a SEG whose segments differ is reported).

One series is one channel: a case of several series (e.g. T1 and T2) is not assembled from DICOM;
convert each and build the case in NIfTI.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

from attnseg.datasets.base import Case, Dataset, Problem
from attnseg.errors import DataError
from attnseg.io.dicom_seg import SegmentMasks, read_seg, seg_series_uids
from attnseg.io.dicom_series import (
    DicomSeries,
    SeriesVolume,
    find_series,
    is_dicom_file,
    read_header,
    read_series,
)
from attnseg.io.nifti import ImageMeta

LAYOUT = "dicom"


def _segment_names(path: Path) -> dict[int, str]:
    ds = read_header(path)
    return {
        int(item.SegmentNumber): str(item.get("SegmentLabel", f"segment_{item.SegmentNumber}"))
        for item in ds.get("SegmentSequence", [])
    }


def discover_dicom(root: Path, seg_pattern: str | None = None, series_uid: str | None = None) -> Dataset:
    """The DICOM series under ``root`` as cases (see the module docstring); ``series_uid`` keeps
    only that series (a single file given to predict)."""
    root = Path(root)
    found = find_series(root)
    problems = [Problem(None, None, "unreadable", message) for message in found.unreadable]
    segs_of: dict[str, list[Path]] = {}
    for seg in found.segs:
        try:
            uids = seg_series_uids(seg)
        except DataError as exc:
            problems.append(Problem(None, str(seg), "unreadable", str(exc)))
            continue
        for uid in uids:
            segs_of.setdefault(uid, []).append(seg)
    cases: list[Case] = []
    labels: dict[str, int] = {}
    for series in found.series:
        if series_uid is not None and series.uid != series_uid:
            continue
        segs = segs_of.get(series.uid, [])
        if seg_pattern is not None:
            segs = [s for s in segs if fnmatch.fnmatch(s.name, seg_pattern)]
        label = None
        if len(segs) == 1:
            label = segs[0]
        elif len(segs) > 1:
            problems.append(
                Problem(
                    series.case_id,
                    None,
                    "several_segs",
                    f"{len(segs)} SEG objects reference this series ({', '.join(s.name for s in segs)}); "
                    "choose one with a file-name pattern",
                )
            )
        if label is not None:
            names = _segment_names(label)
            if not labels:
                labels = {"background": 0, **{name: number for number, name in sorted(names.items())}}
            elif {v: k for k, v in labels.items() if v} != names:
                problems.append(
                    Problem(
                        series.case_id,
                        str(label),
                        "segments_differ",
                        f"{label.name} has segments {names}; the first SEG has {labels}",
                    )
                )
        cases.append(Case(series.case_id, list(series.files), label, {"dicom_series": series}))
    info = {
        "labels_declared": bool(labels),
        "segs_unused": [str(s) for s in found.segs if not any(s in v for v in segs_of.values())],
    }
    return Dataset(root, LAYOUT, cases, ["image"], labels, None, 3, info, problems)


def discover_dicom_file(path: Path) -> Dataset:
    """The series that the DICOM file ``path`` belongs to, found in its folder."""
    if not is_dicom_file(path):
        raise DataError(f"{path}: not a DICOM file")
    uid = str(read_header(path).get("SeriesInstanceUID", ""))
    dataset = discover_dicom(path.parent, series_uid=uid)
    if not dataset.cases:
        raise DataError(f"{path}: not an image of a series (e.g. a SEG or a structured report)")
    return dataset


def is_dicom_case(case: Case) -> bool:
    return "dicom_series" in case.meta


def load_dicom_case(case: Case) -> tuple[SeriesVolume, SegmentMasks | None]:
    """The series of a DICOM case as a volume, and its SEG's segments on that grid (or None)."""
    series: DicomSeries = case.meta["dicom_series"]
    volume = read_series(series)
    segments = read_seg(case.label, volume, series.uid) if case.label is not None else None
    return volume, segments


def load_dicom_arrays(case: Case) -> tuple[np.ndarray, np.ndarray | None, ImageMeta]:
    """``load_case``'s triple for a DICOM case: image (1, X, Y, Z), label map (segment numbers;
    overlapping segments refused) or None, meta."""
    volume, segments = load_dicom_case(case)
    label = None
    if segments is not None:
        try:
            label = segments.label_map()
        except DataError as exc:
            raise DataError(f"case {case.case_id}: {case.label}: {exc}") from exc
    return volume.image, label, volume.meta
