"""Lesion-wise detection: connected components of truth and prediction, matched by overlap.

Conventions (docs/metrics.md):

- **Lesion**: a connected component of a binary mask, 26-connected in 3D and 8-connected in 2D by
  default (voxels touching by a face, edge or corner belong to the same lesion); ``connectivity``
  takes 6/18/26 (3D) or 4/8 (2D).
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

BraTS 2023's lesion-wise scores differ: they dilate the truth before labelling (to merge nearby
fragments), drop truth lesions under a volume threshold and score each lesion's Dice and HD95; they
are in ``attnseg.metrics.brats2023``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from attnseg.metrics.overlap import ArrayLike, as_mask, check_pair, resolve_spacing
from attnseg.metrics.surface import bounding_box

DEFAULT_CONNECTIVITY = {2: 8, 3: 26}
ALLOWED_CONNECTIVITY = {2: (4, 8), 3: (6, 18, 26)}


def connected_components(mask: ArrayLike, connectivity: int | None = None) -> tuple[np.ndarray, int]:
    """Label the connected components of a 2D/3D mask: (labels 0..n with 0 = background, n)."""
    m = as_mask(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"connected components need a 2D or 3D mask, got {m.ndim}D")
    conn = DEFAULT_CONNECTIVITY[m.ndim] if connectivity is None else int(connectivity)
    if conn not in ALLOWED_CONNECTIVITY[m.ndim]:
        raise ValueError(
            f"connectivity {conn} is not valid in {m.ndim}D; use one of {ALLOWED_CONNECTIVITY[m.ndim]}"
        )
    # uint8, not bool: cc3d 4.1.1 mislabels a few background voxels of some boolean inputs (about 3%
    # of random masks, 2D and 3D; tests/metrics/test_lesions.py checks against scipy.ndimage.label)
    data = np.ascontiguousarray(m).view(np.uint8)
    labels, n = cc3d.connected_components(data, connectivity=conn, return_N=True)
    return labels, int(n)


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
    )


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
) -> dict[str, float]:
    """Lesion counts, lesion detection sensitivity/precision and small-lesion detection (module docstring)."""
    if not small_lesion_diameter_mm >= 0:
        raise ValueError(f"small_lesion_diameter_mm must be >= 0, got {small_lesion_diameter_mm}")
    match = match_lesions(pred, truth, spacing_mm, connectivity=connectivity)
    return lesion_metrics_from_match(match, small_lesion_diameter_mm)
