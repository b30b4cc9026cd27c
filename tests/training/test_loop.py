"""The loop: exact resume, gate freezing, NaN handling, accumulation, run-folder contents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from attnseg.config import RunConfig, from_dict
from attnseg.models import build_model
from attnseg.training.checkpointing import load_checkpoint
from attnseg.training.loop import TrainingDiverged, fit


def _model(config, seed=0):
    torch.manual_seed(seed)
    return build_model(config.model)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_input_stops_with_iteration_and_hint(tmp_path, cases, target, make_config):
    train, val = cases
    for case in train:
        case.image[0, 5, 5] = np.nan
    config = make_config()
    model = _model(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged) as info:
        fit(model, train, val, target, config, tmp_path, log=lambda _: None)
    message = str(info.value)
    assert "at iteration 1 (epoch 1" in message
    assert "input patch itself contains NaN" in message
    assert "optim.lr" in message and "nan_policy=skip" in message
    assert _same_state(before, model.state_dict())  # never updated with a NaN gradient
    assert not (tmp_path / "checkpoints/last.pt").exists()


def test_nan_policy_skip_drops_bad_batches(tmp_path, cases, target, make_config):
    train, val = cases
    train[0].image[:] = np.nan  # every patch of this case is NaN
    config = make_config(
        "train.nan_policy=skip", "train.epochs=2", "train.iters_per_epoch=4", "data.batch_size=1"
    )
    model = _model(config)
    result = fit(model, train, val, target, config, tmp_path, log=lambda _: None)
    # each epoch visits the 4 cases once (batch 1), so exactly one batch per epoch is skipped
    assert [r["skipped_batches"] for r in result.history] == [1, 1]
    assert result.summary["skipped_batches"] == 2
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    # ... and too many in a row stop the run
    for case in train:
        case.image[:] = np.nan
    config = make_config("train.nan_policy=skip", "train.max_skipped_batches=2", "train.iters_per_epoch=4")
    with pytest.raises(TrainingDiverged, match="3 batches in a row"):
        fit(_model(config), train, val, target, config, tmp_path / "again", log=lambda _: None)


def test_gradient_accumulation_equals_bigger_batch(tmp_path, cases, target, make_config):
    # per-sample losses (CE) make accumulation of 2 x batch 1 the same step as 1 x batch 2 (SGD: Adam
    # would amplify the rounding noise of gradients that are zero in theory, e.g. a bias before a norm)
    train, val = cases
    common = (
        "loss.name=ce",
        "optim.name=sgd",
        "train.precision=fp32",
        "train.val_every=0",
        "train.epochs=1",
        "optim.grad_clip_norm=null",
    )
    a = _model(make_config(*common))
    fit(a, train, val, target, make_config(*common), tmp_path / "a", log=lambda _: None)
    b = _model(make_config(*common))
    config = make_config(*common, "data.batch_size=1", "optim.grad_accum=2")
    fit(b, train, val, target, config, tmp_path / "b", log=lambda _: None)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)


def test_run_folder_contents_and_checkpoint_format(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("model.deep_supervision=true", "train.epochs=3", "optim.name=sgd", "optim.lr=0.05")
    result = fit(_model(config), train, val, target, config, tmp_path, log=lambda _: None)
    assert result.stopped == "completed"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "lr", "val_dice_mean", "val_dice_disc", "epoch_seconds"} <= set(header)
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = torch.load(tmp_path / "checkpoints/last.pt", map_location="cpu", weights_only=True)
    assert payload["epoch"] == 3 and payload["iteration"] == 6
    assert set(payload["rng"]) >= {"torch", "numpy", "python"}
    assert payload["optimizer"]["param_groups"][0]["nesterov"] is True
    assert from_dict(RunConfig, payload["run_config"]).model.deep_supervision is True
    best = load_checkpoint(tmp_path / "checkpoints/best.pt")
    assert best["best"]["dice"] == result.best_dice == max(json.loads(x)["val_dice_mean"] for x in lines)
    # model.pt holds the best weights and loads as a plain model (eval mode: one output)
    from attnseg.models import load_model

    model = load_model(tmp_path / "model.pt")
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in model.state_dict().items())
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 2, 16, 16)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 6 and summary["best_epoch"] == result.best_epoch


def test_config_yaml_round_trip(tmp_path, make_config):
    from attnseg.config import save_yaml

    config = make_config("train.multiscale=[0.8,1.2]", "loss.class_weights=[1,2]")
    save_yaml(tmp_path / "c.yaml", config)
    assert from_dict(RunConfig, yaml.safe_load((tmp_path / "c.yaml").read_text())) == config


def test_region_targets_keep_every_channel_in_the_dice_term(make_config):
    from attnseg.datasets.label_scheme import LabelScheme
    from attnseg.losses import DiceLoss
    from attnseg.training.loop import build_training_loss

    regions = LabelScheme.from_labels({"background": 0, "a": 1, "b": 2}, {"WT": [1, 2], "TC": [2]})
    config = make_config()  # loss.include_background defaults to False (for softmax classes)
    loss = build_training_loss(config.loss, regions, deep_supervision=False)
    dice = loss.terms["dice"]
    assert isinstance(dice, DiceLoss) and dice.include_background  # WT (channel 0) is not background
    logits = torch.full((1, 2, 4, 4), -20.0)
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0, :2] = 1  # WT present, not predicted: the Dice term must see it
    assert dice(logits, target).item() > 0.49


def test_time_limit_stops_cleanly_and_time_schedule_anneals(tmp_path, cases, target, make_config):
    from attnseg.training.schedules import warmup_cosine_lr

    train, val = cases
    config = make_config(
        "train.epochs=5", "train.iters_per_epoch=4", "train.time_limit_s=1e-6", "train.schedule_by_time=true"
    )
    result = fit(_model(config), train, val, target, config, tmp_path, log=lambda _: None)
    assert result.stopped == "time_limit" and result.iterations == 1
    # the budget is spent at once, so the first step already uses the end of the schedule
    assert result.history[0]["lr"] == pytest.approx(warmup_cosine_lr(19, 20, 0.01, warmup_iters=1))
    assert "val_dice_mean" in result.history[0]  # the last epoch of a run always validates
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["iteration"] == 1


def test_tensorboard_events_hold_the_logged_scalars(tmp_path, cases, target, make_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val = cases
    config = make_config("train.epochs=2")
    fit(_model(config), train, val, target, config, tmp_path, log=lambda _: None)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "lr", "val_dice/disc"} <= tags
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loss = events.Scalars("train_loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([r["train_loss"] for r in logged], rel=1e-6)
