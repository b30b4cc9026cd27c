"""Exact resume, gate freezing across a resume, and a run killed mid-epoch."""

from __future__ import annotations

import json

import torch

from attnseg.models import build_model
from attnseg.training.loop import fit


def _model(config, seed=0):
    torch.manual_seed(seed)
    return build_model(config.model)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_bitwise_exact(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.epochs=4", "train.multiscale=[0.75,1.25]")
    straight = _model(config)
    fit(straight, train, val, target, config, tmp_path / "a", log=lambda _: None)

    first = _model(config)
    result = fit(first, train, val, target, config, tmp_path / "b", stop_after_epochs=2, log=lambda _: None)
    assert result.stopped == "stop_after_epochs" and result.epochs == 2
    # a fresh process would rebuild the model from scratch (consuming RNG differently): resume into it
    torch.manual_seed(123)
    second = _model(config, seed=99)
    result = fit(
        second,
        train,
        val,
        target,
        config,
        tmp_path / "b",
        resume_from=tmp_path / "b/checkpoints/last.pt",
        log=lambda _: None,
    )
    assert result.epochs == 4 and result.iterations == 8
    assert _same_state(straight.state_dict(), second.state_dict())
    a = [json.loads(line) for line in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_dice_mean"] for r in a] == [r["val_dice_mean"] for r in b]


def test_gates_frozen_then_unfrozen(tmp_path, cases, target, make_config):
    train, val = cases
    config = make_config("train.freeze_gates_epochs=1", "train.val_every=0")
    model = _model(config)
    gates0 = {k: v.clone() for k, v in model.gates.state_dict().items()}
    others0 = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("gates.")}
    fit(model, train, val, target, config, tmp_path, stop_after_epochs=1, log=lambda _: None)
    assert _same_state(gates0, model.gates.state_dict())  # frozen: untouched, weight decay included
    changed = [
        k
        for k, v in model.state_dict().items()
        if not k.startswith("gates.") and not torch.equal(v, others0[k])
    ]
    assert len(changed) > len(others0) // 2
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["gates_frozen"] is True
    fit(
        model,
        train,
        val,
        target,
        config,
        tmp_path,
        resume_from=tmp_path / "checkpoints/last.pt",
        log=lambda _: None,
    )
    now = model.gates.state_dict()
    assert all(p.requires_grad for p in model.gates.parameters())
    assert sum(not torch.equal(gates0[k], now[k]) for k in gates0) > len(gates0) // 2


SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import torch
from conftest import disc_case
from attnseg.config import RunConfig, apply_overrides, from_dict, to_dict
from attnseg.models import build_model
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.training.loop import fit

torch.set_num_threads(1)
overrides = {overrides!r}
config = from_dict(RunConfig, apply_overrides(to_dict(RunConfig()), overrides))
target = LabelScheme.from_labels({{"background": 0, "disc": 1}}, kind="labels")
torch.manual_seed(0)
fit(build_model(config.model), [disc_case(i) for i in range(4)], [disc_case(100)], target, config, {run!r},
    log=lambda _: None)
"""


def test_sigkill_mid_epoch_leaves_a_loadable_checkpoint(tmp_path, cases, target, make_config):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from attnseg.training.checkpointing import load_checkpoint

    overrides = [
        "model.spatial_dims=2",
        "model.features=[4,8,16]",
        "model.in_channels=1",
        "model.out_channels=2",
        "data.patch_size=[16,16]",
        "data.batch_size=2",
        "train.epochs=1000",
        "train.iters_per_epoch=2",
        "train.val_every=0",
        "train.progress=false",
    ]
    run = tmp_path / "run"
    script = SCRIPT.format(tests=str(Path(__file__).parent), overrides=overrides, run=str(run))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = run / "checkpoints"
    deadline = time.monotonic() + 120
    killed_during_write = False
    try:
        # wait for a first complete checkpoint, then kill as soon as the next one is being written
        while time.monotonic() < deadline and not (ckpts / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        assert (ckpts / "last.pt").exists(), "no checkpoint within 120 s"
        while time.monotonic() < deadline:
            if any(p.name.startswith(".last.pt.") for p in ckpts.iterdir()):
                killed_during_write = True
                break
            time.sleep(0.002)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    payload = load_checkpoint(ckpts / "last.pt")
    assert payload["epoch"] >= 1 and payload["iteration"] == 2 * payload["epoch"]
    # the interrupted temporary file (if the kill landed mid-write) is never mistaken for a checkpoint
    assert [p.name for p in ckpts.iterdir() if not p.name.startswith(".")] == ["last.pt"]
    # and the run continues from it
    config = make_config("train.epochs=1000", "train.val_every=0")
    model = build_model(config.model)
    result = fit(
        model,
        *cases,
        target,
        config,
        run,
        resume_from=ckpts / "last.pt",
        stop_after_epochs=1,
        log=lambda _: None,
    )
    assert result.epochs == payload["epoch"] + 1
    print("killed during a checkpoint write:", killed_during_write)
