"""Weight averages kept beside the trained weights: an exponential moving average (EMA) and a
uniform average over the tail of the schedule (stochastic weight averaging, SWA).

A spec names one average: ``"ema0.999"`` (each step ``avg = d * avg + (1 - d) * w``, started from
the first weights) or ``"tail0.25"`` (the plain mean of the weights after every step of the last
25 % of the schedule). Several can run at once; each is written as ``averages/model_<spec>.pt``
beside ``model.pt`` so that one run measures them all on the same trajectory. Only floating-point
parameters and buffers are averaged; integer buffers are copied from the live model. Instance
normalisation keeps no running statistics, so an averaged model needs no statistics pass. Training
checkpoints carry the averages, so ``--resume`` continues them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

_SPEC = re.compile(r"^(ema|tail)(0?\.\d+|1(?:\.0*)?)$")


@dataclass
class Average:
    """One running average of a model's floating-point state."""

    spec: str
    kind: str  # "ema" or "tail"
    value: float  # EMA decay, or the tail's share of the schedule
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0  # weights averaged so far


def parse_average_spec(spec: str) -> tuple[str, float]:
    """``"ema0.999"`` -> ``("ema", 0.999)``; ``"tail0.25"`` -> ``("tail", 0.25)``."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise ValueError(
            f"train.weight_averages: {spec!r} is not an average; expected 'ema<decay>' (e.g. ema0.999) "
            "or 'tail<share>' (e.g. tail0.25: the mean of the weights over the last 25 % of the schedule)"
        )
    kind, value = match.group(1), float(match.group(2))
    if not 0.0 < value < 1.0 and not (kind == "tail" and value == 1.0):
        raise ValueError(f"train.weight_averages: {spec!r}: the number must be in (0, 1)")
    return kind, value


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


class WeightAverages:
    """The averages named by ``specs``, updated after each optimiser step with the schedule's progress."""

    def __init__(self, specs: Sequence[str]):
        self.averages = [Average(s, *parse_average_spec(s)) for s in specs]

    def __bool__(self) -> bool:
        return bool(self.averages)

    @torch.no_grad()
    def update(self, model: nn.Module, progress: float) -> None:
        """Fold the model's current weights in; ``progress`` is the share of the schedule done (0-1)."""
        current = None
        for avg in self.averages:
            if avg.kind == "tail" and progress < 1.0 - avg.value:
                continue
            current = current if current is not None else _float_state(model)
            if not avg.state:
                avg.state = {k: v.detach().float().clone() for k, v in current.items()}
            else:
                weight = (1.0 - avg.value) if avg.kind == "ema" else 1.0 / (avg.count + 1)
                names = list(current)
                torch._foreach_lerp_(
                    [avg.state[k] for k in names], [current[k].float() for k in names], weight
                )
            avg.count += 1

    def to_payload(self) -> dict[str, dict]:
        """Plain data for a training checkpoint, so that a resumed run continues every average."""
        return {a.spec: {"state": a.state, "count": a.count} for a in self.averages}

    def load_payload(self, payload: dict[str, dict] | None) -> None:
        """Restore the averages a checkpoint saved (those it lacks start afresh)."""
        for avg in self.averages:
            saved = (payload or {}).get(avg.spec)
            if saved:
                avg.state = {k: v.clone() for k, v in saved["state"].items()}
                avg.count = int(saved["count"])

    def averaged_state(self, model: nn.Module, avg: Average) -> dict[str, torch.Tensor]:
        """The model's full state dict with the average's floating-point tensors in place."""
        state = model.state_dict()
        return {k: (avg.state[k].to(v.dtype) if k in avg.state else v) for k, v in state.items()}
