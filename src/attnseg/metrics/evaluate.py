"""Case-level and folder-level evaluation: every metric per class or region, per-case CSV, summary JSON.

``evaluate_case`` takes two label maps (integer arrays, numpy or torch) and returns
``{target: {metric: value}}`` where a target is a class (one label value) or a region (a set of label
values, e.g. BraTS WT = {1, 2, 4}). ``evaluate_folders`` matches two folders of label maps by
case id, checks that each pair has the same grid, and writes ``metrics_per_case.csv`` and
``summary.json`` atomically. Label maps are NIfTI or 2D masks (PNG, JPEG, TIFF, BMP); a folder's 2D
masks are decoded as a dataset's are (``attnseg.io.mask_encoding``: one decision from all their
value histograms), the predictions with the truth's classes declared. 2D images carry no spacing:
spacing 1, distances in pixels (``summary["settings"]["distance_unit"]``). An ignore label
(unannotated voxels, ``LabelScheme.ignore_label``): where the truth holds it, the voxel is left out
of every metric (``ignore_label``; the folders' default reads it from the truth's dataset.json).
Conventions: docs/metrics.md.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnseg.datasets.discover import declared_labels
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.datasets.regions import BRATS_REGIONS
from attnseg.errors import ConfigError, DataError
from attnseg.io.atomic import atomic_write_text
from attnseg.io.images2d import is_image2d, load_mask2d, mask_set_encoding
from attnseg.io.mask_encoding import MaskSetEncoding
from attnseg.io.nifti import is_nifti, load_label
from attnseg.io.paths import is_inside, strip_image_suffix
from attnseg.metrics import brats2023
from attnseg.metrics.lesions import (
    DEFAULT_SIZE_BINS_MM,
    SIZE_BIN_COUNTS,
    check_size_bins,
    lesion_metrics,
    size_bin_keys,
)
from attnseg.metrics.overlap import confusion, overlap_metrics_from_confusion, resolve_spacing
from attnseg.metrics.surface import (
    CONVENTIONS,
    bounding_box,
    hd_key,
    surface_metrics,
    volume_diagonal_mm,
)
from attnseg.metrics.surface_dice import (
    DEFAULT_NSD_TOLERANCES_MM,
    check_tolerances,
    nsd_key,
    surface_dice_metrics,
)
from attnseg.progress import progress as progress_lines

# ``--regions`` presets: the BraTS region table of attnseg.datasets.regions (brats = the 2017-2022
# labels, brats2015 = up to 2016, brats2023 = from 2023).
REGION_PRESETS: dict[str, dict[str, tuple[int, ...]]] = {
    preset: {name: tuple(values) for name, values in BRATS_REGIONS[scheme].items()}
    for preset, scheme in (("brats", "2017"), ("brats2015", "2015"), ("brats2023", "2023"))
}

Targets = dict[str, tuple[int, ...]]
ClassesArg = Mapping[str, int] | Sequence[int] | None
RegionsArg = str | Mapping[str, Iterable[int]] | None


# --- targets ----------------------------------------------------------------------------------------
def resolve_targets(
    classes: ClassesArg = None, regions: RegionsArg = None, present: Callable[[], Iterable[int]] | None = None
) -> Targets:
    """Name -> label values. ``classes``: label values (named by their value) or {name: value};
    ``regions``: a preset name (``brats``, ``brats2015``, ``brats2023``) or {name: [values]};
    neither: every non-zero label value returned by ``present()``."""
    if classes is not None and regions is not None:
        raise ConfigError("give either classes or regions, not both")
    if regions is not None:
        if isinstance(regions, str):
            if regions not in REGION_PRESETS:
                raise ConfigError(
                    f"unknown region preset {regions!r}; choose one of {sorted(REGION_PRESETS)}"
                )
            return dict(REGION_PRESETS[regions])
        targets = {str(k): tuple(int(v) for v in vals) for k, vals in regions.items()}
    elif classes is not None:
        if isinstance(classes, Mapping):
            targets = {str(k): (int(v),) for k, v in classes.items()}
        else:
            targets = {str(int(v)): (int(v),) for v in classes}
    else:
        values = sorted({int(v) for v in (present() if present else ())} - {0})
        targets = {str(v): (v,) for v in values}
    for name, vals in targets.items():
        if not vals:
            raise ConfigError(f"target {name!r} has no label values")
    return targets


def parse_regions(text: str) -> str | dict[str, tuple[int, ...]]:
    """``--regions`` text: a preset name (``brats``) or ``WT=1+2+4,TC=1+4,ET=4``."""
    text = text.strip()
    if "=" not in text:
        if text not in REGION_PRESETS:
            raise ConfigError(
                f"--regions {text!r}: unknown preset; choose one of {sorted(REGION_PRESETS)} or give NAME=1+2,..."
            )
        return text
    regions: dict[str, tuple[int, ...]] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, values = item.partition("=")
        try:
            regions[name.strip()] = tuple(int(v) for v in values.split("+"))
        except ValueError:
            raise ConfigError(f"--regions {item!r}: expected NAME=VALUE+VALUE..., e.g. WT=1+2+4") from None
        if not name.strip():
            raise ConfigError(f"--regions {item!r}: missing region name")
    return regions


def parse_classes(text: str) -> list[int] | dict[str, int]:
    """``--labels`` text: ``1,2,4`` (named by value) or ``ncr=1,ed=2,et=4``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        if all("=" in t for t in items):
            return {t.partition("=")[0].strip(): int(t.partition("=")[2]) for t in items}
        return [int(t) for t in items]
    except ValueError:
        raise ConfigError(f"--labels {text!r}: expected 1,2,4 or name=1,name=2") from None


def parse_ignore_label(text: str) -> int | str | None:
    """``--ignore-label`` text: a label value, ``auto`` (the truth's dataset.json) or ``none``."""
    text = text.strip().lower()
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--ignore-label {text!r}: expected a label value (e.g. 3), auto or none") from None


def parse_tolerances(text: str) -> tuple[float, ...]:
    """``--nsd-tolerance-mm`` text: ``1,2`` (mm, one NSD column each) or ``none`` (no NSD)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return check_tolerances([float(t) for t in text.split(",") if t.strip()])
    except ValueError:
        raise ConfigError(
            f"--nsd-tolerance-mm {text!r}: expected tolerances in mm >= 0 separated by commas, "
            "e.g. 1,2, or none"
        ) from None


def parse_size_bins(text: str) -> tuple[float, ...]:
    """``--size-bins-mm`` text: ``3,5,10`` (edges in mm: bins <3, 3-5, 5-10, >=10) or ``none``."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return check_size_bins([float(t) for t in text.split(",") if t.strip()])
    except ValueError:
        raise ConfigError(
            f"--size-bins-mm {text!r}: expected increasing diameters in mm > 0 separated by commas, "
            "e.g. 3,5,10, or none"
        ) from None


def _as_labels(x: object, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.rint(arr)):
            raise DataError(f"{name}: label map has non-integer values")
        return arr.astype(np.int32)
    if arr.dtype.kind not in "iu":
        raise DataError(f"{name}: label map has data type {arr.dtype}; expected integers")
    return arr


def _present_labels(*arrays: np.ndarray) -> set[int]:
    values: set[int] = set()
    for a in arrays:
        if a.dtype.kind == "u" and a.dtype.itemsize <= 2:  # bincount is far faster than a sort
            values |= {int(v) for v in np.flatnonzero(np.bincount(a.ravel()))}
        else:
            values |= {int(v) for v in np.unique(a)}
    return values


def _select(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    if len(values) == 1:
        return labels == values[0]
    return np.isin(labels, values)


# --- one case ---------------------------------------------------------------------------------------
def evaluate_case(
    pred_labels: object,
    truth_labels: object,
    spacing_mm: float | Sequence[float] | None = None,
    *,
    classes: ClassesArg = None,
    regions: RegionsArg = None,
    percentile: float = 95.0,
    hd_convention: str = "max",
    lesions: bool = True,
    small_lesion_diameter_mm: float = 5.0,
    connectivity: int | None = None,
    empty_distance_mm: float | None = None,
    convention: str | None = None,
    brats_challenge: str = "GLI",
    method: str = "auto",
    threads: int | None = None,
    nsd_tolerances_mm: Sequence[float] = DEFAULT_NSD_TOLERANCES_MM,
    size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM,
    ignore_label: int | None = None,
) -> dict[str, dict[str, float]]:
    """Every metric for every class/region of one case: ``{target: {metric: value}}``.

    ``ignore_label``: where the truth has this value the voxel is not annotated and takes no part:
    it is background in both maps for every metric and does not count among the voxels (so it is
    no true negative either: specificity and FPR see only annotated voxels).

    Metrics: dice, iou, sensitivity, specificity, precision, fpr, fnr, voxel counts, volumes (mm^3,
    ml, relative), hd_mm, hd95_mm (``hd{percentile}_mm``), assd_mm, the normalized surface Dice at
    each of ``nsd_tolerances_mm`` (``nsd_1mm``, ``nsd_2mm``; none for ``()``) and, with ``lesions``,
    lesion counts and detection rates, and the lesion counts per size bin (``size_bins_mm`` edges:
    ``n_truth_<bin>``, ``n_detected_<bin>``, ``n_fp_<bin>``, bins ``lt3mm``, ``3to5mm``, ``5to10mm``,
    ``ge10mm`` by default; ``()``: none). Distances are in mm using ``spacing_mm`` (per array axis). When a
    mask is empty in one map only, distances are ``empty_distance_mm`` (default: the volume's
    diagonal). No value is ever NaN.

    ``convention="brats2023"`` adds the BraTS 2023 lesion-wise scores of ``brats_challenge``
    (``lesionwise_dice``, ``lesionwise_hd95_mm``, ``lesionwise_tp/fn/fp/dropped``; 3D only; rules in
    ``attnseg.metrics.brats2023``), makes ``empty_distance_mm`` default to 374 mm (the penalty of
    every distance, legacy and lesion-wise) and the targets default to the ``brats2023`` regions.
    """
    pred = _as_labels(pred_labels, "prediction")
    truth = _as_labels(truth_labels, "truth")
    if pred.shape != truth.shape:
        raise DataError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if pred.ndim not in (2, 3):
        raise DataError(f"label maps must be 2D or 3D, got shape {truth.shape}")
    if hd_convention not in CONVENTIONS:
        raise ConfigError(f"hd_convention must be one of {CONVENTIONS}, got {hd_convention!r}")
    lesion_wise = _lesion_wise_rule(convention, brats_challenge)
    if lesion_wise is not None and pred.ndim != 3:
        raise ConfigError(f"the {convention} lesion-wise scores need 3D label maps, got shape {truth.shape}")
    regions = _default_regions(convention, classes, regions)
    empty_distance_mm = _empty_distance(convention, empty_distance_mm)
    try:
        tolerances = check_tolerances(nsd_tolerances_mm)
        check_size_bins(size_bins_mm)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    spacing = resolve_spacing(spacing_mm, pred.ndim)
    voxel_mm3 = float(np.prod(spacing))
    n_total = int(truth.size)
    keep = None  # the annotated voxels, when some are not
    if ignore_label is not None:
        ignored = truth == int(ignore_label)
        n_ignored = int(np.count_nonzero(ignored))
        if n_ignored:
            keep = ~ignored
            pred, truth = np.where(ignored, 0, pred), np.where(ignored, 0, truth)
            n_total -= n_ignored
    worst_mm = (
        volume_diagonal_mm(truth.shape, spacing) if empty_distance_mm is None else float(empty_distance_mm)
    )

    # Every non-background target lies inside the box of non-zero labels of either map; working in
    # that box is exact (the voxels outside are true negatives, and the box edge is background).
    foreground = (pred != 0) | (truth != 0)
    box = bounding_box(foreground)
    if box is None:
        box = tuple(slice(0, 1) for _ in truth.shape)  # both maps all background
    pc, tc = pred[box], truth[box]
    targets = resolve_targets(classes, regions, present=lambda: _present_labels(pc, tc))
    if any(0 in vals for vals in targets.values()):
        pc, tc = pred, truth  # background is a target: the whole volume matters

    out: dict[str, dict[str, float]] = {}
    for name, vals in targets.items():
        pm, tm = _select(pc, vals), _select(tc, vals)
        if keep is None:
            counts = confusion(pm, tm, n_total)
        else:  # true negatives among the annotated voxels only
            if 0 in vals:  # background target: pc, tc are the whole volume
                pm, tm = pm & keep, tm & keep
            c = confusion(pm, tm)
            counts = dataclasses.replace(c, tn=n_total - c.tp - c.fp - c.fn)
        row = overlap_metrics_from_confusion(counts, voxel_mm3)
        row.update(
            surface_metrics(
                pm,
                tm,
                spacing,
                percentile=percentile,
                convention=hd_convention,
                empty_distance_mm=worst_mm,
                method=method,
                threads=threads,
            )
        )
        row.update(surface_dice_metrics(pm, tm, spacing, tolerances, threads=threads))
        if lesions:
            row.update(
                lesion_metrics(
                    pm,
                    tm,
                    spacing,
                    small_lesion_diameter_mm=small_lesion_diameter_mm,
                    connectivity=connectivity,
                    size_bins_mm=size_bins_mm,
                )
            )
        if lesion_wise is not None:
            row.update(
                brats2023.lesion_wise_scores(
                    pm, tm, spacing, **lesion_wise, penalty_mm=worst_mm, method=method, threads=threads
                )
            )
        bad = [k for k, v in row.items() if not math.isfinite(v)]
        if bad:  # a bug, not a data problem: every convention above is finite
            raise AssertionError(f"non-finite metrics {bad} for target {name}")
        out[name] = row
    return out


def _lesion_wise_rule(convention: str | None, brats_challenge: str) -> dict[str, int | float] | None:
    """The dilation and volume threshold of the lesion-wise convention, None without one."""
    if convention is None:
        return None
    if convention not in brats2023.CONVENTIONS:
        raise ConfigError(f"convention must be one of {brats2023.CONVENTIONS} or None, got {convention!r}")
    try:
        dilation, min_volume = brats2023.challenge_parameters(brats_challenge)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return {"dilation_iterations": dilation, "min_lesion_volume_mm3": min_volume}


def _default_regions(convention: str | None, classes: ClassesArg, regions: RegionsArg) -> RegionsArg:
    """``--convention brats2023`` without targets scores the 2023 WT/TC/ET regions."""
    return "brats2023" if convention == "brats2023" and classes is None and regions is None else regions


def _empty_distance(convention: str | None, empty_distance_mm: float | None) -> float | None:
    """The distance when one mask is empty: as given, else the convention's (None: the diagonal)."""
    if empty_distance_mm is not None:
        if not (math.isfinite(empty_distance_mm) and empty_distance_mm >= 0):
            raise ConfigError(f"empty_distance_mm must be a finite distance >= 0, got {empty_distance_mm}")
        return float(empty_distance_mm)
    return brats2023.PENALTY_MM if convention == "brats2023" else None


def brats2023_lesion_wise(
    pred_labels: object,
    truth_labels: object,
    spacing_mm: float | Sequence[float] | None = None,
    *,
    challenge: str = "GLI",
    regions: RegionsArg = "brats2023",
    empty_distance_mm: float | None = None,
    method: str = "auto",
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """BraTS 2023 scores of one case per region: the lesion-wise ``lesionwise_dice`` and
    ``lesionwise_hd95_mm`` with the lesion counts ``lesionwise_tp``, ``_fn``, ``_fp``, ``_dropped``,
    and beside them the legacy ``dice`` and ``hd95_mm`` of the whole region (penalty 374 mm).

    Regions: the 2023 labels' WT {1, 2, 3}, TC {1, 3}, ET {3} by default. ``challenge``: ``"GLI"``,
    ``"SSA"``, ``"PED"``, ``"MEN"`` or ``"MET"`` (dilation and volume threshold,
    ``attnseg.metrics.brats2023``). Example: ``brats2023_lesion_wise(pred, truth, (1, 1, 1))["ET"]``.
    """
    rows = evaluate_case(
        pred_labels,
        truth_labels,
        spacing_mm,
        regions=regions,
        lesions=False,
        empty_distance_mm=empty_distance_mm,
        convention="brats2023",
        brats_challenge=challenge,
        method=method,
        threads=threads,
    )
    return {
        name: {k: row[k] for k in ("dice", "hd95_mm", *brats2023.SCORE_KEYS)} for name, row in rows.items()
    }


def empty_target_metrics(ndim: int = 3, **options) -> dict[str, float]:
    """The metrics of a target absent from both maps (Dice 1, distances 0, ...), for filling in."""
    zeros = np.zeros((1,) * ndim, dtype=np.uint8)
    return evaluate_case(zeros, zeros, classes={"x": 1}, **options)["x"]


# --- folders ----------------------------------------------------------------------------------------
LABEL_SUFFIXES = ("_seg", "-seg", "_label", "_labels", "_gt", "_mask")


LABEL_DIRS_2D = ("labels", "masks", "label", "mask")  # a paired 2D dataset's label folder


def _is_nifti(path: Path) -> bool:
    return path.is_file() and is_nifti(path) and not path.name.startswith(".")


def _is_label_file(path: Path) -> bool:
    """A NIfTI file or a 2D image (PNG, JPEG, TIFF, BMP), not hidden."""
    return _is_nifti(path) or (path.is_file() and is_image2d(path) and not path.name.startswith("."))


def _case_id(name: str) -> str:
    stem = strip_image_suffix(name)
    for suffix in LABEL_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _looks_like_label(name: str) -> bool:
    stem = strip_image_suffix(name).lower()
    return stem in ("seg", "label", "labels", "gt", "mask") or stem.endswith(LABEL_SUFFIXES)


def find_label_files(folder: str | Path, pattern: str | None = None) -> dict[str, Path]:
    """Case id -> label map file in ``folder``.

    Accepted layouts: label maps directly in the folder, NIfTI or 2D (case id = file name without
    its suffix and without a ``_seg``/``-seg``/``_label``/``_gt``/``_mask`` suffix; where some 2D
    files have such a suffix, only those are labels); an MSD/nnU-Net folder with ``labelsTr/``; a
    paired 2D dataset's ``masks/`` or ``labels/``; or one sub-folder per case (case id = folder name)
    holding one label map, found by ``pattern`` (a glob on file names, e.g. ``"*OTMultiClass*"``),
    else the one file whose name ends in ``_seg``/``_label``/..., else the folder's only NIfTI file;
    2D slice folders (``<id>_<n>_mask.tif``) give one case per mask.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    direct = sorted(
        p for p in folder.iterdir() if _is_label_file(p) and (pattern is None or p.match(pattern))
    )
    flat_2d = [p for p in direct if not is_nifti(p)]
    if flat_2d and any(_looks_like_label(p.name) for p in flat_2d):  # images next to their masks
        direct = [p for p in direct if is_nifti(p) or _looks_like_label(p.name)]
    if not direct:
        for sub in ("labelsTr", *LABEL_DIRS_2D):
            if (folder / sub).is_dir():
                return find_label_files(folder / sub, pattern)
    found: dict[str, Path] = {}
    if direct:
        for path in direct:
            cid = _case_id(path.name)
            if cid in found:
                raise DataError(f"{folder}: two files for case {cid!r}: {found[cid].name} and {path.name}")
            found[cid] = path
        return found
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        masks_2d = sorted(p for p in sub.iterdir() if _is_label_file(p) and not is_nifti(p))
        masks_2d = [p for p in masks_2d if (p.match(pattern) if pattern else _looks_like_label(p.name))]
        for path in masks_2d:  # 2D slice folders: one case per mask, named by the file
            found[_case_id(path.name)] = path
        files = sorted(p for p in sub.iterdir() if _is_nifti(p))
        if pattern is not None:
            chosen = [p for p in files if p.match(pattern)]
        else:
            chosen = [p for p in files if _looks_like_label(p.name)] or (files if len(files) == 1 else [])
        if len(chosen) > 1:
            names = ", ".join(p.name for p in chosen)
            raise DataError(f"{sub}: several candidate label maps ({names}); pass a file-name pattern")
        if chosen:
            found[sub.name] = chosen[0]
    if not found:
        raise DataError(
            f"{folder}: no label maps found (expected *.nii.gz or 2D mask files, a labelsTr/ or masks/ "
            f"folder, or one folder per case holding a *_seg.nii.gz file)"
        )
    return found


@dataclass
class EvaluationResult:
    per_case: dict[str, dict[str, dict[str, float]]]  # case id -> target -> metric -> value
    summary: dict
    csv_path: Path | None = None
    json_path: Path | None = None
    missing_predictions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. how 2D masks were decoded; distances in pixels


def evaluate_folders(
    pred_dir: str | Path,
    truth_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    classes: ClassesArg = None,
    regions: RegionsArg = None,
    truth_pattern: str | None = None,
    percentile: float = 95.0,
    hd_convention: str = "max",
    lesions: bool = True,
    small_lesion_diameter_mm: float = 5.0,
    connectivity: int | None = None,
    empty_distance_mm: float | None = None,
    convention: str | None = None,
    brats_challenge: str = "GLI",
    affine_atol_mm: float = 1e-3,
    progress: bool = False,
    nsd_tolerances_mm: Sequence[float] = DEFAULT_NSD_TOLERANCES_MM,
    size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM,
    ignore_label: int | str | None = "auto",
) -> EvaluationResult:
    """Evaluate every prediction in ``pred_dir`` against its truth in ``truth_dir`` (matched by case id).

    Each prediction must have a truth (DataError otherwise); truths without a prediction are listed
    in ``missing_predictions`` and not evaluated. The two maps of a case must have the same shape and
    affine (within ``affine_atol_mm``). Spacing comes from the truth's header. With neither
    ``classes`` nor ``regions``, the targets are every non-zero label value found in any map, and a
    target absent from both maps of a case gets the both-empty values (Dice 1, distances 0).
    ``convention="brats2023"`` adds the BraTS 2023 lesion-wise scores (``evaluate_case``).
    ``nsd_tolerances_mm``: one normalized-surface-Dice column per tolerance (``nsd_1mm``, ``nsd_2mm``).
    ``size_bins_mm``: the edges of the lesion size bins (``evaluate_case``).
    ``ignore_label``: truth voxels with this value are left out (``evaluate_case``); ``"auto"``: the
    ``"ignore"`` label of the dataset.json in ``truth_dir`` or its parent (a dataset's
    ``labelsTr``), none without one; None: every voxel counts.
    Writes ``metrics_per_case.csv`` and ``summary.json`` into ``out_dir`` when given.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    if out_dir is not None:
        out_dir = Path(out_dir)
        for src in (pred_dir, truth_dir):
            if is_inside(out_dir, src):
                raise ConfigError(f"{out_dir}: the output folder must not be inside the input folder {src}")
    preds = find_label_files(pred_dir)
    truths = find_label_files(truth_dir, truth_pattern)
    orphans = sorted(set(preds) - set(truths))
    if orphans:
        shown = ", ".join(orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        raise DataError(f"{pred_dir}: {len(orphans)} prediction(s) have no truth in {truth_dir}: {shown}")
    missing = sorted(set(truths) - set(preds))
    case_ids = sorted(preds)
    ignore_label, ignore_note = _resolve_ignore_label(ignore_label, truth_dir)
    options = dict(
        percentile=percentile,
        hd_convention=hd_convention,
        lesions=lesions,
        small_lesion_diameter_mm=small_lesion_diameter_mm,
        connectivity=connectivity,
        empty_distance_mm=empty_distance_mm,
        convention=convention,
        brats_challenge=brats_challenge,
        nsd_tolerances_mm=list(check_tolerances(nsd_tolerances_mm)),
        size_bins_mm=list(_size_bins(size_bins_mm)),
    )
    lesion_wise = _lesion_wise_rule(convention, brats_challenge)  # fail on bad settings before reading
    regions = _default_regions(convention, classes, regions)
    empty_distance_mm = _empty_distance(convention, empty_distance_mm)
    resolve_targets(classes, regions)  # fail on a bad preset before reading any file
    declared = _declared_values(classes, regions)
    truth_masks = _mask_set(truths, declared)  # the whole truth set decides, as for a dataset
    truth_classes = set(declared or ()) | (set(_classes_of(truth_masks)) if truth_masks else set())
    pred_masks = _mask_set(preds, sorted(truth_classes) or None)

    iterator: Iterable[str] = case_ids
    if progress:
        iterator = progress_lines(case_ids, desc="evaluate", unit="case")
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    ndim = 3
    for cid in iterator:
        pred, pmeta = _read_label(preds[cid], pred_masks)
        truth, tmeta = _read_label(truths[cid], truth_masks)
        if pred.shape != truth.shape:
            raise DataError(
                f"case {cid}: prediction {preds[cid]} has shape {pred.shape}, truth {truths[cid]} has {truth.shape}"
            )
        if not np.allclose(pmeta.affine, tmeta.affine, rtol=0, atol=affine_atol_mm):
            raise DataError(
                f"case {cid}: prediction {preds[cid]} and truth {truths[cid]} have different affines "
                f"(voxel grids); max difference {np.abs(pmeta.affine - tmeta.affine).max():.4g} mm"
            )
        ndim = truth.ndim
        per_case[cid] = evaluate_case(
            pred,
            truth,
            tmeta.spacing_mm,
            classes=classes,
            regions=regions,
            ignore_label=ignore_label,
            **options,
        )

    if classes is None and regions is None:  # union of labels: fill targets absent from a case
        names = sorted({n for rows in per_case.values() for n in rows}, key=int)
        empty = empty_target_metrics(ndim, **options)
        per_case = {cid: {n: rows.get(n, dict(empty)) for n in names} for cid, rows in per_case.items()}
        targets = {n: [int(n)] for n in names}
    else:
        targets = {k: list(v) for k, v in resolve_targets(classes, regions).items()}

    two_d = truth_masks is not None or pred_masks is not None
    settings = {
        "pred_dir": str(pred_dir),
        "truth_dir": str(truth_dir),
        "targets": targets,
        "distance_unit": "pixel" if two_d else "mm",
        **options,
        "empty_distance_mm": empty_distance_mm,  # None: the volume's diagonal
        "ignore_label": ignore_label,
    }
    if lesion_wise is not None:
        settings["lesionwise"] = {**lesion_wise, "penalty_mm": empty_distance_mm}
    summary = summarize(per_case, settings=settings, missing_predictions=missing)
    notes = _mask_notes(truth_masks, "truth") + _mask_notes(pred_masks, "prediction") + ignore_note
    if two_d:
        notes.append(
            "2D images carry no spacing: spacing 1, so the distances (hd_mm, hd95_mm, assd_mm) are in pixels, "
            "and so are the NSD tolerances (nsd_1mm: within 1 pixel)"
        )
    result = EvaluationResult(per_case=per_case, summary=summary, missing_predictions=missing, notes=notes)
    if out_dir is not None:
        write_result(result, out_dir)
    return result


def write_result(result: EvaluationResult, out_dir: Path) -> None:
    """Write ``metrics_per_case.csv`` and ``summary.json`` of ``result`` into ``out_dir`` (atomically)."""
    result.csv_path = out_dir / "metrics_per_case.csv"
    result.json_path = out_dir / "summary.json"
    atomic_write_text(result.csv_path, per_case_csv(result.per_case))
    atomic_write_text(result.json_path, json.dumps(result.summary, indent=2) + "\n")


def _size_bins(edges_mm: Sequence[float]) -> tuple[float, ...]:
    try:
        return check_size_bins(edges_mm)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _resolve_ignore_label(ignore_label: int | str | None, truth_dir: Path) -> tuple[int | None, list[str]]:
    """The ignore label to use and a note saying where it came from (``evaluate_folders``)."""
    if ignore_label is None:
        return None, []
    if ignore_label != "auto":
        if isinstance(ignore_label, bool) or not isinstance(ignore_label, int | np.integer):
            raise ConfigError(f"ignore_label={ignore_label!r}: pass a label value, 'auto' or None")
        return int(ignore_label), [f"truth voxels labelled {int(ignore_label)} are ignored (not annotated)"]
    for folder in (truth_dir, truth_dir.parent):
        labels = declared_labels(folder)
        if labels:
            value = LabelScheme.declared_ignore_label(labels)
            if value is None:
                return None, []
            return value, [
                f"truth voxels labelled {value} are ignored (not annotated): the 'ignore' label of "
                f"{folder / 'dataset.json'}"
            ]
    return None, []


def _declared_values(classes: ClassesArg, regions: RegionsArg) -> list[int] | None:
    if classes is None and regions is None:
        return None
    values = {v for vals in resolve_targets(classes, regions).values() for v in vals}
    return sorted(values | {0})


def _mask_set(files: Mapping[str, Path], declared: Sequence[int] | None) -> MaskSetEncoding | None:
    """The encoding of the 2D masks among ``files`` (one decision for the folder), None without any."""
    masks_2d = [p for p in files.values() if not is_nifti(p)]
    return mask_set_encoding(masks_2d, declared) if masks_2d else None


def _classes_of(masks: MaskSetEncoding) -> list[int]:
    return sorted({c for e in (masks.encoding, *masks.misfits.values()) for c in e.classes})


def _read_label(path: Path, masks: MaskSetEncoding | None):
    if is_nifti(path) or masks is None:
        return load_label(path)
    return load_mask2d(path, masks.encoding_for(str(path)))


def _mask_notes(masks: MaskSetEncoding | None, which: str) -> list[str]:
    if masks is None:
        return []
    notes = [f"{which}: {masks.note()}"] if masks.note() else []
    notes += [f"{which}: {Path(name).name}: {why}" for name, why in masks.file_problems().items()]
    return notes


# --- summary and output -----------------------------------------------------------------------------
POOLED_COUNTS = (
    "tp_vox",
    "fp_vox",
    "fn_vox",
    "n_truth_lesions",
    "n_pred_lesions",
    "n_detected_lesions",
    "n_fp_lesions",
    "n_small_lesions",
    "n_small_detected",
    "lesionwise_tp",
    "lesionwise_fn",
    "lesionwise_fp",
    "lesionwise_dropped",
)


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,  # sample standard deviation
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def pooled_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Sums of the counts (``POOLED_COUNTS``) over cases, and the rates computed from the sums (each
    case weighted by its size): ``dice_global`` from the voxel counts, lesion sensitivity and
    precision and small-lesion sensitivity and FNR from the lesion counts (1, 1, 1 and 0 when there
    is nothing to count); per lesion size bin ``detection_rate_<bin>`` (1 with no truth lesion in the
    bin) and ``fp_per_case_<bin>``. Example: small lesions 1 (missed) and 3 (2 found) pool to 2/4, not to the
    mean of 0 and 2/3."""
    if not rows:
        return {}
    bins = size_bin_keys(list(rows[0]))
    counts = [*POOLED_COUNTS, *(f"{c}_{b}" for b in bins for c in SIZE_BIN_COUNTS)]
    tot = {k: float(sum(r[k] for r in rows)) for k in counts if k in rows[0]}
    pooled = dict(tot)
    for b in bins:  # per lesion size bin: detected / truth lesions, false-positive components per case
        n_b = tot[f"n_truth_{b}"]
        pooled[f"detection_rate_{b}"] = tot[f"n_detected_{b}"] / n_b if n_b else 1.0
        pooled[f"fp_per_case_{b}"] = tot[f"n_fp_{b}"] / len(rows)
    if {"tp_vox", "fp_vox", "fn_vox"} <= tot.keys():
        tp, fp, fn = tot["tp_vox"], tot["fp_vox"], tot["fn_vox"]
        pooled["dice_global"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    if "n_truth_lesions" in tot:
        n_t, n_p = tot["n_truth_lesions"], tot["n_pred_lesions"]
        n_s = tot["n_small_lesions"]
        pooled["lesion_sensitivity"] = tot["n_detected_lesions"] / n_t if n_t else 1.0
        pooled["lesion_precision"] = (n_p - tot["n_fp_lesions"]) / n_p if n_p else 1.0
        pooled["small_lesion_sensitivity"] = tot["n_small_detected"] / n_s if n_s else 1.0
        pooled["small_lesion_fnr"] = 1.0 - pooled["small_lesion_sensitivity"] if n_s else 0.0
    return pooled


def summarize(
    per_case: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    settings: Mapping | None = None,
    missing_predictions: Sequence[str] = (),
) -> dict:
    """Mean, sample std, median, min, max of every metric per target, plus pooled counts and rates."""
    targets: dict[str, list[Mapping[str, float]]] = {}
    for rows in per_case.values():
        for name, row in rows.items():
            targets.setdefault(name, []).append(row)
    return {
        "n_cases": len(per_case),
        "cases": list(per_case),
        "missing_predictions": list(missing_predictions),
        "settings": dict(settings or {}),
        "targets": {
            name: {metric: _stats([r[metric] for r in rows]) for metric in rows[0]}
            for name, rows in targets.items()
        },
        "pooled": {name: pooled_metrics(rows) for name, rows in targets.items()},
    }


def per_case_csv(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Long format: one line per (case, target), one column per metric."""
    metrics: list[str] = []
    for rows in per_case.values():
        for row in rows.values():
            metrics.extend(m for m in row if m not in metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case_id", "target", *metrics])
    for cid, rows in per_case.items():
        for name, row in rows.items():
            writer.writerow([cid, name, *(repr(float(row[m])) if m in row else "" for m in metrics)])
    return buf.getvalue()


PRINTED_METRICS = (
    "dice",
    "iou",
    "hd95_mm",
    "nsd",  # one line per NSD tolerance (settings["nsd_tolerances_mm"]): nsd_1mm, nsd_2mm
    "hd_mm",
    "assd_mm",
    "lesionwise_dice",
    "lesionwise_hd95_mm",
    "sensitivity",
    "specificity",
    "precision",
    "fpr",
    "fnr",
    "volume_diff_ml",
    "volume_diff_rel",
    "lesion_sensitivity",
    "lesion_precision",
    "small_lesion_sensitivity",
)


def format_summary(summary: Mapping, metrics: Sequence[str] | None = None) -> str:
    """The summary as a plain-text table: mean, std and median per target and metric."""
    settings = summary.get("settings", {})
    percentile = settings.get("percentile", 95.0)
    tolerances = settings.get("nsd_tolerances_mm", DEFAULT_NSD_TOLERANCES_MM)
    wanted: list[str] = []
    for m in metrics or PRINTED_METRICS:
        if m == "nsd":
            wanted.extend(nsd_key(t) for t in tolerances)
        else:
            wanted.append(hd_key(percentile) if m == "hd95_mm" else m)
    lines = [f"{summary['n_cases']} case(s)"]
    header = f"{'target':<10} {'metric':<26} {'mean':>10} {'std':>10} {'median':>10}"
    lines += [header, "-" * len(header)]
    for name, stats in summary["targets"].items():
        first = True
        for metric in wanted:
            if metric not in stats:
                continue
            s = stats[metric]
            label = name if first else ""
            lines.append(
                f"{label:<10} {metric:<26} {s['mean']:>10.4g} {s['std']:>10.4g} {s['median']:>10.4g}"
            )
            first = False
        pooled = summary.get("pooled", {}).get(name, {})
        if "small_lesion_sensitivity" in pooled:
            lines.append(
                f"{'':<10} {'pooled over cases':<26} lesions {pooled['n_detected_lesions']:.0f}/"
                f"{pooled['n_truth_lesions']:.0f} detected, small (<{summary['settings'].get('small_lesion_diameter_mm', 5):g} mm) "
                f"{pooled['n_small_detected']:.0f}/{pooled['n_small_lesions']:.0f}, "
                f"{pooled['n_fp_lesions']:.0f} false-positive lesions, global Dice {pooled['dice_global']:.4f}"
            )
        for b in size_bin_keys(list(pooled)):
            lines.append(
                f"{'':<10} {'lesions ' + b:<26} {pooled[f'n_detected_{b}']:.0f}/{pooled[f'n_truth_{b}']:.0f} "
                f"detected, {pooled[f'fp_per_case_{b}']:.2f} false-positive lesions per case"
            )
        if "lesionwise_tp" in pooled:
            lines.append(
                f"{'':<10} {'BraTS 2023 lesion-wise':<26} {pooled['lesionwise_tp']:.0f} TP, "
                f"{pooled['lesionwise_fn']:.0f} FN, {pooled['lesionwise_fp']:.0f} FP lesions over cases; "
                f"{pooled['lesionwise_dropped']:.0f} truth lesion(s) under the volume threshold not scored"
            )
    return "\n".join(lines)
