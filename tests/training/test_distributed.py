"""DDP through torchrun with 2 CPU processes (gloo): one step equals one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnseg.models import build_model, read_model_file
from attnseg.training.loop import fit

OVERRIDES = [
    "model.spatial_dims=2",
    "model.features=[4,8,16]",
    "model.in_channels=1",
    "model.out_channels=2",
    "data.patch_size=[16,16]",
    "train.epochs=1",
    "train.iters_per_epoch=1",
    "train.val_every=0",
    "train.progress=false",
    "train.precision=fp32",
    "train.threads=1",
    # per-sample losses only: batch Dice over a rank's half batch is not the global batch Dice
    "loss.batch_dice=false",
    # SGD: Adam's first step is ~lr*sign(g), which turns rounding noise in zero-in-theory gradients
    # (a bias just before a norm) into full-size differences
    "optim.name=sgd",
    "optim.lr=0.1",
    "optim.warmup_iters=0",
]

SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import torch
from conftest import disc_case
from attnseg.config import RunConfig, apply_overrides, from_dict, to_dict
from attnseg.models import build_model
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.training.loop import fit

config = from_dict(RunConfig, apply_overrides(to_dict(RunConfig()), {overrides!r}))
target = LabelScheme.from_labels({{"background": 0, "disc": 1}}, kind="labels")
torch.manual_seed(0)
fit(build_model(config.model), [disc_case(i) for i in range(4)], [], target, config, {run!r}, log=print)
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_cpu_processes_equal_one_with_the_same_global_batch(tmp_path, cases, target, make_config):
    script = tmp_path / "ddp_fit.py"
    run = tmp_path / "ddp"
    script.write_text(
        SCRIPT.format(
            tests=str(Path(__file__).parent), overrides=OVERRIDES + ["data.batch_size=1"], run=str(run)
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    ddp_state = read_model_file(run / "model.pt")["state_dict"]

    config = make_config(*OVERRIDES, "data.batch_size=2")
    torch.manual_seed(0)
    model = build_model(config.model)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, cases[0], [], target, config, tmp_path / "single", log=lambda _: None)
    moved = 0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-5, atol=1e-6, msg=name)
        moved += not torch.equal(value, initial[name])
    assert moved > len(initial) // 2  # the step really changed the weights
