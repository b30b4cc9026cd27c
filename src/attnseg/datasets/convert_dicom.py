"""DICOM <-> training data: a folder of series with their SEG objects -> an nnU-Net v2 dataset, and
a NIfTI label map -> a DICOM SEG on the series it was predicted from.

``convert_dicom(src, dst)`` writes ``dst/imagesTr/<case>_0000.nii.gz`` (the series on its own grid,
``attnseg.io.dicom_series``: no axis flipped, RAS affine, stored values after the modality
rescale), ``dst/labelsTr/<case>.nii.gz`` (label value = segment number of the SEG that references
the series) and ``dst/dataset.json`` (nnU-Net v2: ``channel_names`` from the Modality, ``labels``
from the segment labels, ``numTraining``, ``file_ending``). A series without a SEG goes to
``imagesTs/``. A case is refused (listed in the report, the rest converted) when its SEG's segments
overlap (a label map keeps one label per voxel), name other segments than the first SEG's, or
several SEGs reference its series and ``seg_pattern`` does not pick one. Nothing is written into
``src``.

``nifti_to_seg(label_path, series_dir, out)`` places a label map on a series and writes it as a
BINARY SEG: the label map must lie on the series grid, or on a grid that differs from it only by
axis flips and permutations (e.g. dcm2niix's row flip), which is undone first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnseg.datasets.base import Case
from attnseg.datasets.dicom import discover_dicom, load_dicom_case
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError, DataError
from attnseg.io.atomic import atomic_write_text
from attnseg.io.dicom_seg import write_seg
from attnseg.io.dicom_series import SeriesVolume, find_series, read_series
from attnseg.io.nifti import load_label, save_image
from attnseg.io.paths import is_inside

__all__ = ["ConversionReport", "convert_dicom", "grid_map", "nifti_to_seg"]


@dataclass
class ConversionReport:
    """What ``convert_dicom`` wrote: training and test case ids, refused cases with the reason."""

    out: Path
    training: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)


def _refusal(case: Case, dataset) -> str | None:
    for problem in dataset.problems:
        if problem.case_id == case.case_id and problem.kind in ("several_segs", "segments_differ"):
            return problem.message
    return None


def convert_dicom(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    seg_pattern: str | None = None,
    overwrite: bool = False,
    log=None,
) -> ConversionReport:
    """Convert the series and SEG objects under ``src`` into an nnU-Net v2 dataset at ``dst``."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if is_inside(dst, src):
        raise ConfigError(f"{dst}: is inside the DICOM folder {src}; nothing is written into the input")
    if (dst / "dataset.json").exists() and not overwrite:
        raise ConfigError(
            f"{dst}: holds a dataset.json already; pass overwrite=True (--overwrite) to replace it"
        )
    dataset = discover_dicom(src, seg_pattern=seg_pattern)
    if not dataset.cases:
        raise DataError(f"{src}: no DICOM image series found")
    report = ConversionReport(dst, labels=dict(dataset.labels) or {"background": 0})
    modalities: set[str] = set()
    for case in dataset.cases:
        refused = _refusal(case, dataset)
        if refused:
            report.refused.append((case.case_id, refused))
            continue
        try:
            volume, segments = load_dicom_case(case)
            label = segments.label_map() if segments is not None else None
        except DataError as exc:
            report.refused.append((case.case_id, str(exc)))
            if log:
                log(f"refused: {case.case_id}: {exc}")
            continue
        folder = "imagesTr" if label is not None else "imagesTs"
        save_image(dst / folder / f"{case.case_id}_0000.nii.gz", volume.image[0], volume.meta)
        if label is not None:
            save_image(dst / "labelsTr" / f"{case.case_id}.nii.gz", label, volume.meta)
            report.training.append(case.case_id)
        else:
            report.test.append(case.case_id)
        modalities.add(case.case_id.split("_")[0])
        if log:
            log(
                f"{case.case_id}: {volume.meta.shape} voxels of {tuple(round(s, 4) for s in volume.meta.spacing_mm)} mm -> {folder}"
            )
    if not report.training and not report.test:
        raise DataError(
            f"{src}: every series was refused: " + "; ".join(f"{c}: {why}" for c, why in report.refused)
        )
    dataset_json = {
        "name": dst.name,
        "description": f"converted from DICOM by attnseg ({len(report.training)} series with a SEG)",
        "channel_names": {"0": "/".join(sorted(modalities)) or "image"},
        "labels": report.labels,
        "numTraining": len(report.training),
        "file_ending": ".nii.gz",
    }
    atomic_write_text(dst / "dataset.json", json.dumps(dataset_json, indent=2) + "\n")
    return report


# --- back: a NIfTI label map onto its series as a SEG ---------------------------------------------------
def grid_map(affine_from: np.ndarray, affine_to: np.ndarray, atol: float = 1e-3):
    """``(axes, flips)`` that take an array on the ``affine_from`` grid onto the ``affine_to`` grid
    when the two differ only by axis permutations and flips (same voxel centres), else None.

    Apply as ``np.flip(array.transpose(axes), flips)``; a no-op for equal grids.
    """
    m = np.linalg.solve(affine_to, affine_from)  # voxel of "from" -> voxel of "to"
    lin = np.rint(m[:3, :3])
    if not np.allclose(m[:3, :3], lin, atol=atol) or not np.allclose(m[:3, 3], np.rint(m[:3, 3]), atol=atol):
        return None
    if sorted(np.abs(lin).sum(axis=0).tolist()) != [1, 1, 1] or sorted(np.abs(lin).sum(axis=1).tolist()) != [
        1,
        1,
        1,
    ]:
        return None
    axes = tuple(int(np.flatnonzero(lin[to])[0]) for to in range(3))  # "to" axis <- "from" axis
    flips = tuple(to for to in range(3) if lin[to, axes[to]] < 0)
    return axes, flips


def _on_series_grid(label: np.ndarray, affine: np.ndarray, volume: SeriesVolume, where: Path) -> np.ndarray:
    mapping = grid_map(affine, volume.meta.affine)
    if mapping is None:
        raise DataError(
            f"{where}: its voxel grid is not the series' grid (nor a flip or permutation of it); "
            "resample it onto the series first"
        )
    axes, flips = mapping
    placed = np.flip(label.transpose(axes), flips) if flips else label.transpose(axes)
    if placed.shape != volume.meta.shape:
        raise DataError(f"{where}: shape {label.shape} does not cover the series' {volume.meta.shape} voxels")
    return np.ascontiguousarray(placed)


def nifti_to_seg(
    label_path: str | os.PathLike,
    series_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    scheme: LabelScheme | None = None,
    case_id: str | None = None,
) -> Path:
    """Write the label map at ``label_path`` as a BINARY SEG of its series at ``out``.

    ``series_dir`` holds the series (one, or pick it with ``case_id``). ``scheme``: the model's label
    scheme, one segment per foreground class or region with its name; without it, one segment per
    non-zero value present, named ``label_<value>``, in increasing value order.
    """
    label_path, out = Path(label_path), Path(out)
    found = find_series(series_dir)
    series = [s for s in found.series if case_id is None or s.case_id == case_id]
    if len(series) != 1:
        ids = ", ".join(s.case_id for s in found.series) or "none"
        raise DataError(f"{series_dir}: {len(series)} series match; pass a case id (the series are: {ids})")
    volume = read_series(series[0])
    label, meta = load_label(label_path)
    placed = _on_series_grid(label, meta.affine, volume, label_path)
    if scheme is not None:
        masks, names = scheme.masks_from_labels(placed), scheme.channel_names
    else:
        values = [int(v) for v in np.unique(placed) if v != 0]
        if not values:
            raise DataError(f"{label_path}: no foreground voxels; a SEG needs at least one segment")
        masks, names = np.stack([placed == v for v in values]), [f"label_{v}" for v in values]
    return write_seg(out, masks, volume, names)
