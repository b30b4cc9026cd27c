"""Segmentation metrics in millimetres: overlap, surface distances, lesion detection, case evaluation.

Conventions (surfaces, HD95, empty masks, lesions) are in docs/metrics.md and the module docstrings.
"""

from attnseg.metrics.evaluate import (
    REGION_PRESETS,
    EvaluationResult,
    evaluate_case,
    evaluate_folders,
    find_label_files,
    format_summary,
    summarize,
)
from attnseg.metrics.lesions import (
    connected_components,
    equivalent_diameter_mm,
    lesion_metrics,
    match_lesions,
)
from attnseg.metrics.overlap import confusion, dice, iou, overlap_metrics
from attnseg.metrics.surface import (
    average_surface_distance,
    hausdorff_distance,
    surface_distances,
    surface_metrics,
    surface_voxels,
    volume_diagonal_mm,
)

__all__ = [
    "REGION_PRESETS",
    "EvaluationResult",
    "average_surface_distance",
    "confusion",
    "connected_components",
    "dice",
    "equivalent_diameter_mm",
    "evaluate_case",
    "evaluate_folders",
    "find_label_files",
    "format_summary",
    "hausdorff_distance",
    "iou",
    "lesion_metrics",
    "match_lesions",
    "overlap_metrics",
    "summarize",
    "surface_distances",
    "surface_metrics",
    "surface_voxels",
    "volume_diagonal_mm",
]
