"""Grad-CAM: hand-computed maps on a toy network, shape and sign on Attention U-Nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attnseg.models import AttentionUNet
from attnseg.viz.gradcam import default_layer, grad_cam, resolve_layer, window_around


class Toy(nn.Module):
    """feature A = x (a 1x1 conv with weight 1), logits = (A, -2 A): Grad-CAM is computable by hand."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Conv2d(1, 1, 1, bias=False)
        self.head = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.feat.weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([1.0, -2.0]).reshape(2, 1, 1, 1))

    def forward(self, x):
        return self.head(self.feat(x))


def test_grad_cam_hand_values():
    x = np.array([[[1.0, -1.0], [2.0, 0.5]]], dtype=np.float32)  # (C=1, 2, 2)
    model = Toy()
    # class 0 wins where x > 0 (x > -2x): score = sum of x there; dScore/dA = 1 on 3 of 4 voxels,
    # weight = 3/4, map = relu(3/4 * x) / max = x / 2 where x > 0
    np.testing.assert_allclose(grad_cam(model, x, 0, layer="feat"), [[0.5, 0.0], [1.0, 0.25]], atol=1e-6)
    # class 1 wins where x < 0: dScore/dA = -2 on 1 voxel, weight = -2/4, map = relu(-x/2) -> only x = -1
    np.testing.assert_allclose(grad_cam(model, x, 1, layer="feat"), [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    # unnormalised: the raw relu(w . A)
    np.testing.assert_allclose(
        grad_cam(model, x, 0, layer="feat", normalize=False), [[0.75, 0.0], [1.5, 0.375]], atol=1e-6
    )
    # the score region can be given (e.g. the truth): all four voxels -> weight 1, map relu(x) / 2
    np.testing.assert_allclose(
        grad_cam(model, x, 0, layer="feat", mask=np.ones((2, 2))), [[0.5, 0.0], [1.0, 0.25]], atol=1e-6
    )


@pytest.mark.parametrize("dims,shape", [(3, (2, 11, 13, 6)), (2, (2, 19, 22))], ids=["3d-odd", "2d-odd"])
def test_grad_cam_shape_and_non_negative(dims, shape):
    torch.manual_seed(0)
    model = AttentionUNet(dims, 2, 3, (4, 8, 16)).eval()
    image = torch.randn(*shape)
    for cls in range(3):
        cam = grad_cam(model, image, cls)
        assert cam.shape == shape[1:]
        assert cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
    # another layer by name (a coarse encoder level) is up-sampled to the input grid too
    assert grad_cam(model, image, 1, layer="encoder.2").shape == shape[1:]
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_default_layer_and_errors():
    model = AttentionUNet(2, 1, 2, (4, 8, 16))
    assert default_layer(model) is model.decoder[-1]
    assert resolve_layer(model, "decoder.0") is model.decoder[0]
    with pytest.raises(ValueError, match="not a sub-module"):
        resolve_layer(model, "decoder.9")
    with pytest.raises(ValueError, match="2 output channel"):
        grad_cam(model, torch.randn(1, 8, 8), 2)


def test_window_around():
    assert window_around((10, 20), (4, 8), (0, 19)) == (slice(0, 4), slice(12, 20))
    assert window_around((10, 20), (40, 8), (5, 10)) == (slice(0, 10), slice(6, 14))
