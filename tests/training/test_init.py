"""Fine-tuning from a model file (``train.init``) and encoder freezing; the CLI (``--init``, ``--freeze``)
is in test_cli_train.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError
from attnseg.models import build_model, load_model
from attnseg.models.model_file import read_model_file, save_model
from attnseg.training.loop import fit
from attnseg.training.run import freeze_overrides, init_weights


def _quiet(_msg: str) -> None:
    pass


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_fine_tuned_model_with_a_new_head_loads_and_trains(tmp_path, cases, make_config):
    """The issue's done-criterion: 2 classes -> 3 classes; the body is the file's, the head is new, it
    trains (finite loss, the head's weights move) and its model.pt loads."""
    train, val = cases
    torch.manual_seed(5)
    source = build_model(make_config().model)
    save_model(tmp_path / "old.pt", source)
    config = make_config("model.out_channels=3", "train.val_every=0", f"train.init={tmp_path / 'old.pt'}")
    target = LabelScheme.from_labels({"background": 0, "disc": 1, "rim": 2}, kind="labels")
    torch.manual_seed(0)
    model = build_model(config.model)
    lines: list[str] = []
    record = init_weights(model, read_model_file(tmp_path / "old.pt"), config, tmp_path, lines.append)
    assert sorted(record["replaced"]) == ["head.bias", "head.weight"]
    assert record["replaced"]["head.weight"] == {"file": [2, 4, 1, 1], "model": [3, 4, 1, 1]}
    body = [k for k in source.state_dict() if not k.startswith("head.")]
    assert record["loaded"] == body and not record["adapted"] and not record["skipped"]
    assert all(torch.equal(model.state_dict()[k], source.state_dict()[k]) for k in body)
    assert json.loads((tmp_path / "init.json").read_text()) == json.loads(json.dumps(record))
    assert record["source_state_dict_sha256"] == read_model_file(tmp_path / "old.pt")["state_dict_sha256"]
    assert lines[0].startswith(
        f"init from {tmp_path / 'old.pt'}: {len(body)} tensors loaded; new head (2 -> 3"
    )

    head0 = model.head.weight.detach().clone()
    result = fit(model, train, val, target, config, tmp_path / "run", log=_quiet)
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    assert not torch.equal(model.head.weight.detach(), head0)
    loaded = load_model(tmp_path / "run" / "model.pt")
    assert loaded.out_channels == 3
    assert loaded(torch.zeros(1, 1, 16, 16)).shape == (1, 3, 16, 16)

    # a training checkpoint is a model file too: back to 2 classes from the fine-tuned run's last.pt
    back = build_model(make_config().model)
    checkpoint = read_model_file(tmp_path / "run" / "checkpoints" / "last.pt")
    record = init_weights(back, checkpoint, make_config(), tmp_path / "back", None)
    assert sorted(record["replaced"]) == ["head.bias", "head.weight"] and len(record["loaded"]) == len(body)
    assert all(torch.equal(back.state_dict()[k], model.state_dict()[k]) for k in body)


def test_the_encoder_is_frozen_for_its_epochs_then_trains(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.freeze_encoder_epochs=1", "train.val_every=0", "train.epochs=2")
    torch.manual_seed(0)
    model = build_model(config.model)
    before = _state(model)
    lines: list[str] = []
    fit(model, train, val, target, config, tmp_path, stop_after_epochs=1, log=lines.append)
    after = _state(model)
    encoder = [k for k in before if k.startswith("encoder.")]
    others = [k for k in before if not k.startswith("encoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)  # weight decay included
    assert sum(not torch.equal(before[k], after[k]) for k in others) > len(others) // 2
    assert "encoder frozen for epochs 1-1" in lines
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["encoder_frozen"] is True and record["gates_frozen"] is False

    lines.clear()
    fit(
        model,
        train,
        val,
        target,
        config,
        tmp_path,
        resume_from=tmp_path / "checkpoints/last.pt",
        log=lines.append,
    )
    assert "encoder unfrozen at epoch 2" in lines
    now = _state(model)
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert sum(not torch.equal(after[k], now[k]) for k in encoder) > len(encoder) // 2
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    assert record["encoder_frozen"] is False


def test_freeze_specs():
    assert freeze_overrides(["encoder", "gates:2"]) == [
        "train.freeze_encoder_epochs=5",
        "train.freeze_gates_epochs=2",
    ]
    with pytest.raises(ConfigError, match="--freeze decoder: pass encoder or gates"):
        freeze_overrides(["decoder"])
    with pytest.raises(ConfigError, match="--freeze encoder:x"):
        freeze_overrides(["encoder:x"])
