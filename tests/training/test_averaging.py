"""Weight averages: EMA and tail (SWA) maths on hand-made weights, and the files a run writes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnseg.errors import ConfigError
from attnseg.models import build_model
from attnseg.models.model_file import read_model_file
from attnseg.training.averaging import WeightAverages, parse_average_spec
from attnseg.training.loop import fit


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def test_parse_specs():
    assert parse_average_spec("ema0.999") == ("ema", 0.999)
    assert parse_average_spec("tail.25") == ("tail", 0.25)
    assert parse_average_spec("tail1") == ("tail", 1.0)
    for bad in ("ema1", "ema", "swa0.2", "tail0", "ema0.9x"):
        with pytest.raises(ValueError):
            parse_average_spec(bad)


def test_ema_and_tail_values():
    model = Scalar()
    averages = WeightAverages(["ema0.5", "tail0.5"])
    values = [1.0, 2.0, 3.0, 4.0]
    for step, value in enumerate(values, start=1):
        with torch.no_grad():
            model.w.fill_(value)
            model.steps.fill_(step)
        averages.update(model, progress=step / len(values))
    ema, tail = averages.averages
    # EMA starts at the first weights: 1 -> 1.5 -> 2.25 -> 3.125
    assert torch.allclose(ema.state["w"], torch.full((2,), 3.125))
    # tail 0.5: the steps with progress >= 0.5 are 2, 3, 4 -> mean 3
    assert tail.count == 3 and torch.allclose(tail.state["w"], torch.full((2,), 3.0))
    state = averages.averaged_state(model, tail)
    assert state["steps"].item() == 4 and state["steps"].dtype == torch.long  # integer buffers copied


def test_run_writes_average_model_files(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.weight_averages=[ema0.9,tail0.5]", "train.val_every=0")
    model = build_model(config.model)
    fit(model, train, val, target, config, tmp_path, log=lambda _: None)
    last = read_model_file(tmp_path / "model.pt")["state_dict"]
    for spec in ("ema0.9", "tail0.5"):
        payload = read_model_file(tmp_path / "averages" / f"model_{spec}.pt")
        assert payload["weight_average"] == spec
        assert payload["state_dict"].keys() == last.keys()
        assert any(not torch.equal(payload["state_dict"][k], last[k]) for k in last)


def test_bad_spec_is_a_config_error(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.weight_averages=[swa]")
    with pytest.raises(ConfigError, match="swa"):
        fit(build_model(config.model), train, val, target, config, tmp_path, log=lambda _: None)


def test_resume_continues_the_averages(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.epochs=4", "train.weight_averages=[ema0.9,tail0.5]", "train.val_every=0")
    torch.manual_seed(0)
    fit(build_model(config.model), train, val, target, config, tmp_path / "a", log=lambda _: None)
    torch.manual_seed(0)
    first = build_model(config.model)
    fit(first, train, val, target, config, tmp_path / "b", stop_after_epochs=2, log=lambda _: None)
    torch.manual_seed(5)
    fit(
        build_model(config.model),
        train,
        val,
        target,
        config,
        tmp_path / "b",
        resume_from=tmp_path / "b/checkpoints/last.pt",
        log=lambda _: None,
    )
    for spec in ("ema0.9", "tail0.5"):
        a = read_model_file(tmp_path / "a" / "averages" / f"model_{spec}.pt")["state_dict"]
        b = read_model_file(tmp_path / "b" / "averages" / f"model_{spec}.pt")["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_weights_must_name_a_kept_average(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.weight_averages=[ema0.9]", "train.model_weights=tail0.5")
    with pytest.raises(ConfigError, match="train.model_weights='tail0.5'"):
        fit(build_model(config.model), train, val, target, config, tmp_path, log=lambda _: None)


def test_model_weights_picks_the_average(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.weight_averages=[ema0.9]", "train.model_weights=ema0.9")
    fit(build_model(config.model), train, val, target, config, tmp_path, log=lambda _: None)
    assert (tmp_path / "model.pt").read_bytes() == (tmp_path / "averages" / "model_ema0.9.pt").read_bytes()
    assert read_model_file(tmp_path / "model.pt")["weight_average"] == "ema0.9"
