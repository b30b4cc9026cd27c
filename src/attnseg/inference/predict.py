"""Prediction to files: a model file and an input (dataset folder, case folder or file) -> label maps.

Pipeline per case: load the image (``attnseg.datasets.load_case``), preprocess it exactly as training
did (``attnseg.transforms.preprocess.preprocess``: optional resampling to the training spacing, then the
normalisation), sliding-window inference, logits resampled back to the file's grid when the spacing
was changed, then the model's label scheme decodes them (``LabelScheme``: argmax for classes, or
thresholds for regions painted back into one label map), with optional connected-component rules
in between, and an atomic write with the input's affine and header.

What the model file must tell (``InferenceSettings``) is its card, read by
:func:`attnseg.models.card.read_model_card` (the one reader predict, export, visualize and compare
share; its docstring lists the sources and their precedence): patch size, preprocessing, label
scheme, channel names, training flips. A ``.pt`` file and the ``.onnx`` exported from it give the
same settings.

Memory: the sliding window hands out its logits piece by piece as soon as no later window covers
them (``sliding_window_blocks``), split as coarsely as ``max_memory_gb`` (default: what the machine
has available) allows, less the image, its preprocessed copy and the label map; each piece is
decoded into the label map at once, so ``K`` full-volume float32 maps are never held (unless the
budget allows it, or the image was resampled for the network: then the logits are resampled back
as a whole). The plan chosen is logged per case.

Outputs: ``OUT/<case_id>.nii.gz`` (3D inputs; ``.png`` for 2D image inputs) and, with
``save_probabilities``, ``OUT/probabilities/<case_id>.nii.gz`` (float32, channels last on disk). The
probabilities are filled piece by piece into one ``(K, *spatial)`` float32 array held in memory and
written at the end of the case (gzip NIfTI stores the class axis slowest, so it cannot be streamed by
spatial slab): ``--save-probabilities`` costs ``K x volume x 4`` bytes.
A DICOM series (a folder of series, or one file of a series) is read by
``attnseg.io.dicom_series`` and predicted on its own grid; ``output_format`` chooses NIfTI, DICOM
SEG (``OUT/<case_id>.seg.dcm``, BINARY; FRACTIONAL probabilities in ``OUT/probabilities/``,
written by ``attnseg.io.dicom_seg``) or both. The default is what the input was.
A case whose outputs exist is skipped unless ``overwrite``. Outputs are named after the case ids,
which come from the names the input lists (never a symlink's target); a case found whose label map
is not on disk at the end is reported as failed, so a run never succeeds with fewer outputs than
cases. Nothing is ever written inside the input folder (for one input file: its own folder).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attnseg.config import PreprocessConfig, to_dict
from attnseg.datasets import Case, Dataset, discover, load_case
from attnseg.datasets.base import (
    channel_files,
    data_files,
    is_data_file,
    natural_key,
    spatial_dims_of,
    split_suffix,
)
from attnseg.datasets.brats import naming_of
from attnseg.datasets.dicom import discover_dicom_file, is_dicom_case, load_dicom_case
from attnseg.datasets.label_scheme import ATTNSEG_PAINT_RULE, LabelScheme
from attnseg.devices import auto_device_type, available_memory_bytes
from attnseg.errors import ConfigError, DataError
from attnseg.export.runtime import OnnxPredictor
from attnseg.inference.postprocess import (
    postprocess_components,
    probabilities_from_logits,
    rules_from_card,
)
from attnseg.inference.sliding_window import (
    Predictor,
    plan_accumulation,
    sliding_window_blocks,
    sliding_window_inference,
)
from attnseg.io.atomic import output_error
from attnseg.io.dicom_seg import write_seg
from attnseg.io.dicom_series import is_dicom_file
from attnseg.io.images2d import save_mask2d
from attnseg.io.nifti import channels_in_file, is_nifti, read_header, save_image
from attnseg.io.paths import is_inside
from attnseg.models.card import ModelCard, read_model_card
from attnseg.models.ensemble import EnsembleModel, ensemble_from_files, ensemble_members
from attnseg.models.model_file import model_from_payload, read_model_file
from attnseg.progress import progress as progress_lines
from attnseg.transforms.preprocess import preprocess, target_spacing

__all__ = [
    "CasePrediction",
    "InferenceSettings",
    "LoadedModel",
    "PredictOptions",
    "PredictReport",
    "find_cases",
    "component_rules",
    "ensemble_members",
    "load_ensemble",
    "load_for_inference",
    "nonzero_bbox",
    "predict_case",
    "predict_folder",
    "read_settings",
]


# --- settings -----------------------------------------------------------------------------------------
@dataclass
class InferenceSettings:
    """What inference needs to know about a model besides its weights (see the module docstring)."""

    spatial_dims: int
    in_channels: int
    out_channels: int
    patch_size: tuple[int, ...]
    preprocess: PreprocessConfig
    # what the output channels mean and how logits become a label map; None: LabelScheme.default
    label_scheme: LabelScheme | None = None
    channel_names: list[str] | None = None
    # the spatial axes the model saw mirrored in training (``augment.flip_axes`` when ``p_flip > 0``);
    # ``tta=True`` mirrors only these. None: not recorded (then ``tta=True`` means all 2**D flips)
    mirror_axes: tuple[int, ...] | None = None
    # connected-component rules chosen from out-of-fold predictions (the card's ``postprocessing``)
    postprocessing: dict[str, Any] | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label_scheme is None:
            self.label_scheme = LabelScheme.default(self.out_channels)

    @classmethod
    def from_card(cls, card: ModelCard) -> InferenceSettings:
        """The settings of a model card (``attnseg.models.card``)."""
        return cls(
            card.spatial_dims,
            card.in_channels,
            card.out_channels,
            card.patch_size,
            dataclasses.replace(card.preprocess),
            label_scheme=card.label_scheme,
            channel_names=list(card.channel_names) if card.channel_names else None,
            mirror_axes=card.mirror_axes,
            postprocessing=card.postprocessing,
            sources=dict(card.sources),
        )

    def describe(self) -> str:
        target = self.label_scheme.describe()
        spacing = self.preprocess.target_spacing_mm
        return (
            f"{self.spatial_dims}D, {self.in_channels} channel(s), {target}; patch {list(self.patch_size)}; "
            f"normalization {self.preprocess.normalization}"
            + (f", resampled to {list(spacing)} mm" if spacing else "")
        )


def read_settings(
    payload: Mapping[str, Any] | str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    use_run_folder: bool = True,
) -> InferenceSettings:
    """:class:`InferenceSettings` of a model file's payload (``.pt``), an ONNX file's metadata, or a
    model file path: the card :func:`attnseg.models.card.read_model_card` resolves."""
    return InferenceSettings.from_card(read_model_card(payload, path=path, use_run_folder=use_run_folder))


def _dataset_paint_order(dataset, scheme: LabelScheme, log) -> LabelScheme:
    """The model's label scheme, painting as the input dataset says (nnU-Net ``regions_class_order``)
    when it is a region scheme whose file records no order (trained before attnseg recorded it) and
    both name the same regions with the same labels; the choice is said once."""
    declared = dataset.info.get("region_paint_order")
    if scheme.kind != "regions" or scheme.paint_order or not declared:
        return scheme
    order = tuple((str(n), int(v)) for n, v in declared)
    ours = {n: sorted(v) for n, v in scheme.region_map.items()}
    theirs = {n: sorted(v) for n, v in (dataset.regions or {}).items()}
    if ours == theirs:
        if log:
            log(
                "note: the model file records no painting order for its regions; painting them as "
                f"{dataset.root}/dataset.json's regions_class_order says: "
                + ", ".join(f"{n} -> {v}" for n, v in order)
            )
        return scheme.with_paint_order(order)
    if log:
        log(
            f"note: {dataset.root}/dataset.json declares regions_class_order, but its regions differ from "
            f"the model's; regions are painted by {ATTNSEG_PAINT_RULE}"
        )
    return scheme


# --- the model ------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A predictor (torch module or ONNX session wrapper) and what inference needs to know about it."""

    predictor: Predictor
    settings: InferenceSettings
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


ModelSource = str | os.PathLike | torch.nn.Module | LoadedModel | Sequence[str | os.PathLike]


def _single(model: ModelSource) -> ModelSource:
    if isinstance(model, (list, tuple)):
        return model[0]
    if isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
        return Path(model) / "model.pt"
    return model


def load_ensemble(
    paths: Sequence[str | os.PathLike], device: torch.device, *, channels_last: bool = False
) -> LoadedModel:
    """Several ``.pt`` model files as one :class:`attnseg.models.ensemble.EnsembleModel` (the mean of
    their probabilities per window); their cards must agree on what inference reads
    (``attnseg.models.ensemble.ensemble_from_files``)."""
    ensemble, card = ensemble_from_files(paths, device)
    if channels_last:
        layout = torch.channels_last_3d if card.spatial_dims == 3 else torch.channels_last
        for member in ensemble.members:
            member.to(memory_format=layout)
    return LoadedModel(ensemble, InferenceSettings.from_card(card), Path(paths[0]), device)


def load_for_inference(
    model: ModelSource,
    device: str | torch.device = "cpu",
    *,
    channels_last: bool = False,
    threads: int | None = None,
) -> LoadedModel:
    """A model file (``.pt`` from training or ``save_model``, or ``.onnx`` from ``attnseg export``),
    an in-memory model built with ``attnseg.build_model`` (default settings), or an ensemble
    (several ``.pt`` files, or a cross-validation folder: ``ensemble_members``), ready to predict."""
    if isinstance(model, LoadedModel):
        return model
    device = torch.device(auto_device_type() if device == "auto" else device)
    members = ensemble_members(model)
    if members is not None:
        return load_ensemble(members, device, channels_last=channels_last)
    model = _single(model)
    if isinstance(model, torch.nn.Module):
        payload = {"model_config": to_dict(model.config)} if hasattr(model, "config") else {}
        module = model.to(device).eval()
        if channels_last:
            module = module.to(
                memory_format=torch.channels_last_3d
                if module.config.spatial_dims == 3
                else torch.channels_last
            )
        return LoadedModel(module, read_settings(payload), None, device)
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        predictor = OnnxPredictor(path, threads=threads)
        return LoadedModel(predictor, read_settings(predictor.metadata, path), path, torch.device("cpu"))

    payload = read_model_file(path)
    settings = read_settings(payload, path)
    module = model_from_payload(payload, path, map_location=device)
    if channels_last:
        module = module.to(
            memory_format=torch.channels_last_3d if settings.spatial_dims == 3 else torch.channels_last
        )
    return LoadedModel(module, settings, path, device)


# --- one case ---------------------------------------------------------------------------------------------
@dataclass
class PredictOptions:
    """How to predict. ``slice_axis``: the spatial axis a 2D model runs along over 3D volumes (default:
    the last axis). ``keep_largest``/``min_component_vox``: connected-component rules per class (label
    values) or per region (1-based region numbers), see ``postprocess_components``.
    ``crop_nonzero``: predict only inside the bounding box of the non-zero voxels (any channel) and
    call everything outside background, like nnU-Net; default (None): on when the normalisation is
    ``zscore_nonzero`` (skull-stripped MRI, where the box holds every voxel the statistics use, so
    the network input inside it is unchanged). ``card_postprocessing``: apply the component rules
    the model card records (chosen from out-of-fold predictions by ``attnseg train --fold all``)
    when neither ``keep_largest`` nor ``min_component_vox`` is given; given ones replace them."""

    overlap: float = 0.5
    batch_size: int = 2
    tta: bool | Sequence[int] = False
    autocast: bool = False
    channels_last: bool = False
    slice_axis: int | None = None
    threshold: float = 0.5
    keep_largest: bool | Sequence[int] = False
    min_component_vox: int | Mapping[int, int] = 0
    patch_size: Sequence[int] | None = None
    crop_nonzero: bool | None = None
    card_postprocessing: bool = True
    # memory budget of one prediction in GB (None: what the machine has available); the sliding
    # window splits its accumulators as coarsely as fits (``attnseg.inference.plan_accumulation``)
    max_memory_gb: float | None = None


@dataclass
class CasePrediction:
    """Label map ``(*spatial)`` on the input's grid, and the probabilities ``(K, *spatial)`` float32."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    seconds: float
    # how the sliding window accumulated (``AccumulationPlan.describe``), None when it did not run
    plan: str | None = None


def _resize(logits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    return F.interpolate(logits[None], size=tuple(shape), mode=mode, align_corners=False)[0]


def nonzero_bbox(image: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (slices) of the voxels where any channel is non-zero; None when all are zero."""
    mask = np.any(np.asarray(image) != 0, axis=0)
    region = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        region.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(region)


def _background_probabilities(settings: InferenceSettings, spatial: Sequence[int]) -> np.ndarray:
    """Probabilities of 'certainly background': class 0 = 1 (softmax), every region 0 (sigmoid)."""
    out = np.zeros((settings.out_channels, *spatial), dtype=np.float32)
    if settings.label_scheme.kind == "labels":
        out[0] = 1.0
    return out


def tta_axes(tta: bool | Sequence[int], settings: InferenceSettings) -> bool | tuple[int, ...]:
    """The mirror axes test-time augmentation uses. An explicit list is used as given. ``True``
    means the axes the model was flipped on in training when its file records them (like nnU-Net:
    mirroring an axis the model never saw mirrored can swap left/right- or front/back-specific
    classes, e.g. anterior/posterior hippocampus), else all ``2**D`` flips; a model trained
    without flips gets none."""
    if tta is True and settings.mirror_axes is not None:
        return settings.mirror_axes if settings.mirror_axes else False
    return tta


def _describe_rules(entry: Mapping[str, Any]) -> str:
    keep = entry.get("keep_largest") or []
    small = entry.get("min_component_vox") or {}
    parts = [f"keep the largest component of {', '.join(map(str, keep))}"] if keep else []
    parts += [f"drop components under {n} voxels of {t}" for t, n in small.items()]
    return "; ".join(parts) or "none (no rule improved the out-of-fold Dice)"


def component_rules(
    options: PredictOptions, settings: InferenceSettings
) -> tuple[bool | Sequence[int], int | Mapping[int, int]]:
    """``(keep_largest, min_voxels)`` for ``postprocess_components``: the options' own rules when
    they give any, else the model card's (``options.card_postprocessing``), else none."""
    if options.keep_largest is not False or options.min_component_vox:
        return options.keep_largest, options.min_component_vox
    if options.card_postprocessing and settings.postprocessing:
        return rules_from_card(settings.postprocessing)
    return False, 0


def predict_case(
    model: LoadedModel,
    image: np.ndarray,
    spacing_mm: Sequence[float] | None = None,
    options: PredictOptions | None = None,
    *,
    with_probabilities: bool = False,
    case_id: str = "?",
) -> CasePrediction:
    """Predict one image ``(C, *spatial)`` (raw intensities, file voxel order) -> label map on its grid."""
    options = options or PredictOptions()
    s = model.settings
    scheme = s.label_scheme
    start = time.perf_counter()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim < 3:
        raise DataError(f"case {case_id}: image has shape {image.shape}; expected (channels, *spatial)")
    if image.shape[0] != s.in_channels:
        raise DataError(
            f"case {case_id}: image has {image.shape[0]} channel(s); the model expects {s.in_channels}"
            + (f" ({', '.join(s.channel_names)})" if s.channel_names else "")
        )
    spatial = tuple(image.shape[1:])
    data_dims = len(spatial)
    slice_axis = None
    if s.spatial_dims == 2 and data_dims == 3:
        slice_axis = 2 if options.slice_axis is None else int(options.slice_axis)
    elif s.spatial_dims != data_dims:
        raise DataError(f"case {case_id}: a {s.spatial_dims}D model cannot predict a {data_dims}D image")
    spacing = tuple(float(v) for v in spacing_mm) if spacing_mm else (1.0,) * data_dims

    pre = s.preprocess
    if pre.target_spacing_mm is not None and len(pre.target_spacing_mm) == 1:
        # one value is isotropic, as training read it; a 2D model's two axes are the in-plane ones
        iso = target_spacing(pre.target_spacing_mm, s.spatial_dims)
        pre = dataclasses.replace(pre, target_spacing_mm=iso)
    if pre.target_spacing_mm is not None and len(pre.target_spacing_mm) != data_dims:
        if s.spatial_dims == 2 and data_dims == 3 and len(pre.target_spacing_mm) == 2:
            target = list(spacing)
            in_plane = [a for a in range(3) if a != slice_axis]
            for a, v in zip(in_plane, pre.target_spacing_mm):
                target[a] = float(v)
            pre = dataclasses.replace(pre, target_spacing_mm=tuple(target))
        else:
            raise DataError(
                f"case {case_id}: the model was trained at spacing {list(pre.target_spacing_mm)} mm; the "
                f"image has {data_dims} spatial axes"
            )
    crop = options.crop_nonzero if options.crop_nonzero is not None else pre.normalization == "zscore_nonzero"
    region = nonzero_bbox(image) if crop else tuple(slice(0, n) for n in spatial)
    if region is None:  # nothing but zeros: background everywhere, no network call
        labels = np.full(spatial, scheme.background, dtype=scheme.label_dtype)
        probabilities = _background_probabilities(s, spatial) if with_probabilities else None
        return CasePrediction(labels, probabilities, time.perf_counter() - start)
    cropped = image[(slice(None), *region)]
    work, _, _ = preprocess(np.ascontiguousarray(cropped), None, spacing, pre, case_id=case_id)

    patch = tuple(options.patch_size) if options.patch_size else s.patch_size
    if options.autocast and model.device.type == "mps":
        raise ConfigError("--bf16 on mps is not supported by attnseg yet (untested); drop --bf16")
    window = dict(
        slice_axis=slice_axis,
        autocast=options.autocast,
        device=model.device,
        channels_last=options.channels_last,
    )
    overlap, batch_size, tta = options.overlap, options.batch_size, tta_axes(options.tta, s)
    cropped_spatial = tuple(cropped.shape[1:])
    labels = np.full(spatial, scheme.background, dtype=scheme.label_dtype)
    probabilities = _background_probabilities(s, spatial) if with_probabilities else None
    if tuple(work.shape[1:]) != cropped_spatial:
        # resampled for the network: the logits are resampled back to the file's grid as a whole
        logits = sliding_window_inference(
            work, model.predictor, patch, overlap, batch_size, "gaussian", tta, **window
        )
        logits = _resize(logits, cropped_spatial)
        pieces: Iterable = [(tuple(slice(0, n) for n in cropped_spatial), logits)]
        plan = "accumulating the whole volume (resampled to the training spacing, then back)"
    else:
        budget = _accumulator_budget(options, image, work, patch, s, scheme, with_probabilities)
        chosen = plan_accumulation(
            cropped_spatial,
            patch,
            overlap,
            classes=s.out_channels,
            batch_size=batch_size,
            slice_axis=slice_axis,
            budget_bytes=budget,
        )
        pieces = sliding_window_blocks(
            work, model.predictor, patch, overlap, batch_size, "gaussian", tta, levels=chosen.levels, **window
        )
        plan = chosen.describe()

    keep_largest, min_voxels = component_rules(options, s)
    inside = labels[region]  # a view: pieces are written in place
    masks = (
        np.zeros((len(scheme.regions), *cropped_spatial), dtype=bool) if scheme.kind == "regions" else None
    )
    for whole in pieces:
        for piece, logits in _thin_slabs(*whole):
            if masks is not None:
                masks[(slice(None), *piece)] = scheme.region_masks(logits, threshold=options.threshold)
            else:
                inside[piece] = scheme.decode(logits)
            if probabilities is not None:
                where = tuple(slice(r.start + p.start, r.start + p.stop) for r, p in zip(region, piece))
                probabilities[(slice(None), *where)] = probabilities_from_logits(logits, scheme.activation)
        # a finished piece is a view of its accumulator: drop every reference before the next windows run,
        # or the piece stays alive (K x piece float32) until the next one is handed out
        whole = piece = logits = None
    if masks is not None:
        if keep_largest is not False or min_voxels:
            masks = postprocess_components(
                masks, keep_largest=keep_largest, min_voxels=min_voxels, channels_first=True
            )
        inside[...] = scheme.paint(masks)
    if scheme.kind == "labels" and (keep_largest is not False or min_voxels):
        labels = postprocess_components(labels, keep_largest=keep_largest, min_voxels=min_voxels)
    return CasePrediction(labels, probabilities, time.perf_counter() - start, plan)


def _thin_slabs(
    piece: tuple[slice, ...], logits: torch.Tensor, slab_bytes: int = 1 << 26
) -> Iterable[tuple[tuple[slice, ...], torch.Tensor]]:
    """A piece cut along its first axis into slabs (at least one row each) whose decoding temporaries
    stay under about ``slab_bytes`` (64 MB) whatever the piece and the class count: an int64 argmax (8
    bytes per voxel) or, with probabilities kept, a softmax of all K channels (4 K bytes per voxel)."""
    rows = piece[0].stop - piece[0].start
    per_row = int(np.prod([s.stop - s.start for s in piece[1:]], dtype=np.int64))
    per_voxel = max(8, 4 * int(logits.shape[0]))
    step = max(1, slab_bytes // max(per_row * per_voxel, 1))
    for first in range(0, rows, step):
        last = min(first + step, rows)
        region = (slice(piece[0].start + first, piece[0].start + last), *piece[1:])
        yield region, logits[:, first:last]


def _accumulator_budget(
    options: PredictOptions,
    image: np.ndarray,
    work: np.ndarray,
    patch: Sequence[int],
    settings: InferenceSettings,
    scheme: LabelScheme,
    with_probabilities: bool,
) -> int | None:
    """Bytes left for the sliding window's accumulators: the budget (``max_memory_gb``, else what the
    machine has available) less the arrays a prediction holds anyway: the image and its preprocessed
    copy, the label map (and region masks), the probabilities when they are kept, and a batch of
    windows in and out (twice, for the copy on the CPU)."""
    if options.max_memory_gb is not None:
        if options.max_memory_gb <= 0:
            raise ConfigError(f"max_memory_gb={options.max_memory_gb}: pass a positive number of GB")
        total = int(options.max_memory_gb * 1e9)
    else:
        total = available_memory_bytes()
        if total is None:
            return None
    voxels = int(np.prod(image.shape[1:]))
    window = int(np.prod(patch)) * options.batch_size * 4
    fixed = (
        image.nbytes
        + work.nbytes
        + voxels * np.dtype(scheme.label_dtype).itemsize
        + (voxels * len(scheme.regions) if scheme.kind == "regions" else 0)
        + (voxels * settings.out_channels * 4 if with_probabilities else 0)
        + window * (settings.in_channels + 2 * settings.out_channels)
    )
    return max(total - fixed, 0)


# --- finding the cases of an input ----------------------------------------------------------------------
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _files_dataset(root: Path, cases: list, spatial_dims: int):

    return Dataset(root, "files", cases, [], {}, None, spatial_dims)


def _group_files(files: list[Path], folder: Path, in_channels: int):
    """Plain files -> cases: nnU-Net ``<id>_0000`` groups, else one case per file, or one case of
    ``in_channels`` single-channel files (a case folder) when that is exactly what the folder holds."""
    stems = [split_suffix(f.name)[0] for f in files]
    matches = [_CHANNEL_SUFFIX.match(s) for s in stems]
    if files and all(matches):
        groups: dict[str, list[tuple[int, Path]]] = {}
        for m, f in zip(matches, files):
            groups.setdefault(m["case"], []).append((int(m["channel"]), f))
        return [
            Case(cid, [f for _, f in sorted(items)], None, {})
            for cid, items in sorted(groups.items(), key=lambda kv: natural_key(kv[0]))
        ]
    if in_channels > 1 and len(files) == in_channels:
        if all(is_nifti(f) and channels_in_file(read_header(f)) == 1 for f in files):
            return [Case(folder.name, files, None, {"case_folder": True})]
    return [Case(stem, [f], None, {}) for stem, f in zip(stems, files)]


def find_cases(input_path: str | os.PathLike, in_channels: int = 1):
    """The cases of an input: a dataset folder (any layout ``attnseg.datasets.discover`` knows, a
    folder of DICOM series among them), a case folder (BraTS-named files, or one file per channel),
    a folder of image files, one file, or one DICOM file (the series it belongs to, from its folder).

    Returns ``(dataset, input_folder)``: labels are dropped (prediction reads images only) and
    ``input_folder`` is what must not receive outputs: the folder given, or for one file the file
    itself (a folder next to it may hold the predictions; the file's own folder may not, see
    ``predict_folder``). Case ids come from the names given, never from a symlink's target.
    """
    path = Path(input_path).expanduser()
    if path.is_file() and is_dicom_file(path):  # one file of a series: that series, from its folder
        dataset = discover_dicom_file(path)
        for case in dataset.cases:
            case.label = None
        return dataset, path.parent
    if path.is_file():
        if not is_data_file(path):
            raise DataError(f"{path}: not a supported image file (NIfTI, DICOM, PNG, JPEG, TIFF, BMP)")
        stem, suffix = split_suffix(path.name)
        m = _CHANNEL_SUFFIX.match(stem)
        if m:  # nnU-Net naming: gather the case's other channels next to it
            siblings = channel_files(path.parent, m["case"], suffix)
            case = Case(m["case"], siblings, None, {})
        else:
            case = Case(stem, [path], None, {})
        return _files_dataset(path.parent, [case], spatial_dims_of(path)), path
    if not path.is_dir():
        raise DataError(
            f"{path}: input not found (expected a dataset folder, a case folder or an image file)"
        )
    try:
        dataset = discover(path)
    except (DataError, ConfigError) as first:
        dataset = None
        reason = first
    if dataset is not None:
        for case in dataset.cases:
            case.label = None
        return dataset, path

    if naming_of(path):
        try:
            parent = discover(path.parent, "brats")
        except (DataError, ConfigError):
            parent = None
        if parent is not None:
            mine = [c for c in parent.cases if c.images and c.images[0].parent == path]
            if mine:
                for case in mine:
                    case.label = None
                parent.cases = mine
                return parent, path
    files = data_files(path)
    files = [
        f for f in files if not re.search(r"(^|[_-])(seg|label|labels|mask)$", split_suffix(f.name)[0], re.I)
    ]
    if not files:
        raise DataError(f"{path}: no image files and no dataset layout found ({reason})")
    cases = _group_files(files, path, in_channels)
    return _files_dataset(path, cases, spatial_dims_of(files[0])), path


# --- a folder ---------------------------------------------------------------------------------------------
@dataclass
class PredictReport:
    predicted: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    settings: InferenceSettings | None = None


def _refused_output(out: Path, input_folder: Path, cases: list) -> str | None:
    """Why ``out`` may not receive predictions, or None: nothing is written into the input data.

    Refused: ``out`` inside the input folder, and ``out`` inside a folder that holds an input image
    (by the name given or, for a symlink, where it leads). A single file is its own input folder:
    ``predict model.pt scan.nii.gz out`` may write ``out/`` next to the scan, never the scan's folder.
    """
    if is_inside(out, input_folder):
        return (
            f"{out}: is inside the input folder {input_folder}; predictions are never written into the "
            "input data, choose another output folder"
        )
    single_file = input_folder.is_file()
    target = out.resolve()
    folders: dict[Path, Path] = {}  # folder holding an input image (resolved) -> that image
    for case in cases:
        for image in case.images:
            folders.setdefault(image.parent.resolve(), image)
            folders.setdefault(image.resolve().parent, image)
    for folder, image in folders.items():
        if target == folder or (not single_file and folder in target.parents):
            return f"{out}: holds input images ({image}); choose another output folder"
    return None


def output_paths(out: Path, case_id: str, spatial_dims: int) -> tuple[Path, Path]:
    """Label map and probability file names of a case."""
    safe = case_id.replace(os.sep, "_").replace("/", "_")
    label = out / (f"{safe}.png" if spatial_dims == 2 else f"{safe}.nii.gz")
    return label, out / "probabilities" / f"{safe}.nii.gz"


OUTPUT_FORMATS = ("nifti", "dicom-seg", "both")


def seg_paths(out: Path, case_id: str) -> tuple[Path, Path]:
    """DICOM SEG file names of a case: the BINARY label SEG and the FRACTIONAL probability SEG."""
    safe = case_id.replace(os.sep, "_").replace("/", "_")
    return out / f"{safe}.seg.dcm", out / "probabilities" / f"{safe}.seg.dcm"


def _case_outputs(
    out: Path, case, spatial_dims: int, output_format: str, save_probabilities: bool
) -> list[Path]:
    """Every file predict writes for ``case`` in ``output_format`` (what 'already predicted' means)."""
    label, prob = output_paths(out, case.case_id, spatial_dims)
    files = []
    if output_format in ("nifti", "both"):
        files += [label, prob] if save_probabilities else [label]
    if output_format in ("dicom-seg", "both"):
        seg, prob_seg = seg_paths(out, case.case_id)
        files += [seg, prob_seg] if save_probabilities else [seg]
    return files


def _output_format(requested: str | None, case) -> str:
    """``requested``, or what the input was: DICOM in, DICOM SEG out; anything else, NIfTI."""
    if requested is None:
        return "dicom-seg" if is_dicom_case(case) else "nifti"
    if requested not in OUTPUT_FORMATS:
        raise ConfigError(f"output format {requested!r}: pass one of {', '.join(OUTPUT_FORMATS)}")
    if requested != "nifti" and not is_dicom_case(case):
        raise DataError(
            f"case {case.case_id}: a DICOM SEG needs a DICOM source series; the input is {case.images[0].name}"
        )
    return requested


def _write_segs(out: Path, case, volume, prediction: CasePrediction, scheme: LabelScheme) -> list[Path]:
    """The prediction as DICOM SEG on its source series: one segment per class or region (BINARY),
    and the probabilities of the same channels (FRACTIONAL) when they were computed."""
    from attnseg import __version__

    seg_path, prob_path = seg_paths(out, case.case_id)
    names = scheme.channel_names
    masks = scheme.masks_from_labels(prediction.labels)
    written = [write_seg(seg_path, masks, volume, names, software_version=__version__)]
    if prediction.probabilities is not None:
        scored = prediction.probabilities if scheme.kind == "regions" else prediction.probabilities[1:]
        prob_path.parent.mkdir(parents=True, exist_ok=True)
        written.append(
            write_seg(
                prob_path,
                scored,
                volume,
                names,
                fractional=True,
                series_description="attnseg probabilities",
                software_version=__version__,
            )
        )
    return written


def predict_folder(
    model: ModelSource,
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    save_probabilities: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    case_ids: Iterable[str] | None = None,
    output_format: str | None = None,
) -> PredictReport:
    """Predict every case of ``input_path`` into ``out`` (see the module docstring).

    ``output_format``: ``nifti``, ``dicom-seg`` (a DICOM input only: ``OUT/<case>.seg.dcm``, with
    ``save_probabilities`` also ``OUT/probabilities/<case>.seg.dcm``) or ``both``; None: what the
    input was (DICOM SEG for a DICOM series, else NIfTI).
    """
    options = options or PredictOptions()
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"output format {output_format!r}: pass one of {', '.join(OUTPUT_FORMATS)}")
    started = time.perf_counter()
    out = Path(out).expanduser()
    loaded = load_for_inference(model, device, channels_last=options.channels_last)
    dataset, input_folder = find_cases(input_path, loaded.settings.in_channels)
    refused = _refused_output(out, input_folder, dataset.cases)
    if refused:
        raise DataError(refused)
    cases = dataset.cases
    if case_ids is not None:
        wanted = set(case_ids)
        cases = [c for c in cases if c.case_id in wanted]
    found = list(cases)
    settings = loaded.settings
    binary_output = settings.label_scheme.kind == "labels" and max(settings.label_scheme.values) <= 1
    _check_channel_names(dataset, loaded.settings, log)
    scheme = _dataset_paint_order(dataset, settings.label_scheme, log)
    if scheme != settings.label_scheme:
        loaded = replace(loaded, settings=replace(settings, label_scheme=scheme))
    if log:
        defaults = [k for k, v in loaded.settings.sources.items() if str(v).startswith("default")]
        if defaults:
            log(
                f"note: the model file does not say {', '.join(defaults)}; using defaults "
                f"({loaded.settings.describe()})"
            )
    if log and isinstance(loaded.predictor, EnsembleModel):
        log(
            f"ensemble of {len(loaded.predictor.members)} models: their {scheme.activation} outputs are "
            "averaged per window"
        )
    if log and options.card_postprocessing and loaded.settings.postprocessing:
        rules = component_rules(options, loaded.settings)
        if (options.keep_largest, options.min_component_vox) == (False, 0):
            log(f"postprocessing from the model card: {_describe_rules(loaded.settings.postprocessing)}")
        else:
            log(f"postprocessing as given (keep_largest={rules[0]}, min_component_vox={rules[1]}), "
                "not the model card's")  # fmt: skip
    if log and options.tta is True:
        axes = tta_axes(True, loaded.settings)
        if axes is True:
            log("test-time augmentation: all 2^D mirrors (the model file does not record its training flips)")
        elif axes:
            log(f"test-time augmentation: mirroring axes {list(axes)}, those flipped in training")
        else:
            log(
                "test-time augmentation: none (the model was trained without flips; choose axes with --tta-axes)"
            )
    report = PredictReport(settings=loaded.settings)
    _check_writable(out)
    # outputs are named by case id: cases sharing a name would overwrite (or skip) each other
    by_output: dict[Path, list] = {}
    for case in cases:
        by_output.setdefault(output_paths(out, case.case_id, dataset.spatial_dims)[0], []).append(case)
    colliding = [group for group in by_output.values() if len(group) > 1]
    for group in colliding:
        inputs = "; ".join(", ".join(str(p) for p in c.images) for c in group)
        for case in group:
            message = (
                f"{len(group)} inputs would be written to the same output file "
                f"{output_paths(out, case.case_id, dataset.spatial_dims)[0].name} ({inputs}); "
                "give them distinct case names"
            )
            report.failed.append((case.case_id, message))
            if log:
                log(f"failed: {case.case_id}: {message}")
    skip = {id(c) for group in colliding for c in group}
    cases = [c for c in cases if id(c) not in skip]
    iterator: Iterable = cases
    if progress:
        iterator = progress_lines(cases, desc="predict", unit="case")
    last_plan = None  # the accumulation plan is said when it changes from case to case
    for case in iterator:
        label_path, prob_path = output_paths(out, case.case_id, dataset.spatial_dims)
        try:
            case_format = _output_format(output_format, case)
        except DataError as exc:
            report.failed.append((case.case_id, str(exc)))
            if log:
                log(f"failed: {case.case_id}: {exc}")
            continue
        expected = _case_outputs(out, case, dataset.spatial_dims, case_format, save_probabilities)
        if all(p.is_file() for p in expected) and not overwrite:
            report.skipped.append(case.case_id)
            continue
        volume = None
        try:
            if is_dicom_case(case):
                volume, _ = load_dicom_case(case)
                image, meta = volume.image, volume.meta
            else:
                image, _, meta = load_case(case, dataset)
            prediction = predict_case(
                loaded,
                image,
                meta.spacing_mm,
                options,
                with_probabilities=save_probabilities,
                case_id=case.case_id,
            )
        except DataError as exc:
            report.failed.append((case.case_id, str(exc)))
            if log:
                log(f"failed: {case.case_id}: {exc}")
            continue
        if log and prediction.plan and prediction.plan != last_plan:
            log(f"{case.case_id}: {prediction.plan}")
            last_plan = prediction.plan
        out.mkdir(parents=True, exist_ok=True)
        if case_format in ("dicom-seg", "both"):
            try:
                report.written.extend(
                    _write_segs(out, case, volume, prediction, loaded.settings.label_scheme)
                )
            except DataError as exc:  # a source highdicom cannot build a SEG on: this case fails
                report.failed.append((case.case_id, str(exc)))
                if log:
                    log(f"failed: {case.case_id}: {exc}")
                continue
        if case_format in ("nifti", "both"):
            if dataset.spatial_dims == 2 and meta.header is None:
                # a binary model's masks are written 0/255 (visible in any viewer); a multi-class model's
                # as class indices, so a case that happens to hold only class 1 is not written as 255
                save_mask2d(label_path, prediction.labels, binary_as_255=binary_output)
            else:
                save_image(label_path, prediction.labels, meta)
            report.written.append(label_path)
            if save_probabilities and prediction.probabilities is not None:
                save_image(prob_path, prediction.probabilities, meta, dtype=np.float32)
                report.written.append(prob_path)
        report.predicted.append(case.case_id)
    formats = {id(c): _output_format_or_none(output_format, c) for c in found}
    for case in _unaccounted(found, report, out, dataset.spatial_dims, formats):
        expected = _first_output(out, case, dataset.spatial_dims, formats[id(case)])
        message = f"{expected} was not written (and no error was raised)"
        report.failed.append((case.case_id, message))
        if log:
            log(f"failed: {case.case_id}: {message}")
    report.seconds = time.perf_counter() - started
    return report


def _output_format_or_none(requested: str | None, case) -> str | None:
    try:
        return _output_format(requested, case)
    except (DataError, ConfigError):
        return None


def _first_output(out: Path, case, spatial_dims: int, output_format: str | None) -> Path:
    """The label map (NIfTI/PNG) or, for SEG-only output, the label SEG of a case."""
    if output_format == "dicom-seg":
        return seg_paths(out, case.case_id)[0]
    return output_paths(out, case.case_id, spatial_dims)[0]


def _unaccounted(found: list, report: PredictReport, out: Path, spatial_dims: int, formats: dict) -> list:
    """Cases found that neither failed nor have their label map in ``out``: predict never ends
    successfully with fewer outputs than cases (one skipped as already predicted has its file)."""
    failed = {case_id for case_id, _ in report.failed}
    return [
        c
        for c in found
        if c.case_id not in failed and not _first_output(out, c, spatial_dims, formats.get(id(c))).is_file()
    ]


def _check_writable(out: Path) -> None:
    """Fail before any prediction when ``out`` cannot be created or written (read-only, no permission)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise output_error(out, exc) from exc


def _check_channel_names(dataset, settings: InferenceSettings, log: Callable[[str], None] | None) -> None:
    """Warn when the data's channel names differ from the training data's (same count, other names)."""
    if not log or not settings.channel_names or not dataset.channel_names:
        return
    ours = [n.lower() for n in dataset.channel_names]
    theirs = [n.lower() for n in settings.channel_names]
    if ours != theirs:
        log(
            f"warning: the input's channels are {dataset.channel_names}, the model was trained on "
            f"{settings.channel_names} (in that order); check the channel order"
        )
