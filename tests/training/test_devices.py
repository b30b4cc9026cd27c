"""Device choice without the hardware: CUDA > Apple mps > CPU, and the guards on mps."""

from __future__ import annotations

import pytest
import torch

from attnseg import devices
from attnseg.config import OptimConfig
from attnseg.errors import ConfigError
from attnseg.training import amp
from attnseg.training.amp import make_precision, resolve_device, resolve_precision
from attnseg.training.loop import build_optimizer


@pytest.fixture
def mac(monkeypatch):
    """A machine where torch sees no CUDA but Apple's Metal backend."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: True)

    monkeypatch.setattr(amp, "mps_available", lambda: True)


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert devices.auto_device_type() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.auto_device_type() == "mps"
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.auto_device_type() == "cpu"


def test_training_on_mps_is_fp32_without_scaler(mac):
    device = resolve_device("auto")
    assert device.type == "mps"
    assert resolve_precision("auto", device) == "fp32"
    precision = make_precision("auto", device)
    assert precision.dtype is None and not precision.scaler().is_enabled()
    for name in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="on mps is not supported"):
            resolve_precision(name, device)


def test_mps_asked_for_where_there_is_none(monkeypatch):

    monkeypatch.setattr(amp, "mps_available", lambda: False)
    with pytest.raises(ConfigError, match="no Apple Metal"):
        resolve_device("mps")


def test_optimizer_falls_back_where_the_fused_kernel_is_missing(monkeypatch):
    real = torch.optim.AdamW

    def no_fused(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("fused AdamW is not supported on this device")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    optimizer = build_optimizer(torch.nn.Linear(2, 2), OptimConfig(name="adamw"))
    assert isinstance(optimizer, real) and not optimizer.defaults.get("fused")
