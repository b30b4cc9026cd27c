"""Segmentation metrics in millimetres: overlap, surface distances, normalized surface Dice, lesion
detection, case evaluation, and paired statistics of two models on the same cases
(``attnseg.metrics.stats``).

Conventions (surfaces, HD95, NSD, empty masks, lesions) are in docs/metrics.md and the module docstrings.
"""

from attnseg.metrics.evaluate import (
    REGION_PRESETS,
    EvaluationResult,
    brats2023_lesion_wise,
    evaluate_case,
    evaluate_folders,
    find_label_files,
    format_summary,
    pooled_metrics,
    summarize,
)
from attnseg.metrics.lesions import (
    connected_components,
    equivalent_diameter_mm,
    lesion_metrics,
    match_lesions,
)
from attnseg.metrics.overlap import confusion, dice, iou, overlap_metrics
from attnseg.metrics.stats import HIGHER_IS_BETTER, bootstrap_mean_ci, higher_is_better, paired_statistics
from attnseg.metrics.surface import (
    average_surface_distance,
    hausdorff_distance,
    surface_distances,
    surface_metrics,
    surface_voxels,
    volume_diagonal_mm,
)
from attnseg.metrics.surface_dice import normalized_surface_dice, nsd_key, surface_dice_metrics

__all__ = [
    "HIGHER_IS_BETTER",
    "REGION_PRESETS",
    "EvaluationResult",
    "average_surface_distance",
    "bootstrap_mean_ci",
    "brats2023_lesion_wise",
    "confusion",
    "connected_components",
    "dice",
    "equivalent_diameter_mm",
    "evaluate_case",
    "evaluate_folders",
    "find_label_files",
    "format_summary",
    "hausdorff_distance",
    "higher_is_better",
    "iou",
    "lesion_metrics",
    "match_lesions",
    "normalized_surface_dice",
    "nsd_key",
    "overlap_metrics",
    "paired_statistics",
    "pooled_metrics",
    "summarize",
    "surface_dice_metrics",
    "surface_distances",
    "surface_metrics",
    "surface_voxels",
    "volume_diagonal_mm",
]
