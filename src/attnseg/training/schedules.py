"""Learning-rate schedules as pure functions of the iteration (0-based optimizer step).

The loop sets ``lr = schedule(iteration)`` before every optimizer step, so a schedule has no state
of its own and resuming at iteration ``i`` gives exactly the rate an uninterrupted run would use.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _check(iteration: int, total_iters: int, warmup_iters: int) -> None:
    if total_iters < 1:
        raise ValueError(f"total_iters={total_iters}: must be >= 1")
    if not 0 <= warmup_iters < total_iters:
        raise ValueError(f"warmup_iters={warmup_iters}: must be in [0, total_iters={total_iters})")
    if iteration < 0:
        raise ValueError(f"iteration={iteration}: must be >= 0")


def linear_warmup(iteration: int, warmup_iters: int, base_lr: float, start_factor: float = 0.0) -> float:
    """Linear ramp over steps ``0 .. warmup_iters - 1`` from ``base_lr * start_factor`` towards
    ``base_lr``: step ``i`` gets ``base_lr * (start_factor + (1 - start_factor) * (i + 1) / warmup_iters)``,
    so the last warm-up step already uses ``base_lr`` and no step uses a rate of exactly 0."""
    frac = (iteration + 1) / warmup_iters
    return base_lr * (start_factor + (1.0 - start_factor) * frac)


def warmup_cosine_lr(
    iteration: int,
    total_iters: int,
    base_lr: float,
    warmup_iters: int = 0,
    min_lr: float = 0.0,
    warmup_start_factor: float = 0.0,
) -> float:
    """Linear warm-up, then cosine decay from ``base_lr`` (at ``warmup_iters``) to ``min_lr``
    (reached at ``total_iters``; later iterations stay at ``min_lr``).

    ``lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * t)) / 2`` with
    ``t = (iteration - warmup_iters) / (total_iters - warmup_iters)``.
    """
    _check(iteration, total_iters, warmup_iters)
    if iteration < warmup_iters:
        return linear_warmup(iteration, warmup_iters, base_lr, warmup_start_factor)
    t = min((iteration - warmup_iters) / (total_iters - warmup_iters), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def poly_lr(
    iteration: int,
    total_iters: int,
    base_lr: float,
    power: float = 0.9,
    warmup_iters: int = 0,
    min_lr: float = 0.0,
    warmup_start_factor: float = 0.0,
) -> float:
    """Polynomial decay (nnU-Net's, power 0.9): ``min_lr + (base_lr - min_lr) * (1 - t) ** power``
    with ``t`` as in ``warmup_cosine_lr``; optional linear warm-up first."""
    _check(iteration, total_iters, warmup_iters)
    if iteration < warmup_iters:
        return linear_warmup(iteration, warmup_iters, base_lr, warmup_start_factor)
    t = min((iteration - warmup_iters) / (total_iters - warmup_iters), 1.0)
    return min_lr + (base_lr - min_lr) * (1.0 - t) ** power


def constant_lr(iteration: int, total_iters: int, base_lr: float, warmup_iters: int = 0, **_: float) -> float:
    _check(iteration, total_iters, warmup_iters)
    if iteration < warmup_iters:
        return linear_warmup(iteration, warmup_iters, base_lr)
    return base_lr


SCHEDULES = {"cosine": warmup_cosine_lr, "poly": poly_lr, "constant": constant_lr}


def make_schedule(
    name: str,
    total_iters: int,
    base_lr: float,
    warmup_iters: int = 0,
    min_lr: float = 0.0,
    power: float = 0.9,
) -> Callable[[int], float]:
    """``name`` in ``cosine`` (linear warm-up + cosine), ``poly``, ``constant`` -> ``f(iteration) -> lr``."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule={name!r} is unknown; pass one of {', '.join(SCHEDULES)}")
    if total_iters < 1:
        raise ValueError(f"total_iters={total_iters}: must be >= 1")
    warmup_iters = min(warmup_iters, total_iters - 1)
    if name == "poly":
        return lambda i: poly_lr(i, total_iters, base_lr, power, warmup_iters, min_lr)
    if name == "cosine":
        return lambda i: warmup_cosine_lr(i, total_iters, base_lr, warmup_iters, min_lr)
    return lambda i: constant_lr(i, total_iters, base_lr, warmup_iters)
