"""Which connected-component rule each class (or region) gets, decided from out-of-fold predictions.

nnU-Net decides its postprocessing after cross-validation: a rule is kept only where it raises
the out-of-fold Dice. attnseg does the same per target (a class's label value, or a region's
1-based number, as in :func:`attnseg.inference.postprocess.postprocess_components`), choosing among

- ``"none"``;
- ``"keep_largest"``: only the largest connected component stays;
- ``"min_vox:N"``: components smaller than ``N`` voxels are removed, ``N`` a fraction
  (``MIN_SIZE_FRACTIONS``) of the median truth volume of the target over the cases that have it.

Removed voxels become background, so a rule for one target changes no other target's Dice and
each target is decided on its own: the candidate with the highest mean out-of-fold Dice wins, and a
rule is kept only when that mean is strictly higher than without it (ties keep ``"none"``).
(nnU-Net also tries "largest foreground component of all classes together"; attnseg does not.)

The Dice of every candidate comes from one pass over each case's predicted components
(:func:`component_stats`: each component's size and its overlap with the truth), so any size
threshold is scored exactly without redoing the components: removing components of sizes ``s_i``
and overlaps ``o_i`` leaves ``TP - sum o_i`` and ``P - sum s_i``. Dice is
``attnseg.metrics.overlap``'s (1 when both masks are empty).

Example: ``choose_rules({1: [stats_case1, stats_case2]})`` -> ``ChosenRules(rules={1: "keep_largest"},
...)``; ``as_card(rules)`` gives the model-card entry ``{"keep_largest": [1], "min_component_vox": {}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from attnseg.inference.postprocess import component_sizes_and_ids
from attnseg.metrics.overlap import Confusion, dice_from_confusion

__all__ = [
    "MIN_SIZE_FRACTIONS",
    "ChosenRules",
    "ComponentStats",
    "as_card",
    "candidate_rules",
    "choose_rules",
    "component_stats",
    "rule_dice",
]

MIN_SIZE_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class ComponentStats:
    """One case, one target: voxels of each predicted component (C order of first voxel, as
    ``cc3d`` numbers them), how many of them are in the truth, and the truth's voxel count."""

    sizes: tuple[int, ...]
    overlaps: tuple[int, ...]
    n_truth: int


def component_stats(pred_mask: np.ndarray, truth_mask: np.ndarray, *, connectivity: int | None = None):
    """:class:`ComponentStats` of a predicted and a true binary mask of one target."""
    pred = np.asarray(pred_mask) != 0
    truth = np.asarray(truth_mask) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    ids, sizes = component_sizes_and_ids(pred, connectivity)
    overlaps = np.bincount(ids[truth].ravel(), minlength=len(sizes))
    return ComponentStats(
        tuple(int(s) for s in sizes[1:]), tuple(int(o) for o in overlaps[1:]), int(truth.sum())
    )


def rule_dice(stats: ComponentStats, rule: str) -> float:
    """Dice of the target after ``rule`` (``"none"``, ``"keep_largest"``, ``"min_vox:N"``)."""
    sizes = np.asarray(stats.sizes, dtype=np.int64)
    overlaps = np.asarray(stats.overlaps, dtype=np.int64)
    if rule == "none":
        kept = np.ones(len(sizes), dtype=bool)
    elif rule == "keep_largest":
        kept = np.zeros(len(sizes), dtype=bool)
        if len(sizes):
            kept[int(np.argmax(sizes))] = True  # ties: the first, as keep_largest_component
    elif rule.startswith("min_vox:"):
        kept = sizes >= int(rule.split(":", 1)[1])
    else:
        raise ValueError(f"rule={rule!r}: pass 'none', 'keep_largest' or 'min_vox:N'")
    tp = int(overlaps[kept].sum())
    n_pred = int(sizes[kept].sum())
    return dice_from_confusion(Confusion(tp=tp, fp=n_pred - tp, fn=stats.n_truth - tp, tn=0))


def candidate_rules(cases: Sequence[ComponentStats]) -> list[str]:
    """``none``, ``keep_largest`` and ``min_vox:N`` for each of ``MIN_SIZE_FRACTIONS`` of the median
    truth volume (cases where the target is present; none present: no size rules)."""
    volumes = [c.n_truth for c in cases if c.n_truth > 0]
    rules = ["none", "keep_largest"]
    if volumes:
        median = float(np.median(volumes))
        sizes = sorted({max(2, round(f * median)) for f in MIN_SIZE_FRACTIONS})
        rules += [f"min_vox:{n}" for n in sizes]
    return rules


@dataclass
class ChosenRules:
    """``rules``: target -> chosen rule (``"none"`` included); ``mean_dice``: target -> rule -> mean
    out-of-fold Dice of every candidate tried."""

    rules: dict[int, str]
    mean_dice: dict[int, dict[str, float]]

    def to_dict(self) -> dict:
        return {
            "rules": {str(t): r for t, r in self.rules.items()},
            "mean_dice": {str(t): d for t, d in self.mean_dice.items()},
        }


def choose_rules(per_target: Mapping[int, Sequence[ComponentStats]]) -> ChosenRules:
    """The rule of each target: the candidate with the highest mean Dice over its cases, kept only
    when strictly better than ``"none"`` (see the module docstring)."""
    rules: dict[int, str] = {}
    means: dict[int, dict[str, float]] = {}
    for target, cases in per_target.items():
        if not cases:
            raise ValueError(f"target {target}: no cases to decide its postprocessing from")
        scores = {
            rule: float(np.mean([rule_dice(c, rule) for c in cases])) for rule in candidate_rules(cases)
        }
        best = max(scores, key=lambda r: scores[r])  # first of equals: "none" wins ties
        rules[int(target)] = best if scores[best] > scores["none"] else "none"
        means[int(target)] = scores
    return ChosenRules(rules, means)


def as_card(rules: Mapping[int, str]) -> dict:
    """The model-card entry of chosen rules: ``{"keep_largest": [targets], "min_component_vox":
    {"target": N}}`` (what ``attnseg.models.card`` stores and predict applies)."""
    keep = sorted(int(t) for t, r in rules.items() if r == "keep_largest")
    small = {str(int(t)): int(r.split(":", 1)[1]) for t, r in rules.items() if r.startswith("min_vox:")}
    return {"keep_largest": keep, "min_component_vox": small}
