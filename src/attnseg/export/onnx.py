"""ONNX export: dynamic batch and spatial axes, metadata inside the file, parity checked before the write.

The exported graph takes ``image (N, C, *spatial)`` of any size and returns ``logits (N, K, *spatial)``.
The network itself only works on sizes that are a multiple of ``model.stride`` (it pads internally,
with Python arithmetic on sizes that an exporter freezes to the example's values), so the network is
exported at a multiple of the stride and the graph gets a ``Pad`` in front (zeros at the far end up
to the next multiple, computed from the input's shape inside the graph) and a ``Slice`` at the end:
the same far-end zero padding and crop as ``AttentionUNet.forward``.

What inference needs travels in the file as JSON under the metadata key ``attnseg``: the model file's
whole card (:mod:`attnseg.models.card`: target, patch size, preprocessing, spacing, channel names,
training flips), model config, package versions, exporter, precision. ``attnseg predict`` reads it
back with the same ``read_model_card`` that reads the ``.pt`` file.

``fold_depth=True`` replaces every 3x3x3 stride-1 convolution by the same convolution written as a
2D one: the three depth-neighbour slices are stacked as channels and the depth axis is moved into
the batch, ``(N, C, D, H, W) -> (N*D, 3C, H, W)``. The maths is unchanged (checked by the parity
test), but onnxruntime's 2D convolution kernels skip the generic N-D im2col that dominates its 3D
``Conv``/``QLinearConv`` time (measured: int8 3x3x3 convolutions at 16 channels 4x faster). It is
the layout the INT8 path uses; see docs/deployment.md for the numbers.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from attnseg import __version__
from attnseg.config import ModelConfig, to_dict
from attnseg.errors import ConfigError, ModelFileError
from attnseg.export.runtime import make_session
from attnseg.io.atomic import atomic_write
from attnseg.models.card import read_model_card
from attnseg.progress import quiet_loggers

METADATA_KEY = "attnseg"
FORMAT = "attnseg.onnx"
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18
EXPORTERS = ("auto", "dynamo", "torchscript")


# --- the depth-folded 3x3x3 convolution ------------------------------------------------------------
class DepthFoldedConv3d(nn.Module):
    """A ``Conv3d`` (kernel ``(kd, kh, kw)``, stride 1, depth padding ``kd // 2``) computed as a 2D one.

    ``y[n, :, d] = sum_k conv2d(x[n, :, d + k - kd//2], w[:, :, k])``: the ``kd`` shifted copies of the
    input are concatenated along channels (index ``k * C + c``), the depth axis joins the batch, and
    one ``Conv2d`` with weight ``w.permute(0, 2, 1, 3, 4).reshape(O, kd * C, kh, kw)`` does the sum.
    """

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        out_ch, in_ch, kd, kh, kw = conv.weight.shape
        if conv.stride != (1, 1, 1) or conv.groups != 1 or conv.dilation != (1, 1, 1):
            raise ValueError(f"{conv}: only stride 1, groups 1, dilation 1 convolutions can be folded")
        if conv.padding_mode != "zeros" or conv.padding[0] != kd // 2 or kd % 2 != 1:
            raise ValueError(f"{conv}: depth padding must be kernel // 2 with zeros")
        self.depth_taps = kd
        self.conv = nn.Conv2d(
            kd * in_ch, out_ch, (kh, kw), padding=conv.padding[1:], bias=conv.bias is not None
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight.permute(0, 2, 1, 3, 4).reshape(out_ch, kd * in_ch, kh, kw))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = x.shape
        half = self.depth_taps // 2
        xp = F.pad(x, (0, 0, 0, 0, half, half))
        stacked = torch.cat([xp[:, :, k : k + d] for k in range(self.depth_taps)], dim=1)
        y = self.conv(stacked.transpose(1, 2).reshape(n * d, self.depth_taps * c, h, w))
        return y.reshape(n, d, y.shape[1], h, w).transpose(1, 2)


def fold_depth(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every foldable ``Conv3d`` (kernel > 1 in depth) made a DepthFoldedConv3d."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv3d) and child.kernel_size[0] > 1:
                with contextlib.suppress(ValueError):
                    setattr(module, name, DepthFoldedConv3d(child))
    return model


# --- metadata ----------------------------------------------------------------------------------------
def build_metadata(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON stored in the file: model config, package version, input rule, plus ``extra``.

    ``extra`` keys used by ``attnseg predict``: ``target`` (``{"kind": "labels"|"regions", "values",
    "names", "regions"}``), ``patch_size``, ``preprocess`` (``normalization``, ``clip_percentiles``,
    ``target_spacing_mm``), ``spacing_mm``, ``channel_names``, ``mirror_axes`` (the axes flipped in
    training, which ``--tta`` mirrors).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"{type(model).__name__} has no ModelConfig `.config`; build it with attnseg.build_model"
        )
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "attnseg_version": __version__,
        "model_config": to_dict(config),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "stride": int(getattr(model, "stride", 1)),
    }
    for key, value in (extra or {}).items():
        meta[key] = to_dict(value) if not isinstance(value, (str, int, float, bool, type(None))) else value
    json.dumps(meta)  # fail here, not in the middle of a write, if something is not plain data
    return meta


def metadata_from_model_file(path: str | Path) -> dict[str, Any]:
    """The model file's card as ONNX metadata entries (``attnseg.models.card.ModelCard.to_dict``:
    target, patch size, preprocessing, spacing, channel names, training flips), read with the same
    function predict uses, plus the attnseg version that wrote the model file."""
    card = read_model_card(path)
    return {**card.to_dict(), "model_file_version": card.version}


# --- export -------------------------------------------------------------------------------------------
@dataclass
class ParityReport:
    """ONNX vs PyTorch on the same input: max |logit difference|, share of voxels with the same argmax.

    ``logits_shape``: (N, classes, *spatial) of the compared outputs; ``input_shape``: (N, channels,
    *spatial) of the input both ran on (None when only the logits were given).
    """

    logits_shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float
    argmax_agreement: float
    input_shape: tuple[int, ...] | None = None

    def __str__(self) -> str:
        where = (
            f"input {tuple(self.input_shape)}" if self.input_shape else f"logits {tuple(self.logits_shape)}"
        )
        return (
            f"{where}: max |logit diff| {self.max_abs_diff:.2e} "
            f"(logits up to {self.max_abs_logit:.2f}), argmax agreement {100 * self.argmax_agreement:.4f} %"
        )


@dataclass
class ExportReport:
    path: str
    exporter: str
    opset: int
    size_bytes: int
    parity: ParityReport | None
    fold_depth: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round_up(size: Sequence[int], multiple: int) -> tuple[int, ...]:
    return tuple(math.ceil(int(s) / multiple) * multiple for s in size)


def _export_core(
    module: nn.Module,
    example: torch.Tensor,
    exporter: str,
    opset: int,
    dynamic: bool,
) -> tuple[bytes, str]:
    """Export ``module`` on ``example``; returns the ONNX bytes and the exporter that worked."""
    spatial = example.ndim - 2
    names = ["batch", *(f"p{i}" for i in range(spatial))]
    tried: list[str] = []
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    for kind in order:
        buffer = io.BytesIO()
        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                quiet_loggers("torch.onnx", "torch.export", "onnxscript"),
            ):
                warnings.simplefilter("ignore")
                if kind == "dynamo":
                    shapes = None
                    if dynamic:
                        shapes = ({0: Dim("batch"), **{2 + i: Dim(f"p{i}") for i in range(spatial)}},)
                    program = torch.onnx.export(
                        module,
                        (example,),
                        dynamo=True,
                        opset_version=opset,
                        input_names=[INPUT_NAME],
                        output_names=[OUTPUT_NAME],
                        dynamic_shapes=shapes,
                        verbose=False,
                    )
                    program.save(buffer)
                else:
                    axes = {0: names[0], **{2 + i: names[1 + i] for i in range(spatial)}}
                    torch.onnx.export(
                        module,
                        (example,),
                        buffer,
                        dynamo=False,
                        opset_version=opset,
                        input_names=[INPUT_NAME],
                        output_names=[OUTPUT_NAME],
                        dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None,
                    )
            return buffer.getvalue(), kind
        except Exception as exc:  # an exporter failure is reported, then the next one is tried
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            tried.append(f"{kind}: {type(exc).__name__}: {first[:300]}")
    raise ModelFileError("ONNX export failed with every exporter tried; " + " | ".join(tried))


def _add_pad_and_crop(model_proto, spatial_dims: int, multiple: int):
    """Wrap the graph: zero-pad the far end of every spatial axis to a multiple, crop the logits back."""
    import onnx  # lazy: onnx costs ~0.3 s at start-up and only export needs it
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    inner_in, inner_out = f"{INPUT_NAME}_padded", f"{OUTPUT_NAME}_padded"
    for node in graph.node:
        node.input[:] = [inner_in if n == INPUT_NAME else n for n in node.input]
        node.output[:] = [inner_out if n == OUTPUT_NAME else n for n in node.output]
    elem = graph.input[0].type.tensor_type.elem_type
    channels_in = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    channels_out = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    k = spatial_dims
    consts = {
        "pad_multiple": np.array([multiple], dtype=np.int64),
        "pad_begin": np.zeros(k + 2 + 2, dtype=np.int64),  # all begins, then the end pads of N and C
        "crop_starts": np.zeros(k, dtype=np.int64),
        "crop_axes": np.arange(2, 2 + k, dtype=np.int64),
    }
    for name, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    nodes = [
        helper.make_node("Shape", [INPUT_NAME], ["in_spatial"], start=2, name="in_spatial"),
        helper.make_node("Neg", ["in_spatial"], ["neg_spatial"], name="neg_spatial"),
        helper.make_node("Mod", ["neg_spatial", "pad_multiple"], ["pad_end"], fmod=0, name="pad_end"),
        helper.make_node("Concat", ["pad_begin", "pad_end"], ["pads"], axis=0, name="pads"),
        helper.make_node("Pad", [INPUT_NAME, "pads"], [inner_in], mode="constant", name="pad_to_multiple"),
    ]
    crop = helper.make_node(
        "Slice", [inner_out, "crop_starts", "in_spatial", "crop_axes"], [OUTPUT_NAME], name="crop_back"
    )
    new_nodes = nodes + list(graph.node) + [crop]
    del graph.node[:]
    graph.node.extend(new_nodes)
    outer = ["batch", *(f"s{i}" for i in range(k))]
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info(INPUT_NAME, elem, [outer[0], channels_in or None, *outer[1:]])
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(
            OUTPUT_NAME, TensorProto.FLOAT, [outer[0], channels_out or None, *outer[1:]]
        )
    )
    del graph.value_info[:]  # stale shapes of the inner graph; onnxruntime infers them again
    return onnx.shape_inference.infer_shapes(model_proto)


def set_metadata(model_proto, metadata: dict[str, Any]) -> None:
    """Replace the ``attnseg`` metadata entry of an ONNX model proto."""
    keep = [p for p in model_proto.metadata_props if p.key != METADATA_KEY]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    entry = model_proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(metadata, sort_keys=True)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> ParityReport:
    """Max |difference| and argmax agreement over the channel axis (axis 1) of two logit batches."""
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise ModelFileError(
            f"the exported model returned shape {candidate.shape}; PyTorch gives {reference.shape}"
        )
    agree = (
        float((reference.argmax(1) == candidate.argmax(1)).mean())
        if reference.shape[1] > 1
        else float(((reference > 0) == (candidate > 0)).mean())
    )
    return ParityReport(
        logits_shape=tuple(reference.shape),
        max_abs_diff=float(np.abs(reference - candidate).max()),
        max_abs_logit=float(np.abs(reference).max()),
        argmax_agreement=agree,
    )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example_size: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    exporter: str = "auto",
    fold: bool = False,
    metadata: dict[str, Any] | None = None,
    check: bool = True,
    parity_size: Sequence[int] | None = None,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` to ``path`` (written atomically, only after the checks pass).

    Args:
        example_size: spatial size traced (rounded up to a multiple of ``model.stride``); default
            ``metadata["patch_size"]`` or ``32`` per axis.
        dynamic: batch and spatial axes dynamic (any size, padded in the graph); ``False`` fixes the
            shape to ``(1, C, *example_size)``, which lets onnxruntime plan memory once (benchmarks).
        exporter: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, needs ``onnxscript``),
            ``"torchscript"``, or ``"auto"`` (dynamo, then TorchScript if it fails).
        fold: write 3x3x3 convolutions as 2D ones (see :class:`DepthFoldedConv3d`).
        check: run ``onnx.checker`` and compare onnxruntime with PyTorch on a random batch of 2 at
            ``parity_size`` (default: the example size minus 1 per axis, to exercise the padding);
            raise ``ModelFileError`` when ``max |diff| > tolerance * max(1, max |logit|)``.
    """
    import onnx  # lazy: onnx costs ~0.3 s at start-up and only export needs it

    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter={exporter!r}; pass one of {', '.join(EXPORTERS)}")
    if opset < 17:
        raise ConfigError(f"opset={opset}: pass 17 or newer (InstanceNormalization/Resize need it)")
    path = Path(path)
    model = model.eval()
    spatial_dims = int(getattr(model, "spatial_dims", 3))
    stride = int(getattr(model, "stride", 1))
    channels = int(getattr(model, "in_channels", 1))
    if fold and spatial_dims != 3:
        fold = False  # 2D models have nothing to fold
    extra = dict(metadata or {})
    if example_size is None:
        example_size = extra.get("patch_size") or (32,) * spatial_dims
    example_size = tuple(int(s) for s in example_size)
    if len(example_size) != spatial_dims:
        raise ConfigError(
            f"example_size={list(example_size)}: a {spatial_dims}D model needs {spatial_dims} sizes"
        )
    traced_size = _round_up(example_size, stride)
    if not dynamic and traced_size != example_size:
        raise ConfigError(
            f"example_size={list(example_size)}: a fixed-shape export needs multiples of {stride}; "
            f"pass {list(traced_size)}"
        )

    module = fold_depth(model) if fold else copy.deepcopy(model)
    module.eval()
    for sub in module.modules():  # exporters cannot express memory formats; the graph is NCHW
        if getattr(sub, "channels_last", None) not in (None, False):
            sub.channels_last = False
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn((1, channels, *traced_size), generator=generator)
    with torch.no_grad():
        raw, used = _export_core(module, example, exporter, opset, dynamic)
    proto = onnx.load_from_string(raw)
    if dynamic:
        proto = _add_pad_and_crop(proto, spatial_dims, stride)
    meta = build_metadata(
        model,
        {
            **extra,
            "exporter": used,
            "opset": opset,
            "dynamic": dynamic,
            "fold_depth": fold,
            "precision": extra.get("precision", "float32"),
            "example_size": list(example_size),
        },
    )
    set_metadata(proto, meta)
    proto.producer_name = "attnseg"
    proto.doc_string = (
        f"attnseg {meta['model_config']['name']}: {INPUT_NAME} (N, {channels}, *spatial) float32 -> "
        f"{OUTPUT_NAME} (N, {meta['model_config']['out_channels']}, *spatial); metadata key '{METADATA_KEY}'"
    )
    data = proto.SerializeToString()
    if check:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ModelFileError(
                f"{path}: the exported graph fails onnx.checker: {str(exc).splitlines()[0]}"
            ) from None
    parity = None
    if check:
        if parity_size is None:
            parity_size = tuple(max(s - 1, 1) for s in example_size) if dynamic else example_size
        batch = 2 if dynamic else 1
        x = torch.randn((batch, channels, *parity_size), generator=generator)
        parity = check_parity(model, data, x, tolerance=tolerance, what=str(path))
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return ExportReport(
        path=str(path),
        exporter=used,
        opset=opset,
        size_bytes=len(data),
        parity=parity,
        fold_depth=fold,
    )


def check_parity(
    model: nn.Module,
    onnx_model: bytes | str | Path,
    x: torch.Tensor,
    *,
    tolerance: float | None = 1e-3,
    what: str = "exported model",
) -> ParityReport:
    """Run PyTorch and onnxruntime on ``x``; raise ``ModelFileError`` beyond ``tolerance`` (None: report only)."""
    with torch.no_grad():
        reference = model.eval()(x)
        if isinstance(reference, (list, tuple)):
            reference = reference[0]
    session = make_session(onnx_model, threads=None)
    candidate = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    report = replace(compare_logits(reference.numpy(), candidate), input_shape=tuple(x.shape))
    if tolerance is not None and report.max_abs_diff > tolerance * max(1.0, report.max_abs_logit):
        raise ModelFileError(
            f"{what}: onnxruntime and PyTorch disagree: {report}; the tolerance is "
            f"{tolerance:g} x max(1, max |logit|). The file was not written."
        )
    return report


__all__ = [
    "DepthFoldedConv3d",
    "ExportReport",
    "ParityReport",
    "build_metadata",
    "check_parity",
    "compare_logits",
    "export_onnx",
    "fold_depth",
    "metadata_from_model_file",
    "set_metadata",
]
