from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attnseg.models.blocks as blocks
from attnseg.models import AttentionUNet
from attnseg.models.fused import instance_norm_leaky_relu


@pytest.mark.parametrize("slope", [0.01, 0.0])
@pytest.mark.parametrize("shape", [(2, 5, 6, 7, 8), (3, 4, 9, 11)])
def test_fused_equals_stock_norm_and_activation(slope, shape):
    x = torch.randn(*shape, dtype=torch.float64).float().requires_grad_()
    w, b = torch.randn(shape[1], requires_grad=True), torch.randn(shape[1], requires_grad=True)
    y = instance_norm_leaky_relu(x, w, b, 1e-5, slope)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), gy)
    y_ref = F.leaky_relu(F.instance_norm(x, weight=w, bias=b, eps=1e-5), slope)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), gy)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_fused_keeps_bf16_dtype():
    x = torch.randn(2, 3, 8, 8, 8).bfloat16()
    y = instance_norm_leaky_relu(x, torch.ones(3), torch.zeros(3))
    assert y.dtype == torch.bfloat16
    ref = F.leaky_relu(F.instance_norm(x.float()), 0.01)
    assert (y.float() - ref).abs().max() < 0.05


def test_model_fused_and_stock_paths_agree(monkeypatch):
    model = AttentionUNet(3, 2, 3, (4, 8, 16))
    x = torch.randn(2, 2, 16, 12, 8)
    out_fused = model(x)
    out_fused.sum().backward()
    grads_fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setattr(blocks, "FUSED_NORM_ACT", False)
    out_stock = model(x)
    out_stock.sum().backward()
    torch.testing.assert_close(out_fused, out_stock, rtol=1e-4, atol=1e-5)
    for g, r in zip(grads_fused, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_gives_same_contiguous_output(channels_last):
    torch.manual_seed(0)
    ref = AttentionUNet(3, 1, 2, (4, 8), channels_last=False)
    model = AttentionUNet(3, 1, 2, (4, 8), channels_last=channels_last)
    model.load_state_dict(ref.state_dict())
    x = torch.randn(1, 1, 10, 9, 8)
    out = model(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-5)
