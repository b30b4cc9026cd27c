from __future__ import annotations

import json

import pytest

from attnseg.datasets.splits import load_splits, make_splits, save_splits
from attnseg.errors import ConfigError, DataError

IDS = [f"case_{i:03d}" for i in range(10)]


def test_every_case_validated_once_and_balanced():
    folds = make_splits(IDS, k=3, seed=0)
    assert len(folds) == 3
    vals = [f["val"] for f in folds]
    assert sorted(v for fold in vals for v in fold) == IDS
    assert sorted(len(v) for v in vals) == [3, 3, 4]
    for f in folds:
        assert set(f["train"]) | set(f["val"]) == set(IDS)
        assert not set(f["train"]) & set(f["val"])
        assert f["train"] == sorted(f["train"]) and f["val"] == sorted(f["val"])


def test_deterministic_and_order_independent():
    a = make_splits(IDS, k=5, seed=7)
    assert make_splits(list(reversed(IDS)), k=5, seed=7) == a
    assert make_splits(IDS, k=5, seed=7) == a
    assert make_splits(IDS, k=5, seed=8) != a


def test_groups_stay_together_and_balance():
    # group sizes 5, 3, 2, 2, 1, 1: largest first to the smallest fold -> 5+2 and 3+2+1+1
    sizes = {"p1": 5, "p2": 3, "p3": 2, "p4": 2, "p5": 1, "p6": 1}
    ids, groups = [], []
    for g, n in sizes.items():
        for s in range(n):
            ids.append(f"{g}_{s}")
            groups.append(g)
    for seed in range(5):
        folds = make_splits(ids, k=2, seed=seed, groups=groups)
        assert sorted(len(f["val"]) for f in folds) == [7, 7]
        for f in folds:
            val_groups = {c.split("_")[0] for c in f["val"]}
            train_groups = {c.split("_")[0] for c in f["train"]}
            assert not val_groups & train_groups
        assert any({"p1_0", "p3_0"} <= set(f["val"]) or {"p1_0", "p4_0"} <= set(f["val"]) for f in folds)


def test_errors():
    with pytest.raises(ConfigError, match="cannot make 11 folds from 10 cases"):
        make_splits(IDS, k=11)
    with pytest.raises(ConfigError, match="k must be an integer >= 2"):
        make_splits(IDS, k=1)
    with pytest.raises(ConfigError, match="from 2 groups"):
        make_splits(IDS, k=3, groups=["a"] * 5 + ["b"] * 5)
    with pytest.raises(DataError, match="unique"):
        make_splits(["a", "a", "b"], k=2)


def test_save_and_load(tmp_path):
    folds = make_splits(IDS, k=2, seed=3)
    path = save_splits(tmp_path / "run" / "splits.json", folds, k=2, seed=3)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["seed"] == 3 and data["k"] == 2 and not data["grouped"]
    assert load_splits(path) == folds
    assert [p.name for p in path.parent.iterdir()] == ["splits.json"]
    # nnU-Net's splits_final.json is a bare list
    (tmp_path / "splits_final.json").write_text(json.dumps(folds))
    assert load_splits(tmp_path / "splits_final.json") == folds
    (tmp_path / "bad.json").write_text(json.dumps([{"train": ["a"], "val": ["a"]}]))
    with pytest.raises(DataError, match="fold 0 has cases in both"):
        load_splits(tmp_path / "bad.json")
    with pytest.raises(DataError, match="not found"):
        load_splits(tmp_path / "missing.json")
