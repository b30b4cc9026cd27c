"""Typed settings for every part of attnseg, with YAML load/save and ``key=value`` overrides.

Each section is a dataclass with defaults; a run's full configuration is saved next to its
checkpoints so that it can be replayed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attnseg.errors import ConfigError


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
    checkpointing: bool = False


@dataclass
class PreprocessConfig:
    """Per-case preprocessing, applied once when a case is loaded (and cached).

    ``normalization``: ``"zscore_nonzero"`` (per channel, statistics and output inside the non-zero
    region: skull-stripped MRI), ``"zscore"`` (whole volume, e.g. CT) or ``"none"``.
    ``clip_percentiles``: clip each channel to these percentiles first, e.g. ``[0.5, 99.5]`` (CT).
    ``target_spacing_mm``: resample every case to this voxel size (None: keep the file's).
    """

    normalization: str = "zscore_nonzero"
    clip_percentiles: tuple[float, ...] | None = None
    target_spacing_mm: tuple[float, ...] | None = None


@dataclass
class AugmentConfig:
    """Training patches: foreground oversampling and augmentation (probabilities are per patch).

    All spatial changes (crop, rotation, zoom, elastic, mirror) are fused into one sampling grid.
    ``fg_fraction``: share of patches centred on a foreground voxel, the class chosen uniformly
    among the classes present so rare classes are seen. ``rotate_deg``: up to +/- this about each
    axis. ``zoom_range``: > 1 enlarges anatomy. ``elastic_grid_mm``/``elastic_std_mm``: B-spline
    control spacing and displacement std. ``flip_axes``: axes that may be mirrored (default: axis
    0, left-right in BraTS/RAS-like data). ``label_mode``: ``"nearest"`` or ``"linear"`` (per-class
    linear + argmax).
    """

    fg_fraction: float = 0.33
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
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
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


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from plain data; unknown keys raise ConfigError listing the known ones."""
    data = dict(data or {})
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
    import copy

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
    from attnseg.io.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


__all__ = [
    "AugmentConfig",
    "ModelConfig",
    "PreprocessConfig",
    "apply_overrides",
    "field",
    "from_dict",
    "load_yaml",
    "parse_override",
    "save_yaml",
    "to_dict",
]
