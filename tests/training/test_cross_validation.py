"""`attnseg train --folds K --fold all`: every fold, out-of-fold scores, postprocessing in the card."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.config import RunConfig, apply_overrides, from_dict, to_dict
from attnseg.datasets import discover, load_case
from attnseg.inference.postprocess_choice import as_card
from attnseg.io.nifti import load_label
from attnseg.metrics.evaluate import evaluate_case
from attnseg.models.card import read_model_card
from attnseg.models.model_file import read_model_file
from attnseg.training.cross_validation import apply_rules
from attnseg.training.run import dataset_folds

TINY = [
    "--set", "model.features=[4,8,16]",
    "--set", "train.epochs=2",
    "--set", "train.iters_per_epoch=3",
    "--set", "data.batch_size=2",
    "--set", "train.progress=false",
    "--set", "train.threads=2",
    "--set", "optim.lr=0.01",
    "--set", "optim.warmup_iters=2",
    "--set", "augment.p_elastic=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    from attnseg import phantom

    root = tmp_path_factory.mktemp("cv")
    data = phantom.write_phantom_dataset(root / "data", 6, seed=0, shape=(24, 24, 16), spacing_mm=4.0)
    run = root / "run"
    assert main(["train", str(data), "--out", str(run), "--folds", "2", "--fold", "all", *TINY]) == 0
    return data, run


def test_every_fold_trains_and_every_case_is_predicted_once_by_the_fold_that_did_not_train_on_it(cv_run):
    data, run = cv_run
    splits = json.loads((run / "splits.json").read_text())
    summary = json.loads((run / "cv_summary.json").read_text())
    assert summary["folds_selected_on_validation"] == []  # --fold all: the folds keep their final weights
    assert splits["k"] == 2 and len(splits["folds"]) == 2
    ids = sorted(discover(data).case_ids)
    vals = [sorted(f["val"]) for f in splits["folds"]]
    assert sorted(c for v in vals for c in v) == ids  # a partition: each case validates exactly once
    for k, fold in enumerate(splits["folds"]):
        folder = run / f"fold_{k}"
        own = json.loads((folder / "split.json").read_text())
        assert sorted(own["val"]) == sorted(fold["val"]) and not set(own["train"]) & set(own["val"])
        assert sorted(own["train"] + own["val"]) == ids
        assert (folder / "model.pt").is_file()
        assert sorted(p.name for p in (folder / "validation").glob("*.nii.gz")) == [
            f"{c}.nii.gz" for c in sorted(fold["val"])
        ]


def test_out_of_fold_scores_are_metrics_evaluate_of_the_validation_predictions(cv_run):
    data, run = cv_run
    dataset = discover(data)
    cases = {c.case_id: c for c in dataset.cases}
    summary = json.loads((run / "cv_summary.json").read_text())
    assert summary["n_cases"] == 6 and set(summary["oof"]["targets"]) == {"WT", "TC", "ET"}
    rows = list(csv.DictReader(open(run / "oof_metrics_per_case.csv")))
    assert len(rows) == 6 * 3
    splits = json.loads((run / "splits.json").read_text())["folds"]
    k, cid = 1, splits[1]["val"][0]
    pred = load_label(run / f"fold_{k}" / "validation" / f"{cid}.nii.gz")[0]
    _, truth, meta = load_case(cases[cid], dataset)
    scheme = read_model_card(run / "fold_0" / "model.pt").label_scheme
    expected = evaluate_case(pred, truth, meta.spacing_mm, regions=scheme.targets, lesions=False)
    row = next(r for r in rows if r["case_id"] == cid and r["target"] == "TC")
    assert float(row["dice"]) == pytest.approx(expected["TC"]["dice"])
    assert float(row["hd95_mm"]) == pytest.approx(expected["TC"]["hd95_mm"])
    mean = np.mean([float(r["dice"]) for r in rows if r["target"] == "WT"])
    assert summary["oof"]["targets"]["WT"]["dice"]["mean"] == pytest.approx(mean)
    fold_mean = np.mean(
        [float(r["dice"]) for r in rows if r["target"] == "WT" and r["case_id"] in splits[1]["val"]]
    )
    assert summary["folds"][1]["mean"]["WT"]["dice"] == pytest.approx(fold_mean)


def test_postprocessing_is_chosen_from_the_oof_dice_and_recorded_in_every_fold_card(cv_run, capsys):
    data, run = cv_run
    summary = json.loads((run / "cv_summary.json").read_text())
    pp = summary["postprocessing"]
    number = {"WT": 1, "TC": 2, "ET": 3}
    for name, rule in pp["rules"].items():
        scores = pp["mean_dice_by_rule"][name]
        best = max(scores.values())
        if rule == "none":
            assert scores["none"] >= best
        else:
            assert scores[rule] == best > scores["none"]
        # the chosen rule's out-of-fold Dice is the Dice of the postprocessed predictions
        assert summary["oof_postprocessed"]["targets"][name]["dice"]["mean"] == pytest.approx(scores[rule])
    assert pp["card"] == as_card({number[n]: r for n, r in pp["rules"].items()})
    for k in range(2):
        assert read_model_card(run / f"fold_{k}" / "model.pt").postprocessing == pp["card"]
        read_model_file(run / f"fold_{k}" / "model.pt")  # the checksum still holds


def test_a_second_fold_all_keeps_the_finished_folds(cv_run, capsys):
    data, run = cv_run
    before = {k: (run / f"fold_{k}" / "summary.json").stat().st_mtime_ns for k in range(2)}
    assert main(["train", str(data), "--out", str(run), "--folds", "2", "--fold", "all", *TINY]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished run found") == 2
    assert "out-of-fold" in printed and "postprocessing chosen" in printed
    assert {k: (run / f"fold_{k}" / "summary.json").stat().st_mtime_ns for k in range(2)} == before


def test_fold_all_refuses_a_fold_folder_trained_on_other_cases(cv_run, tmp_path, capsys):
    data, run = cv_run
    assert main(["train", str(data), "--out", str(run), "--folds", "3", "--fold", "all", *TINY]) == 2
    assert "other validation cases" in capsys.readouterr().err


def test_fold_cli_refuses_a_word_other_than_all(tmp_path, capsys):
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--fold", "some"]) == 2
    assert "--fold some: pass a fold number" in capsys.readouterr().err


def test_the_folds_of_grouped_cases_are_disjoint_and_keep_each_patient_in_one_fold():
    ids = [f"p{p}_s{s}" for p in range(7) for s in range(3)]
    dataset = SimpleNamespace(
        root="grouped",
        case_ids=ids,
        groups=[c.split("_")[0] for c in ids],
        cases=[SimpleNamespace(case_id=c, label="x") for c in ids],
    )
    config = from_dict(RunConfig, apply_overrides(to_dict(RunConfig()), ["data.folds=3"]))
    folds = dataset_folds(dataset, config)
    assert sorted(c for f in folds for c in f["val"]) == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert {c.split("_")[0] for c in f["train"]}.isdisjoint({c.split("_")[0] for c in f["val"]})


def test_region_rules_are_applied_to_the_region_masks_and_painted_back():
    from attnseg.datasets.label_scheme import LabelScheme

    scheme = LabelScheme("regions", (0, 1, 2), ("whole", "core"), regions=((1, 2), (2,)))
    labels = np.zeros((10, 10), np.uint8)
    labels[1:5, 1:5] = 1
    labels[2:4, 2:4] = 2
    labels[8, 8] = 1  # a stray voxel of the whole region
    labels[6, 1] = 2  # a stray voxel of the core (and so of the whole)
    out = apply_rules(labels, scheme, {"keep_largest": [1, 2], "min_component_vox": {}})
    expected = labels.copy()
    expected[8, 8] = 0
    expected[6, 1] = 0
    np.testing.assert_array_equal(out, expected)


def test_folds_keep_their_final_weights_and_a_split_unless_told_otherwise(tmp_path):
    from attnseg.training.cross_validation import fold_defaults

    assert fold_defaults(None, []) == ["data.split=kfold", "train.val_every=0"]
    assert fold_defaults(None, ["train.val_every=2", "data.split=kfold"]) == []
    assert fold_defaults(None, ["data.split=none"]) == ["data.split=kfold", "train.val_every=0"]
    (tmp_path / "c.yaml").write_text("train:\n  val_every: 1\n")
    assert fold_defaults(tmp_path / "c.yaml", []) == ["data.split=kfold"]
