"""Figures of what a model sees: input channels, truth, each attention gate's map, prediction, Grad-CAM.

Conventions (stated once, used by every figure):

- **Attention maps** come from forward hooks on the ``AttentionGate`` modules ``model.gates[k]``
  (their forward returns ``(x * alpha, alpha)``; the hook keeps ``alpha``), not from a special
  forward path, so the figure shows exactly what the gate multiplied the skip with. Each map is
  up-sampled from the gate's grid to the input grid (linear, ``align_corners=False``; the network's
  own zero padding to a multiple of its stride is cropped off). Values are in [0, 1]. ``k = 0`` is
  the first decoder step (the deepest, coarsest skip).
- **Slices** are shown in the neurological convention when the file's orientation is known
  (``axcodes`` from the affine): the patient's right on the right, anterior/superior up. Axial is
  the array axis pointing S/I, coronal A/P, sagittal L/R. Without an affine (2D images) the array
  is drawn as stored (row 0 on top). The pixel aspect ratio comes from the voxel spacing.
- **Default slice**: the one with the most foreground voxels in the truth, else in the prediction,
  else the middle slice.
- Label colours are fixed per label value (BraTS 1 red, 2 green, 3/4 yellow...), the same in every
  panel and every report.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnseg.inference import sliding_window_inference
from attnseg.io.atomic import atomic_write

__all__ = [
    "LABEL_COLOURS",
    "VIEWS",
    "ModelOutput",
    "SliceView",
    "attention_maps",
    "case_figure",
    "forward_with_attention",
    "gate_hooks",
    "label_colour",
    "make_view",
    "most_foreground_slice",
    "save_figure",
    "to_input_grid",
    "view_axis",
]

VIEWS = ("ax", "co", "sa")
VIEW_NAMES = {"ax": "axial", "co": "coronal", "sa": "sagittal"}
# the anatomical direction pair an array axis must point along to be the normal of each view
_VIEW_DIRECTIONS = {"ax": "SI", "co": "AP", "sa": "LR"}
# in-plane: the axis that goes across the screen is chosen first from LR, then AP (then SI)
_HORIZONTAL_PRIORITY = ("LR", "AP", "SI")

# label value -> colour; BraTS-like order (1 necrosis red, 2 oedema green, 3/4 enhancing yellow)
LABEL_COLOURS: dict[int, str] = {
    1: "#e6194b",
    2: "#3cb44b",
    3: "#ffe119",
    4: "#ffe119",
    5: "#4363d8",
    6: "#f58231",
    7: "#911eb4",
    8: "#46f0f0",
    9: "#f032e6",
    10: "#bcf60c",
}
_EXTRA_COLOURS = ("#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075")


def label_colour(value: int) -> str:
    """The colour of a label value (stable across figures and reports)."""
    value = int(value)
    if value in LABEL_COLOURS:
        return LABEL_COLOURS[value]
    return _EXTRA_COLOURS[value % len(_EXTRA_COLOURS)]


# --- model outputs with real gate hooks ---------------------------------------------------------------
@dataclass
class ModelOutput:
    """``logits`` ``(K, *spatial)`` float32 and ``maps`` gate index -> ``(*spatial)`` float32 in [0, 1]."""

    logits: np.ndarray
    maps: dict[int, np.ndarray] = field(default_factory=dict)


def _stride(model: nn.Module) -> int:
    return int(getattr(model, "stride", 1) or 1)


def to_input_grid(t: torch.Tensor, size: Sequence[int], stride: int = 1) -> torch.Tensor:
    """Up-sample ``(N, C, *grid)`` to ``(N, C, *size)`` (linear, ``align_corners=False``).

    The network pads its input at the far end to a multiple of ``stride`` (``padded``); a grid that
    divides ``padded`` exactly is up-sampled to ``padded`` and cropped, so voxel centres line up with
    the input; any other grid is resized to ``size`` directly.
    """
    size = tuple(int(s) for s in size)
    padded = tuple(math.ceil(s / stride) * stride for s in size)
    grid = tuple(t.shape[2:])
    if grid == size:
        return t
    exact = all(p % g == 0 for p, g in zip(padded, grid))
    target = padded if exact else size
    if grid != target:
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
        t = F.interpolate(t.float(), size=target, mode=mode, align_corners=False)
    return t[(slice(None), slice(None), *(slice(0, s) for s in size))]


def _gate_list(model: nn.Module) -> nn.ModuleList | list:
    gates = getattr(model, "gates", None)
    return gates if gates is not None else []


def _check_gates(model: nn.Module, gates: Sequence[int] | None) -> list[int]:
    n = len(_gate_list(model))
    if gates is None:
        return list(range(n))
    out = []
    for k in gates:
        k = int(k)
        if not -n <= k < n:
            raise ValueError(
                f"gate {k}: this model has {n} attention gate(s)"
                + (f" (0..{n - 1}; 0 is the deepest skip)" if n else " (it is a plain U-Net)")
            )
        out.append(k % n)
    return out


@contextlib.contextmanager
def gate_hooks(model: nn.Module, gates: Sequence[int] | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Register forward hooks on ``model.gates[k]``; yield a dict that each forward fills with alpha.

    The dict maps gate index -> the gate's last ``alpha`` ``(N, 1, *gate grid)``. Hooks are removed
    on exit, also after an error.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = []
    gate_modules = _gate_list(model)
    for k in _check_gates(model, gates):

        def hook(module, inputs, output, k=k):
            alpha = output[1] if isinstance(output, (tuple, list)) else output
            captured[k] = alpha.detach()

        handles.append(gate_modules[k].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def _first(logits: Any) -> torch.Tensor:
    return logits[0] if isinstance(logits, (list, tuple)) else logits


def _forward_batch(
    model: nn.Module, batch: torch.Tensor, captured: dict[int, torch.Tensor], gates: list[int]
) -> torch.Tensor:
    """One forward of ``(B, C, *s)``: logits and the gates' maps (on ``s``) stacked as channels."""
    captured.clear()
    logits = _first(model(batch)).float()
    size, stride = batch.shape[2:], _stride(model)
    maps = []
    for k in gates:
        if k not in captured:
            raise RuntimeError(f"gate {k} did not run during the forward pass")
        maps.append(to_input_grid(captured[k].float(), size, stride))
    return torch.cat([logits, *maps], dim=1) if maps else logits


def forward_with_attention(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    *,
    gates: Sequence[int] | None = None,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 2,
    slice_axis: int | None = None,
    device: torch.device | str | None = None,
) -> ModelOutput:
    """Logits and attention maps of a whole case ``(C, *spatial)``.

    ``patch_size``: run window by window with :func:`attnseg.inference.sliding_window_inference`
    (gaussian blending applies to the maps as to the logits); ``None``: one forward of the whole
    case (the network pads it to its stride). ``slice_axis``: run a 2D model slice by slice over a
    3D volume along that spatial axis. A model without gates (U-Net) gives no maps.
    """
    x = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image)
    x = x.float()
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gate_ids = _check_gates(model, gates)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), gate_hooks(model, gate_ids) as captured:

            def predictor(batch: torch.Tensor) -> torch.Tensor:
                return _forward_batch(model, batch.to(device), captured, gate_ids)

            if patch_size is not None:
                out = sliding_window_inference(
                    x, predictor, patch_size, overlap=overlap, batch_size=batch_size, slice_axis=slice_axis
                )
            elif slice_axis is not None:
                if x.ndim != 4:
                    raise ValueError(f"slice_axis needs a 3D volume (C, X, Y, Z); got {tuple(x.shape)}")
                slices = x.movedim(1 + slice_axis, 0)  # (S, C, H, W)
                step = max(int(batch_size), 1) * 8
                parts = [predictor(slices[i : i + step]).cpu() for i in range(0, slices.shape[0], step)]
                out = torch.cat(parts).movedim(0, 1 + slice_axis)
            else:
                out = predictor(x.unsqueeze(0))[0].cpu()
    finally:
        model.train(was_training)
    out = out.float().numpy()
    n_maps = len(gate_ids)
    k_out = out.shape[0] - n_maps
    maps = {k: np.clip(out[k_out + i], 0.0, 1.0) for i, k in enumerate(gate_ids)}
    return ModelOutput(logits=np.ascontiguousarray(out[:k_out]), maps=maps)


def attention_maps(
    model: nn.Module, image: np.ndarray | torch.Tensor, gates: Sequence[int] | None = None, **kwargs: Any
) -> list[np.ndarray]:
    """Each gate's attention map on the input grid, ``(*spatial)`` float32 in [0, 1], gate order.

    ``image`` is ``(C, *spatial)``. Keyword arguments go to :func:`forward_with_attention`
    (``patch_size``, ``slice_axis``, ...). A model without gates returns an empty list.
    """
    out = forward_with_attention(model, image, gates=gates, **kwargs)
    return [out.maps[k] for k in _check_gates(model, gates)]


# --- slices -------------------------------------------------------------------------------------------
def view_axis(view: str, axcodes: Sequence[str] | None = None) -> int:
    """The array axis normal to ``view`` (``ax``, ``co``, ``sa``) of a 3D volume.

    With ``axcodes`` (e.g. ``('L', 'P', 'S')`` from the affine) the anatomical axis is found;
    without, the RAS-like array order is assumed (sa 0, co 1, ax 2).
    """
    if view not in VIEWS:
        raise ValueError(f"view {view!r}: pass one of {', '.join(VIEWS)} (axial, coronal, sagittal)")
    if axcodes:
        for i, code in enumerate(axcodes[:3]):
            if code in _VIEW_DIRECTIONS[view]:
                return i
    return {"sa": 0, "co": 1, "ax": 2}[view]


def most_foreground_slice(mask: np.ndarray, axis: int) -> int | None:
    """Index along ``axis`` of the slice with the most non-zero voxels (first on ties); None if empty."""
    mask = np.asarray(mask)
    others = tuple(a for a in range(mask.ndim) if a != axis)
    counts = np.count_nonzero(mask, axis=others) if others else (mask != 0).astype(int)
    if counts.max(initial=0) == 0:
        return None
    return int(np.argmax(counts))


@dataclass(frozen=True)
class SliceView:
    """How one plane of a volume is drawn.

    ``axis``: the slice normal (None for a 2D image), ``index``: the slice; ``h_axis``/``v_axis``:
    the array axes drawn across / up the screen; ``flip_h``/``flip_v``: reverse them so the picture
    reads right/anterior/superior towards the right and top; ``aspect``: on-screen pixel
    height / width (``spacing[v] / spacing[h]``); ``name``: e.g. ``"axial 40/96"``.
    """

    axis: int | None
    index: int
    h_axis: int
    v_axis: int
    flip_h: bool
    flip_v: bool
    aspect: float
    name: str

    def take(self, volume: np.ndarray) -> np.ndarray:
        """The 2D picture ``(rows top to bottom, columns left to right)`` of a ``(*spatial)`` array."""
        volume = np.asarray(volume)
        if self.axis is None:
            plane = volume
            rows, cols = 0, 1
        else:
            plane = np.take(volume, self.index, axis=self.axis)
            remaining = [a for a in range(volume.ndim) if a != self.axis]
            rows, cols = remaining.index(self.v_axis), remaining.index(self.h_axis)
        plane = np.transpose(plane, (rows, cols))
        if self.flip_v:
            plane = plane[::-1, :]
        if self.flip_h:
            plane = plane[:, ::-1]
        return np.ascontiguousarray(plane)


def make_view(
    shape: Sequence[int],
    spacing_mm: Sequence[float] | None = None,
    view: str = "ax",
    index: int | None = None,
    axcodes: Sequence[str] | None = None,
) -> SliceView:
    """The :class:`SliceView` of a ``shape`` (2 or 3 spatial axes) for ``view`` at ``index``.

    ``index`` None: the middle slice. 2D shapes ignore ``view`` and are drawn as stored.
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in (spacing_mm or (1.0,) * len(shape)))
    if len(spacing) != len(shape):
        raise ValueError(f"spacing_mm {spacing} has {len(spacing)} values for a {len(shape)}D shape {shape}")
    if len(shape) == 2:
        return SliceView(None, 0, 1, 0, False, False, spacing[0] / spacing[1], "2D image")
    if len(shape) != 3:
        raise ValueError(f"shape {shape}: expected 2 or 3 spatial axes")
    axis = view_axis(view, axcodes)
    n = shape[axis]
    if index is None:
        index = n // 2
    if not 0 <= int(index) < n:
        raise ValueError(f"slice {index} is outside the {VIEW_NAMES[view]} range 0..{n - 1}")
    remaining = [a for a in range(3) if a != axis]
    codes = list(axcodes[:3]) if axcodes and len(axcodes) >= 3 else None
    if codes is not None:

        def rank(a: int) -> int:
            return next(i for i, pair in enumerate(_HORIZONTAL_PRIORITY) if codes[a] in pair)

        h, v = sorted(remaining, key=rank)
        # columns should increase towards R/A/S; rows are drawn top-down, so S/A/R must be at row 0
        flip_h = codes[h] in "LPI"
        flip_v = codes[v] in "RAS"
    else:
        h, v = remaining
        flip_h, flip_v = False, True
    return SliceView(
        axis, int(index), h, v, flip_h, flip_v, spacing[v] / spacing[h], f"{VIEW_NAMES[view]} {index}/{n - 1}"
    )


# --- drawing ------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib  # lazy: the Agg backend must be chosen before pyplot is imported (and start-up time)

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _window(volume: np.ndarray) -> tuple[float, float]:
    """Display window: 0.5-99.5th percentiles of the non-zero voxels (all voxels if none)."""
    v = np.asarray(volume, dtype=np.float32)
    vals = v[v != 0] if np.any(v != 0) else v.ravel()
    lo, hi = (float(x) for x in np.percentile(vals, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = float(vals.min()), float(vals.max())
        if not hi > lo:
            hi = lo + 1.0
    return lo, hi


def _label_rgba(plane: np.ndarray, values: Sequence[int], alpha: float) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*plane.shape, 4), dtype=np.float32)
    for v in values:
        if v == 0:
            continue
        r, g, b, _ = to_rgba(label_colour(v))
        rgba[plane == v] = (r, g, b, alpha)
    return rgba


@dataclass
class _Panel:
    kind: str  # channel, truth, gate, prediction, gradcam (the keys of _PANEL_DRAWERS)
    title: str
    volume: np.ndarray  # what the panel shows, ``(*spatial)``


def _check_grids(
    spatial: tuple[int, ...],
    label: np.ndarray | None,
    prediction: np.ndarray | None,
    gradcam: np.ndarray | None,
    maps: Mapping[int, np.ndarray],
) -> None:
    for name, arr in (("label", label), ("prediction", prediction), ("gradcam", gradcam)):
        if arr is not None and tuple(np.shape(arr)) != tuple(spatial):
            raise ValueError(f"{name} has shape {np.shape(arr)}; the image's spatial shape is {spatial}")
    for k, m in maps.items():
        if tuple(np.shape(m)) != tuple(spatial):
            raise ValueError(f"attention map {k} has shape {np.shape(m)}; expected {spatial}")


def _panel_list(
    image: np.ndarray,
    chans: Sequence[int],
    *,
    channel_names: Sequence[str] | None,
    label: np.ndarray | None,
    maps: Mapping[int, np.ndarray],
    gate_names: Mapping[int, str] | None,
    prediction: np.ndarray | None,
    gradcam: np.ndarray | None,
    gradcam_title: str,
) -> list[_Panel]:
    """The panels in drawing order: channels, truth, gates (by index), prediction, Grad-CAM."""
    names = list(channel_names) if channel_names else [f"channel {c}" for c in range(image.shape[0])]
    if len(names) < image.shape[0]:
        names += [f"channel {c}" for c in range(len(names), image.shape[0])]
    panels = [_Panel("channel", names[c], image[c]) for c in chans]
    if label is not None:
        panels.append(_Panel("truth", "ground truth", label))
    for k in sorted(maps):
        panels.append(_Panel("gate", (gate_names or {}).get(k, f"attention gate {k}"), maps[k]))
    if prediction is not None:
        outlined = " (truth outlined)" if label is not None else ""
        panels.append(_Panel("prediction", "prediction" + outlined, prediction))
    if gradcam is not None:
        panels.append(_Panel("gradcam", gradcam_title, gradcam))
    if not panels:
        raise ValueError("nothing to draw: no channel, label, map or prediction")
    return panels


def _label_values(
    label: np.ndarray | None, prediction: np.ndarray | None, class_names: Mapping[int, str] | None
) -> list[int]:
    """Every label value in the truth, the prediction or the class names, sorted."""
    return sorted(
        {int(v) for arr in (label, prediction) if arr is not None for v in np.unique(arr)}
        | {int(v) for v in (class_names or {})}
    )


def _outside_plane(image: np.ndarray, view: SliceView) -> np.ndarray | None:
    # voxels that are zero in every channel lie outside the imaged/skull-stripped region (z-score
    # inside the non-zero region leaves them 0): draw them black rather than mid-grey
    outside = np.all(image == 0, axis=0)
    return view.take(outside) if outside.any() else None


def _grey_colour_map():
    """Grey, with masked (outside) voxels black."""
    from matplotlib import colormaps

    return colormaps["gray"].with_extremes(bad="black")


def _masked(plane: np.ndarray, outside: np.ndarray | None) -> np.ndarray:
    return np.ma.masked_array(plane, mask=outside) if outside is not None else plane


@dataclass
class _Canvas:
    """What every panel draws on: the figure, the plane, the grey background and the label legend."""

    fig: Any
    view: SliceView
    grey: Any  # the grey colour map; masked (outside) voxels are black
    outside: np.ndarray | None  # the plane's voxels that are zero in every channel, None if there are none
    background: np.ndarray  # the first shown channel's plane, outside masked
    window: tuple[float, float]  # the background's display window
    values: list[int]  # label values of truth, prediction and class names
    class_names: Mapping[int, str]
    truth: np.ndarray | None  # outlined on the prediction panel
    intensity_label: str

    @property
    def fg_values(self) -> list[int]:
        return [v for v in self.values if v != 0]

    def masked(self, plane: np.ndarray) -> np.ndarray:
        return _masked(plane, self.outside)

    def show_background(self, ax) -> None:
        ax.imshow(
            self.background, cmap=self.grey, vmin=self.window[0], vmax=self.window[1],
            aspect=self.view.aspect, interpolation="nearest",
        )  # fmt: skip

    def label_colourbar(self, ax) -> None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import BoundaryNorm, ListedColormap

        fg_values = self.fg_values
        if not fg_values:
            return
        cmap = ListedColormap([label_colour(v) for v in fg_values])
        norm = BoundaryNorm(np.arange(len(fg_values) + 1) - 0.5, len(fg_values))
        cb = self.fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.05, pad=0.03)
        cb.set_ticks(np.arange(len(fg_values)))
        cb.set_ticklabels([self.class_names.get(v, f"label {v}") for v in fg_values])
        cb.ax.tick_params(labelsize=8)


def _new_figure(
    plt, n_panels: int, plane_shape: tuple[int, int], aspect: float, panel_inches: float, max_columns: int
) -> tuple[Any, list[Any]]:
    """The figure and one grid cell per panel; its size follows :func:`case_figure`'s docstring."""
    rows_px, cols_px = plane_shape
    ratio = min(max(rows_px * aspect / max(cols_px, 1), 0.35), 2.5)
    ncols = min(n_panels, max_columns)
    nrows = math.ceil(n_panels / ncols)
    cbar_in = 0.95
    panel_h = panel_inches * ratio + 0.35
    fig = plt.figure(
        figsize=(ncols * (panel_inches + cbar_in), nrows * panel_h + 0.45), dpi=100, layout="constrained"
    )
    grid = fig.add_gridspec(nrows, ncols)
    return fig, [grid[i // ncols, i % ncols] for i in range(n_panels)]


def _panel_axes(fig, cell, panel: _Panel):
    """The panel's image axes, labelled ``panel:<kind>``, titled, without ticks or frame."""
    ax = fig.add_subplot(cell)
    ax.set_label(f"panel:{panel.kind}")
    ax.set_title(panel.title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


def _value_colourbar(fig, im, ax, text: str) -> None:
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    cb.set_label(text, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def _draw_overlay(canvas: _Canvas, ax, volume: np.ndarray, cmap: str, alpha: float, text: str) -> None:
    """A map in [0, 1] over the background (NaN: not drawn), with its colour bar."""
    from matplotlib import colormaps

    canvas.show_background(ax)
    im = ax.imshow(
        canvas.view.take(volume), cmap=colormaps[cmap], vmin=0.0, vmax=1.0, alpha=alpha,
        aspect=canvas.view.aspect, interpolation="bilinear",
    )  # fmt: skip
    _value_colourbar(canvas.fig, im, ax, text)


def _draw_labels(canvas: _Canvas, ax, volume: np.ndarray) -> None:
    canvas.show_background(ax)
    ax.imshow(
        _label_rgba(canvas.view.take(volume), canvas.values, 0.55),
        aspect=canvas.view.aspect,
        interpolation="nearest",
    )


def _draw_channel(canvas: _Canvas, ax, panel: _Panel) -> None:
    lo, hi = _window(panel.volume)
    im = ax.imshow(
        canvas.masked(canvas.view.take(panel.volume)), cmap=canvas.grey, vmin=lo, vmax=hi,
        aspect=canvas.view.aspect, interpolation="nearest",
    )  # fmt: skip
    _value_colourbar(canvas.fig, im, ax, canvas.intensity_label)


def _draw_truth(canvas: _Canvas, ax, panel: _Panel) -> None:
    _draw_labels(canvas, ax, panel.volume)
    canvas.label_colourbar(ax)


def _draw_prediction(canvas: _Canvas, ax, panel: _Panel) -> None:
    """The predicted labels, each truth label outlined in its colour (white dashes on top)."""
    _draw_labels(canvas, ax, panel.volume)
    if canvas.truth is not None:
        truth_plane = canvas.view.take(canvas.truth)
        for v in canvas.fg_values:
            mask = (truth_plane == v).astype(np.float32)
            if mask.any() and not mask.all():
                ax.contour(mask, levels=[0.5], colors=[label_colour(v)], linewidths=1.0)
                ax.contour(mask, levels=[0.5], colors="white", linewidths=0.5, linestyles="--")
    canvas.label_colourbar(ax)


def _draw_gate(canvas: _Canvas, ax, panel: _Panel) -> None:
    _draw_overlay(canvas, ax, panel.volume, "inferno", 0.75, "attention coefficient α")


def _draw_gradcam(canvas: _Canvas, ax, panel: _Panel) -> None:
    _draw_overlay(canvas, ax, panel.volume, "jet", 0.5, "class activation (max = 1)")


_PANEL_DRAWERS = {
    "channel": _draw_channel,
    "truth": _draw_truth,
    "gate": _draw_gate,
    "prediction": _draw_prediction,
    "gradcam": _draw_gradcam,
}


def case_figure(
    image: np.ndarray,
    *,
    spacing_mm: Sequence[float] | None = None,
    view: SliceView | None = None,
    label: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    maps: Mapping[int, np.ndarray] | None = None,
    gradcam: np.ndarray | None = None,
    gradcam_title: str = "Grad-CAM",
    channels: Sequence[int] | None = None,
    channel_names: Sequence[str] | None = None,
    class_names: Mapping[int, str] | None = None,
    gate_names: Mapping[int, str] | None = None,
    title: str | None = None,
    panel_inches: float = 3.0,
    max_columns: int = 4,
    intensity_label: str = "intensity",
):
    """A matplotlib Figure: one panel per input channel, the truth, each gate map, the prediction,
    and Grad-CAM, each with a labelled colour bar. All arrays are whole volumes on the same grid
    (``image`` ``(C, *spatial)``, the others ``(*spatial)``); ``view`` picks the plane.

    Every panel's image axes carries ``ax.get_label() == "panel:<kind>"`` (tests count them).
    The figure size is ``columns * (panel_inches + 0.95)`` by ``rows * panel height + 0.45`` inches,
    fixed (no tight bounding box), so the PNG size is predictable.
    """
    plt = _pyplot()
    image = np.asarray(image, dtype=np.float32)
    spatial = image.shape[1:]
    if view is None:
        view = make_view(spatial, spacing_mm)
    maps = dict(maps or {})
    _check_grids(spatial, label, prediction, gradcam, maps)
    chans = list(range(image.shape[0])) if channels is None else [int(c) for c in channels]
    panels = _panel_list(
        image, chans, channel_names=channel_names, label=label, maps=maps, gate_names=gate_names,
        prediction=prediction, gradcam=gradcam, gradcam_title=gradcam_title,
    )  # fmt: skip
    outside = _outside_plane(image, view)
    background_volume = image[chans[0] if chans else 0]
    background = _masked(view.take(background_volume), outside)
    fig, cells = _new_figure(plt, len(panels), background.shape, view.aspect, panel_inches, max_columns)
    canvas = _Canvas(
        fig=fig,
        view=view,
        grey=_grey_colour_map(),
        outside=outside,
        background=background,
        window=_window(background_volume),
        values=_label_values(label, prediction, class_names),
        class_names=class_names or {},
        truth=label,
        intensity_label=intensity_label,
    )
    for cell, panel in zip(cells, panels):
        _PANEL_DRAWERS[panel.kind](canvas, _panel_axes(fig, cell, panel), panel)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (closes it)."""
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as PNG atomically (closes it). Size: ``fig.get_size_inches() * dpi`` pixels."""
    path = Path(path)
    data = figure_png(fig, dpi)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return path
