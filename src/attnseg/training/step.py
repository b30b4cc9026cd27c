"""One optimiser step: ``optim.grad_accum`` micro-batches forward and backward, then clip and step.

``train_step`` is the only place that touches gradients. It sets the learning rate when the step's
first micro-batch arrives, runs each micro-batch under autocast (DDP synchronises gradients on the
last one only), scales by the fp16 ``GradScaler`` when there is one, checks the loss of every
micro-batch and the gradient norm once, clips, steps and clears the gradients. It returns what
happened (``StepResult``); counting skipped steps and averaging losses is the caller's business.

A non-finite loss or gradient norm goes through ``train.nan_policy`` in one place
(``_on_non_finite``): ``stop`` raises ``TrainingDiverged`` naming the iteration, the cases and what
to try, before the optimiser step, so the weights are never updated with NaN; ``skip`` drops the
step (no optimiser step; the gradients are cleared).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from attnseg.config import RunConfig
from attnseg.errors import AttnsegError
from attnseg.training import distributed as D
from attnseg.training.amp import Precision


class TrainingDiverged(AttnsegError, FloatingPointError):
    """The loss or the gradients became NaN/inf; the weights were not updated with them."""


@dataclass(frozen=True)
class StepParts:
    """What an optimiser step uses, built once by ``fit``."""

    model: nn.Module  # the parameters that step (the forward pass may go through a DDP wrapper)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    precision: Precision
    dist: D.DistInfo
    case_ids: Sequence[str]  # of the training cases, by index (for the NaN message)
    last_checkpoint: Path  # named as intact in the NaN message after the first epoch
    hint: str  # what to try, ending every TrainingDiverged message
    grad_accum: int = 1
    grad_clip_norm: float | None = None
    nan_policy: str = "stop"
    memory_format: torch.memory_format | None = None


@dataclass
class StepResult:
    """What one optimiser step did."""

    lr: float
    ok: bool = True  # False: dropped by nan_policy=skip (the weights did not change)
    loss: float | None = None  # mean over the micro-batches; None when dropped
    grad_norm: float | None = None  # total norm before clipping; None when the loss was not finite
    terms: list[dict[str, float]] = field(default_factory=list)  # each finite micro-batch's loss terms


def nan_hints(config: RunConfig, precision: Precision) -> str:
    tips = [f"lower optim.lr (now {config.optim.lr:g})"]
    if precision.name != "fp32":
        tips.append("train with --set train.precision=fp32")
    if config.optim.grad_clip_norm is None:
        tips.append("clip gradients (--set optim.grad_clip_norm=12)")
    tips.append("check the data with `attnseg check DATA`")
    tips.append("or skip such batches with --set train.nan_policy=skip")
    return "; ".join(tips)


def _on_non_finite(parts: StepParts, explain: Callable[[], str]) -> bool:
    """``train.nan_policy``: ``stop`` raises ``TrainingDiverged(explain())``; ``skip`` returns False
    (the step is dropped)."""
    if parts.nan_policy == "stop":
        raise TrainingDiverged(explain())
    return False


def _loss_message(parts: StepParts, loss, x, case_idx, iteration: int, epoch: int) -> str:
    ids = [parts.case_ids[int(i)] for i in case_idx]
    nan_input = not bool(torch.isfinite(x).all())
    return (
        f"loss is {float(loss.detach())} at iteration {iteration + 1} (epoch {epoch + 1}, "
        f"cases {', '.join(ids)}"
        + ("; the input patch itself contains NaN/inf" if nan_input else "")
        + "); stopped before the optimiser step, so the weights are not corrupted"
        + (f" and {parts.last_checkpoint} (epoch {epoch}) is intact" if epoch > 0 else "")
        + f". Hints: {parts.hint}"
    )


def _grad_message(parts: StepParts, norm, iteration: int, epoch: int) -> str:
    return (
        f"gradient norm is {float(norm)} at iteration {iteration + 1} (epoch {epoch + 1}); "
        f"stopped before the optimiser step. Hints: {parts.hint}"
    )


def _forward_backward(
    parts: StepParts, net: nn.Module, batch, result: StepResult, *, sync: bool, iteration: int, epoch: int
) -> bool:
    """One micro-batch ``(x, y, case_index)``; False when its loss is not finite (no backward then)."""
    x, y, case_idx = batch
    device = parts.precision.device
    x = x.to(device, non_blocking=True)
    if parts.memory_format is not None:
        x = x.contiguous(memory_format=parts.memory_format)
    y = y.to(device, non_blocking=True)
    # DDP all-reduces gradients in backward; only the step's last micro-batch needs that
    no_sync = parts.dist.enabled and not sync and hasattr(net, "no_sync")
    with net.no_sync() if no_sync else contextlib.nullcontext():
        with parts.precision.autocast():
            out = net(x)
        loss = parts.loss_fn(out, y)
        if not D.all_true(bool(torch.isfinite(loss).item()), parts.dist, device):
            return _on_non_finite(parts, lambda: _loss_message(parts, loss, x, case_idx, iteration, epoch))
        parts.scaler.scale(loss / parts.grad_accum).backward()
        result.loss += float(loss.detach()) / parts.grad_accum
        result.terms.append(dict(getattr(parts.loss_fn, "last", {})))
    return True


def _clip_and_check(parts: StepParts, result: StepResult, iteration: int, epoch: int) -> bool:
    """Unscale, clip (``optim.grad_clip_norm``) and check the total gradient norm."""
    parts.scaler.unscale_(parts.optimizer)
    params = [p for p in parts.model.parameters() if p.grad is not None]
    if parts.grad_clip_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, parts.grad_clip_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    result.grad_norm = float(norm)
    # fp16: the scaler skips the step itself when gradients overflowed (and lowers its scale)
    if bool(torch.isfinite(norm).item()) or parts.scaler.is_enabled():
        return True
    return _on_non_finite(parts, lambda: _grad_message(parts, norm, iteration, epoch))


def train_step(
    parts: StepParts,
    net: nn.Module,
    micro_batches: Iterable,
    *,
    lr_at: Callable[[int], float],
    iteration: int,
    epoch: int,
) -> StepResult:
    """One optimiser step over ``micro_batches`` (``parts.grad_accum`` of ``(x, y, case_index)``).

    ``lr_at(iteration)`` is read when the first micro-batch has arrived (a time-budgeted schedule
    counts the seconds spent until then). ``net``: ``parts.model`` or its DDP wrapper.
    """
    result = StepResult(lr=float("nan"), loss=0.0)
    for m, batch in enumerate(micro_batches):
        if m == 0:
            result.lr = lr_at(iteration)
            for group in parts.optimizer.param_groups:
                group["lr"] = result.lr
        last = m == parts.grad_accum - 1
        finite = _forward_backward(parts, net, batch, result, sync=last, iteration=iteration, epoch=epoch)
        result.ok = result.ok and finite
    if result.ok:
        result.ok = _clip_and_check(parts, result, iteration, epoch)
    if result.ok:
        parts.scaler.step(parts.optimizer)  # fp16: skips the step itself when gradients overflowed
        parts.scaler.update()
    else:
        result.loss = None
    parts.optimizer.zero_grad(set_to_none=True)
    return result
