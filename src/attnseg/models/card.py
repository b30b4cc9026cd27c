"""The model card: what a model file knows besides its weights, read in one place.

A card holds the architecture (``model_config``), the label scheme (``label_scheme``, stored under
the key ``target`` as ``LabelScheme.to_dict()``: kind, values, names, regions and, for regions, an
optional ``paint_order``; see :mod:`attnseg.datasets.label_scheme`), the training patch size (``patch_size``, voxels), the preprocessing
(``preprocess``: ``normalization``, ``clip_percentiles``, ``target_spacing_mm``), the input channel
names, the spatial axes mirrored in training (``mirror_axes``; None: not recorded), the
connected-component rules chosen from out-of-fold predictions (``postprocessing``: ``{"keep_largest":
[targets], "min_component_vox": {target: voxels}}``, targets as in ``attnseg.inference.postprocess``;
written by ``attnseg train --fold all``, applied by predict; None: none chosen) and the attnseg
version that wrote the file. Training writes it at the top level of ``model.pt`` (``training_card``),
``attnseg export`` copies it into the ONNX metadata (``ModelCard.to_dict``), and predict, export,
visualize and compare all read it with :func:`read_model_card`, like nnU-Net's model folder.

Sources, looked up in this order, later wins (each value remembers where it came from in
``ModelCard.sources``):

1. defaults: patch ``128^3`` (3D) or ``256^2`` (2D); z-score inside the non-zero region; no
   resampling; classes ``0..K-1``; training flips not known;
2. a run folder's ``config.yaml`` next to the file (``RUN/model.pt``) or one level up
   (``RUN/checkpoints/best.pt``): ``data.patch_size``, ``preprocess``, ``augment`` flips;
3. the payload's ``run_config`` (training checkpoints), same keys;
4. the payload's top-level card keys (``target``, ``patch_size``, ``preprocess``, ``channel_names``,
   ``mirror_axes``): ``model.pt`` and the ONNX metadata;
5. the payload's ``preprocessing`` block, an older explicit form: ``normalization``,
   ``clip_percentiles``, ``target_spacing_mm`` (or ``spacing_mm``) merged key by key into the
   preprocessing, ``patch_size``, ``labels`` (name -> value), ``regions`` (name -> values),
   ``target``, ``channel_names``.

A file that carries its whole card gives the same card in its run folder and copied away from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnseg.config import PreprocessConfig, from_dict, load_yaml, to_dict, training_mirror_axes
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError, ModelFileError
from attnseg.models.model_file import read_model_file

__all__ = [
    "CARD_KEYS",
    "DEFAULT_PATCH_VOX",
    "ONNX_METADATA_KEY",
    "ModelCard",
    "onnx_metadata_of",
    "read_model_card",
    "read_onnx_metadata",
    "training_card",
]

DEFAULT_PATCH_VOX = {2: (256, 256), 3: (128, 128, 128)}
CARD_KEYS = ("target", "patch_size", "preprocess", "channel_names", "mirror_axes", "postprocessing")
ONNX_METADATA_KEY = "attnseg"
ONNX_FORMAT = "attnseg.onnx"


@dataclass(frozen=True)
class ModelCard:
    """Everything inference needs besides the weights (see the module docstring).

    ``sources`` maps each field to where its value came from (``"model file"``, ``"ONNX metadata"``,
    ``"run_config"``, a ``config.yaml`` path, ``"preprocessing"``, or ``"default ..."``); it is not
    part of equality, so a file read in and away from its run folder gives equal cards.
    """

    model_config: dict[str, Any]
    label_scheme: LabelScheme
    patch_size: tuple[int, ...]
    preprocess: PreprocessConfig
    channel_names: tuple[str, ...] | None = None
    mirror_axes: tuple[int, ...] | None = None
    postprocessing: dict[str, Any] | None = None
    version: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def spatial_dims(self) -> int:
        return int(self.model_config.get("spatial_dims", 3))

    @property
    def in_channels(self) -> int:
        return int(self.model_config.get("in_channels", 1))

    @property
    def out_channels(self) -> int:
        return int(self.model_config.get("out_channels", 2))

    @property
    def spacing_mm(self) -> tuple[float, ...] | None:
        """The voxel size (mm) training resampled to; None: the files' own."""
        return self.preprocess.target_spacing_mm

    @property
    def defaulted(self) -> tuple[str, ...]:
        """The card fields the file did not record (filled with defaults)."""
        return tuple(k for k, v in self.sources.items() if str(v).startswith("default"))

    def to_dict(self) -> dict[str, Any]:
        """The card as plain data: the keys training writes into ``model.pt`` and export into the
        ONNX metadata (``defaulted`` lists the fields that are defaults, so a reader says so too)."""
        spacing = self.spacing_mm
        card = {
            "target": self.label_scheme.to_dict(),
            "patch_size": list(self.patch_size),
            "preprocess": to_dict(self.preprocess),
            "spacing_mm": [float(s) for s in spacing] if spacing else None,
            "channel_names": list(self.channel_names) if self.channel_names else None,
            "mirror_axes": list(self.mirror_axes) if self.mirror_axes is not None else None,
        }
        if self.postprocessing is not None:
            card["postprocessing"] = self.postprocessing
        if self.defaulted:
            card["defaulted"] = list(self.defaulted)
        return card


# --- ONNX metadata -------------------------------------------------------------------------------------
def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``attnseg`` metadata of an exported model (the card plus model config, exporter, ...)."""
    import onnx  # lazy: every predict reads cards, only .onnx files need onnx (start-up time)

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: ONNX model file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    if not proto.graph.node:  # protobuf parses an empty file (and some junk) as an empty model
        raise ModelFileError(
            f"{path}: not an ONNX model (no graph; the file has {path.stat().st_size} bytes)"
        )
    return onnx_metadata_of(proto, str(path))


def onnx_metadata_of(proto, where: str = "model") -> dict[str, Any]:
    """The ``attnseg`` metadata entry of a loaded ONNX model proto, as a dict."""
    for prop in proto.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            try:
                meta = json.loads(prop.value)
            except json.JSONDecodeError as exc:
                raise ModelFileError(
                    f"{where}: its '{ONNX_METADATA_KEY}' metadata is not valid JSON ({exc})"
                ) from None
            if not isinstance(meta, dict) or "model_config" not in meta:
                raise ModelFileError(f"{where}: its '{ONNX_METADATA_KEY}' metadata has no model_config")
            return meta
    raise ModelFileError(
        f"{where}: no '{ONNX_METADATA_KEY}' metadata; export it with `attnseg export` so that predict "
        "knows the patch size, labels and pre-processing"
    )


# --- the sources ---------------------------------------------------------------------------------------
def _run_folder_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The ``config.yaml`` of the run folder holding ``path`` (next to it or one level up)."""
    for folder in (path.parent, path.parent.parent):
        candidate = folder / "config.yaml"
        if candidate.is_file():
            try:
                return load_yaml(candidate), str(candidate)
            except ConfigError:
                return None, None
    return None, None


def _from_run_config(run: Mapping[str, Any]) -> dict[str, Any]:
    data = run.get("data") if isinstance(run.get("data"), Mapping) else {}
    return {
        "patch_size": data.get("patch_size"),
        "preprocess": run.get("preprocess"),
        "mirror_axes": training_mirror_axes(run),
    }


def _from_preprocessing(explicit: Mapping[str, Any], preprocess: Mapping[str, Any] | None) -> dict[str, Any]:
    """The older explicit ``preprocessing`` block -> card entries (preprocess merged key by key)."""
    pre = dict(preprocess or {})
    for key in ("normalization", "clip_percentiles", "target_spacing_mm"):
        if explicit.get(key) is not None:
            pre[key] = explicit[key]
    if explicit.get("spacing_mm") is not None and explicit.get("target_spacing_mm") is None:
        pre["target_spacing_mm"] = explicit["spacing_mm"]
    entries: dict[str, Any] = {
        "preprocess": pre or None,
        "patch_size": explicit.get("patch_size"),
        "channel_names": explicit.get("channel_names"),
    }
    if explicit.get("target") is not None:
        entries["target"] = explicit["target"]
    elif explicit.get("regions"):
        regions = {str(k): [int(v) for v in vs] for k, vs in dict(explicit["regions"]).items()}
        entries["target"] = {
            "kind": "regions",
            "values": sorted({0, *(v for vs in regions.values() for v in vs)}),
            "names": list(regions),
            "regions": list(regions.values()),
        }
    elif explicit.get("labels"):
        by_value = sorted(dict(explicit["labels"]).items(), key=lambda kv: int(kv[1]))
        entries["target"] = {
            "kind": "labels",
            "values": [int(v) for _, v in by_value],
            "names": [str(n) for n, _ in by_value],
        }
    return entries


def _label_scheme(target: Mapping[str, Any] | None, out_channels: int, where: str) -> LabelScheme:
    """The card's ``target`` entry as a :class:`LabelScheme`, checked against the model's outputs;
    none recorded: ``LabelScheme.default(out_channels)``."""
    if target is None:
        return LabelScheme.default(out_channels)
    if not isinstance(target, Mapping):
        raise ModelFileError(f"{where}: target is {type(target).__name__}; expected a label scheme mapping")
    try:
        scheme = LabelScheme.from_dict(target)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: {exc}") from None
    if scheme.out_channels != out_channels:
        declared = (
            f"regions {list(scheme.names)}"
            if scheme.kind == "regions"
            else f"label values {list(scheme.values)}"
        )
        raise ModelFileError(
            f"{where}: target declares {declared}; the model has {out_channels} output channel(s)"
        )
    return scheme


def _postprocessing(entry: Any, where: str) -> dict[str, Any] | None:
    """The card's ``postprocessing`` entry, normalised: ``keep_largest`` a sorted list of targets,
    ``min_component_vox`` target (str, as JSON keys are) -> voxels; None when absent."""
    if entry is None:
        return None
    try:
        keep = sorted({int(t) for t in entry.get("keep_largest") or ()})
        small = {str(int(t)): int(n) for t, n in dict(entry.get("min_component_vox") or {}).items()}
    except (AttributeError, TypeError, ValueError):
        raise ModelFileError(
            f"{where}: postprocessing is {entry!r}; expected {{'keep_largest': [targets], "
            "'min_component_vox': {target: voxels}}"
        ) from None
    return {"keep_largest": keep, "min_component_vox": small}


def _payload(source: Any, path: str | os.PathLike | None) -> tuple[Mapping[str, Any], Path | None]:
    if isinstance(source, Mapping):
        return source, Path(path) if path is not None else None

    file = Path(source)
    if file.suffix.lower() == ".onnx":
        return read_onnx_metadata(file), file
    return read_model_file(file), file


# --- the reader ----------------------------------------------------------------------------------------
def read_model_card(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    path: str | os.PathLike | None = None,
    use_run_folder: bool = True,
) -> ModelCard:
    """The card of a model file (``.pt`` or ``.onnx`` path), a model file's payload or an ONNX file's
    metadata (then ``path`` says where it lies, for the run folder and for messages).

    Every source is resolved here once, in the order of the module docstring; ``use_run_folder=False``
    skips the run folder's ``config.yaml``. Settings that contradict the model (a patch of the wrong
    dimension, label values that do not match its outputs, unknown preprocessing keys) raise
    ``ModelFileError`` naming the file.

    Example: ``read_model_card("RUN/model.pt").patch_size == (96, 96, 96)``.
    """
    payload, file = _payload(source, path)
    where = str(file) if file is not None else "model"
    config = payload.get("model_config")
    if not isinstance(config, Mapping):
        raise ModelFileError(f"{where}: no model_config; cannot tell the model's channels and dimensions")
    config = dict(config)
    dims = int(config.get("spatial_dims", 3))
    out_channels = int(config.get("out_channels", 2))

    layers: list[tuple[str, dict[str, Any]]] = []
    if use_run_folder and file is not None:
        run, run_file = _run_folder_config(file)
        if run:
            layers.append((run_file, _from_run_config(run)))
    if isinstance(payload.get("run_config"), Mapping):
        layers.append(("run_config", _from_run_config(payload["run_config"])))
    own = "ONNX metadata" if payload.get("format") == ONNX_FORMAT else "model file"
    layers.append((own, {key: payload.get(key) for key in CARD_KEYS}))
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, entries in layers:
        for key, value in entries.items():
            if value is not None:
                merged[key], sources[key] = value, name
    if isinstance(payload.get("preprocessing"), Mapping):
        for key, value in _from_preprocessing(payload["preprocessing"], merged.get("preprocess")).items():
            if value is not None:
                merged[key], sources[key] = value, "preprocessing"
    for key in payload.get("defaulted") or ():  # an exported card says which of its values are defaults
        if sources.get(key) == own:
            sources[key] = "default (recorded as such at export)"

    try:
        preprocess = from_dict(PreprocessConfig, dict(merged.get("preprocess") or {}), "preprocess")
    except ConfigError as exc:
        raise ModelFileError(f"{where}: its preprocessing settings are invalid: {exc}") from None
    sources.setdefault("preprocess", "default (z-score inside the non-zero region)")

    patch = merged.get("patch_size")
    if patch is None:
        patch = DEFAULT_PATCH_VOX.get(dims, (128,) * dims)
        sources["patch_size"] = "default"
    patch = tuple(int(p) for p in patch)
    if len(patch) != dims or any(p < 1 for p in patch):
        raise ModelFileError(f"{where}: patch_size {list(patch)} does not fit a {dims}D model")

    label_scheme = _label_scheme(merged.get("target"), out_channels, where)
    sources.setdefault(
        "target",
        f"default (classes 0..{out_channels - 1})" if out_channels > 1 else "default (one sigmoid channel)",
    )

    mirror_axes = None
    if merged.get("mirror_axes") is not None:
        mirror_axes = tuple(sorted({int(a) for a in merged["mirror_axes"]}))
        if any(not 0 <= a < dims for a in mirror_axes):
            raise ModelFileError(
                f"{where}: training flip axes {list(mirror_axes)} do not fit a {dims}D model"
            )
    channel_names = tuple(str(n) for n in merged["channel_names"]) if merged.get("channel_names") else None
    postprocessing = _postprocessing(merged.get("postprocessing"), where)
    version = payload.get("attnseg_version")
    return ModelCard(
        model_config=config,
        label_scheme=label_scheme,
        patch_size=patch,
        preprocess=preprocess,
        channel_names=channel_names,
        mirror_axes=mirror_axes,
        postprocessing=postprocessing,
        version=str(version) if version is not None else None,
        sources=sources,
    )


def training_card(
    run_config: Mapping[str, Any],
    label_scheme: Mapping[str, Any],
    channel_names: Sequence[str] | None = None,
    *,
    model_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card a training run writes at the top level of ``model.pt`` and its checkpoints, from its
    saved configuration (``to_dict(RunConfig)``: ``data.patch_size``, ``preprocess``, ``augment``
    flips), its label scheme (``LabelScheme.to_dict()``) and the built model's config (default: the run
    configuration's ``model``), checked like any card read back.

    Example: ``save_model(run / "model.pt", model, training_card(to_dict(config), scheme.to_dict(),
    dataset.channel_names, model_config=to_dict(model.config)))``.
    """
    payload = {
        "model_config": model_config if model_config is not None else run_config.get("model") or {},
        "run_config": run_config,
        "target": dict(label_scheme),
        "channel_names": list(channel_names) if channel_names else None,
    }
    return read_model_card(payload, use_run_folder=False).to_dict()
