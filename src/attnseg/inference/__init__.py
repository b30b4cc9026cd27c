"""Inference: sliding window over whole volumes, postprocessing, prediction to NIfTI files."""

from attnseg.inference.postprocess import (
    keep_largest_component,
    postprocess_components,
    probabilities_from_logits,
    remove_small_components,
)
from attnseg.inference.predict import (
    CasePrediction,
    InferenceSettings,
    LoadedModel,
    PredictOptions,
    PredictReport,
    find_cases,
    load_for_inference,
    predict_case,
    predict_folder,
    read_settings,
)
from attnseg.inference.sliding_window import (
    AccumulationPlan,
    Predictor,
    axis_starts,
    flip_sets,
    gaussian_importance_map,
    plan_accumulation,
    sliding_window_blocks,
    sliding_window_inference,
    window_positions,
)

__all__ = [
    "AccumulationPlan",
    "CasePrediction",
    "InferenceSettings",
    "LoadedModel",
    "PredictOptions",
    "PredictReport",
    "Predictor",
    "axis_starts",
    "find_cases",
    "flip_sets",
    "gaussian_importance_map",
    "keep_largest_component",
    "load_for_inference",
    "plan_accumulation",
    "postprocess_components",
    "predict_case",
    "predict_folder",
    "probabilities_from_logits",
    "read_settings",
    "remove_small_components",
    "sliding_window_blocks",
    "sliding_window_inference",
    "window_positions",
]
