from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _few_threads_and_seed():
    torch.manual_seed(0)
    yield


def shared_dataset(name: str) -> Path:
    """Path to ../shared/data/<name>, or skip the test cleanly when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path
