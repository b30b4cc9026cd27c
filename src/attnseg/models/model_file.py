"""The model file: weights + model config + package version, loadable with ``weights_only=True``.

Everything stored is plain data (dicts, lists, numbers, strings, tensors), so loading never runs
code from the file. A training checkpoint (optimizer, RNG states, ...) is a superset of this format
and ``load_model`` reads both.

``state_dict_sha256`` is a digest of the weights (names, dtypes, shapes, bytes): the zip container
that ``torch.save`` writes has no checksum over tensor data, so a flipped byte in a weight would
otherwise load silently. Files written before the digest existed load without the check.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnseg import __version__
from attnseg.config import ModelConfig, to_dict
from attnseg.errors import ConfigError, ModelFileError
from attnseg.io.atomic import atomic_write
from attnseg.models.registry import build_model

FORMAT = "attnseg.model"
FORMAT_VERSION = 1


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted (name, dtype, shape, bytes) of every tensor of a state dict."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise ModelFileError(f"state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_payload(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict ``save_model`` writes; training checkpoints add their own keys to it."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"{type(model).__name__} has no ModelConfig `.config`; build it with attnseg.build_model"
        )
    module = model.module if hasattr(model, "module") else model  # DDP / compiled wrappers
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "attnseg_version": __version__,
        "model_config": to_dict(config),
        "state_dict": state,
        "state_dict_sha256": state_dict_digest(state),
    }
    if extra:
        payload.update(extra)
    return payload


def save_model(path: str | Path, model: nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically. ``extra`` (plain data) is stored alongside."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(model_payload(model, extra), buffer)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())
    return path


def write_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a payload ``read_model_file`` returned (e.g. with a card entry added) back atomically;
    the weights and their checksum are written as they were read."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())
    return path


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Load and validate a model file's payload without building the model."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only runs no code: whatever a malformed stream raises, the file is bad
        # keep the reason; drop torch's preamble (it suggests weights_only=False, which we never do)
        boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if not line.startswith(boilerplate)), type(exc).__name__)
        first = first.split(" In PyTorch 2.6")[0]
        raise ModelFileError(
            f"{path}: not a loadable attnseg model file (it may be truncated, tampered with, or "
            f"contain code objects, which are refused): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not an attnseg model file (expected a dict with format={FORMAT!r}); "
            "save models with attnseg.save_model"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer attnseg (format_version {payload['format_version']}); upgrade attnseg"
        )
    for key in ("model_config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise ModelFileError(f"{path}: the file has no {key!r}; it cannot rebuild the model")
    expected = payload.get("state_dict_sha256")
    if expected is not None:
        try:
            found = state_dict_digest(payload["state_dict"])
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        if found != expected:
            raise ModelFileError(
                f"{path}: the weights do not match the checksum stored with them; the file is damaged "
                "or was modified after it was written"
            )
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model from the file alone and load its weights (eval mode)."""
    return model_from_payload(read_model_file(path), path, map_location)


def model_from_payload(
    payload: dict[str, Any], path: str | Path = "model", map_location: str | torch.device = "cpu"
) -> nn.Module:
    """The model of a payload ``read_model_file`` returned (eval mode), so that a caller that also
    reads the payload's card (``attnseg.models.card.read_model_card``) loads the file once."""
    try:
        model = build_model(payload["model_config"])
    except (ConfigError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: its model_config is invalid: {exc}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(
            f"{path}: weights do not match its model_config: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(map_location).eval()
