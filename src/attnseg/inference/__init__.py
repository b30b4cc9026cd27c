"""Inference: sliding window over whole volumes, postprocessing, prediction to NIfTI files."""

from attnseg.inference.sliding_window import (
    Predictor,
    axis_starts,
    flip_sets,
    gaussian_importance_map,
    sliding_window_inference,
    window_positions,
)

__all__ = [
    "Predictor",
    "axis_starts",
    "flip_sets",
    "gaussian_importance_map",
    "sliding_window_inference",
    "window_positions",
]
