"""The component rules chosen from out-of-fold predictions: hand-computed Dice of every candidate."""

from __future__ import annotations

import numpy as np
import pytest

from attnseg.inference.postprocess import postprocess_components, rules_from_card
from attnseg.inference.postprocess_choice import (
    ComponentStats,
    as_card,
    candidate_rules,
    choose_rules,
    component_stats,
    rule_dice,
)
from attnseg.metrics.overlap import dice


def case_with_stray_blob():
    """Truth: a 4x4 square (16 px). Prediction: a 4x3 part of it (12 px) and a separate 2 px blob."""
    truth = np.zeros((12, 12), np.uint8)
    truth[2:6, 2:6] = 1
    pred = np.zeros_like(truth)
    pred[2:6, 2:5] = 1
    pred[9, 9:11] = 1
    return pred, truth


def test_component_stats_and_rule_dice_by_hand():
    pred, truth = case_with_stray_blob()
    stats = component_stats(pred, truth)
    assert stats == ComponentStats(sizes=(12, 2), overlaps=(12, 0), n_truth=16)
    assert rule_dice(stats, "none") == pytest.approx(2 * 12 / (14 + 16))  # 0.8
    assert rule_dice(stats, "keep_largest") == pytest.approx(2 * 12 / (12 + 16))
    assert rule_dice(stats, "min_vox:3") == pytest.approx(2 * 12 / (12 + 16))
    assert rule_dice(stats, "min_vox:2") == pytest.approx(0.8)  # sizes >= 2 stay
    assert rule_dice(ComponentStats((), (), 0), "keep_largest") == 1.0  # both empty
    with pytest.raises(ValueError, match="keep_largest"):
        rule_dice(stats, "largest")


@pytest.mark.parametrize("rule, kwargs", [("keep_largest", {"keep_largest": True}),
                                          ("min_vox:3", {"min_voxels": 3})])  # fmt: skip
def test_rule_dice_equals_the_dice_of_the_postprocessed_mask(rule, kwargs):
    rng = np.random.default_rng(0)
    pred = (rng.random((20, 20, 10)) > 0.8).astype(np.uint8)
    truth = (rng.random((20, 20, 10)) > 0.7).astype(np.uint8)
    after = postprocess_components(pred, **kwargs)
    assert rule_dice(component_stats(pred, truth), rule) == pytest.approx(dice(after, truth))


def test_candidates_are_fractions_of_the_median_truth_volume():
    cases = [ComponentStats((), (), n) for n in (0, 1000, 2000, 3000)]
    assert candidate_rules(cases) == ["none", "keep_largest", "min_vox:20", "min_vox:40",
                                      "min_vox:100", "min_vox:200", "min_vox:400"]  # fmt: skip
    assert candidate_rules([ComponentStats((), (), 0)]) == ["none", "keep_largest"]


def test_a_rule_is_kept_only_where_it_improves_the_mean_dice():
    pred, truth = case_with_stray_blob()
    blob = component_stats(pred, truth)
    clean = component_stats(truth, truth)  # perfect: every rule gives Dice 1
    chosen = choose_rules({1: [blob, clean], 2: [clean, clean]})
    assert chosen.rules[1] == "keep_largest"  # first of the rules that reach the best mean
    assert chosen.mean_dice[1]["none"] == pytest.approx((0.8 + 1) / 2)
    assert chosen.mean_dice[1]["keep_largest"] == pytest.approx((24 / 28 + 1) / 2)
    assert chosen.rules[2] == "none"  # a tie keeps no rule
    assert as_card(chosen.rules) == {"keep_largest": [1], "min_component_vox": {}}


def test_a_rule_that_removes_true_voxels_is_not_chosen():
    truth = np.zeros((12, 12), np.uint8)
    truth[1:4, 1:4] = 1
    truth[8:10, 8:10] = 1  # the truth has two parts: keeping the largest would lose one
    chosen = choose_rules({1: [component_stats(truth, truth)]})
    assert chosen.rules == {1: "none"}


def test_card_entry_round_trip_to_postprocess_arguments():
    card = as_card({1: "keep_largest", 2: "min_vox:30", 3: "none"})
    assert card == {"keep_largest": [1], "min_component_vox": {"2": 30}}
    assert rules_from_card(card) == ([1], {2: 30})
    assert rules_from_card(None) == (False, {})
