"""Typed settings for every part of attnseg, with YAML load/save and ``key=value`` overrides.

Each section is a dataclass with defaults; a run's full configuration is saved next to its
checkpoints so that it can be replayed.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attnseg.errors import ConfigError
from attnseg.io.atomic import atomic_write_text


@dataclass
class ModelConfig:
    """The network: everything needed to rebuild it from a file alone.

    ``gating``: ``"coarse"`` (Oktay et al.: gating signal from the coarser decoder level, coefficients
    computed on that grid and up-sampled) or ``"decoder"`` (gating signal is the up-sampled decoder
    feature at the skip's resolution).
    """

    name: str = "attention_unet"
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 2
    features: tuple[int, ...] = (32, 64, 128, 256)
    gating: str = "coarse"
    norm: str = "instance"
    act: str = "leaky_relu"
    deep_supervision: bool = False
    activation_checkpointing: bool = False


@dataclass
class PreprocessConfig:
    """Per-case preprocessing, applied once when a case is loaded (and cached).

    ``normalization``: ``"zscore_nonzero"`` (per channel, statistics and output inside the non-zero
    region: skull-stripped MRI), ``"zscore"`` (whole volume, e.g. CT) or ``"none"``.
    ``clip_percentiles``: clip each channel to these percentiles first, e.g. ``[0.5, 99.5]`` (CT).
    ``target_spacing_mm``: resample every case to this voxel size, one value per spatial axis or one
    for all (isotropic); None: keep the file's.
    """

    normalization: str = "zscore_nonzero"
    clip_percentiles: tuple[float, ...] | None = None
    target_spacing_mm: tuple[float, ...] | None = None


@dataclass
class AugmentConfig:
    """Training patches: foreground oversampling and augmentation (probabilities are per patch).

    All spatial changes (crop, rotation, zoom, elastic, mirror) are fused into one sampling grid.
    ``fg_fraction``: share of patches centred on a foreground voxel. ``fg_sampling``: how that
    voxel is chosen: ``"class"`` (default, nnU-Net's): a class uniformly among the classes present,
    so rare classes are seen, then one of its voxels; ``"component"`` (lesion-aware): a connected
    component of the foreground (all foreground classes together, 26-connected) uniformly, then one
    of its voxels, so a 3 mm lesion is the centre as often as a 5 cm tumour. ``rotate_deg``: up to +/- this about each
    axis. ``zoom_range``: > 1 enlarges anatomy. ``elastic_grid_mm``/``elastic_std_mm``: B-spline
    control spacing and displacement std. ``flip_axes``: axes that may be mirrored (default: axis
    0, left-right in BraTS/RAS-like data). ``label_mode``: ``"nearest"`` or ``"linear"`` (per-class
    linear + argmax).
    """

    fg_fraction: float = 0.33
    fg_sampling: str = "class"
    p_rotate: float = 0.2
    rotate_deg: float = 15.0
    p_zoom: float = 0.2
    zoom_range: tuple[float, ...] = (0.85, 1.15)
    p_elastic: float = 0.2
    elastic_grid_mm: float = 24.0
    elastic_std_mm: float = 2.0
    flip_axes: tuple[int, ...] = (0,)
    p_flip: float = 0.5
    p_gamma: float = 0.3
    gamma_range: tuple[float, ...] = (0.7, 1.5)
    p_scale: float = 0.15
    scale_range: tuple[float, ...] = (0.75, 1.25)
    p_shift: float = 0.15
    shift_range: tuple[float, ...] = (-0.1, 0.1)
    p_noise: float = 0.1
    noise_std_range: tuple[float, ...] = (0.0, 0.1)
    label_mode: str = "nearest"


@dataclass
class DataConfig:
    """Which cases train and validate, and how patches are batched.

    ``split``: ``"kfold"`` (fold ``fold`` of ``folds``, seeded by ``split_seed``) or a path to a
    splits JSON (``attnseg.datasets.splits`` format; ``fold`` picks the entry). ``patch_size``:
    voxels per axis; None = derived from the median case shape within ``patch_budget_vox`` voxels
    (None: 128**3 on a GPU, 64**3 on a CPU). ``batch_size`` None: ``budget // patch voxels``
    clipped to 2..8 and to the number of training cases.
    ``target``: ``"auto"`` (regions if the dataset declares them, else classes), ``"labels"``
    (softmax over classes) or ``"regions"`` (sigmoid per overlapping region). ``max_val_cases``
    caps how many validation volumes are predicted each time (0 = all). ``ignore_label``: the label
    value of unannotated voxels (sparse or partial annotations), left out of the loss, foreground
    sampling and validation; None = the dataset's ``"ignore"`` label, if it declares one
    (``attnseg.datasets.label_scheme``).
    """

    layout: str = "auto"
    split: str = "kfold"
    folds: int = 5
    fold: int = 0
    split_seed: int = 0
    patch_size: tuple[int, ...] | None = None
    patch_budget_vox: int | None = None
    batch_size: int | None = None
    num_workers: int = 0
    target: str = "auto"
    max_val_cases: int = 0
    ignore_label: int | None = None


@dataclass
class LossConfig:
    """``name``: ``dice_ce`` (default), ``dice_focal``, ``dice``, ``ce`` or ``focal`` (see
    ``attnseg.losses``). ``class_weights``: one per output channel, or None.
    ``include_background``: whether class 0 counts in the Dice/focal terms of softmax targets;
    region (sigmoid) targets have no background channel, so all their channels always count."""

    name: str = "dice_ce"
    include_background: bool = False
    batch_dice: bool = True
    smooth: float = 1e-5
    lambda_dice: float = 1.0
    lambda_other: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    class_weights: tuple[float, ...] | None = None
    ds_include_lowest: bool = True


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (per iteration, see ``attnseg.training.schedules``).

    ``name``: ``"adamw"`` or ``"sgd"`` (Nesterov, ``momentum``). ``schedule``: ``"cosine"`` (linear
    warm-up then cosine), ``"poly"`` or ``"constant"``. ``grad_clip_norm``: clip the global gradient
    norm (None = off). ``grad_accum``: micro-batches per optimiser step.
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.99
    schedule: str = "cosine"
    warmup_iters: int = 50
    min_lr: float = 0.0
    poly_power: float = 0.9
    grad_clip_norm: float | None = 12.0
    grad_accum: int = 1


@dataclass
class TrainConfig:
    """The loop: length, precision, validation, checkpoints and the training tips.

    An epoch is ``iters_per_epoch`` optimiser steps (0 = one pass over the training cases).
    ``precision``: ``"auto"`` (bf16 autocast on CPUs and GPUs that support it, else fp16 with a
    GradScaler on CUDA, else fp32), ``"bf16"``, ``"fp16"`` (CUDA only) or ``"fp32"``.
    ``freeze_gates_epochs``: attention-gate weights are frozen for the first N epochs;
    ``freeze_encoder_epochs``: the encoder's (``model.encoder``, bottleneck included) likewise.
    ``init``: a model file (or training checkpoint) whose weights a fresh run starts from, where
    names and shapes match; a new head for other classes, an adapted first convolution for other
    channels (``attnseg.models.transfer``); a resumed run ignores it (its checkpoint has the weights).
    ``multiscale``: ``[low, high]`` patch scale range drawn per batch (sizes stay multiples of the
    network stride), or None. Deep supervision is ``model.deep_supervision``.
    ``val_every``: validate on whole volumes every K epochs (0 = never); the best checkpoint is the
    one with the highest mean validation Dice. ``early_stop_patience``: stop after this many
    validations without improvement (None = never). ``nan_policy``: ``"stop"`` (raise, naming the
    iteration) or ``"skip"`` (drop the batch; stop after ``max_skipped_batches`` in a row).
    ``time_limit_s``: stop cleanly (with a checkpoint) once this wall-clock budget is spent (over
    all sessions of a resumed run). ``schedule_by_time``: with a time limit, the learning-rate
    schedule follows the share of the budget spent instead of the iteration count, so a run on a
    slow or busy machine still anneals fully (the data order stays seeded; the step count is not).
    ``channels_last``: channels-last memory layout (faster convolutions on CPUs, bf16 especially).
    ``budget_minutes``: the wall-clock budget of ``attnseg train --minutes`` (the whole command's;
    ``time_limit_s`` is what was left of it for training), None for a run without one.
    ``weight_averages``: averages of the weights kept during training, each written as
    ``averages/model_<spec>.pt`` beside ``model.pt``: ``"ema0.999"`` (exponential moving average
    with that decay) or ``"tail0.25"`` (mean over the last 25 % of the schedule); see
    ``attnseg.training.averaging``. ``model_weights``: what ``model.pt`` holds: ``"last"`` (the last
    weights, or the best validated ones) or one of ``weight_averages``.
    """

    epochs: int = 50
    iters_per_epoch: int = 250
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    freeze_gates_epochs: int = 0
    freeze_encoder_epochs: int = 0
    init: str | None = None
    multiscale: tuple[float, ...] | None = None
    val_every: int = 1
    val_overlap: float = 0.5
    val_batch_size: int = 2
    early_stop_patience: int | None = None
    nan_policy: str = "stop"
    max_skipped_batches: int = 10
    time_limit_s: float | None = None
    schedule_by_time: bool = False
    channels_last: bool = False
    progress: bool = True
    budget_minutes: float | None = None
    weight_averages: tuple[str, ...] = ()
    model_weights: str = "last"


@dataclass
class RunConfig:
    """Everything a training run needs besides the data folder: saved as the run's ``config.yaml``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def training_mirror_axes(run: Any) -> list[int] | None:
    """The spatial axes a run's augmentation mirrored (``augment.flip_axes``; ``[]`` when ``p_flip``
    is 0), from a saved run configuration (plain mapping); None when it does not say."""
    augment = run.get("augment") if isinstance(run, Mapping) else None
    if not isinstance(augment, Mapping) or "flip_axes" not in augment:
        return None
    if float(augment.get("p_flip", AugmentConfig.p_flip) or 0.0) <= 0:
        return []
    return [int(a) for a in augment.get("flip_axes") or []]


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain data (tuples become lists) that YAML, JSON and ``torch.load`` accept."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(obj)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert plain data to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} matches none of {annotation}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
        return from_dict(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    return value


T = typing.TypeVar("T")

# settings renamed since a release: files written before keep loading (old name -> new name)
RENAMED = {"ModelConfig": {"checkpointing": "activation_checkpointing"}}


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from plain data; unknown keys raise ConfigError listing the known ones."""
    data = dict(data or {})
    for old, new in RENAMED.get(cls.__name__, {}).items():
        if old in data and new not in data:
            data[new] = data.pop(old)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set train.lr=0.001")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to nested plain data (returns a new dict)."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def save_yaml(path: str | Path, obj: Any) -> None:

    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


__all__ = [
    "AugmentConfig",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PreprocessConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "field",
    "from_dict",
    "load_yaml",
    "parse_override",
    "save_yaml",
    "to_dict",
]
