"""Deterministic, seeded k-fold splits by case or by patient group, saved as JSON.

The same ``(case_ids, k, seed, groups)`` always give the same folds, whatever order the ids come
in (they are sorted first) and on any machine (numpy's PCG64 generator). With ``groups``, all
cases of one group (e.g. the slices of one patient) land in the same fold, so no patient is in
both training and validation. Groups are shuffled, then dealt largest first to the fold with the
fewest cases so far (ties: lowest fold number), which keeps folds balanced when groups differ in
size.

File format (``save_splits``)::

    {"version": 1, "k": 5, "seed": 0, "grouped": false,
     "folds": [{"train": [...], "val": [...]}, ...]}

``load_splits`` also accepts nnU-Net's ``splits_final.json`` (a bare list of ``{"train", "val"}``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnseg.errors import ConfigError, DataError
from attnseg.io.atomic import atomic_write_text

SPLITS_VERSION = 1


def make_splits(
    case_ids: Sequence[str], k: int = 5, seed: int = 0, groups: Sequence[str] | None = None
) -> list[dict[str, list[str]]]:
    """k folds, each ``{"train": [...], "val": [...]}`` (sorted ids); every case is in exactly one val."""
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        dupes = sorted({c for c in ids if ids.count(c) > 1})
        raise DataError(f"case ids must be unique for splitting; repeated: {dupes[:5]}")
    if groups is None:
        group_of = {c: c for c in ids}
    else:
        if len(groups) != len(ids):
            raise ConfigError(f"groups has {len(groups)} entries for {len(ids)} case ids")
        group_of = {c: str(g) for c, g in zip(ids, groups)}
    members: dict[str, list[str]] = {}
    for c in sorted(ids):
        members.setdefault(group_of[c], []).append(c)
    names = sorted(members)
    if not isinstance(k, int | np.integer) or k < 2:
        raise ConfigError(f"k must be an integer >= 2, got {k!r}")
    if k > len(names):
        what = "groups" if groups is not None else "cases"
        raise ConfigError(f"cannot make {k} folds from {len(names)} {what}")
    rng = np.random.default_rng(seed)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    # stable sort by size after shuffling: equal-size groups keep their random order
    shuffled.sort(key=lambda g: -len(members[g]))
    val: list[list[str]] = [[] for _ in range(k)]
    for g in shuffled:
        fold = min(range(k), key=lambda f: (len(val[f]), f))
        val[fold].extend(members[g])
    everything = sorted(ids)
    folds = []
    for f in range(k):
        v = set(val[f])
        folds.append({"train": [c for c in everything if c not in v], "val": sorted(val[f])})
    return folds


def save_splits(
    path: str | os.PathLike,
    folds: list[dict[str, list[str]]],
    *,
    k: int | None = None,
    seed: int | None = None,
    grouped: bool = False,
) -> Path:
    """Write folds as JSON atomically; return the path."""
    payload = {
        "version": SPLITS_VERSION,
        "k": k if k is not None else len(folds),
        "seed": seed,
        "grouped": bool(grouped),
        "folds": [{"train": list(f["train"]), "val": list(f["val"])} for f in folds],
    }
    path = Path(path)
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    return path


def load_splits(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """Read folds written by ``save_splits`` (or nnU-Net's ``splits_final.json``) and validate them."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: splits file not found") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    folds = data["folds"] if isinstance(data, dict) and "folds" in data else data
    if not isinstance(folds, list) or not all(
        isinstance(f, dict) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list)
        for f in folds
    ):
        raise DataError(f"{path}: expected a list of folds, each with 'train' and 'val' lists")
    for i, f in enumerate(folds):
        both = set(f["train"]) & set(f["val"])
        if both:
            raise DataError(f"{path}: fold {i} has cases in both train and val: {sorted(both)[:5]}")
    return [{"train": [str(c) for c in f["train"]], "val": [str(c) for c in f["val"]]} for f in folds]


def make_dataset_splits(dataset, k: int = 5, seed: int = 0, *, by_group: bool | None = None):
    """Splits for a discovered ``Dataset``; grouped by patient when the layout records groups."""
    groups = dataset.groups
    if by_group is None:
        by_group = any(g != c for g, c in zip(groups, dataset.case_ids))
    return make_splits(dataset.case_ids, k, seed, groups if by_group else None)
