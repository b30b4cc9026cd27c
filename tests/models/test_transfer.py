"""Weights from a model file into a new network: exact copies, a new head, an adapted first conv."""

from __future__ import annotations

import pytest
import torch

from attnseg.config import to_dict
from attnseg.errors import ModelFileError
from attnseg.models import build_model
from attnseg.models.transfer import adapt_first_conv, first_conv_name, transfer_weights

TINY = dict(spatial_dims=2, features=(4, 8, 16))


def _model(seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model({**TINY, "in_channels": 1, "out_channels": 2, **options})


def _source(**options):
    model = _model(seed=1, **options)
    return model, model.state_dict(), to_dict(model.config)


def test_matching_model_is_copied_exactly():
    _, state, config = _source()
    model = _model()
    report = transfer_weights(model, state, config, source="old.pt")
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    assert report.loaded == list(state) and not (
        report.replaced or report.adapted or report.skipped or report.new
    )
    assert report.describe() == f"init from old.pt: {len(state)} tensors loaded"


def test_new_number_of_classes_gets_a_new_head():
    _, state, config = _source(out_channels=2, deep_supervision=True)
    model = _model(out_channels=4, deep_supervision=True)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, state, config, source="old.pt")
    heads = ["head.weight", "head.bias", "ds_heads.0.weight", "ds_heads.0.bias"]
    assert sorted(report.replaced) == sorted(heads)
    assert report.replaced["head.weight"] == {"file": [2, 4, 1, 1], "model": [4, 4, 1, 1]}
    now = model.state_dict()
    for name in heads:  # the new head keeps its fresh initialisation
        assert torch.equal(now[name], fresh[name])
    for name in report.loaded:
        assert torch.equal(now[name], state[name])
    assert len(report.loaded) == len(state) - len(heads)
    assert "new head (2 -> 4 output channels: head.weight" in report.describe()


def test_more_input_channels_copy_the_old_kernels_and_add_their_mean():
    _, state, config = _source(in_channels=2)
    model = _model(in_channels=3)
    report = transfer_weights(model, state, config, source="old.pt")
    name = first_conv_name(model)
    assert name == "encoder.0.0.0.weight"
    old, new = state[name], model.state_dict()[name]
    assert new.shape == (4, 3, 3, 3)
    assert torch.equal(new[:, :2], old)
    assert torch.allclose(new[:, 2], (old[:, 0] + old[:, 1]) / 2)
    assert report.adapted[name]["file"] == [4, 2, 3, 3] and report.adapted[name]["model"] == [4, 3, 3, 3]
    assert "mean of the old kernels" in report.adapted[name]["rule"]
    assert "first convolution adapted (2 -> 3 input channels" in report.describe()


def test_fewer_input_channels_keep_the_first_kernels():
    old = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1)
    assert adapt_first_conv(old, 2).tolist() == [[[[0.0]], [[1.0]]], [[[3.0]], [[4.0]]]]
    assert adapt_first_conv(old, 4)[:, 3].flatten().tolist() == [1.0, 4.0]  # mean of (0,1,2), (3,4,5)
    _, state, config = _source(in_channels=3)
    model = _model(in_channels=1)
    transfer_weights(model, state, config)
    assert torch.equal(model.state_dict()["encoder.0.0.0.weight"], state["encoder.0.0.0.weight"][:, :1])


def test_attention_unet_into_unet_skips_the_gates_and_back_leaves_them_new():
    _, state, config = _source()
    unet = _model(name="unet")
    report = transfer_weights(unet, state, config)
    assert set(report.skipped) == {k for k in state if k.startswith("gates.")}
    assert report.skipped["gates.0.W_x.0.weight"] == [4, 8, 1, 1]
    back = _model()
    report = transfer_weights(back, unet.state_dict(), to_dict(unet.config))
    assert report.new and all(k.startswith("gates.") for k in report.new)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(features=(4, 8)), "old.pt: model.features=[4, 8], this run's are [4, 8, 16]; --init needs the same "
         "depth and widths (pass --set model.features=[4,8])"),
        (dict(features=(4, 8, 32)), "model.features=[4, 8, 32]"),
        (dict(spatial_dims=3), "old.pt: a 3D model; this run trains a 2D one"),
        (dict(gating="decoder"), "old.pt: gates.0.W_g.0.weight has shape [4, 8, 1, 1], this run's model "
         "[4, 16, 1, 1]; --init adapts only the head"),
    ],
)  # fmt: skip
def test_incompatible_models_are_refused_naming_the_file(options, message):
    _, state, config = _source(**options)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelFileError) as info:
        transfer_weights(model, state, config, source="old.pt")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing half-loaded


def test_without_the_source_config_shapes_still_decide():
    _, state, _ = _source(features=(4, 8, 32))
    with pytest.raises(ModelFileError, match="encoder.2.0.0.weight has shape"):
        transfer_weights(_model(), state, None, source="old.pt")
