"""Device and mixed-precision choice: bf16 autocast on CPUs/GPUs that support it, fp16 + GradScaler
on older GPUs, or plain fp32.

Losses always compute in float32 (see ``attnseg.losses``); only the network runs in low precision.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from attnseg.devices import auto_device_type, mps_available
from attnseg.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: the process's CUDA device when CUDA is available, else ``mps`` on Apple silicon,
    else the CPU (``attnseg.devices.auto_device_type``)."""
    if name == "auto":
        name = auto_device_type()
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a torch device; pass auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device asks for CUDA but torch sees no GPU; pass train.device=cpu")
    if device.type == "mps" and not mps_available():
        raise ConfigError(
            "train.device=mps but torch offers no Apple Metal (mps) device; pass train.device=cpu"
        )
    return device


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where supported (CPU with native bf16, CUDA with bf16), ``fp16`` on
    other GPUs, else ``fp32``. An explicit request that the device cannot honour raises."""
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision={name!r}; pass one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if name == "auto":
            return "bf16" if bf16 else "fp16"
        if name == "bf16" and not bf16:
            raise ConfigError("train.precision=bf16 but this GPU has no bf16 support; use fp16 or fp32")
        return name
    if device.type == "mps":
        if name in ("bf16", "fp16"):
            raise ConfigError(
                f"train.precision={name} on mps is not supported by attnseg yet (untested); use fp32"
            )
        return "fp32"
    if name == "fp16":
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if name == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return name


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``name`` in bf16/fp16/fp32 on ``device``."""

    name: str
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


def make_precision(name: str, device: torch.device) -> Precision:
    return Precision(resolve_precision(name, device), device)
