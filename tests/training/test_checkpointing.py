from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from attnseg.errors import ConfigError, ModelFileError
from attnseg.models import AttentionUNet, save_model
from attnseg.training.amp import make_precision, resolve_precision
from attnseg.training.checkpointing import load_checkpoint, restore, rng_state, save_checkpoint, set_rng_state


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    state = rng_state()
    model = AttentionUNet(2, 1, 2, features=(4, 8))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 1, 8, 8)).sum().backward()
    optimizer.step()
    save_checkpoint(
        tmp_path / "c.pt",
        model,
        run_config={"optim": {"schedule": "cosine"}},
        optimizer=optimizer,
        scaler=None,
        epoch=3,
        iteration=30,
        history=[{"epoch": 1, "train_loss": 0.5}],
        best={"dice": None},
    )
    # what the generators give right after the save ...
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    payload = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=True)
    assert payload["schedule"] == {"name": "cosine", "iteration": 30}
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(payload["rng"])  # ... they give again after restoring the saved states
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected
    set_rng_state(state)

    fresh = AttentionUNet(2, 1, 2, features=(4, 8))
    fresh_opt = torch.optim.AdamW(fresh.parameters())
    restore(load_checkpoint(tmp_path / "c.pt"), fresh, fresh_opt, restore_rng=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_opt.state_dict()["state"][0]["step"] == 1


def test_a_plain_model_file_is_not_a_training_checkpoint(tmp_path):
    save_model(tmp_path / "m.pt", AttentionUNet(2, 1, 2, features=(4, 8)))
    with pytest.raises(ModelFileError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "m.pt")


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ConfigError):
        resolve_precision("fp8", cpu)
    bf16 = make_precision("bf16", cpu)
    assert not bf16.scaler().is_enabled()
    with bf16.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
