"""Voxel-overlap metrics of binary masks: Dice, IoU, sensitivity, specificity, precision, FPR, FNR, volumes.

Conventions (docs/metrics.md): a voxel is foreground where the mask is non-zero. A ratio whose
denominator is zero is "vacuous" and takes its best value, except the ones that compare the two masks
as a whole (Dice, IoU), which are 1 when both masks are empty and 0 when exactly one is:

- Dice = 2 TP / (2 TP + FP + FN); both empty -> 1; one empty -> 0.
- IoU (Jaccard) = TP / (TP + FP + FN); same edge cases.
- sensitivity (recall, TPR) = TP / (TP + FN); empty truth -> 1 (nothing to miss). FNR = 1 - sensitivity.
- specificity (TNR) = TN / (TN + FP); no background in the truth -> 1. FPR = 1 - specificity.
- precision (PPV) = TP / (TP + FP); empty prediction -> 1 (nothing falsely claimed).

Nothing here returns NaN or infinity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = object  # numpy array or torch tensor


def as_mask(x: ArrayLike, name: str = "mask") -> np.ndarray:
    """A numpy bool array from a numpy array or torch tensor (non-zero = foreground); no copy if bool."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric or boolean array, got dtype {arr.dtype}")
    return arr != 0


def check_pair(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")


def resolve_spacing(spacing_mm: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Voxel spacing as a tuple of ``ndim`` positive floats (None -> 1 mm; a scalar -> isotropic)."""
    if spacing_mm is None:
        return (1.0,) * ndim
    if np.isscalar(spacing_mm):
        spacing = (float(spacing_mm),) * ndim
    else:
        spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != ndim:
        raise ValueError(f"spacing_mm has {len(spacing)} values for a {ndim}D mask")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be positive and finite, got {spacing}")
    return spacing


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of the 2x2 confusion table."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_truth(self) -> int:
        return self.tp + self.fn


def confusion(pred: ArrayLike, truth: ArrayLike, n_total: int | None = None) -> Confusion:
    """TP, FP, FN, TN voxel counts. ``n_total``: voxels in the whole volume when the masks are a crop
    of it (the voxels outside the crop are true negatives)."""
    p, t = as_mask(pred, "pred"), as_mask(truth, "truth")
    check_pair(p, t)
    tp = int(np.count_nonzero(p & t))
    n_p = int(np.count_nonzero(p))
    n_t = int(np.count_nonzero(t))
    total = p.size if n_total is None else int(n_total)
    if total < p.size:
        raise ValueError(f"n_total={total} is smaller than the mask ({p.size} voxels)")
    fp, fn = n_p - tp, n_t - tp
    return Confusion(tp=tp, fp=fp, fn=fn, tn=total - tp - fp - fn)


def _ratio(num: int, den: int, if_empty: float) -> float:
    return float(num) / float(den) if den else float(if_empty)


def dice_from_confusion(c: Confusion) -> float:
    den = 2 * c.tp + c.fp + c.fn
    return _ratio(2 * c.tp, den, 1.0)


def iou_from_confusion(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fp + c.fn, 1.0)


def dice(pred: ArrayLike, truth: ArrayLike) -> float:
    """Dice = 2|P∩T| / (|P| + |T|); 1.0 when both masks are empty, 0.0 when exactly one is."""
    return dice_from_confusion(confusion(pred, truth))


def iou(pred: ArrayLike, truth: ArrayLike) -> float:
    """IoU (Jaccard) = |P∩T| / |P∪T|; 1.0 when both masks are empty, 0.0 when exactly one is."""
    return iou_from_confusion(confusion(pred, truth))


def overlap_metrics_from_confusion(c: Confusion, voxel_volume_mm3: float = 1.0) -> dict[str, float]:
    """Every overlap metric and the volumes from a confusion table (see the module docstring)."""
    sensitivity = _ratio(c.tp, c.tp + c.fn, 1.0)
    specificity = _ratio(c.tn, c.tn + c.fp, 1.0)
    pred_mm3 = c.n_pred * voxel_volume_mm3
    truth_mm3 = c.n_truth * voxel_volume_mm3
    diff_mm3 = pred_mm3 - truth_mm3
    return {
        "dice": dice_from_confusion(c),
        "iou": iou_from_confusion(c),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _ratio(c.tp, c.tp + c.fp, 1.0),
        # FP / (FP + TN) directly: 1 - specificity would lose the digits of a tiny rate
        "fpr": _ratio(c.fp, c.tn + c.fp, 0.0),
        "fnr": _ratio(c.fn, c.tp + c.fn, 0.0),
        "tp_vox": float(c.tp),
        "fp_vox": float(c.fp),
        "fn_vox": float(c.fn),
        "pred_volume_mm3": pred_mm3,
        "truth_volume_mm3": truth_mm3,
        "volume_diff_mm3": diff_mm3,
        "volume_diff_ml": diff_mm3 / 1000.0,
        # relative to the truth volume, floored at one voxel so that an empty truth gives a finite value
        "volume_diff_rel": diff_mm3 / max(truth_mm3, voxel_volume_mm3),
    }


def overlap_metrics(
    pred: ArrayLike,
    truth: ArrayLike,
    spacing_mm: float | Sequence[float] | None = None,
    n_total: int | None = None,
) -> dict[str, float]:
    """Dice, IoU, sensitivity, specificity, precision, FPR, FNR, voxel counts and volumes (mm^3, ml).

    ``volume_diff_*`` is prediction minus truth (positive = over-segmentation);
    ``volume_diff_rel`` = (V_pred - V_truth) / max(V_truth, one voxel).
    """
    p, t = as_mask(pred, "pred"), as_mask(truth, "truth")
    spacing = resolve_spacing(spacing_mm, p.ndim)
    return overlap_metrics_from_confusion(confusion(p, t, n_total), float(np.prod(spacing)))
