from __future__ import annotations

import math

import pytest

from attnseg.training.schedules import make_schedule, poly_lr, warmup_cosine_lr


def test_warmup_cosine_values():
    # total 110, warm-up 10, base 1e-2, min 0
    f = lambda i: warmup_cosine_lr(i, 110, 1e-2, warmup_iters=10)  # noqa: E731
    assert f(0) == pytest.approx(1e-3)  # (0 + 1) / 10 of base
    assert f(4) == pytest.approx(5e-3)
    assert f(9) == pytest.approx(1e-2)  # the last warm-up step reaches base
    assert f(10) == pytest.approx(1e-2)  # cosine starts at base
    assert f(60) == pytest.approx(5e-3)  # half-way: (1 + cos(pi/2)) / 2 = 1/2
    assert f(35) == pytest.approx(1e-2 * (1 + math.cos(math.pi / 4)) / 2)
    assert f(110) == pytest.approx(0.0, abs=1e-15)
    assert f(500) == pytest.approx(0.0, abs=1e-15)  # stays at min after the end


def test_cosine_min_lr_and_no_warmup():
    assert warmup_cosine_lr(0, 100, 1.0, min_lr=0.1) == pytest.approx(1.0)
    assert warmup_cosine_lr(50, 100, 1.0, min_lr=0.1) == pytest.approx(0.55)
    assert warmup_cosine_lr(100, 100, 1.0, min_lr=0.1) == pytest.approx(0.1)


def test_poly_values():
    assert poly_lr(0, 100, 1e-2) == pytest.approx(1e-2)
    assert poly_lr(50, 100, 1e-2) == pytest.approx(1e-2 * 0.5**0.9)
    assert poly_lr(75, 100, 1.0, power=2.0) == pytest.approx(0.0625)
    assert poly_lr(100, 100, 1.0) == pytest.approx(0.0)
    # with warm-up: t counts from the end of warm-up
    assert poly_lr(1, 20, 1.0, power=1.0, warmup_iters=4) == pytest.approx(0.5)
    assert poly_lr(12, 20, 1.0, power=1.0, warmup_iters=4) == pytest.approx(0.5)


def test_make_schedule_and_errors():
    f = make_schedule("cosine", total_iters=110, base_lr=1e-2, warmup_iters=10)
    assert f(60) == pytest.approx(5e-3)
    g = make_schedule("poly", total_iters=100, base_lr=1.0, power=2.0)
    assert g(75) == pytest.approx(0.0625)
    assert make_schedule("constant", 10, 0.3)(7) == pytest.approx(0.3)
    # warm-up longer than the run is clipped, not an error
    assert make_schedule("cosine", 5, 1.0, warmup_iters=50)(3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown"):
        make_schedule("step", 10, 1.0)
    with pytest.raises(ValueError, match="warmup_iters"):
        warmup_cosine_lr(0, 10, 1.0, warmup_iters=10)
