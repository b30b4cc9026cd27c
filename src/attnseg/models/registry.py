"""A tiny model registry: ``build_model(config)`` by name, like timm's ``create_model``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from attnseg.config import ModelConfig, from_dict
from attnseg.errors import ConfigError
from attnseg.models.unet import AttentionUNet, UNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


register_model("attention_unet")(AttentionUNet)
register_model("unet")(UNet)


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(config: ModelConfig | dict[str, Any] | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model from a ModelConfig or plain dict (``{"name": "unet", ...}``)."""
    if config is None:
        config = ModelConfig()
    elif isinstance(config, dict):
        config = from_dict(ModelConfig, config, "model")
    if overrides:
        config = dataclasses.replace(config, **overrides)
    if config.name not in _REGISTRY:
        raise ConfigError(
            f"model.name={config.name!r} is unknown; pass one of {', '.join(available_models())}"
        )
    kwargs = dataclasses.asdict(config)
    kwargs.pop("name")
    return _REGISTRY[config.name](**kwargs)
