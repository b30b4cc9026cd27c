"""attnseg compare: its table and settings on hand-made numbers, and a tiny end-to-end comparison.

The paired statistics it uses are tested in tests/metrics/test_stats.py."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import yaml

from attnseg.errors import ConfigError
from attnseg.experiments.compare import (
    MODELS,
    CompareSettings,
    budget_overrides,
    compare,
    config_differences,
    table_row,
)


# --- pure functions on hand-made numbers -------------------------------------------------------------
def test_config_differences():
    a = {"model": {"name": "unet", "features": [8, 16]}, "train": {"seed": 0}}
    b = {"model": {"name": "attention_unet", "features": [8, 16]}, "train": {"seed": 0}}
    assert config_differences(a, b) == ["model.name"]
    c = {"model": {"name": "unet", "features": [8, 32]}, "train": {"seed": 1, "extra": 2}}
    assert config_differences(a, c) == ["model.features", "train.extra", "train.seed"]


def test_table_row_pools_lesion_counts():
    def row(dice, small, small_hit, n_truth, n_det, n_pred, n_fp):
        return {
            "dice": dice, "hd95_mm": 2 * dice, "nsd_1mm": dice / 2, "nsd_2mm": dice, "hd_mm": 3 * dice,
            "assd_mm": dice, "sensitivity": dice,
            "precision": dice, "fpr": 0.01, "fp_vox": 10.0 * dice, "n_fp_lesions": n_fp,
            "n_small_lesions": small, "n_small_detected": small_hit, "n_truth_lesions": n_truth,
            "n_detected_lesions": n_det, "n_pred_lesions": n_pred,
        }  # fmt: skip

    # case 1: 1 small lesion, missed; case 2: 3 small lesions, 2 found -> pooled 2/4, not (0 + 2/3)/2
    r = table_row([row(0.5, 1, 0, 2, 1, 2, 1), row(1.0, 3, 2, 4, 4, 5, 0)])
    assert r["dice"] == pytest.approx(0.75)
    assert (r["nsd_1mm"], r["nsd_2mm"]) == (pytest.approx(0.375), pytest.approx(0.75))
    assert r["fp_vox"] == pytest.approx(7.5)
    assert r["n_fp_lesions"] == pytest.approx(0.5)
    assert (r["small_detected"], r["small_total"]) == (2.0, 4.0)
    assert r["small_lesion_detection"] == pytest.approx(0.5)
    assert r["lesion_sensitivity"] == pytest.approx(5 / 6)
    assert r["lesion_precision"] == pytest.approx(6 / 7)  # (2 - 1 + 5 - 0) / (2 + 5)
    # nothing to detect: the rates are vacuous, 1
    empty = table_row([row(1.0, 0, 0, 0, 0, 0, 0), row(1.0, 0, 0, 0, 0, 0, 0)])
    assert (empty["small_total"], empty["lesions_total"]) == (0.0, 0.0)
    assert empty["small_lesion_detection"] == empty["lesion_sensitivity"] == empty["lesion_precision"] == 1.0


def test_budget_overrides():
    assert budget_overrides(None, None) == []
    assert budget_overrides(120, None) == ["train.epochs=3", "train.iters_per_epoch=40"]
    assert budget_overrides(7, None) == ["train.epochs=1", "train.iters_per_epoch=7"]
    minutes = budget_overrides(None, 2.5)
    assert "train.time_limit_s=150.0" in minutes and "train.schedule_by_time=true" in minutes
    with pytest.raises(ConfigError):
        budget_overrides(0, None)


def test_owned_settings_are_refused(tmp_path):
    for key in ("model.name=unet", "train.seed=3", "data.split=none", "data.fold=1"):
        with pytest.raises(ConfigError, match="compare sets"):
            compare(None, tmp_path / "out", overrides=[key])
    assert not (tmp_path / "out").exists()  # refused before anything is written


# --- a tiny comparison end to end --------------------------------------------------------------------
TINY = (
    "model.features=[4,8]",
    "data.batch_size=1",
    "data.patch_size=[16,16,16]",
    "train.progress=false",
    "optim.warmup_iters=1",
    "augment.p_rotate=0.0",
    "augment.p_zoom=0.0",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    settings = CompareSettings(
        iterations=3,
        threads=1,
        n_boot=500,
        figures=False,
        demo_train=3,
        demo_test=3,
        demo_shape=(24, 24, 16),
        demo_spacing_mm=2.5,
    )
    logs: list[str] = []
    result = compare(None, out, overrides=list(TINY), settings=settings, log=logs.append)
    return out, result, logs


def test_both_models_trained_identically_but_for_the_name(tiny):
    out, _, _ = tiny
    (a, _), (b, _) = MODELS
    cfg = {n: yaml.safe_load((out / "runs" / "seed0" / n / "config.yaml").read_text()) for n in (a, b)}
    assert cfg[a]["model"]["name"] == "unet" and cfg[b]["model"]["name"] == "attention_unet"
    assert config_differences(cfg[a], cfg[b]) == ["model.name"]
    for c in cfg.values():
        assert c["train"]["seed"] == 0
        assert c["model"]["features"] == [4, 8]
        assert c["train"]["epochs"] * c["train"]["iters_per_epoch"] == 3
        assert c["data"]["split"] == str((out / "splits.json").resolve())
    splits = {n: json.loads((out / "runs" / "seed0" / n / "split.json").read_text()) for n in (a, b)}
    assert splits[a] == splits[b]
    assert splits[a]["train"] == ["Phantom_000", "Phantom_001", "Phantom_002"]
    assert splits[a]["val"] == []  # no held-out case influences training or checkpoint choice
    summaries = {n: json.loads((out / "runs" / "seed0" / n / "summary.json").read_text()) for n in (a, b)}
    assert summaries[a]["iterations"] == summaries[b]["iterations"] == 3


def test_table_equals_metrics_recomputed_from_saved_predictions(tiny):
    from attnseg.io.nifti import load_label
    from attnseg.metrics import evaluate_case

    out, result, _ = tiny
    regions = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
    saved = json.loads((out / "compare.json").read_text())
    cases = saved["held_out"]["cases"]
    assert cases == ["Phantom_000", "Phantom_001", "Phantom_002"]
    assert saved["held_out"]["source"] == str(out / "test")  # a separate phantom set, other seed
    rows = {(r["model_name"], r["target"]): r for r in result.table}
    assert len(rows) == 6  # both models x WT/TC/ET
    recomputed = {}
    for name, _ in MODELS:
        per_case = []
        for c in cases:
            truth, meta = load_label(out / "test" / c / f"{c}_seg.nii.gz")
            pred, pmeta = load_label(out / "runs" / "seed0" / name / "predictions" / f"{c}.nii.gz")
            assert np.allclose(pmeta.affine, meta.affine)
            per_case.append(evaluate_case(pred, truth, meta.spacing_mm, regions=regions))
        recomputed[name] = per_case
        for t in regions:
            r = rows[(name, t)]
            vals = [pc[t] for pc in per_case]
            for m in ("dice", "hd95_mm", "nsd_1mm", "nsd_2mm", "hd_mm", "assd_mm", "sensitivity", "fpr",
                      "fp_vox", "n_fp_lesions"):  # fmt: skip
                assert r[m] == pytest.approx(np.mean([v[m] for v in vals]), rel=1e-12, abs=1e-12), (
                    name,
                    t,
                    m,
                )
            small = sum(v["n_small_lesions"] for v in vals)
            hit = sum(v["n_small_detected"] for v in vals)
            assert (r["small_total"], r["small_detected"]) == (small, hit)
            assert r["small_lesion_detection"] == pytest.approx(hit / small if small else 1.0)
            n_t = sum(v["n_truth_lesions"] for v in vals)
            assert r["lesion_sensitivity"] == pytest.approx(
                sum(v["n_detected_lesions"] for v in vals) / n_t if n_t else 1.0
            )
            assert r["parameters"] > 0 and r["train_s"] > 0 and r["infer_s_per_case"] > 0
    # the phantom has small lesions: the detection rate is measured on real counts
    assert rows[("unet", "WT")]["small_total"] >= 3
    # compare.csv holds the same numbers, exactly
    with open(out / "compare.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 6
    for cr in csv_rows:
        r = rows[(cr["model_name"], cr["target"])]
        assert float(cr["dice"]) == r["dice"] and float(cr["hd95_mm"]) == r["hd95_mm"]
        assert float(cr["nsd_1mm"]) == r["nsd_1mm"] and float(cr["nsd_2mm"]) == r["nsd_2mm"]
    # paired tests: p in [0, 1], means equal the recomputed per-case means
    assert result.paired
    for p in result.paired:
        assert 0.0 <= p["p_value"] <= 1.0
        assert p["ci_low"] <= p["mean_diff"] + 1e-12 and p["mean_diff"] <= p["ci_high"] + 1e-12
    dice_wt = next(p for p in result.paired if p["target"] == "WT" and p["metric"] == "dice")
    a_vals = [pc["WT"]["dice"] for pc in recomputed["unet"]]
    b_vals = [pc["WT"]["dice"] for pc in recomputed["attention_unet"]]
    assert dice_wt["mean_a"] == pytest.approx(np.mean(a_vals))
    assert dice_wt["mean_diff"] == pytest.approx(np.mean(np.subtract(b_vals, a_vals)))
    assert dice_wt["n"] == 3


def test_outputs_and_printed_table(tiny):
    out, result, logs = tiny
    for name in ("compare.csv", "paired.csv", "compare.json", "config.yaml", "splits.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("**/.*tmp*"))  # atomic writes leave no temporary files
    html = (out / "report.html").read_text()
    assert 'id="paired-table"' in html and "AttentionUNet" in html
    printed = "\n".join(logs)
    assert "UNet" in printed and "AttentionUNet" in printed
    assert "Wilcoxon" in printed and "Low power" in printed
    assert "NSD 1 mm" in printed and "NSD 2 mm" in printed
    paired = {(p["target"], p["metric"]) for p in result.paired}
    assert {("WT", "nsd_1mm"), ("ET", "nsd_2mm")} <= paired
    assert 'data-metric="nsd_1mm"' in html  # the report's tables
    assert result.text in printed
    # a second run into the same folder is refused unless asked
    with pytest.raises(ConfigError, match="previous comparison"):
        compare(None, out, overrides=list(TINY), settings=CompareSettings(iterations=1))


def _slices_dataset(root, n_patients=4, n_slices=3, size=32):
    """Patients of 2D slices (the LGG layout): a bright disc on noise is the foreground."""
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for p in range(n_patients):
        patient = f"TCGA_AA_{p:04d}_20000101"
        folder = root / patient
        folder.mkdir(parents=True)
        for s in range(1, n_slices + 1):
            cy, cx, r = rng.integers(10, size - 10), rng.integers(10, size - 10), rng.integers(3, 7)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            image = rng.integers(20, 60, (size, size, 3)).astype(np.uint8)
            image[disc] = 200
            tifffile.imwrite(folder / f"{patient}_{s}.tif", image, photometric="rgb")
            tifffile.imwrite(folder / f"{patient}_{s}_mask.tif", (disc * 255).astype(np.uint8))
    return root


def test_2d_slices_are_held_out_and_tested_by_patient(tmp_path):
    data = _slices_dataset(tmp_path / "lgg")
    out = tmp_path / "out"
    settings = CompareSettings(iterations=2, threads=1, n_boot=200, folds=2, report=False, figures=False)
    overrides = [
        "model.features=[4,8]",
        "data.patch_size=[32,32]",
        "data.batch_size=2",
        "train.progress=false",
    ]
    result = compare(data, out, overrides=overrides, settings=settings, log=lambda _m: None)
    saved = json.loads((out / "compare.json").read_text())
    held = saved["held_out"]
    assert held["paired_unit"] == "patient" and len(held["units"]) == 2
    assert len(held["cases"]) == 6  # every slice of the two held-out patients
    train_split = json.loads((out / "runs" / "seed0" / "unet" / "split.json").read_text())["train"]
    assert len(train_split) == 6
    assert not {c.rsplit("_", 1)[0] for c in train_split} & set(held["units"])  # no patient on both sides
    for p in result.paired:
        assert p["unit"] == "patient" and p["n"] == 2 and 0.0 <= p["p_value"] <= 1.0
    for name, _ in MODELS:
        preds = sorted(p.name for p in (out / "runs" / "seed0" / name / "predictions").iterdir())
        assert preds == sorted(f"{c}.png" for c in held["cases"])
    rows = {(r["model_name"], r["target"]) for r in result.table}
    assert rows == {("unet", "foreground"), ("attention_unet", "foreground")}
    assert "Paired unit: the patient" in result.text
    # per-patient volume Dice: a table column, a paired test, a line of the printed table
    assert {p["metric"] for p in result.paired} >= {"dice", "volume_dice"}
    for row in result.table:
        assert 0.0 <= row["volume_dice"] <= 1.0
    assert "Dice (patient volume)" in result.text and "dDice(vol) foreground" in result.text
    assert "foregroundDice" not in result.text  # a long target name keeps its own column
    header = (out / "compare.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("dice") + 1] == "volume_dice"


def test_size_bin_table_recomputed_from_per_case_counts(tiny):
    out, result, logs = tiny
    saved = json.loads((out / "compare.json").read_text())
    rows = saved["size_bins"]
    bins = ["lt3mm", "3to5mm", "5to10mm", "ge10mm", "small_lt5mm"]  # the last: every lesion under 5 mm
    assert [(r["target"], r["bin"]) for r in rows] == [(t, b) for t in ("WT", "TC", "ET") for b in bins]
    per_case = saved["per_case"]  # model -> seed -> case -> target -> metric (one seed here)
    cases = saved["held_out"]["cases"]
    for r in rows:
        t, b = r["target"], r["bin"]
        if b == "small_lt5mm":
            total = [per_case["unet"]["0"][c][t]["n_small_lesions"] for c in cases]
            lt = [per_case["unet"]["0"][c][t][f"n_truth_{k}"] for c in cases for k in ("lt3mm", "3to5mm")]
            assert r["lesions"] == sum(total) == sum(lt) and r["fp_per_case_a"] is None
            if sum(total):
                det = [per_case["attention_unet"]["0"][c][t]["n_small_detected"] for c in cases]
                assert r["rate_b"] == pytest.approx(sum(det) / sum(total))
                missed_a = sum(total) - r["detected_a"]
                if missed_a:
                    assert r["fn_reduction"] == pytest.approx(1 - (sum(total) - sum(det)) / missed_a)
            continue
        total = [per_case["unet"]["0"][c][t][f"n_truth_{b}"] for c in cases]
        assert total == [per_case["attention_unet"]["0"][c][t][f"n_truth_{b}"] for c in cases]  # same truth
        assert r["lesions"] == sum(total)
        fp = {m: [per_case[m]["0"][c][t][f"n_fp_{b}"] for c in cases] for m in ("unet", "attention_unet")}
        assert r["fp_per_case_a"] == pytest.approx(np.mean(fp["unet"]))
        assert r["fp_per_case_b"] == pytest.approx(np.mean(fp["attention_unet"]))
        if sum(total) == 0:
            assert r["rate_a"] is None and r["p_value"] is None
            continue
        det = {
            m: [per_case[m]["0"][c][t][f"n_detected_{b}"] for c in cases] for m in ("unet", "attention_unet")
        }
        assert r["rate_a"] == pytest.approx(sum(det["unet"]) / sum(total))
        assert r["rate_b"] == pytest.approx(sum(det["attention_unet"]) / sum(total))
        assert r["rate_diff"] == pytest.approx(r["rate_b"] - r["rate_a"])
        assert r["ci_a_low"] <= r["rate_a"] <= r["ci_a_high"] and r["ci_low"] <= r["rate_diff"] + 1e-12
        assert r["n"] == sum(1 for v in total if v > 0) and 0.0 <= r["p_value"] <= 1.0
    # the phantom has lesions under 5 mm: at least one small bin is measured on real counts
    assert any(r["lesions"] > 0 for r in rows if r["bin"] in ("lt3mm", "3to5mm"))
    with open(out / "size_bins.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [(r["target"], r["bin"]) for r in csv_rows] == [(r["target"], r["bin"]) for r in rows]
    printed = "\n".join(logs)
    assert "detection by lesion size" in printed and "3-5 mm" in printed and ">= 10 mm" in printed
    assert "all < 5 mm" in printed and "FN cut" in printed


def test_small_lesion_demo_data_for_compare(tmp_path):
    from attnseg import phantom
    from attnseg.experiments.compare import _demo_data

    s = CompareSettings(
        demo_train=1,
        demo_test=1,
        demo_shape=(32, 32, 32),
        demo_spacing_mm=1.0,
        demo_small_lesions=phantom.SmallLesionSettings(lesions=(2, 2)),
    )
    train, test = _demo_data(tmp_path, s, lambda _: None)
    record = json.loads((train / "phantom.json").read_text())
    assert (
        record["mode"] == "small_lesions" and record["spacing_mm"] == 1.0 and record["shape"] == [32, 32, 32]
    )
    assert json.loads((test / "phantom.json").read_text())["seed"] == 1000
    mtime = (train / "phantom.json").stat().st_mtime_ns
    _demo_data(tmp_path, s, lambda _: None)  # same settings: reused
    assert (train / "phantom.json").stat().st_mtime_ns == mtime
    other = dataclasses.replace(s, demo_small_lesions=phantom.SmallLesionSettings(lesions=(3, 3)))
    _demo_data(tmp_path, other, lambda _: None)  # other lesion settings: rewritten
    record = json.loads((train / "phantom.json").read_text())
    assert record["small_lesions"]["lesions"] == [3, 3]
    default = dataclasses.replace(s, demo_small_lesions=None, demo_spacing_mm=4.0)
    _demo_data(tmp_path, default, lambda _: None)  # the default phantom: rewritten
    assert json.loads((train / "phantom.json").read_text())["mode"] == "default"


def test_seed_table_by_hand():
    from attnseg.experiments.compare import format_seeds

    def row(dice, det, n, small_det, small):
        return {"dice": dice, "n_detected_lesions": det, "n_truth_lesions": n, "n_small_detected": small_det,
                "n_small_lesions": small}  # fmt: skip

    per_case = {
        "unet": {0: {"c1": {"WT": row(0.5, 1, 2, 0, 1)}, "c2": {"WT": row(0.7, 2, 3, 1, 1)}},
                 1: {"c1": {"WT": row(0.0, 0, 2, 0, 1)}, "c2": {"WT": row(0.0, 0, 3, 0, 1)}}},
        "attention_unet": {0: {"c1": {"WT": row(0.9, 2, 2, 1, 1)}, "c2": {"WT": row(0.5, 3, 3, 1, 1)}},
                           1: {"c1": {"WT": row(0.2, 1, 2, 0, 1)}, "c2": {"WT": row(0.4, 1, 3, 0, 1)}}},
    }  # fmt: skip
    lines = format_seeds(per_case, ["unet", "attention_unet"], [0, 1], ["WT"]).splitlines()
    assert lines[2].split() == ["0", "WT", "0.600", "0.700", "3/5", "5/5", "1/2", "2/2"]
    assert lines[3].split() == ["1", "WT", "0.000", "0.300", "0/5", "2/5", "0/2", "0/2"]
