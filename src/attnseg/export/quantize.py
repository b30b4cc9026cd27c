"""INT8 static post-training quantization with onnxruntime, calibrated on training windows.

Pipeline (``quantize_model``): export fp32 with the depth-folded convolutions (``fold=True``, see
:class:`attnseg.export.onnx.DepthFoldedConv3d`) -> ``quant_pre_process(skip_symbolic_shape=True)``
(symbolic shape inference fails on the dynamic spatial axes; onnx's own shape inference is enough)
-> ``quantize_static`` with per-channel int8 weights, uint8 activations, MinMax calibration on
windows of training cases pre-processed exactly as in training -> metadata copied, integer ops
counted, predictions compared with PyTorch on held-out windows.

Choices, each measured (docs/deployment.md has the table):

- **uint8 activations**: onnxruntime's x86 int8 kernels (``QLinearConv``) expect u8 activations x
  s8 weights (the VNNI instruction's operand types). With s8 activations most QDQ convolutions are
  left as DQ -> float Conv -> Q.
- **QOperator format** (``QLinearConv``, ``QLinearConcat``, ...): the QDQ format leaves ops that
  onnxruntime's QDQ fusion does not cover (``Pad``, ``Slice``) running in float between a
  DequantizeLinear and a QuantizeLinear; QOperator quantizes them directly (about 1.4x faster here).
- **depth folding**: 3D ``QLinearConv`` goes through a generic N-D im2col and runs no faster than
  fp32 ``Conv``; the 2D form uses onnxruntime's int8 2D kernels (4x faster at 16 channels).
- What stays float: ``InstanceNormalization`` (statistics per case; it cannot be folded into the
  convolution before it), ``ConvTranspose`` (no int8 kernel in the CPU provider) and the trilinear
  ``Resize`` of the gate coefficients.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnseg.config import PreprocessConfig, from_dict
from attnseg.datasets import discover, load_case
from attnseg.errors import ConfigError, DataError, ModelFileError
from attnseg.export.onnx import export_onnx, set_metadata
from attnseg.export.runtime import make_session, metadata_of
from attnseg.io.atomic import atomic_write
from attnseg.transforms.preprocess import preprocess as preprocess_case

FORMATS = ("qoperator", "qdq")
INTEGER_OPS = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger")


# --- calibration data -----------------------------------------------------------------------------
def _crop_or_pad(image: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """``image (C, *S)`` cut to ``patch`` at ``start``, zero-padded where the image is smaller."""
    out = np.zeros((image.shape[0], *patch), dtype=np.float32)
    src = tuple(slice(s, s + p) for s, p in zip(start, patch))
    piece = image[(slice(None), *src)]
    out[(slice(None), *(slice(0, n) for n in piece.shape[1:]))] = piece
    return out


def window_starts(
    shape: Sequence[int],
    patch: Sequence[int],
    rng: np.random.Generator,
    label: np.ndarray | None = None,
    foreground: bool = False,
) -> tuple[int, ...]:
    """A random window start; with ``foreground`` and a label, the window is centred on a labelled voxel."""
    shape, patch = tuple(shape), tuple(patch)
    high = [max(s - p, 0) for s, p in zip(shape, patch)]
    if foreground and label is not None and np.any(label > 0):
        points = np.argwhere(label > 0)
        centre = points[rng.integers(len(points))]
        return tuple(int(min(max(c - p // 2, 0), h)) for c, p, h in zip(centre, patch, high))
    return tuple(int(rng.integers(h + 1)) for h in high)


def calibration_windows(
    data_root: str | Path,
    patch_size: Sequence[int],
    *,
    n_windows: int = 16,
    max_cases: int = 8,
    case_ids: Sequence[str] | None = None,
    preprocess: dict[str, Any] | None = None,
    foreground_fraction: float = 0.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Windows ``(1, C, *patch_size)`` float32 from training cases, pre-processed as in training.

    Cases: ``case_ids`` if given (the run's training split), else the first ``max_cases`` of the
    dataset. ``preprocess``: the run's ``PreprocessConfig`` as plain data (default: per-channel
    z-score inside the non-zero region). Half of the windows (``foreground_fraction``) are centred
    on a labelled voxel so that the tumour's activation range is calibrated too.
    """
    dataset = discover(data_root)
    cases = list(dataset.cases)
    if case_ids:
        wanted = set(case_ids)
        cases = [c for c in cases if c.case_id in wanted]
    cases = cases[:max_cases]
    if not cases:
        raise DataError(f"{data_root}: no case to calibrate on")
    config = from_dict(PreprocessConfig, preprocess or {}, "preprocess")
    rng = np.random.default_rng(seed)
    per_case = int(np.ceil(n_windows / len(cases)))
    windows: list[np.ndarray] = []
    for case in cases:
        image, label, meta = load_case(case, dataset)
        if image.ndim - 1 != len(patch_size):
            raise DataError(
                f"case {case.case_id}: {image.ndim - 1}D image, but the model's patch size is {list(patch_size)}"
            )
        image, label, _ = preprocess_case(image, label, meta.spacing_mm, config, case_id=case.case_id)
        for i in range(per_case):
            fg = i < round(per_case * foreground_fraction)
            start = window_starts(image.shape[1:], patch_size, rng, label, fg)
            windows.append(_crop_or_pad(image, start, patch_size)[None])
    return windows[:n_windows]


class ArrayCalibrationReader:
    """An onnxruntime ``CalibrationDataReader`` over a list of input batches."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str = "image"):
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self.input_name = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return {self.input_name: self.batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


# --- inspection ------------------------------------------------------------------------------------
def integer_op_counts(model: str | Path | bytes | Any) -> dict[str, Any]:
    """Operator counts of an ONNX model, and how many weights are stored as int8/uint8."""
    import onnx  # lazy: start-up time; only INT8 export needs it

    if isinstance(model, bytes):
        proto = onnx.load_from_string(model)
    elif isinstance(model, (str, Path)):
        proto = onnx.load(str(model))
    else:
        proto = model
    ops = Counter(n.op_type for n in proto.graph.node)
    int8 = [
        i for i in proto.graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    ]
    return {
        "ops": dict(ops),
        "integer_ops": sum(ops[o] for o in INTEGER_OPS),
        "float_convs": ops["Conv"] + ops["ConvTranspose"],
        "int8_initializers": len(int8),
        "int8_weight_values": int(sum(np.prod(i.dims) for i in int8)),
    }


# --- quantization ----------------------------------------------------------------------------------
@dataclass
class QuantizeReport:
    path: str
    float_size_bytes: int
    int8_size_bytes: int
    format: str
    activation: str
    calibration_windows: int
    ops: dict[str, int] = field(default_factory=dict)
    integer_ops: int = 0
    float_convs: int = 0
    max_abs_diff: float = float("nan")
    argmax_agreement: float = float("nan")
    exporter: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    *,
    quant_format: str = "qoperator",
    activation: str = "uint8",
    per_channel: bool = True,
    exclude_nodes: Sequence[str] = (),
) -> None:
    """Static INT8 quantization of an fp32 ONNX file (calibrated on ``calibration`` batches)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quant_format not in FORMATS:
        raise ConfigError(f"quant_format={quant_format!r}; pass one of {', '.join(FORMATS)}")
    if activation not in ("uint8", "int8"):
        raise ConfigError(f"activation={activation!r}; pass uint8 (fast on x86) or int8")
    if not calibration:
        raise ConfigError("no calibration windows: pass --calibration DATA with training cases")
    with tempfile.TemporaryDirectory(prefix="attnseg-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs every node it skips
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
                quantize_static(
                    str(pre),
                    str(out_path),
                    ArrayCalibrationReader(calibration),
                    quant_format=QuantFormat.QOperator if quant_format == "qoperator" else QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=list(exclude_nodes),
                    # not CalibMaxIntermediateOutputs: in onnxruntime 1.32 it drops the collected
                    # ranges instead of merging them ("No data is collected")
                )
        finally:
            logging.getLogger().setLevel(quiet)


def quantize_model(
    model: nn.Module,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    *,
    metadata: dict[str, Any] | None = None,
    fold: bool = True,
    quant_format: str = "qoperator",
    activation: str = "uint8",
    per_channel: bool = True,
    dynamic: bool = True,
    exporter: str = "auto",
    holdout: int = 2,
    min_agreement: float | None = 0.9,
) -> QuantizeReport:
    """Export ``model`` and quantize it to INT8; write ``out_path`` atomically.

    The last ``holdout`` calibration windows are not used for calibration but to compare INT8 with
    PyTorch fp32 (max |logit diff| and argmax agreement); with ``min_agreement`` set, an agreement
    below it raises ``ModelFileError`` and nothing is written.
    """
    import onnx  # lazy: start-up time; only INT8 export needs it

    calibration = [np.asarray(c, dtype=np.float32) for c in calibration]
    if len(calibration) <= holdout:
        raise ConfigError(
            f"{len(calibration)} calibration window(s); need more than the {holdout} held out for the check"
        )
    calib, check = calibration[: len(calibration) - holdout], calibration[len(calibration) - holdout :]
    patch = tuple(calib[0].shape[2:])
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="attnseg-quant-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        report = export_onnx(
            model,
            fp32,
            example_size=patch,
            dynamic=dynamic,
            exporter=exporter,
            fold=fold,
            metadata=metadata,
            parity_size=patch,
        )
        q = Path(tmp) / "int8.onnx"
        quantize_onnx(
            fp32, q, calib, quant_format=quant_format, activation=activation, per_channel=per_channel
        )
        proto = onnx.load(str(q))
        meta = metadata_of(onnx.load(str(fp32), load_external_data=False), str(fp32))
        meta.update(
            precision="int8",
            quantization={
                "method": "static",
                "format": quant_format,
                "activation": activation,
                "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
                "calibration": "MinMax",
                "calibration_windows": len(calib),
                "calibration_patch": list(patch),
            },
        )
        set_metadata(proto, meta)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise ModelFileError(f"{out_path}: the quantized graph fails onnx.checker: {exc}") from None
        data = proto.SerializeToString()
    counts = integer_op_counts(proto)
    session = make_session(data)
    name = session.get_inputs()[0].name
    diffs, agree = [], []
    with torch.no_grad():
        for x in check:
            ref = model.eval()(torch.from_numpy(x)).numpy()
            got = session.run(None, {name: x})[0]
            diffs.append(float(np.abs(ref - got).max()))
            agree.append(float((ref.argmax(1) == got.argmax(1)).mean()))
    result = QuantizeReport(
        path=str(out_path),
        float_size_bytes=report.size_bytes,
        int8_size_bytes=len(data),
        format=quant_format,
        activation=activation,
        calibration_windows=len(calib),
        ops=counts["ops"],
        integer_ops=counts["integer_ops"],
        float_convs=counts["float_convs"],
        max_abs_diff=max(diffs),
        argmax_agreement=float(np.mean(agree)),
        exporter=report.exporter,
    )
    if min_agreement is not None and result.argmax_agreement < min_agreement:
        raise ModelFileError(
            f"{out_path}: INT8 and fp32 predictions agree on only {100 * result.argmax_agreement:.1f} % of "
            f"the held-out windows' voxels (need {100 * min_agreement:.0f} %); calibrate on more cases or keep fp32"
        )
    with atomic_write(out_path, "wb") as handle:
        handle.write(data)
    return result


__all__ = [
    "ArrayCalibrationReader",
    "QuantizeReport",
    "calibration_windows",
    "integer_op_counts",
    "quantize_model",
    "quantize_onnx",
    "window_starts",
]
