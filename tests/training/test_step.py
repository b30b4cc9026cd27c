"""One optimiser step on a one-weight model: accumulation, clipping, and the NaN policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from attnseg.training import distributed as D
from attnseg.training.amp import Precision
from attnseg.training.step import StepParts, TrainingDiverged, train_step


class SumLoss(nn.Module):
    """``sum(out - y)`` per micro-batch: the gradient of ``w`` is ``sum(x)``; ``.last`` like attnseg's losses."""

    def forward(self, out, y):
        loss = (out - y).sum()
        self.last = {"sum": float(loss.detach())}
        return loss


class SqrtLoss(nn.Module):
    """Finite at 0 (``sqrt(0) = 0``) but with an infinite gradient there."""

    def forward(self, out, y):
        return out.sqrt().sum()


def make_parts(loss_fn=None, **options) -> StepParts:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    return StepParts(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        loss_fn=loss_fn or SumLoss(),
        precision=Precision("fp32", torch.device("cpu")),
        dist=D.DistInfo(),
        case_ids=["a", "b", "c"],
        last_checkpoint=Path("RUN/checkpoints/last.pt"),
        hint="lower optim.lr",
        **options,
    )


def batch(x: float, case: int = 0):
    """A micro-batch of one sample ``x`` (target 0) from case ``case``."""
    return torch.tensor([[x]]), torch.zeros(1, 1), torch.tensor([case])


def weight(parts: StepParts) -> float:
    return float(parts.model.weight.detach())


def test_accumulated_micro_batches_make_one_step_with_the_mean_gradient():
    parts = make_parts(grad_accum=2)
    result = train_step(
        parts, parts.model, [batch(2.0), batch(4.0)], lr_at=lambda i: 0.1 * i, iteration=1, epoch=0
    )
    # losses 2 and 4 (w = 1), each divided by 2; gradient (2 + 4) / 2 = 3; lr_at(1) = 0.1
    assert result.ok and result.lr == pytest.approx(0.1) and result.loss == pytest.approx(3.0)
    assert result.grad_norm == pytest.approx(3.0)
    assert weight(parts) == pytest.approx(1.0 - 0.1 * 3.0)
    assert parts.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert result.terms == [{"sum": 2.0}, {"sum": 4.0}]
    assert parts.model.weight.grad is None  # cleared for the next step


def test_clipping_scales_the_gradient_and_reports_the_norm_before_it():
    parts = make_parts(grad_clip_norm=1.0)
    result = train_step(parts, parts.model, [batch(2.0)], lr_at=lambda i: 0.1, iteration=0, epoch=0)
    assert result.grad_norm == pytest.approx(2.0)
    assert weight(parts) == pytest.approx(1.0 - 0.1 * 1.0)  # the gradient 2 clipped to norm 1


def test_skip_drops_the_whole_step_and_keeps_the_finite_micro_batches_terms():
    parts = make_parts(grad_accum=2, nan_policy="skip")
    micro = [batch(float("nan")), batch(4.0)]
    result = train_step(parts, parts.model, micro, lr_at=lambda i: 0.1, iteration=0, epoch=0)
    assert not result.ok and result.loss is None and result.grad_norm is None
    assert weight(parts) == 1.0 and parts.model.weight.grad is None
    assert result.terms == [{"sum": 4.0}]  # the second micro-batch still ran (as before the refactor)


def test_stop_names_the_iteration_the_cases_and_the_intact_checkpoint():
    parts = make_parts(grad_accum=2)
    micro = iter([batch(1.0, case=0), batch(float("nan"), case=2), batch(5.0)])
    with pytest.raises(TrainingDiverged) as info:
        train_step(parts, parts.model, micro, lr_at=lambda i: 0.1, iteration=6, epoch=2)
    assert str(info.value) == (
        "loss is nan at iteration 7 (epoch 3, cases c; the input patch itself contains NaN/inf); stopped "
        f"before the optimiser step, so the weights are not corrupted and {Path('RUN/checkpoints/last.pt')} "
        "(epoch 2) is intact. Hints: lower optim.lr"
    )
    assert weight(parts) == 1.0
    assert next(micro)[0].item() == 5.0  # stopped at once: the rest of the step was not read


def test_a_non_finite_gradient_norm_goes_through_the_same_policy():
    parts = make_parts(SqrtLoss())
    with torch.no_grad():
        parts.model.weight.zero_()  # out = 0: the loss is 0, its gradient infinite
    with pytest.raises(TrainingDiverged, match=r"^gradient norm is inf at iteration 1 \(epoch 1\); stopped"):
        train_step(parts, parts.model, [batch(1.0)], lr_at=lambda i: 0.1, iteration=0, epoch=0)
    parts = make_parts(SqrtLoss(), nan_policy="skip")
    with torch.no_grad():
        parts.model.weight.zero_()
    result = train_step(parts, parts.model, [batch(1.0)], lr_at=lambda i: 0.1, iteration=0, epoch=0)
    assert not result.ok and result.grad_norm == float("inf") and weight(parts) == 0.0
