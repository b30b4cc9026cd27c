"""The data order: which case and patch size every sample has, a pure function of the seed, shared by every rank."""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.errors import ConfigError
from attnseg.transforms.batch_plan import BatchPlan, draw_patch_size, epoch_case_order, scaled_patch_size


def test_scaled_patch_size_keeps_multiples_of_stride():
    assert scaled_patch_size((64, 64, 48), 1.0, 8) == (64, 64, 48)
    assert scaled_patch_size((52,), 1.0, 8) == (56,)  # 6.5 strides -> 7 (half up, not to even)
    assert scaled_patch_size((64, 64, 48), 1.25, 8) == (80, 80, 64)  # 60 / 8 = 7.5 rounds up
    assert scaled_patch_size((64, 64, 48), 0.75, 16) == (48, 48, 32)  # 36/16 = 2.25 -> 2
    assert scaled_patch_size((16,), 0.1, 8) == (8,)  # never below one stride


def test_draw_patch_size_is_seeded_and_in_range():
    sizes = {draw_patch_size(0, 3, m, (64, 64), (0.5, 1.5), 8) for m in range(50)}
    assert all(s[0] % 8 == 0 and 32 <= s[0] <= 96 and s[0] == s[1] for s in sizes)
    assert len(sizes) > 5
    assert draw_patch_size(0, 3, 7, (64, 64), (0.5, 1.5), 8) == draw_patch_size(
        0, 3, 7, (64, 64), (0.5, 1.5), 8
    )
    assert draw_patch_size(0, 3, 7, (64, 64), None, 8) == (64, 64)
    with pytest.raises(ConfigError):
        draw_patch_size(0, 0, 0, (64,), (1.5, 0.5), 8)


def test_epoch_case_order_visits_every_case_once_per_pass():
    order = epoch_case_order(5, 12, seed=1, epoch=0)
    assert sorted(order[:5]) == [0, 1, 2, 3, 4] and sorted(order[5:10]) == [0, 1, 2, 3, 4]
    assert len(order) == 12
    assert np.array_equal(order, epoch_case_order(5, 12, seed=1, epoch=0))
    assert not np.array_equal(order, epoch_case_order(5, 12, seed=1, epoch=1))


def test_ranks_split_the_same_global_batch():
    common = dict(
        n_cases=7, epoch=2, micro_batches=3, seed=0, base_patch=(32, 32), stride=8, multiscale=(0.5, 1.5)
    )
    single = list(BatchPlan(batch_size=4, **common))
    ranks = [list(BatchPlan(batch_size=2, rank=r, world_size=2, **common)) for r in range(2)]
    for m in range(3):
        assert single[m] == ranks[0][m] + ranks[1][m]
    # starting mid-epoch yields the tail of the same plan
    assert list(BatchPlan(batch_size=4, start=1, **common)) == single[1:]


def test_the_plan_of_a_seed_never_changes():
    # recorded from attnseg train's plan before the two pipelines were merged: a change here changes
    # every training run's data, so it must be deliberate
    plan = BatchPlan(
        n_cases=5,
        epoch=3,
        micro_batches=3,
        batch_size=2,
        seed=7,
        base_patch=(32, 32),
        stride=8,
        multiscale=(0.5, 1.5),
    )
    assert list(plan) == [
        [(2, 3, 0, (32, 32)), (3, 3, 1, (32, 32))],
        [(0, 3, 2, (32, 32)), (1, 3, 3, (32, 32))],
        [(4, 3, 4, (24, 24)), (1, 3, 5, (24, 24))],
    ]
    assert len(plan) == 3
    # more samples than cases: the next seeded permutation continues the epoch
    cycled = BatchPlan(n_cases=2, epoch=0, micro_batches=1, batch_size=3, seed=0, base_patch=(8,))
    assert list(cycled) == [[(0, 0, 0, (8,)), (1, 0, 1, (8,)), (0, 0, 2, (8,))]]
