"""Lesion-wise detection: connected components of truth and prediction, matched by overlap.

Conventions (docs/metrics.md):

- **Lesion**: a connected component of a binary mask, 26-connected in 3D and 8-connected in 2D by
  default (voxels touching by a face, edge or corner belong to the same lesion); ``connectivity``
  takes 6/18/26 (3D) or 4/8 (2D) (``attnseg.transforms.components``, which lesion-aware sampling
  shares).
- **Detected**: a truth lesion is detected when at least one of its voxels is foreground in the
  prediction (it overlaps some predicted component). A predicted component is a true-positive
  detection when it overlaps some truth lesion, otherwise it is a false-positive lesion. One
  predicted component may detect several truth lesions and vice versa (no one-to-one assignment).
- **Size**: the equivalent diameter of a lesion with volume V is that of the sphere of the same
  volume, (6 V / pi)^(1/3), in 3D, and of the disc of the same area, sqrt(4 A / pi), in 2D, in mm.
  A lesion is *small* when its equivalent diameter is strictly below ``small_lesion_diameter_mm``
  (default 5 mm: V < 65.4 mm^3 in 3D).
- **Rates**: lesion sensitivity = detected truth lesions / truth lesions; lesion precision =
  true-positive predicted components / predicted components; small-lesion sensitivity = detected
  small truth lesions / small truth lesions and small-lesion FNR = 1 - that. An empty denominator
  gives the vacuous value (sensitivity and precision 1, FNR 0); the counts are reported alongside so
  that rates can be pooled over cases (summary ``pooled`` section), which is the meaningful number
  when most cases have no small lesion.
- **Size bins**: lesions are binned by equivalent diameter at the edges ``size_bins_mm`` (default
  3, 5, 10 mm: bins ``lt3mm`` [0, 3), ``3to5mm`` [3, 5), ``5to10mm`` [5, 10), ``ge10mm`` [10, inf)).
  Per bin and case: ``n_truth_<bin>`` truth lesions, ``n_detected_<bin>`` of them detected, and
  ``n_fp_<bin>`` false-positive predicted components, binned by their own equivalent diameter.
  Detection rate per bin = detected / truth lesions of the bin, pooled over cases (the summary's
  ``detection_rate_<bin>``); false positives per case = the mean of ``n_fp_<bin>``
  (``fp_per_case_<bin>``).

BraTS 2023's lesion-wise scores differ: they dilate the truth before labelling (to merge nearby
fragments), drop truth lesions under a volume threshold and score each lesion's Dice and HD95; they
are in ``attnseg.metrics.brats2023``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from attnseg.metrics.overlap import ArrayLike, as_mask, check_pair, resolve_spacing
from attnseg.metrics.surface import bounding_box
from attnseg.transforms.components import connected_components  # the one labelling (re-exported)

DEFAULT_SIZE_BINS_MM = (3.0, 5.0, 10.0)  # edges in mm: bins < 3, 3-5, 5-10, >= 10
SIZE_BIN_COUNTS = ("n_truth", "n_detected", "n_fp")  # per-bin count prefixes: n_truth_<bin>, ...
_NUM = r"\d+(\.\d+)?"
SIZE_BIN_NAME = re.compile(rf"lt{_NUM}mm|{_NUM}to{_NUM}mm|ge{_NUM}mm")  # what size_bin_names gives


def equivalent_diameter_mm(volume_mm3: np.ndarray | float, ndim: int) -> np.ndarray:
    """Diameter of the sphere (3D) or disc (2D) with the given volume (area in 2D), mm."""
    v = np.asarray(volume_mm3, dtype=np.float64)
    if ndim == 3:
        return np.cbrt(6.0 * v / math.pi)
    if ndim == 2:
        return np.sqrt(4.0 * v / math.pi)
    raise ValueError(f"equivalent diameter is defined for 2D and 3D, got {ndim}D")


@dataclass
class LesionMatch:
    """Per-lesion table of one truth/prediction pair (index i = component i + 1)."""

    truth_volume_mm3: np.ndarray
    truth_diameter_mm: np.ndarray
    truth_detected: np.ndarray  # bool
    pred_volume_mm3: np.ndarray
    pred_matched: np.ndarray  # bool: overlaps some truth lesion
    pred_diameter_mm: np.ndarray | None = None

    @property
    def n_truth(self) -> int:
        return int(self.truth_detected.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_matched.size)


def match_lesions(
    pred: ArrayLike,
    truth: ArrayLike,
    spacing_mm: float | Sequence[float] | None = None,
    *,
    connectivity: int | None = None,
) -> LesionMatch:
    """Label both masks and record, per lesion, its volume, equivalent diameter and whether it matched."""
    p, t = as_mask(pred, "pred"), as_mask(truth, "truth")
    check_pair(p, t)
    spacing = resolve_spacing(spacing_mm, p.ndim)
    voxel_mm3 = float(np.prod(spacing))
    box = bounding_box(p | t)
    if box is not None:  # labelling only the box is exact (components never leave it) and faster
        p, t = p[box], t[box]
    t_lab, n_t = connected_components(t, connectivity)
    p_lab, n_p = connected_components(p, connectivity)
    t_vox = np.bincount(t_lab.ravel(), minlength=n_t + 1)[1:]
    p_vox = np.bincount(p_lab.ravel(), minlength=n_p + 1)[1:]
    both = p & t
    detected = np.zeros(n_t + 1, dtype=bool)
    detected[t_lab[both]] = True
    matched = np.zeros(n_p + 1, dtype=bool)
    matched[p_lab[both]] = True
    t_mm3 = t_vox * voxel_mm3
    return LesionMatch(
        truth_volume_mm3=t_mm3,
        truth_diameter_mm=equivalent_diameter_mm(t_mm3, p.ndim),
        truth_detected=detected[1:],
        pred_volume_mm3=p_vox * voxel_mm3,
        pred_matched=matched[1:],
        pred_diameter_mm=equivalent_diameter_mm(p_vox * voxel_mm3, p.ndim),
    )


def check_size_bins(edges_mm: Sequence[float]) -> tuple[float, ...]:
    """The bin edges (mm) as floats, strictly increasing and > 0; ``()``: no size bins."""
    edges = tuple(float(e) for e in edges_mm)
    if any(not (math.isfinite(e) and e > 0) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(
            f"size bin edges must be increasing diameters in mm > 0, e.g. 3,5,10; got {edges_mm}"
        )
    return edges


def size_bin_names(edges_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM) -> list[str]:
    """Names of the bins the edges make: (3, 5, 10) -> ``lt3mm``, ``3to5mm``, ``5to10mm``, ``ge10mm``;
    ``()`` -> none."""
    edges = check_size_bins(edges_mm)
    if not edges:
        return []
    names = [f"lt{edges[0]:g}mm"]
    names += [f"{a:g}to{b:g}mm" for a, b in zip(edges, edges[1:])]
    return names + [f"ge{edges[-1]:g}mm"]


def size_bin_of(
    diameter_mm: np.ndarray | float, edges_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM
) -> np.ndarray:
    """Bin index of each equivalent diameter: 0 below the first edge, i for [edge i-1, edge i), the
    last for >= the last edge. Example: with (3, 5, 10), 2.9 -> 0, 3.0 -> 1, 9.99 -> 2, 10 -> 3."""
    return np.searchsorted(np.asarray(check_size_bins(edges_mm)), np.asarray(diameter_mm), side="right")


def size_bin_metrics_from_match(
    match: LesionMatch, edges_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM
) -> dict[str, float]:
    """Per size bin (module docstring): ``n_truth_<bin>``, ``n_detected_<bin>``, ``n_fp_<bin>``."""
    names = size_bin_names(edges_mm)
    if not names:
        return {}
    truth_bin = size_bin_of(match.truth_diameter_mm, edges_mm)
    if match.pred_diameter_mm is None:
        raise ValueError("the match has no predicted lesion diameters; build it with match_lesions")
    fp_bin = size_bin_of(match.pred_diameter_mm[~match.pred_matched], edges_mm)
    k = len(names)
    n_truth = np.bincount(truth_bin, minlength=k)
    n_detected = np.bincount(truth_bin[match.truth_detected], minlength=k)
    n_fp = np.bincount(fp_bin, minlength=k)
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        out[f"n_truth_{name}"] = float(n_truth[i])
        out[f"n_detected_{name}"] = float(n_detected[i])
        out[f"n_fp_{name}"] = float(n_fp[i])
    return out


def size_bin_keys(metrics: Sequence[str]) -> list[str]:
    """The bin names whose three counts (``n_truth_<bin>``, ``n_detected_<bin>``, ``n_fp_<bin>``) are
    all among ``metrics``, in their order."""
    present = set(metrics)
    names = [m[len("n_truth_") :] for m in metrics if m.startswith("n_truth_")]
    return [
        b for b in names if SIZE_BIN_NAME.fullmatch(b) and all(f"{c}_{b}" in present for c in SIZE_BIN_COUNTS)
    ]


def _rate(num: int, den: int, if_empty: float) -> float:
    return float(num) / float(den) if den else float(if_empty)


def lesion_metrics_from_match(match: LesionMatch, small_lesion_diameter_mm: float = 5.0) -> dict[str, float]:
    small = match.truth_diameter_mm < small_lesion_diameter_mm
    n_small = int(np.count_nonzero(small))
    n_small_detected = int(np.count_nonzero(small & match.truth_detected))
    n_detected = int(np.count_nonzero(match.truth_detected))
    n_pred_tp = int(np.count_nonzero(match.pred_matched))
    return {
        "n_truth_lesions": float(match.n_truth),
        "n_pred_lesions": float(match.n_pred),
        "n_detected_lesions": float(n_detected),
        "n_fp_lesions": float(match.n_pred - n_pred_tp),
        "lesion_sensitivity": _rate(n_detected, match.n_truth, 1.0),
        "lesion_precision": _rate(n_pred_tp, match.n_pred, 1.0),
        "n_small_lesions": float(n_small),
        "n_small_detected": float(n_small_detected),
        "small_lesion_sensitivity": _rate(n_small_detected, n_small, 1.0),
        "small_lesion_fnr": _rate(n_small - n_small_detected, n_small, 0.0),
    }


def lesion_metrics(
    pred: ArrayLike,
    truth: ArrayLike,
    spacing_mm: float | Sequence[float] | None = None,
    *,
    small_lesion_diameter_mm: float = 5.0,
    connectivity: int | None = None,
    size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM,
) -> dict[str, float]:
    """Lesion counts, lesion detection sensitivity/precision, small-lesion detection and the counts
    per size bin (``size_bins_mm`` edges; ``()``: none) (module docstring)."""
    if not small_lesion_diameter_mm >= 0:
        raise ValueError(f"small_lesion_diameter_mm must be >= 0, got {small_lesion_diameter_mm}")
    check_size_bins(size_bins_mm)
    match = match_lesions(pred, truth, spacing_mm, connectivity=connectivity)
    out = lesion_metrics_from_match(match, small_lesion_diameter_mm)
    out.update(size_bin_metrics_from_match(match, size_bins_mm))
    return out
