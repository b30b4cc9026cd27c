"""Seeing the model: attention-map figures, Grad-CAM and a self-contained HTML report.

A run's training curves are drawn by ``attnseg.training.report.plot_training_curves`` (training
refreshes them while it runs); ``attnseg visualize RUN`` (``viz.visualize``) calls it."""

from attnseg.viz.figures import (
    ModelOutput,
    SliceView,
    attention_maps,
    case_figure,
    forward_with_attention,
    gate_hooks,
    label_colour,
    make_view,
    most_foreground_slice,
    save_figure,
    view_axis,
)
from attnseg.viz.gradcam import grad_cam

__all__ = [
    "ModelOutput",
    "SliceView",
    "attention_maps",
    "case_figure",
    "forward_with_attention",
    "gate_hooks",
    "grad_cam",
    "label_colour",
    "make_view",
    "most_foreground_slice",
    "save_figure",
    "view_axis",
]
