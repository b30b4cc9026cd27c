"""Fixtures for tests/robustness: tiny model files (3D, 2D, two channels), one torch thread."""

from __future__ import annotations

import os
import subprocess
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


@pytest.fixture
def readonly_folder(tmp_path):
    """A folder that really refuses writes: permission bits for a normal user, a read-only tmpfs
    for root (whom permission bits do not stop); skipped where neither is possible."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("root without permission to mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def launcher():
    """One warm interpreter that forks a fresh process for every ``attnseg`` command."""
    from robustness_helpers import Launcher

    launcher = Launcher()
    yield launcher
    launcher.close()
