from __future__ import annotations

import pytest
import torch

from attnseg.config import ModelConfig, from_dict
from attnseg.errors import ConfigError
from attnseg.models import AttentionGate, AttentionUNet, UNet, build_model

SMALL = (4, 8, 16)


@pytest.mark.parametrize("model_cls", [AttentionUNet, UNet])
@pytest.mark.parametrize("gating", ["coarse", "decoder"])
@pytest.mark.parametrize(
    "spatial_dims,size", [(2, (37, 45)), (2, (32, 32)), (3, (37, 45, 29)), (3, (16, 16, 16))]
)
def test_forward_shape_any_size(model_cls, gating, spatial_dims, size):
    model = model_cls(spatial_dims, 2, 3, SMALL, gating=gating)
    out = model(torch.randn(2, 2, *size))
    assert out.shape == (2, 3, *size)


def test_seed_configuration_gates():
    model = AttentionUNet(3, 4, 3, features=(64, 128, 256, 512), gating="decoder")
    assert len(model.gates) == 3
    assert [g.skip_channels for g in model.gates] == [256, 128, 64]
    assert [g.inter_channels for g in model.gates] == [128, 64, 32]
    assert len(model.encoder) == 4 and len(model.ups) == 3 and len(model.decoder) == 3
    coarse = AttentionUNet(3, 4, 3, features=(64, 128, 256, 512), gating="coarse")
    assert [g.gating_channels for g in coarse.gates] == [512, 256, 128]


@pytest.mark.parametrize("gating", ["coarse", "decoder"])
def test_attention_maps_count_shape_range(gating):
    model = AttentionUNet(3, 1, 2, SMALL, gating=gating)
    x = torch.randn(1, 1, 21, 18, 13)  # padded internally to 24, 20, 16
    logits, maps = model(x, return_attention=True)
    assert logits.shape == (1, 2, 21, 18, 13)
    assert [tuple(m.shape) for m in maps] == [(1, 1, 12, 10, 8), (1, 1, 24, 20, 16)]
    for m in maps:
        assert m.min() >= 0 and m.max() <= 1


def test_unet_has_no_gates_and_no_maps():
    model = UNet(2, 1, 2, SMALL)
    logits, maps = model(torch.randn(1, 1, 16, 16), return_attention=True)
    assert len(model.gates) == 0 and maps == []


@pytest.mark.parametrize("gating", ["coarse", "decoder"])
def test_parameter_counts_differ_by_gates_only(gating):
    attn = AttentionUNet(3, 4, 3, (16, 32, 64, 128), gating=gating)
    plain = UNet(3, 4, 3, (16, 32, 64, 128), gating=gating)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(attn) - count(plain) == count(attn.gates) > 0
    # and the non-gate parameter names are identical
    names = {n for n, _ in attn.named_parameters() if not n.startswith("gates.")}
    assert names == {n for n, _ in plain.named_parameters()}


def test_gate_parameter_count_by_hand():
    # decoder gating, F_l = F_g = 8, F_int = 4, instance norm (affine): W_x 8*4 + 2*4, W_g 8*4 + 2*4,
    # psi 4*1 + 1 (bias) + 2*1 (norm)
    gate = AttentionGate(3, 8, 8, 4, norm="instance", gating="decoder")
    assert sum(p.numel() for p in gate.parameters()) == (32 + 8) * 2 + 5 + 2


@pytest.mark.parametrize("model_cls", [AttentionUNet, UNet])
@pytest.mark.parametrize("gating", ["coarse", "decoder"])
def test_every_parameter_gets_gradient(model_cls, gating):
    model = model_cls(3, 2, 3, SMALL, gating=gating, deep_supervision=True)
    outputs = model(torch.randn(2, 2, 16, 16, 16))
    sum(o.float().pow(2).mean() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert zero == []


def test_deep_supervision_train_and_eval():
    model = AttentionUNet(3, 1, 2, (4, 8, 16, 32), deep_supervision=True)
    x = torch.randn(1, 1, 33, 32, 20)
    outs = model.train()(x)
    assert isinstance(outs, list) and len(outs) == 3
    assert [tuple(o.shape) for o in outs] == [(1, 2, 33, 32, 20), (1, 2, 17, 16, 10), (1, 2, 9, 8, 5)]
    with torch.no_grad():
        single = model.eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 2, 33, 32, 20)


def test_coarse_gate_subsamples_the_skip_and_decoder_gate_does_not():
    torch.manual_seed(1)
    a = AttentionUNet(2, 1, 2, SMALL, gating="decoder")
    b = AttentionUNet(2, 1, 2, SMALL, gating="coarse")
    assert a.gates[0].W_x[0].stride == (1, 1) and b.gates[0].W_x[0].stride == (2, 2)


def test_gate_output_is_skip_times_alpha():
    gate = AttentionGate(2, 4, 6, 2, gating="coarse").eval()
    x, g = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)
    out, alpha = gate(x, g)
    assert alpha.shape == (1, 1, 8, 8)
    torch.testing.assert_close(out, x * alpha)


def test_forced_closed_gate_zeroes_the_skip():
    gate = AttentionGate(2, 4, 4, 2, norm="batch", gating="decoder").eval()
    with torch.no_grad():
        gate.psi[0].weight.zero_()
        gate.psi[0].bias.fill_(-50.0)
    out, alpha = gate(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8))
    assert alpha.max() < 1e-6 and out.abs().max() < 1e-5


def test_checkpointing_gives_same_gradients():
    torch.manual_seed(3)
    plain = AttentionUNet(3, 1, 2, SMALL, norm="group")
    ckpt = AttentionUNet(3, 1, 2, SMALL, norm="group", activation_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 16, 16, 16)
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


@pytest.mark.parametrize("norm", ["instance", "batch", "group"])
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
def test_norm_and_act_options(norm, act):
    model = AttentionUNet(2, 1, 2, SMALL, norm=norm, act=act)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 2, 16, 16)


def test_invalid_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="at least 2"):
        AttentionUNet(3, 1, 2, features=(16,))
    with pytest.raises(ValueError, match="pass 2 for images or 3 for volumes"):
        AttentionUNet(4, 1, 2)
    with pytest.raises(ValueError, match="in_channels=2: pass 2 channel"):
        AttentionUNet(3, 2, 2, SMALL)(torch.randn(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="expects"):
        AttentionUNet(3, 2, 2, SMALL)(torch.randn(2, 16, 16, 16))
    with pytest.raises(ValueError, match="gating"):
        AttentionUNet(3, 1, 2, SMALL, gating="nope")
    with pytest.raises(ValueError, match="norm"):
        AttentionUNet(3, 1, 2, SMALL, norm="layer")


def test_registry_builds_by_name():
    model = build_model({"name": "unet", "spatial_dims": 2, "features": [4, 8]})
    assert isinstance(model, UNet) and model.features == (4, 8)
    model = build_model({"name": "attention_unet", "spatial_dims": 2, "features": [4, 8]})
    assert type(model) is AttentionUNet
    assert build_model(model.config).config == model.config

    with pytest.raises(ConfigError, match="unknown"):
        build_model({"name": "resnet"})
    with pytest.raises(ConfigError, match="unknown setting"):
        build_model({"name": "unet", "widths": [1, 2]})


def test_old_setting_name_checkpointing_still_loads():
    """Model files and configs written before the rename say ``checkpointing``."""

    config = from_dict(ModelConfig, {"checkpointing": True}, "model")
    assert config.activation_checkpointing is True
