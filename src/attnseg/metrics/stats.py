"""Two models on the same cases: which way each metric is better, paired units, paired tests.

Conventions (stated once, used by ``attnseg compare`` and the HTML report's paired table):

- Directions: :data:`HIGHER_IS_BETTER` is the one table of metric directions (True: a higher value
  is better). Overlap, sensitivity, precision and detection counts go up; distances, error rates
  and false-positive counts go down; the percentile Hausdorff ``hd<p>_mm`` of any percentile goes
  down, the normalized surface Dice ``nsd_<tau>mm`` of any tolerance goes up, per lesion size bin
  ``n_detected_<bin>`` and ``detection_rate_<bin>`` go up and ``n_fp_<bin>`` and
  ``fp_per_case_<bin>`` go down (bins: ``attnseg.metrics.lesions.size_bin_names``). Metrics with no
  better side (volumes, the signed volume difference, truth or prediction lesion counts) are not in
  it, and :func:`higher_is_better` refuses them.
- A pair is ``(a[i], b[i])``: model A's and model B's value on case i; differences are ``b - a``.
- The test is the two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, as R's
  ``wilcox.test(paired=TRUE)``): zero differences are dropped (``zero_method="wilcox"``), the
  distribution is exact for small n without ties; p = 1 when every difference is zero. With n
  non-zero differences the exact test cannot go below 2 / 2^n (``min_p``): 0.25 with 3 cases,
  0.031 with 6.
- The interval is a percentile bootstrap of the mean difference (Efron & Tibshirani 1993, ch. 13):
  ``n_boot`` resamples of the cases with replacement from ``np.random.default_rng(seed)``.
- A detection rate (detected / truth lesions, pooled over cases) is a ratio of sums, so its
  interval resamples the cases and recomputes the ratio (:func:`bootstrap_rate_ci`); two models'
  rates on the same lesions resample the same cases for both (:func:`paired_rate_statistics`), and
  their Wilcoxon test is on the per-case differences of detected lesions (the truth is the same).
- Paired units: values of several training runs (seeds) are averaged per case first
  (:func:`mean_over_runs`); slices of one patient are pooled into the patient
  (:func:`group_values`), since slices of one patient are not independent.

Nested per-case values are ``{case: {target: {metric: value}}}``, as ``evaluate_case`` gives per case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import wilcoxon

from attnseg.metrics.lesions import SIZE_BIN_NAME

__all__ = [
    "HIGHER_IS_BETTER",
    "bootstrap_mean_ci",
    "bootstrap_rate_ci",
    "group_values",
    "higher_is_better",
    "mean_over_runs",
    "paired_rate_statistics",
    "paired_statistics",
]

PerCase = Mapping[str, Mapping[str, Mapping[str, float]]]

#: metric -> True when a higher value is better: the one direction table of the project.
HIGHER_IS_BETTER: dict[str, bool] = {
    # overlap (attnseg.metrics.overlap); volume_dice / dice_global: Dice of summed voxel counts
    "dice": True,
    "volume_dice": True,
    "dice_global": True,
    "iou": True,
    "sensitivity": True,
    "specificity": True,
    "precision": True,
    "fpr": False,
    "fnr": False,
    "tp_vox": True,  # the truth is the same for both models: more true positives is better
    "fp_vox": False,
    "fn_vox": False,
    # surface distances (attnseg.metrics.surface); hd<p>_mm by pattern, see higher_is_better
    "hd_mm": False,
    "assd_mm": False,
    # normalized surface Dice (attnseg.metrics.surface_dice); nsd_<tau>mm by pattern, see higher_is_better
    # lesions (attnseg.metrics.lesions); counts of detected lesions pair up because the truth
    # lesions are the same for both models
    "n_detected_lesions": True,
    "n_fp_lesions": False,
    "lesion_sensitivity": True,
    "lesion_precision": True,
    "n_small_detected": True,
    "small_lesion_sensitivity": True,
    "small_lesion_detection": True,
    "small_lesion_fnr": False,
    # BraTS 2023 lesion-wise scores (attnseg.metrics.brats2023); lesionwise_dropped has no direction
    "lesionwise_dice": True,
    "lesionwise_hd95_mm": False,
    "lesionwise_tp": True,
    "lesionwise_fn": False,
    "lesionwise_fp": False,
}

_PERCENTILE_HD = re.compile(r"hd\d+(\.\d+)?_mm")  # hd95_mm, hd97.5_mm (attnseg.metrics.surface.hd_key)
_NSD = re.compile(r"nsd_\d+(\.\d+)?mm")  # nsd_1mm, nsd_0.5mm (attnseg.metrics.surface_dice.nsd_key)


# per lesion size bin (attnseg.metrics.lesions): n_detected_lt3mm, fp_per_case_5to10mm, ...
_SIZE_BIN_DIRECTIONS = {"n_detected_": True, "detection_rate_": True, "n_fp_": False, "fp_per_case_": False}


def higher_is_better(metric: str) -> bool:
    """True when a higher value of ``metric`` is better (:data:`HIGHER_IS_BETTER`; ``hd<p>_mm``:
    False; ``nsd_<tau>mm``: True). Example: ``higher_is_better("dice") is True``,
    ``higher_is_better("hd95_mm") is False``, ``higher_is_better("nsd_1mm") is True``.
    A metric with no better side (``volume_diff_ml``, ``n_truth_lesions``) is a ValueError."""
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    if _PERCENTILE_HD.fullmatch(metric):
        return False
    if _NSD.fullmatch(metric):
        return True
    for prefix, higher in _SIZE_BIN_DIRECTIONS.items():
        if metric.startswith(prefix) and SIZE_BIN_NAME.fullmatch(metric[len(prefix) :]):
            return higher
    raise ValueError(
        f"metric {metric!r} has no better direction in attnseg.metrics.stats.HIGHER_IS_BETTER; "
        f"pass one of {sorted(HIGHER_IS_BETTER)}, hd<percentile>_mm or nsd_<tolerance>mm"
    )


def bootstrap_mean_ci(
    values: Sequence[float], *, n_boot: int = 10000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean: resample the values with replacement
    ``n_boot`` times (``np.random.default_rng(seed)``), take the mean of each resample, and return
    the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of those means.

    Example: ``bootstrap_mean_ci([0.0, 2.0])`` is ``(0.0, 2.0)``: resample means are 0, 1, 2 with
    probabilities 1/4, 1/2, 1/4."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap needs a non-empty 1D sequence, got shape {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_statistics(
    a: Sequence[float],
    b: Sequence[float],
    *,
    higher_is_better: bool = True,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired comparison of two models' values on the same cases (``a[i]``, ``b[i]``: case i).

    - ``mean_a``, ``mean_b``; ``mean_diff``: mean of ``b - a``; ``ci_low``/``ci_high``: its
      percentile-bootstrap CI (:func:`bootstrap_mean_ci`);
    - ``p_value``, ``wilcoxon_statistic``: two-sided Wilcoxon signed-rank test, zero differences
      dropped; 1.0 and 0.0 when every difference is zero;
    - ``n``, ``n_nonzero``; ``min_p``: the smallest p the exact test can give, 2 / 2^n_nonzero;
    - ``b_better``/``b_worse``: cases where b improves on a / is worse (``higher_is_better``: the
      metric's direction, :func:`attnseg.metrics.stats.higher_is_better`).

    Example: ``paired_statistics([0] * 5, [1, 2, 3, 4, 5])`` has ``mean_diff`` 3, ``p_value``
    2 / 2^5 = 0.0625 (every difference positive) and ``b_better`` 5.
    """
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape or xa.ndim != 1 or xa.size == 0:
        raise ValueError(
            f"paired values need two equal non-empty 1D sequences, got {xa.shape} and {xb.shape}"
        )
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
        raise ValueError("paired values must be finite; drop the cases with a missing value first")
    diff = xb - xa
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        p, statistic = 1.0, 0.0
    else:
        res = wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
        p, statistic = float(res.pvalue), float(res.statistic)
    lo, hi = bootstrap_mean_ci(diff, n_boot=n_boot, confidence=confidence, seed=seed)
    sign = 1.0 if higher_is_better else -1.0
    return {
        "n": int(diff.size),
        "n_nonzero": nonzero,
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "mean_diff": float(diff.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "wilcoxon_statistic": statistic,
        "p_value": min(1.0, max(0.0, p)),
        "min_p": min(1.0, 2.0 / 2.0**nonzero) if nonzero else 1.0,
        "b_better": int(np.count_nonzero(sign * diff > 0)),
        "b_worse": int(np.count_nonzero(sign * diff < 0)),
    }


def _rate_inputs(*arrays: Sequence[float]) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    if any(a.shape != out[0].shape for a in out) or out[0].ndim != 1 or out[0].size == 0:
        raise ValueError(f"rates need equal non-empty 1D sequences, got shapes {[a.shape for a in out]}")
    if not all(np.all(np.isfinite(a)) for a in out) or np.any(out[-1] < 0):
        raise ValueError("counts must be finite and the totals >= 0")
    if out[-1].sum() <= 0:
        raise ValueError("no case has a lesion to detect (every total is 0)")
    return out


def bootstrap_rate_ci(
    detected: Sequence[float],
    total: Sequence[float],
    *,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The pooled rate ``sum(detected) / sum(total)`` over cases and its percentile-bootstrap
    interval: the cases with ``total > 0`` are resampled with replacement ``n_boot`` times
    (``np.random.default_rng(seed)``) and the ratio recomputed. Returns ``(rate, low, high)``.

    Example: ``bootstrap_rate_ci([1, 0], [1, 1])`` is ``(0.5, 0.0, 1.0)``."""
    det, tot = _rate_inputs(detected, total)
    keep = tot > 0
    det, tot = det[keep], tot[keep]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, det.size, size=(n_boot, det.size))
    ratios = det[idx].sum(axis=1) / tot[idx].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return float(det.sum() / tot.sum()), float(lo), float(hi)


def paired_rate_statistics(
    detected_a: Sequence[float],
    detected_b: Sequence[float],
    total: Sequence[float],
    *,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Two models' detection rates on the same truth lesions (case i: ``detected_a[i]``,
    ``detected_b[i]`` of ``total[i]``), over the cases with ``total > 0``:

    - ``rate_a``, ``rate_b``: pooled rates; ``ci_a_low``/``ci_a_high``, ``ci_b_low``/``ci_b_high``:
      their bootstrap intervals; ``rate_diff`` = ``rate_b - rate_a`` and ``ci_low``/``ci_high``: its
      interval, resampling the same cases for both models; ``fn_reduction`` = 1 - missed_b /
      missed_a (the share of A's missed lesions that B does not miss; negative: B misses more) and
      its interval from the same resamples (those where A misses something), None when A misses none;
    - ``p_value``, ``wilcoxon_statistic``, ``n_nonzero``, ``min_p``, ``b_better``, ``b_worse``: the
      Wilcoxon signed-rank test on the per-case differences ``detected_b - detected_a``
      (:func:`paired_statistics`); ``n`` cases, ``lesions`` in them.

    Example: ``paired_rate_statistics([0, 1, 0], [1, 1, 1], [1, 2, 1])`` has ``rate_a`` 0.25,
    ``rate_b`` 0.75 and ``b_better`` 2."""
    da, db, tot = _rate_inputs(detected_a, detected_b, total)
    keep = tot > 0
    da, db, tot = da[keep], db[keep], tot[keep]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, tot.size, size=(n_boot, tot.size))
    den = tot[idx].sum(axis=1)
    diffs = (db[idx].sum(axis=1) - da[idx].sum(axis=1)) / den
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    # relative reduction of missed lesions, 1 - missed_b / missed_a, on the same resamples
    missed_a = tot[idx].sum(axis=1) - da[idx].sum(axis=1)
    missed_b = tot[idx].sum(axis=1) - db[idx].sum(axis=1)
    fnr = 1.0 - missed_b[missed_a > 0] / missed_a[missed_a > 0]
    fnr_lo, fnr_hi = np.quantile(fnr, [alpha, 1.0 - alpha]) if fnr.size else (np.nan, np.nan)
    total_missed_a = float(tot.sum() - da.sum())
    rate_a, a_lo, a_hi = bootstrap_rate_ci(da, tot, n_boot=n_boot, confidence=confidence, seed=seed)
    rate_b, b_lo, b_hi = bootstrap_rate_ci(db, tot, n_boot=n_boot, confidence=confidence, seed=seed)
    test = paired_statistics(da, db, higher_is_better=True, n_boot=1, seed=seed)
    return {
        "n": int(tot.size),
        "lesions": float(tot.sum()),
        "detected_a": float(da.sum()),
        "detected_b": float(db.sum()),
        "rate_a": rate_a,
        "ci_a_low": a_lo,
        "ci_a_high": a_hi,
        "rate_b": rate_b,
        "ci_b_low": b_lo,
        "ci_b_high": b_hi,
        "rate_diff": rate_b - rate_a,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "fn_reduction": 1.0 - float(tot.sum() - db.sum()) / total_missed_a if total_missed_a > 0 else None,
        "fn_reduction_ci_low": float(fnr_lo) if total_missed_a > 0 else None,
        "fn_reduction_ci_high": float(fnr_hi) if total_missed_a > 0 else None,
        **{
            k: test[k] for k in ("wilcoxon_statistic", "p_value", "n_nonzero", "min_p", "b_better", "b_worse")
        },
    }


def mean_over_runs(per_run: Mapping[object, PerCase]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-case values of several runs (e.g. training seeds) -> the mean over runs, per case,
    target and metric. Cases, targets and metrics are the first run's, in its order.

    Example: ``{0: {"c": {"t": {"dice": 0.5}}}, 1: {"c": {"t": {"dice": 0.7}}}}`` ->
    ``{"c": {"t": {"dice": 0.6}}}``."""
    runs = list(per_run)
    if not runs:
        raise ValueError("mean_over_runs needs at least one run")
    first = per_run[runs[0]]
    return {
        c: {
            t: {m: float(np.mean([per_run[r][c][t][m] for r in runs])) for m in row}
            for t, row in first[c].items()
        }
        for c in first
    }


def group_values(per_case: PerCase, group_of: Mapping[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-case metrics -> per-group metrics (e.g. the slices of one patient -> the patient): counts
    (``n_*``, ``*_vox``) are summed over the group's cases, every other metric is averaged. Groups
    come in the order of their first case. Where the voxel counts are there, ``volume_dice`` is the
    Dice of the group's stacked slices, 2 TP / (2 TP + FP + FN) from the summed counts (1 when both
    are empty): the per-patient Dice of 2D slice studies, which the mean of slice Dice is not (a
    tumour-free slice with any false positive has Dice 0 and weighs as much as a tumour slice).

    Example: slices with (TP, FP, FN) = (4, 0, 4) and (0, 2, 0) have slice Dice 2/3 and 0 (mean 1/3)
    and ``volume_dice`` 8 / 14."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    members: dict[str, list[str]] = {}
    for c in per_case:
        members.setdefault(group_of[c], []).append(c)
    for g, cases in members.items():
        out[g] = {}
        for t, row in per_case[cases[0]].items():
            out[g][t] = {}
            for m in row:
                values = [per_case[c][t][m] for c in cases]
                summed = m.startswith("n_") or m.endswith("_vox")
                out[g][t][m] = float(np.sum(values) if summed else np.mean(values))
            counts = out[g][t]
            if {"tp_vox", "fp_vox", "fn_vox"} <= counts.keys():
                den = 2 * counts["tp_vox"] + counts["fp_vox"] + counts["fn_vox"]
                counts["volume_dice"] = float(2 * counts["tp_vox"] / den) if den else 1.0
    return out
