"""Fixtures for tests/robustness: tiny model files (3D, 2D, two channels), one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A tiny untrained 3D Attention U-Net (1 channel in, classes 0/1), patch 16^3, as a model file."""
    from attnseg.models import AttentionUNet, save_model

    torch.manual_seed(3)
    model = AttentionUNet(3, 1, 2, (4, 8)).eval()
    extra = {
        "target": {"kind": "labels", "values": [0, 1], "names": ["background", "tumour"]},
        "preprocessing": {"patch_size": [16, 16, 16], "normalization": "zscore_nonzero"},
    }
    return save_model(tmp_path_factory.mktemp("model") / "model.pt", model, extra)


@pytest.fixture(scope="session")
def model_file_2d(tmp_path_factory) -> Path:
    from attnseg.models import AttentionUNet, save_model

    torch.manual_seed(4)
    model = AttentionUNet(2, 1, 2, (4, 8)).eval()
    extra = {"preprocessing": {"patch_size": [16, 16], "normalization": "zscore_nonzero"}}
    return save_model(tmp_path_factory.mktemp("model2d") / "model.pt", model, extra)


@pytest.fixture(scope="session")
def model_file_2ch(tmp_path_factory) -> Path:
    from attnseg.models import AttentionUNet, save_model

    torch.manual_seed(5)
    model = AttentionUNet(3, 2, 2, (4, 8)).eval()
    extra = {"preprocessing": {"patch_size": [16, 16, 16], "normalization": "zscore_nonzero"}}
    return save_model(tmp_path_factory.mktemp("model2ch") / "model.pt", model, extra)
