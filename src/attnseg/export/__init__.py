"""Deployment: ONNX export with embedded metadata, INT8 static quantization, an onnxruntime predictor."""

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
from attnseg.export.runtime import OnnxPredictor, make_session, read_metadata

__all__ = [
    "DepthFoldedConv3d",
    "ExportReport",
    "OnnxPredictor",
    "ParityReport",
    "build_metadata",
    "check_parity",
    "compare_logits",
    "export_onnx",
    "fold_depth",
    "make_session",
    "metadata_from_model_file",
    "read_metadata",
]
