"""Deployment: ONNX export with embedded metadata, INT8 static quantization, an onnxruntime predictor."""

from attnseg.export.model_file import export_model_file
from attnseg.export.onnx import (
    DepthFoldedConv3d,
    ExportReport,
    ParityReport,
    build_metadata,
    check_parity,
    compare_logits,
    export_onnx,
    fold_depth,
    metadata_from_model_file,
)
from attnseg.export.quantize import QuantizeReport, calibration_windows, integer_op_counts, quantize_model
from attnseg.export.runtime import OnnxPredictor, make_session, read_metadata

__all__ = [
    "DepthFoldedConv3d",
    "ExportReport",
    "OnnxPredictor",
    "QuantizeReport",
    "ParityReport",
    "build_metadata",
    "calibration_windows",
    "check_parity",
    "compare_logits",
    "export_model_file",
    "export_onnx",
    "fold_depth",
    "integer_op_counts",
    "make_session",
    "metadata_from_model_file",
    "quantize_model",
    "read_metadata",
]
