"""Evaluation where either side is DICOM SEG: segments as targets, on the grid of their series.

``evaluate_dicom_folders(pred, truth)`` scores every series that has a truth:

- The series come from ``series_dir`` (default: the truth folder when it holds image series, else
  the prediction folder). One series is one case (``attnseg.datasets.dicom``, case ids as predict
  names its outputs).
- A side given as SEG files is matched to its series by the series its SEG references
  (ReferencedSeriesSequence), never by file name; ``truth_pattern`` picks one SEG by file name
  where several reference one series. A side given as NIfTI label maps is matched by case id
  (``<case_id>.nii.gz``, what ``attnseg predict --format nifti`` writes) and must lie on the
  series grid.
- Targets are the truth's segments, each scored as its own binary mask, so overlapping segments
  (a voxel in two segments) count in both, as the SEG says. A predicted SEG's segment is matched by
  SegmentLabel (letter case ignored), else by segment number; a label map's by label value =
  segment number. With a NIfTI truth, the targets are the predicted SEG's segments, label value =
  segment number.
- Metrics and files are those of ``attnseg.metrics.evaluate`` (``evaluate_case``, ``summarize``,
  ``metrics_per_case.csv``, ``summary.json``); distances in mm on the series spacing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnseg.datasets.dicom import discover_dicom
from attnseg.errors import ConfigError, DataError
from attnseg.io.dicom_seg import SegmentMasks, read_seg, seg_series_uids
from attnseg.io.dicom_series import find_series, has_dicom, read_header, read_series
from attnseg.io.nifti import AFFINE_ATOL, load_label
from attnseg.io.paths import is_inside
from attnseg.metrics.evaluate import (
    EvaluationResult,
    evaluate_case,
    find_label_files,
    summarize,
    write_result,
)
from attnseg.metrics.surface_dice import DEFAULT_NSD_TOLERANCES_MM, check_tolerances

__all__ = ["evaluate_dicom_folders", "is_dicom_input"]


def is_dicom_input(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding DICOM files (series or SEG objects)."""
    path = Path(path)
    return path.is_dir() and has_dicom(path)


def _segs_by_series(folder: Path, pattern: str | None) -> dict[str, list[Path]]:
    found = find_series(folder)
    by_uid: dict[str, list[Path]] = {}
    for seg in found.segs:
        if pattern is not None and not fnmatch.fnmatch(seg.name, pattern):
            continue
        for uid in seg_series_uids(seg):
            by_uid.setdefault(uid, []).append(seg)
    return by_uid


def _one_seg(segs: list[Path], case_id: str, which: str) -> Path:
    """The one SEG of a series; where a BINARY and FRACTIONAL SEG both reference it (what predict
    ``--save-probabilities`` writes), the BINARY one."""
    if len(segs) > 1:
        binary = [s for s in segs if str(read_header(s).get("SegmentationType", "")) == "BINARY"]
        if len(binary) == 1:
            return binary[0]
        names = ", ".join(s.name for s in segs)
        raise DataError(
            f"case {case_id}: {len(segs)} {which} SEG objects reference its series ({names}); pass a file-name pattern"
        )
    return segs[0]


def _label_map_on_grid(path: Path, volume, case_id: str) -> np.ndarray:
    label, meta = load_label(path)
    if label.shape != volume.meta.shape:
        raise DataError(f"case {case_id}: {path} has shape {label.shape}; its series has {volume.meta.shape}")
    if not np.allclose(meta.affine, volume.meta.affine, atol=AFFINE_ATOL, rtol=0):
        raise DataError(f"case {case_id}: {path} is not on its series' voxel grid (affines differ)")
    return label


def _binary(segments: SegmentMasks) -> np.ndarray:
    return segments.masks >= 0.5 if segments.fractional else segments.masks.astype(bool)


def _pred_mask(pred: SegmentMasks | np.ndarray, name: str, number: int, notes: list[str]) -> np.ndarray:
    if isinstance(pred, np.ndarray):
        return pred == number
    masks = _binary(pred)
    by_name = [i for i, n in enumerate(pred.names) if n.lower() == name.lower()]
    if by_name:
        return masks[by_name[0]]
    if number in pred.numbers:
        i = pred.numbers.index(number)
        note = f"truth segment {name!r} has no predicted segment of that name; scored against segment {number} ({pred.names[i]!r})"
        if note not in notes:
            notes.append(note)
        return masks[i]
    return np.zeros(masks.shape[1:], dtype=bool)


def evaluate_dicom_folders(
    pred_dir: str | Path,
    truth_dir: str | Path,
    *,
    series_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    truth_pattern: str | None = None,
    nsd_tolerances_mm: Sequence[float] = DEFAULT_NSD_TOLERANCES_MM,
    **options,
) -> EvaluationResult:
    """Score predictions against truths where either is DICOM SEG (see the module docstring).

    ``options``: ``evaluate_case``'s metric settings (percentile, hd_convention, lesions, ...).
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    if out_dir is not None:
        out_dir = Path(out_dir)
        for src in (pred_dir, truth_dir):
            if is_inside(out_dir, src):
                raise ConfigError(f"{out_dir}: the output folder must not be inside the input folder {src}")
    if series_dir is None:
        series_dir = truth_dir if find_series(truth_dir).series else pred_dir
    dataset = discover_dicom(Path(series_dir))
    if not dataset.cases:
        raise DataError(f"{series_dir}: no DICOM image series to place the SEG objects on")
    truth_is_seg, pred_is_seg = is_dicom_input(truth_dir), is_dicom_input(pred_dir)
    truth_segs = _segs_by_series(truth_dir, truth_pattern) if truth_is_seg else {}
    pred_segs = _segs_by_series(pred_dir, None) if pred_is_seg else {}
    truth_maps = {} if truth_is_seg else find_label_files(truth_dir, truth_pattern)
    pred_maps = {} if pred_is_seg else find_label_files(pred_dir)
    options = {**options, "nsd_tolerances_mm": list(check_tolerances(nsd_tolerances_mm))}

    per_case: dict[str, dict[str, dict[str, float]]] = {}
    missing: list[str] = []
    notes: list[str] = []
    for case in dataset.cases:
        series = case.meta["dicom_series"]
        has_truth = series.uid in truth_segs if truth_is_seg else case.case_id in truth_maps
        if not has_truth:
            continue
        has_pred = series.uid in pred_segs if pred_is_seg else case.case_id in pred_maps
        if not has_pred:
            missing.append(case.case_id)
            continue
        volume = read_series(series)
        if truth_is_seg:
            truth = read_seg(_one_seg(truth_segs[series.uid], case.case_id, "truth"), volume, series.uid)
        else:
            truth = _label_map_on_grid(truth_maps[case.case_id], volume, case.case_id)
        if pred_is_seg:
            pred = read_seg(_one_seg(pred_segs[series.uid], case.case_id, "predicted"), volume, series.uid)
        else:
            pred = _label_map_on_grid(pred_maps[case.case_id], volume, case.case_id)
        if isinstance(truth, SegmentMasks):
            targets = list(zip(truth.names, truth.numbers, _binary(truth)))
        else:
            if not isinstance(pred, SegmentMasks):
                raise DataError(f"{pred_dir} and {truth_dir}: neither holds DICOM SEG objects")
            targets = [(n, k, truth == k) for n, k in zip(pred.names, pred.numbers)]
        rows = {}
        for name, number, truth_mask in targets:
            pred_mask = _pred_mask(pred, name, number, notes)
            scores = evaluate_case(
                pred_mask.astype(np.uint8),
                truth_mask.astype(np.uint8),
                volume.meta.spacing_mm,
                classes={name: 1},
                **options,
            )
            rows[name] = scores[name]
        per_case[case.case_id] = rows
    if not per_case and not missing:
        raise DataError(f"{truth_dir}: no truth matches a series in {series_dir}")
    settings = {
        "pred_dir": str(pred_dir),
        "truth_dir": str(truth_dir),
        "series_dir": str(series_dir),
        "targets": "DICOM SEG segments, each its own binary mask (overlaps count in every segment)",
        "distance_unit": "mm",
        **options,
    }
    summary = summarize(per_case, settings=settings, missing_predictions=missing)
    result = EvaluationResult(per_case=per_case, summary=summary, missing_predictions=missing, notes=notes)
    if out_dir is not None:
        write_result(result, out_dir)
    return result
