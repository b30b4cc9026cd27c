"""``attnseg train DATA --out RUN --minutes M``: training for a wall-clock budget the user states.

Everything the user did not set (with ``--config`` or ``--set``) is chosen for the budget and the
machine:

- **the budget is the whole command's**: data loading and the width measurement below are taken
  out of it, and training stops (with a checkpoint and ``model.pt``) when the rest is spent;
- **the learning-rate schedule follows the budget** (``train.schedule_by_time``): linear warm-up
  over the first ``WARMUP_SHARE`` of the budget, then cosine to zero at its end, whatever the
  machine's speed, so the last weights are always fully annealed;
- **every labelled case trains** (``data.split=none``) and nothing is validated
  (``train.val_every=0``): the budget goes to the final model. Ask for a split to get one;
- **the network width is measured, not guessed**: one training step of each candidate width
  ``w * (1, 2, 4, ...)`` (``WIDTHS``) is timed on this machine at the patch and batch size derived
  from the data, and the widest whose predicted iteration count in the budget reaches
  ``MIN_ITERATIONS`` is taken (the narrowest when none does);
- the recipe of ``benchmarks/train_hippocampus.py``: deep supervision, AdamW at ``LR``, no elastic
  deformation (its cost per patch on a CPU buys fewer iterations). ``--minutes 30`` on 2 cores
  (``benchmarks/vs_nnunet.py``, docs/benchmarks-hippocampus.md): mean Dice 0.8924 / 0.8918 (two
  seeds) on 40 held-out Task04 cases;
- ``model.pt`` is the mean of the weights over the last half of the budget (``TAIL_AVERAGE``):
  +0.0006 mean Dice over the last weights on two folds' 80 held-out cases
  (``benchmarks/hippocampus_ablation.py``).

The pure part (``choose_width``, ``budget_defaults``) is tested on hand-made values; the timing of
a step is ``measure_step_seconds``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnseg.models.registry import build_model
from attnseg.training.amp import make_precision, resolve_device
from attnseg.training.loop import build_training_loss

WIDTHS = (8, 16, 24, 32)  # first-level feature counts tried; each level doubles
MIN_ITERATIONS = 4000  # the 30-minute hippocampus recipe did 5010 iterations at width 16
WARMUP_SHARE = 0.03
LR = 2e-3
# Upper bound on iterations, as a multiple of the predicted count: the time limit ends the run,
# never the iteration count, even if the machine becomes faster than measured.
ITERATION_HEADROOM = 3.0
MEASURE_SHARE = 0.03  # at most this share of the budget goes to measuring widths (one more may finish)
# model.pt is the mean of the weights over the last half of the budget: +0.0006 mean Dice over the last
# weights on 80 held-out hippocampus cases (2 folds, p = 0.025; benchmarks/hippocampus_ablation.py)
TAIL_AVERAGE = "tail0.5"
FIXED_EPOCHS = 1000  # the upper bound when nothing is measured (several processes)


def budget_defaults(minutes: float) -> dict[str, dict[str, Any]]:
    """The settings a ``--minutes`` run starts from (before the user's own settings apply)."""
    if not minutes > 0:
        raise ValueError(f"--minutes {minutes!r}: pass a positive number of minutes")
    return {
        "model": {"deep_supervision": True},
        "data": {"split": "none"},
        "augment": {"p_elastic": 0.0},
        "optim": {"name": "adamw", "lr": LR, "schedule": "cosine", "min_lr": 0.0},
        "train": {
            "val_every": 0,
            "schedule_by_time": True,
            "budget_minutes": float(minutes),
            "weight_averages": [TAIL_AVERAGE],
            "model_weights": TAIL_AVERAGE,
        },
    }


def explicit_keys(config_file_data: Mapping[str, Any] | None, overrides: Sequence[str]) -> set[str]:
    """Dotted keys the user set (``model.features``), from a YAML file's data and ``--set`` items."""
    keys = {item.split("=", 1)[0].strip() for item in overrides if "=" in item}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, name + ".")
            else:
                keys.add(name)

    walk(config_file_data or {}, "")
    return keys


def widths_features(width: int, depth: int) -> tuple[int, ...]:
    """``(w, 2w, 4w, ...)`` with ``depth`` levels."""
    return tuple(width * 2**level for level in range(depth))


def choose_width(
    step_seconds: Mapping[int, float], budget_s: float, min_iterations: int = MIN_ITERATIONS
) -> tuple[int, str]:
    """The widest first-level width whose predicted iterations in ``budget_s`` reach ``min_iterations``.

    ``step_seconds``: measured seconds of one training step per candidate width. Returns the width
    and the reason in words. Example: ``choose_width({8: 0.1, 16: 0.3, 32: 1.0}, 1800)`` -> 16
    (6000 iterations; 32 would do 1800).
    """
    if not step_seconds:
        raise ValueError("no candidate width was measured")
    if budget_s <= 0:
        raise ValueError(f"budget_s={budget_s}: nothing is left of the budget for training")
    predicted = {w: budget_s / max(s, 1e-9) for w, s in sorted(step_seconds.items())}
    fitting = [w for w, n in predicted.items() if n >= min_iterations]
    shown = ", ".join(f"{w}: {step_seconds[w]:.2f} s/step ~{predicted[w]:.0f} it" for w in predicted)
    if fitting:
        width = max(fitting)
        why = f"the widest reaching {min_iterations} iterations in the budget ({shown})"
    else:
        width = min(predicted)
        why = f"the narrowest: no width reaches {min_iterations} iterations in the budget ({shown})"
    return width, why


def measure_step_seconds(
    build: Callable[[], torch.nn.Module],
    loss_of: Callable[[Any, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    autocast: Callable[[], Any],
    repeats: int = 2,
) -> float:
    """Fastest of ``repeats`` training steps (forward, loss, backward, AdamW update) after one warm-up
    step. The minimum, not the median: on a shared machine other work only ever adds time."""
    model = build()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast():
            loss = loss_of(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class BudgetPlan:
    """What a ``--minutes`` run chose, for the log line and ``derived.json``."""

    minutes: float
    setup_s: float
    training_s: float
    width: int | None
    width_reason: str | None
    epochs: int
    predicted_iterations: int | None

    def describe(self) -> str:
        parts = [
            f"budget {self.minutes:g} min: {self.setup_s:.0f} s for loading the data and choosing the "
            f"width, {self.training_s / 60:.1f} min of training, learning rate annealed to 0 over it"
        ]
        if self.width is not None:
            parts.append(f"width {self.width}: {self.width_reason}")
        return "; ".join(parts)


def epochs_for(predicted_iterations: float, iters_per_epoch: int) -> int:
    """An epoch count that the time limit, not the iteration count, will end."""
    return max(1, math.ceil(ITERATION_HEADROOM * predicted_iterations / max(1, iters_per_epoch)))


def measure_widths(
    step_seconds: Callable[[Sequence[int]], float], depth: int, budget_s: float
) -> dict[int, float]:
    """Step seconds of the candidate widths, narrowest first. Stops early once a width cannot reach
    ``MIN_ITERATIONS`` (wider ones are slower still) or measuring has taken ``MEASURE_SHARE`` of the
    budget. The first step of a process pays one-off kernel set-up, so one throwaway step runs first."""
    step_seconds(widths_features(WIDTHS[0], depth))
    start = time.perf_counter()
    measured: dict[int, float] = {}
    for width in WIDTHS:
        measured[width] = step_seconds(widths_features(width, depth))
        if (
            budget_s / measured[width] < MIN_ITERATIONS
            or time.perf_counter() - start > MEASURE_SHARE * budget_s
        ):
            break
    return measured


def plan_for_budget(
    config, target, explicit: set[str], started: float, log: Callable[[str], None], *, measure: bool = True
):
    """Fill in what a ``--minutes`` run chooses (width, epochs, warm-up, time limit); return
    ``(config, BudgetPlan)``. ``started``: ``time.perf_counter()`` when the command began.
    ``measure=False`` (several processes, which must agree): the configured width is kept and the
    epoch count is a fixed upper bound (``FIXED_EPOCHS``); the time limit ends the run either way."""
    tc, oc, mc, dc = config.train, config.optim, config.model, config.data
    budget_s = 60.0 * float(tc.budget_minutes)
    device = resolve_device(tc.device, 0)
    precision = make_precision(tc.precision, device)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    x = torch.randn(dc.batch_size, mc.in_channels, *dc.patch_size, device=device)
    label = np.zeros(tuple(dc.patch_size), dtype=np.int64) + int(target.values[0])
    y = torch.from_numpy(np.stack([target.encode(label)] * dc.batch_size)).to(device)
    loss = build_training_loss(config.loss, target, mc.deep_supervision)

    def step_seconds(features: Sequence[int]) -> float:
        model_cfg = dataclasses.replace(mc, features=tuple(features))
        torch.manual_seed(0)
        return measure_step_seconds(
            lambda: build_model(model_cfg).to(device), loss, x, y, autocast=precision.autocast
        )

    depth = len(mc.features)
    width, why = None, None
    if not measure:
        predicted = FIXED_EPOCHS * 250 / ITERATION_HEADROOM
    elif "model.features" in explicit:
        predicted = budget_s / step_seconds(mc.features)
    else:
        measured = measure_widths(step_seconds, depth, budget_s)
        width, why = choose_width(measured, budget_s - (time.perf_counter() - started))
        mc = dataclasses.replace(mc, features=widths_features(width, depth))
        predicted = budget_s / measured[width]
    iters = tc.iters_per_epoch if tc.iters_per_epoch > 0 else 250
    epochs = tc.epochs if "train.epochs" in explicit else epochs_for(predicted, iters)
    total = epochs * iters
    warmup = oc.warmup_iters if "optim.warmup_iters" in explicit else max(1, int(WARMUP_SHARE * total))
    setup_s = time.perf_counter() - started
    training_s = budget_s - setup_s
    if training_s <= 0:
        raise ValueError(
            f"--minutes {tc.budget_minutes:g}: loading the data and measuring the widths took {setup_s:.0f} s, "
            "the whole budget; give a larger budget"
        )
    tc = dataclasses.replace(tc, time_limit_s=round(training_s, 1), epochs=epochs, iters_per_epoch=iters)
    config = dataclasses.replace(
        config, model=mc, train=tc, optim=dataclasses.replace(oc, warmup_iters=warmup)
    )
    plan = BudgetPlan(float(tc.budget_minutes), setup_s, training_s, width, why, epochs, int(predicted))
    log(plan.describe())
    return config, plan
