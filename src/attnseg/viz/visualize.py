"""``attnseg visualize``: a model file (or run folder) and a case -> one figure; a run folder -> curves.

This module only glues: it loads the model and the case, prepares the image as training did
(normalisation and spacing from the model file's card, ``attnseg.models.card.read_model_card``),
runs the model once with gate hooks (:func:`attnseg.viz.figures.forward_with_attention`), decodes
the logits with the card's label scheme (``LabelScheme.decode``, the same as ``attnseg predict``),
picks the slice and draws :func:`attnseg.viz.figures.case_figure`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnseg.config import PreprocessConfig, from_dict
from attnseg.datasets import discover, load_case
from attnseg.datasets.dicom import discover_dicom_file
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError, DataError, ModelFileError
from attnseg.inference.predict import nonzero_bbox
from attnseg.io.dicom_series import is_dicom_file
from attnseg.io.images2d import is_image2d, load_image2d, load_mask2d
from attnseg.io.nifti import is_nifti, load_image, load_label
from attnseg.io.paths import strip_image_suffix
from attnseg.metrics import dice
from attnseg.metrics.evaluate import find_label_files
from attnseg.models import model_from_payload, read_model_card, read_model_file
from attnseg.training.report import CURVE_NAME, is_run_folder, plot_training_curves
from attnseg.transforms.preprocess import preprocess as preprocess_case
from attnseg.viz.figures import (
    VIEW_NAMES,
    SliceView,
    case_figure,
    figure_png,
    forward_with_attention,
    make_view,
    most_foreground_slice,
    save_figure,
    view_axis,
)
from attnseg.viz.gradcam import grad_cam, window_around

__all__ = [
    "CaseData",
    "ModelBundle",
    "VisualizeResult",
    "case_figure_maker",
    "load_case_data",
    "load_model_bundle",
    "prepare_image",
    "render_case",
    "visualize",
    "visualize_case",
]

# whole-volume forward above this many voxels is replaced by windows of DEFAULT_WINDOW (memory)
MAX_WHOLE_VOLUME_VOX = 160**3
DEFAULT_WINDOW = 128
MODEL_FILE_NAMES = ("model.pt", "checkpoints/best.pt", "checkpoints/last.pt")


@dataclass
class ModelBundle:
    """A loaded model and what the run knew about it (label scheme, preprocessing, patch size).
    ``label_scheme`` None: ``LabelScheme.default`` of the model's outputs."""

    model: nn.Module
    path: Path | None = None
    label_scheme: LabelScheme | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    patch_size: tuple[int, ...] | None = None
    channel_names: list[str] | None = None
    run_dir: Path | None = None


def load_model_bundle(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a model file, or the model of a run folder (``model.pt``, else ``checkpoints/best.pt``).

    Label scheme, preprocessing, patch size and channel names are the model file's card, read by the same
    :func:`attnseg.models.card.read_model_card` as ``attnseg predict`` and ``attnseg export``; a
    default patch size is dropped (small cases then run as one whole-volume forward).
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in MODEL_FILE_NAMES if (path / n).is_file()), None)
        if found is None:
            raise ModelFileError(
                f"{path}: no model file in this folder (looked for {', '.join(MODEL_FILE_NAMES)})"
            )
        path = found
    if path.suffix.lower() == ".onnx":
        raise ModelFileError(
            f"{path}: attention maps and Grad-CAM need the PyTorch model file (.pt) the ONNX file was "
            "exported from (they hook into the network's modules)"
        )
    payload = read_model_file(path)
    card = read_model_card(payload, path=path)
    model = model_from_payload(payload, path, map_location=device)
    patch = None if "patch_size" in card.defaulted else tuple(card.patch_size)
    run_dir = next((f for f in (path.parent, path.parent.parent) if (f / "config.yaml").is_file()), None)
    return ModelBundle(
        model=model,
        path=path,
        label_scheme=card.label_scheme,  # with its paint_order when the file records one
        preprocess=dataclasses.asdict(card.preprocess),
        patch_size=patch,
        channel_names=list(card.channel_names) if card.channel_names else None,
        run_dir=run_dir,
    )


@dataclass
class CaseData:
    """One case as arrays: image ``(C, *spatial)`` float32, label ``(*spatial)`` or None, geometry, names."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing_mm: tuple[float, ...]
    axcodes: tuple[str, ...] | None = None
    channel_names: list[str] | None = None
    class_names: dict[int, str] = field(default_factory=dict)


def _load_file(path: Path, label_path: Path | None) -> CaseData:

    if is_nifti(path):
        image, meta = load_image(path)
        label = None
        if label_path is not None:
            label, lmeta = load_label(label_path)
            if label.shape != meta.shape:
                raise DataError(
                    f"{label_path}: label has shape {label.shape}; the image {path} has {meta.shape}"
                )
        axcodes = meta.axcodes if len(meta.shape) == 3 else None
        return CaseData(strip_image_suffix(path.name), image, label, tuple(meta.spacing_mm), axcodes)
    if is_image2d(path):
        image, meta = load_image2d(path)
        label = None
        if label_path is not None:
            label, _ = load_mask2d(label_path)
            if label.shape != meta.shape:
                raise DataError(
                    f"{label_path}: mask has shape {label.shape}; the image {path} has {meta.shape}"
                )
        return CaseData(strip_image_suffix(path.name), image, label, tuple(meta.spacing_mm), None)
    raise DataError(f"{path}: not a NIfTI or 2D image file (.nii, .nii.gz, .png, .jpg, .tif)")


def _from_dataset(root: Path, case_id: str | None, layout: str, dataset=None) -> CaseData:
    dataset = dataset if dataset is not None else discover(root, layout)
    if case_id is None:
        case = dataset.cases[0]
    else:
        matches = [c for c in dataset.cases if c.case_id == case_id]
        if not matches:
            shown = ", ".join(dataset.case_ids[:5]) + (" ..." if len(dataset) > 5 else "")
            raise DataError(f"{root}: no case {case_id!r} in this dataset (cases: {shown})")
        case = matches[0]
    image, label, meta = load_case(case, dataset)
    axcodes = meta.axcodes if len(meta.shape) == 3 else None
    return CaseData(
        case.case_id,
        image,
        label,
        tuple(meta.spacing_mm),
        axcodes,
        list(dataset.channel_names) or None,
        {int(v): str(n) for n, v in dataset.labels.items()},
    )


def load_case_data(
    case: str | Path, *, case_id: str | None = None, label: str | Path | None = None, layout: str = "auto"
) -> CaseData:
    """A case from an image file (NIfTI or 2D; ``label`` optional), a dataset folder (``case_id``,
    default the first case; a folder of DICOM series is one, its SEG objects the labels), one
    file of a DICOM series, or one case's folder inside a dataset (e.g. a BraTS patient folder)."""
    path = Path(case)
    if path.is_file() and is_dicom_file(path):  # one file of a DICOM series: that series
        return _from_dataset(path.parent, None, "dicom", discover_dicom_file(path))
    if path.is_file():
        return _load_file(path, Path(label) if label is not None else None)
    if not path.is_dir():
        raise DataError(f"{path}: case not found (pass an image file, a dataset folder or a case folder)")
    try:
        return _from_dataset(path, case_id, layout)
    except (DataError, ConfigError) as first:
        try:  # a case folder: discover its parent and pick the case named like the folder
            return _from_dataset(path.parent, case_id or path.name, layout)
        except (DataError, ConfigError):
            raise first from None


def prepare_image(
    image: np.ndarray,
    label: np.ndarray | None,
    spacing_mm: Sequence[float],
    preprocess: Mapping[str, Any] | None = None,
    case_id: str = "?",
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    """Resample and normalise exactly as training did (:func:`attnseg.transforms.preprocess.preprocess`);
    ``preprocess`` is a ``PreprocessConfig`` as a dict (default: z-score inside the non-zero region)."""
    config = from_dict(PreprocessConfig, dict(preprocess or {}), "preprocess")
    classes = sorted(int(v) for v in np.unique(label)) if label is not None else None
    return preprocess_case(image, label, spacing_mm, config, classes=classes, case_id=case_id)


@dataclass
class VisualizeResult:
    """What was drawn: the PNG, the case and slice, the panel count and the case's Dice per class."""

    path: Path | None
    case_id: str
    view: str
    slice_index: int | None
    panels: int
    dice: dict[str, float] = field(default_factory=dict)
    figure: Any = None
    kind: str = "case"  # "case" or "curves"

    def describe(self) -> str:
        if self.kind == "curves":
            return f"wrote {self.path} (training curves of {self.case_id})"
        where = (
            f"{VIEW_NAMES.get(self.view, self.view)} slice {self.slice_index}"
            if self.slice_index is not None
            else "2D image"
        )
        text = f"wrote {self.path}: case {self.case_id}, {where}, {self.panels} panels"
        if self.dice:
            text += "; Dice " + ", ".join(f"{n} {d:.4f}" for n, d in self.dice.items())
        return text


def _select_channels(spec: Sequence[str | int] | None, names: Sequence[str]) -> list[int] | None:
    if not spec:
        return None
    out = []
    lower = [n.lower() for n in names]
    for item in spec:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            c = int(text)
            if not 0 <= c < len(names):
                raise ConfigError(
                    f"--channel {c}: the case has {len(names)} channel(s) (0..{len(names) - 1})"
                )
            out.append(c)
        elif text.lower() in lower:
            out.append(lower.index(text.lower()))
        else:
            raise ConfigError(f"--channel {text!r}: not a channel number or name ({', '.join(names)})")
    return out


def resolve_output_class(
    spec: str | int | None,
    scheme: LabelScheme | None,
    class_names: Mapping[int, str],
    out_channels: int,
) -> tuple[int, str]:
    """A class/region name, or a label value (softmax) / region number (sigmoid) -> (output channel, name).

    ``None``/``"auto"``: the first foreground class (channel 1), or channel 0 for sigmoid outputs.
    """
    kind = scheme.kind if scheme else ("labels" if out_channels > 1 else "regions")
    names = list(scheme.names) if scheme else []
    values = list(scheme.values) if scheme else []
    if kind == "regions":
        labels_of_channel = names if names else [f"output {i}" for i in range(out_channels)]
    else:
        if not values:
            values = list(range(out_channels))
        labels_of_channel = [
            class_names.get(v, names[i] if i < len(names) else f"label {v}") for i, v in enumerate(values)
        ]
    if spec is None or str(spec) == "auto":
        channel = 0 if kind == "regions" or out_channels == 1 else 1
        return channel, labels_of_channel[channel] if channel < len(
            labels_of_channel
        ) else f"output {channel}"
    text = str(spec).strip()
    lowered = [n.lower() for n in labels_of_channel]
    if text.lower() in lowered:
        return lowered.index(text.lower()), labels_of_channel[lowered.index(text.lower())]
    if text.isdigit():
        number = int(text)
        if kind == "regions":
            if 0 <= number < out_channels:
                return number, labels_of_channel[number]
        elif number in values:
            return values.index(number), labels_of_channel[values.index(number)]
    raise ConfigError(
        f"--gradcam {text!r}: pass one of {', '.join(labels_of_channel)}"
        + (
            " or a region number"
            if kind == "regions"
            else f" or a label value ({', '.join(map(str, values))})"
        )
    )


def _dice_per_target(
    pred: np.ndarray, truth: np.ndarray, class_names: Mapping[int, str], scheme: LabelScheme | None
) -> dict[str, float]:
    """Dice per region (region models: WT/TC/ET as label sets) or per label value present."""
    if scheme and scheme.kind == "regions":
        return {
            name: float(dice(np.isin(pred, values), np.isin(truth, values)))
            for name, values in scheme.region_map.items()
        }
    values = sorted((set(np.unique(truth).tolist()) | set(np.unique(pred).tolist())) - {0})
    return {class_names.get(int(v), f"label {v}"): float(dice(pred == v, truth == v)) for v in values}


@dataclass
class _Prepared:
    """A case ready for the network: normalised image ``(C, *spatial)``, label, spacing and how to run.

    ``region``: the voxels that go through the network (``work`` is the image cropped to it);
    ``slice_axis``: a 2D model runs slice by slice over a volume along this axis (else None).
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing_mm: tuple[float, ...]
    model_dims: int
    slice_axis: int | None
    patch_size: Sequence[int] | None
    region: tuple[slice, ...]
    work: np.ndarray

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.image.shape[1:]


@dataclass
class _Outputs:
    """The model's decoded prediction and gate maps on the whole grid (NaN outside the region)."""

    prediction: np.ndarray
    maps: dict[int, np.ndarray]
    out_channels: int


def _check_case(model: nn.Module, case_id: str, image: np.ndarray, view: str) -> int:
    """The model's number of spatial dimensions, after checking the case and view fit it."""
    in_channels = int(getattr(model, "in_channels", image.shape[0]))
    if image.shape[0] != in_channels:
        raise DataError(
            f"case {case_id}: image has {image.shape[0]} channel(s); the model expects {in_channels}"
        )
    model_dims = int(getattr(model, "spatial_dims", image.ndim - 1))
    if model_dims == 3 and image.ndim - 1 == 2:
        raise DataError(f"case {case_id} is a 2D image; the model is 3D (give it a volume)")
    if view not in VIEW_NAMES:
        raise ConfigError(f"--axis {view!r}: pass ax, co or sa")
    return model_dims


def _run_patch_size(
    patch_size: Sequence[int] | None, model_dims: int, spatial: tuple[int, ...]
) -> Sequence[int] | None:
    """Windows for the forward: the given patch if it fits the model, else whole-volume up to a size."""
    if patch_size is not None and len(patch_size) != model_dims:
        patch_size = None  # e.g. a 3D patch for a 2D model over slices: not meaningful
    if patch_size is None and model_dims == 3 and int(np.prod(spatial)) > MAX_WHOLE_VOLUME_VOX:
        patch_size = tuple(min(s, DEFAULT_WINDOW) for s in spatial)
    return patch_size


def _prepare_case(
    bundle: ModelBundle, case: CaseData, view: str, patch_size: Sequence[int] | None, prepared: bool
) -> _Prepared:
    """Normalise as training did (unless ``prepared``), check the case fits the model, choose how to run."""
    image, label, spacing = (
        (case.image, case.label, case.spacing_mm)
        if prepared
        else prepare_image(case.image, case.label, case.spacing_mm, bundle.preprocess, case.case_id)
    )
    model_dims = _check_case(bundle.model, case.case_id, image, view)
    case_dims = image.ndim - 1
    slice_axis = view_axis(view, case.axcodes) if (model_dims == 2 and case_dims == 3) else None
    patch = _run_patch_size(
        patch_size if patch_size is not None else bundle.patch_size, model_dims, image.shape[1:]
    )
    # like 'attnseg predict': with z-score inside the non-zero region, only the bounding box of the
    # non-zero voxels goes through the network; outside it the prediction is background and the
    # maps are NaN (not drawn), instead of the network's response to empty windows
    region: tuple[slice, ...] = tuple(slice(0, n) for n in image.shape[1:])
    if (bundle.preprocess or {}).get("normalization", "zscore_nonzero") == "zscore_nonzero":
        region = nonzero_bbox(image) or region
    work = np.ascontiguousarray(image[(slice(None), *region)])
    return _Prepared(image, label, spacing, model_dims, slice_axis, patch, region, work)


def _run_model(bundle: ModelBundle, prep: _Prepared, gates: Sequence[int] | None, overlap: float) -> _Outputs:
    """One forward with gate hooks over ``prep.work``, decoded with the bundle's label scheme."""
    out = forward_with_attention(
        bundle.model, prep.work, gates=gates, patch_size=prep.patch_size, overlap=overlap,
        slice_axis=prep.slice_axis,
    )  # fmt: skip
    pred = np.zeros(prep.spatial, dtype=np.int32)
    scheme = bundle.label_scheme or LabelScheme.default(out.logits.shape[0])
    pred[prep.region] = scheme.decode(out.logits)  # painted in the scheme's order, as predict paints
    maps = {}
    for k, m in out.maps.items():
        maps[k] = np.full(prep.spatial, np.nan, dtype=np.float32)
        maps[k][prep.region] = m
    return _Outputs(pred, maps, out.logits.shape[0])


def _class_names(case: CaseData, scheme: LabelScheme | None) -> dict[int, str]:
    """Foreground label value -> name: the dataset's names, else the label scheme's."""
    class_names = dict(case.class_names)
    if scheme and scheme.kind == "labels" and not class_names:
        class_names = dict(zip(scheme.values, scheme.names))
    return {v: n for v, n in class_names.items() if v != 0}


def _slice_view(case: CaseData, prep: _Prepared, pred: np.ndarray, view: str, index: int | None) -> SliceView:
    """The shown plane: ``index``, else the slice with the most truth (else predicted) foreground."""
    if prep.image.ndim - 1 == 3:
        axis = view_axis(view, case.axcodes)
        if index is None:
            for source in (prep.label, pred):
                if source is not None:
                    index = most_foreground_slice(source, axis)
                    if index is not None:
                        break
    return make_view(prep.spatial, prep.spacing_mm, view, index, case.axcodes)


def _gradcam_on_work(
    model: nn.Module, prep: _Prepared, work_pred: np.ndarray, slice_view: SliceView, channel: int,
    layer: str | None,
) -> tuple[np.ndarray, bool]:  # fmt: skip
    """Grad-CAM on the network's region (NaN where not computed) and whether it is one window only.

    A 2D model over a volume: the shown slice only. Windows smaller than the region: the window
    around the predicted foreground, on the shown slice. Else the whole region.
    """
    work = prep.work
    work_cam = np.full(work.shape[1:], np.nan, dtype=np.float32)  # NaN: not computed, not drawn
    local = None  # the shown slice in the cropped region's coordinates (None: outside it)
    if slice_view.axis is not None:
        r = prep.region[slice_view.axis]
        local = slice_view.index - r.start if r.start <= slice_view.index < r.stop else None
    if prep.slice_axis is not None:
        if local is not None:
            plane = np.take(work, local, axis=1 + prep.slice_axis)
            np.moveaxis(work_cam, prep.slice_axis, 0)[local] = grad_cam(model, plane, channel, layer=layer)
        return work_cam, False
    if prep.patch_size is not None and any(p < s for p, s in zip(prep.patch_size, work.shape[1:])):
        centre = [s // 2 for s in work.shape[1:]]
        fg = np.argwhere(work_pred != 0)
        if fg.size:
            centre = [int(c) for c in fg.mean(axis=0)]
        if local is not None:
            centre[slice_view.axis] = local
        window = window_around(work.shape[1:], prep.patch_size, centre)
        work_cam[window] = grad_cam(model, work[(slice(None), *window)], channel, layer=layer)
        return work_cam, True
    return grad_cam(model, work, channel, layer=layer), False


def _gradcam_panel(
    bundle: ModelBundle, prep: _Prepared, outputs: _Outputs, slice_view: SliceView,
    class_names: Mapping[int, str], spec: str | int, layer: str | None,
) -> tuple[np.ndarray, str]:  # fmt: skip
    """Grad-CAM of the class ``spec`` on the whole grid (NaN where not computed) and its title."""
    model = bundle.model
    channel, cam_name = resolve_output_class(spec, bundle.label_scheme, class_names, outputs.out_channels)
    layer_name = layer or f"decoder.{len(getattr(model, 'decoder', [None])) - 1}"
    cam_title = f"Grad-CAM: {cam_name} at {layer_name}"
    cam = np.full(prep.spatial, np.nan, dtype=np.float32)
    work_cam, one_window = _gradcam_on_work(
        model, prep, outputs.prediction[prep.region], slice_view, channel, layer
    )
    cam[prep.region] = work_cam
    return cam, cam_title + (" (one window)" if one_window else "")


def _gate_names(model: nn.Module, maps: Mapping[int, np.ndarray]) -> dict[int, str]:
    """``attention gate k (1/2^level res.)``: the resolution of the skip each gate weighs."""
    depth = len(getattr(model, "features", ())) or None
    gate_names = {}
    for k in maps:
        level = depth - 2 - k if depth else None
        gate_names[k] = f"attention gate {k}" + (f" (1/{2**level} res.)" if level is not None else "")
    return gate_names


def _default_title(case_id: str, prep: _Prepared, slice_view: SliceView, dice: Mapping[str, float]) -> str:
    spacing_text = " x ".join(f"{s:g}" for s in prep.spacing_mm)
    title = f"{case_id}  ·  {slice_view.name}  ·  voxel {spacing_text} mm"
    if dice:
        title += "  ·  Dice " + ", ".join(f"{n} {d:.3f}" for n, d in dice.items())
    if prep.model_dims == 2 and prep.image.ndim - 1 == 3:
        title += "  ·  2D model, slice by slice"
    return title


def render_case(
    bundle: ModelBundle,
    case: CaseData,
    *,
    view: str = "ax",
    index: int | None = None,
    gates: Sequence[int] | None = None,
    channels: Sequence[str | int] | None = None,
    gradcam: str | int | None = None,
    gradcam_layer: str | None = None,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    prepared: bool = False,
    title: str | None = None,
) -> VisualizeResult:
    """Run the model on one case and draw its figure (``result.figure``; nothing is written).

    ``gradcam``: add a Grad-CAM panel for this class (see :func:`resolve_output_class`; ``"auto"``
    for the first foreground class). ``prepared``: the image is already normalised.
    """
    prep = _prepare_case(bundle, case, view, patch_size, prepared)
    outputs = _run_model(bundle, prep, gates, overlap)
    class_names = _class_names(case, bundle.label_scheme)
    slice_view = _slice_view(case, prep, outputs.prediction, view, index)
    cam, cam_title = None, "Grad-CAM"
    if gradcam is not None:
        cam, cam_title = _gradcam_panel(
            bundle, prep, outputs, slice_view, class_names, gradcam, gradcam_layer
        )
    dice = (
        _dice_per_target(outputs.prediction, prep.label, class_names, bundle.label_scheme)
        if prep.label is not None
        else {}
    )
    names = case.channel_names or bundle.channel_names or [f"channel {c}" for c in range(prep.image.shape[0])]
    norm = (bundle.preprocess or {}).get("normalization", "zscore_nonzero")
    fig = case_figure(
        prep.image,
        spacing_mm=prep.spacing_mm,
        view=slice_view,
        label=prep.label,
        prediction=outputs.prediction,
        maps=outputs.maps,
        gradcam=cam,
        gradcam_title=cam_title,
        channels=_select_channels(channels, names),
        channel_names=names,
        class_names=class_names,
        gate_names=_gate_names(bundle.model, outputs.maps),
        title=title if title is not None else _default_title(case.case_id, prep, slice_view, dice),
        intensity_label="intensity (z-score)" if norm.startswith("zscore") else "intensity",
    )
    n_panels = sum(1 for ax in fig.axes if ax.get_label().startswith("panel:"))
    slice_index = slice_view.index if slice_view.axis is not None else None
    return VisualizeResult(None, case.case_id, view, slice_index, n_panels, dice, fig)


def visualize_case(
    model: str | Path | ModelBundle,
    case: str | Path | CaseData,
    out: str | Path,
    *,
    case_id: str | None = None,
    label: str | Path | None = None,
    layout: str = "auto",
    device: str = "cpu",
    dpi: int = 100,
    **options: Any,
) -> VisualizeResult:
    """Load ``model`` and ``case``, draw the figure (see :func:`render_case`) and write it as PNG."""
    bundle = model if isinstance(model, ModelBundle) else load_model_bundle(model, device)
    data = (
        case
        if isinstance(case, CaseData)
        else load_case_data(case, case_id=case_id, label=label, layout=layout)
    )
    result = render_case(bundle, data, **options)
    result.path = save_figure(result.figure, out, dpi=dpi)
    result.figure = None
    return result


def visualize(
    model: str | Path,
    case: str | Path | None = None,
    out: str | Path | None = None,
    **options: Any,
) -> VisualizeResult:
    """``attnseg visualize``: a run folder without a case -> its training curves
    (``RUN/training_curve.png`` by default: the file training keeps up to date, redrawn by the same
    :func:`attnseg.training.report.plot_training_curves`); a model (file or run folder) and a case ->
    the case figure (``<case id>_<axis>.png`` by default)."""
    model = Path(model)
    dpi = int(options.pop("dpi", 100))
    if case is None:
        if not is_run_folder(model):
            raise DataError(
                f"{model}: not a run folder (no metrics.jsonl / metrics.csv); to draw a case pass MODEL CASE"
            )
        path = plot_training_curves(model, Path(out) if out else model / CURVE_NAME, dpi=dpi)
        return VisualizeResult(path, model.name, "", None, 3, kind="curves")
    view = options.get("view", "ax")
    case_id = options.pop("case_id", None)
    label = options.pop("label", None)
    layout = options.pop("layout", "auto")
    device = options.pop("device", "cpu")
    bundle = load_model_bundle(model, device)
    data = load_case_data(case, case_id=case_id, label=label, layout=layout)
    if out is None:
        out = Path(f"{data.case_id}_{view}.png")
    return visualize_case(bundle, data, out, dpi=dpi, **options)


def case_figure_maker(
    data: str | Path | None,
    *,
    model: str | Path | ModelBundle | None = None,
    pred_dir: str | Path | None = None,
    layout: str = "auto",
    view: str = "ax",
    device: str = "cpu",
    dpi: int = 80,
):
    """A ``case_id -> PNG bytes | None`` callable for the report's example cases.

    With ``model``: the full figure (channels, truth, every gate's map, the model's prediction).
    Without: the first channel, the truth and the prediction read from ``pred_dir``. A case that
    cannot be drawn (missing file, other grid) gives None and the report says so.
    """
    if data is None:
        return None
    bundle = model if isinstance(model, ModelBundle) or model is None else load_model_bundle(model, device)
    if bundle is None and pred_dir is None:
        return None
    predictions: dict[str, Path] = {}
    if bundle is None:
        predictions = find_label_files(pred_dir)

    def draw(case_id: str) -> bytes | None:
        try:
            case = load_case_data(data, case_id=case_id, layout=layout)
            if bundle is not None:
                result = render_case(bundle, case, view=view)
                return figure_png(result.figure, dpi=dpi)
            if case_id not in predictions:
                return None

            path = predictions[case_id]
            pred = load_mask2d(path)[0] if is_image2d(path) else load_label(path)[0]
            image, label, spacing = prepare_image(case.image, case.label, case.spacing_mm, None, case_id)
            if pred.shape != image.shape[1:]:
                return None
            index = None
            if image.ndim == 4:
                axis = view_axis(view, case.axcodes)
                for source in (label, pred):
                    if source is not None and index is None:
                        index = most_foreground_slice(source, axis)
            slice_view = make_view(image.shape[1:], spacing, view, index, case.axcodes)
            fig = case_figure(
                image,
                spacing_mm=spacing,
                view=slice_view,
                label=label,
                prediction=pred,
                channels=[0],
                channel_names=case.channel_names,
                class_names={v: n for v, n in case.class_names.items() if v != 0},
                title=f"{case_id}  ·  {slice_view.name}",
                intensity_label="intensity (z-score)",
            )
            return figure_png(fig, dpi=dpi)
        except (DataError, ConfigError, ModelFileError, ValueError):
            return None

    return draw
