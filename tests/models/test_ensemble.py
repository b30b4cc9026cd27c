"""EnsembleModel: the mean of its members' probabilities, returned as log-probabilities or logits."""

from __future__ import annotations

import pytest
import torch

from attnseg.config import ModelConfig
from attnseg.models import build_model
from attnseg.models.ensemble import EnsembleModel


def tiny(seed: int, out_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        ModelConfig(spatial_dims=2, in_channels=1, out_channels=out_channels, features=(4, 8))
    ).eval()


def test_softmax_ensemble_gives_the_mean_of_the_members_probabilities():
    a, b = tiny(0), tiny(1)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
        out = EnsembleModel([a, b], "softmax")(x)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(torch.softmax(out, 1), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.exp(), expected, atol=1e-6, rtol=1e-5)  # log of the mean


def test_sigmoid_ensemble_gives_the_mean_of_the_members_probabilities():
    a, b, c = tiny(0, 2), tiny(1, 2), tiny(2, 2)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        expected = sum(torch.sigmoid(m(x)) for m in (a, b, c)) / 3
        out = EnsembleModel([a, b, c], "sigmoid")(x)
    torch.testing.assert_close(torch.sigmoid(out), expected, atol=1e-6, rtol=1e-5)


def test_an_ensemble_of_identical_members_has_one_members_probabilities():
    a = tiny(0)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        one = torch.softmax(a(x), 1)
        two = torch.softmax(EnsembleModel([a, a], "softmax")(x), 1)
    torch.testing.assert_close(two, one, atol=1e-6, rtol=1e-5)


def test_ensemble_refuses_no_members_and_unknown_activations():
    with pytest.raises(ValueError, match="at least one"):
        EnsembleModel([], "softmax")
    with pytest.raises(ValueError, match="softmax"):
        EnsembleModel([tiny(0)], "relu")
