from __future__ import annotations

import numpy as np
import pytest

from attnseg.config import RunConfig, apply_overrides, from_dict, to_dict
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.transforms.loader import PreparedCase


def disc_case(i: int, size: int = 24, channels: int = 1) -> PreparedCase:
    """A noisy 2D image with one bright disc (label 1)."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    r = rng.uniform(size * 0.15, size * 0.3)
    label = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.int64)
    image = np.stack([label + 0.3 * rng.standard_normal(label.shape) for _ in range(channels)]).astype(
        np.float32
    )
    return PreparedCase(f"disc{i:02d}", image, label, (1.0, 1.0))


@pytest.fixture
def cases():
    return [disc_case(i) for i in range(4)], [disc_case(100)]


@pytest.fixture
def target():
    return LabelScheme.from_labels({"background": 0, "disc": 1}, kind="labels")


@pytest.fixture
def make_config():
    def make(*overrides: str) -> RunConfig:
        base = [
            "model.spatial_dims=2",
            "model.features=[4,8,16]",
            "model.in_channels=1",
            "model.out_channels=2",
            "data.patch_size=[16,16]",
            "data.batch_size=2",
            "train.epochs=2",
            "train.iters_per_epoch=2",
            "train.progress=false",
            "optim.lr=0.01",
            "optim.warmup_iters=1",
        ]
        return from_dict(RunConfig, apply_overrides(to_dict(RunConfig()), base + list(overrides)))

    return make
