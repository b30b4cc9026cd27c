"""Run an exported model with onnxruntime alone: sessions, embedded metadata, a sliding-window predictor.

``OnnxPredictor(path)`` is a callable ``batch (B, C, *patch) -> logits (B, K, *patch)`` that plugs into
:func:`attnseg.inference.sliding_window_inference`: it takes a torch tensor or a numpy array and
returns the same kind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnseg.errors import ModelFileError
from attnseg.models.card import ONNX_METADATA_KEY, onnx_metadata_of, read_onnx_metadata

METADATA_KEY = ONNX_METADATA_KEY


def session_options(threads: int | None = None, profile_prefix: str | None = None):
    """All graph optimisations on, ``threads`` intra-op threads (default: onnxruntime's choice), one
    inter-op thread (the graph is a chain; parallel branches only compete for the same cores)."""
    import onnxruntime as ort  # lazy: start-up time; only .onnx models need it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def make_session(
    model: bytes | str | os.PathLike, threads: int | None = None, profile_prefix: str | None = None
):
    """An onnxruntime CPU session for a file path or serialised model bytes."""
    import onnxruntime as ort  # lazy: start-up time; only .onnx models need it

    source = model if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(source).is_file():
        raise ModelFileError(f"{source}: ONNX model file not found")
    try:
        return ort.InferenceSession(
            source, session_options(threads, profile_prefix), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        what = "the exported model" if isinstance(model, bytes) else source
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{what}: onnxruntime cannot load it: {first[:300]}") from None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``attnseg`` metadata of an exported model (model config and card: target, patch size, ...);
    its card is read with ``attnseg.models.card.read_model_card(path)``."""
    return read_onnx_metadata(path)


def metadata_of(proto, where: str = "model") -> dict[str, Any]:
    """The ``attnseg`` metadata entry of a loaded ONNX model proto."""
    return onnx_metadata_of(proto, where)


class OnnxPredictor:
    """Callable ``(B, C, *patch) -> (B, K, *patch)`` logits from an ONNX file, float32.

    Accepts a torch tensor (returns a CPU torch tensor) or a numpy array (returns numpy). The batch
    may hold any number of windows of any size when the model was exported with dynamic axes.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.session = make_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        config = self.metadata["model_config"]
        self.spatial_dims = int(config.get("spatial_dims", 3))
        self.in_channels = int(config.get("in_channels", 1))
        self.out_channels = int(config.get("out_channels", 1))

    @property
    def patch_size(self) -> tuple[int, ...] | None:
        patch = self.metadata.get("patch_size")
        return tuple(int(p) for p in patch) if patch else None

    @property
    def precision(self) -> str:
        return str(self.metadata.get("precision", "float32"))

    def __call__(self, batch):
        is_torch = type(batch).__module__.startswith("torch")
        if is_torch:
            array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        else:
            array = np.ascontiguousarray(batch, dtype=np.float32)
        if array.ndim != self.spatial_dims + 2 or array.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.path.name}: input has shape {array.shape}; the model expects "
                f"(batch, {self.in_channels}, {', '.join('HWD'[: self.spatial_dims])})"
            )
        logits = self.session.run([self.output_name], {self.input_name: array})[0]
        if is_torch:
            return torch.from_numpy(logits)
        return logits

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, precision={self.precision})"


__all__ = ["OnnxPredictor", "make_session", "metadata_of", "read_metadata", "session_options"]
