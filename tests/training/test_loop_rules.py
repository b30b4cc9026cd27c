"""The loop's rules as pure functions on hand-made values: schedule position, validation, stopping,
and the state a checkpoint saves."""

from __future__ import annotations

import pytest

from attnseg.training.loop import LrSchedule, TrainState, should_stop, validation_due


def test_the_schedule_follows_iterations_or_the_larger_share_of_the_time_budget():
    by_iteration = LrSchedule(float, total_iters=100)  # lr = the iteration it is read at
    assert by_iteration.lr(10, elapsed_s=1e9) == 10.0
    assert by_iteration.progress(10, elapsed_s=1e9) == 0.1
    by_time = LrSchedule(float, total_iters=100, time_limit_s=60.0)
    assert by_time.lr(10, elapsed_s=30.0) == 50.0  # half the budget spent: half-way through
    assert by_time.lr(70, elapsed_s=30.0) == 70.0  # iterations ahead of the clock
    assert by_time.lr(10, elapsed_s=600.0) == 99.0  # past the budget: the last iteration's rate
    assert by_time.progress(10, elapsed_s=30.0) == 0.5
    assert by_time.progress(60, elapsed_s=30.0) == 0.6


def test_validation_every_k_epochs_and_after_a_session_s_last(make_config):
    tc = make_config("train.val_every=2").train
    assert [validation_due(e, tc, has_cases=True, last=False) for e in (1, 2, 3, 4)] == [
        False,
        True,
        False,
        True,
    ]
    assert validation_due(3, tc, has_cases=True, last=True)
    assert not validation_due(2, tc, has_cases=False, last=True)
    assert not validation_due(2, make_config("train.val_every=0").train, has_cases=True, last=True)


@pytest.mark.parametrize(
    ("time_up", "validated", "bad", "session_over", "epoch", "expected"),
    [
        (True, True, 9, True, 2, "time_limit"),  # the time limit comes first
        (False, True, 2, True, 2, "early_stopping"),
        (False, False, 2, False, 2, None),  # patience counts validations, read only after one
        (False, True, 1, True, 2, "stop_after_epochs"),
        (False, True, 1, True, 4, None),  # the last epoch: the run is complete, not interrupted
        (False, True, 1, False, 2, None),
    ],
)
def test_stopping_rules(make_config, time_up, validated, bad, session_over, epoch, expected):
    tc = make_config("train.epochs=4", "train.early_stop_patience=2").train
    assert should_stop(epoch, tc, time_up, validated, bad, session_over) == expected


def test_train_state_round_trips_through_the_checkpoint_entries():
    state = TrainState(epoch=3, iteration=12, best_dice=0.8, best_epoch=2, best_per_channel={"a": 0.8})
    state.bad_validations, state.skipped_batches = 1, 4
    state.add_epoch({"epoch": 4, "elapsed_seconds": 7.5}, skipped=2)
    assert state.epoch == 4 and state.skipped_batches == 6 and state.elapsed_seconds == 7.5
    assert list(state.best()) == ["dice", "epoch", "per_channel", "bad_validations", "skipped_batches"]
    payload = {
        "epoch": state.epoch,
        "iteration": state.iteration,
        "history": state.history,
        "best": state.best(),
    }
    assert TrainState.from_checkpoint(payload) == state
    fresh = TrainState.from_checkpoint({"epoch": 0, "iteration": 0, "history": None, "best": None})
    assert fresh == TrainState() and fresh.elapsed_seconds == 0.0
