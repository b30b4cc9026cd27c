"""`attnseg quickstart` end to end on tiny phantom data: the CLI, the files, one training-curve PNG."""

from __future__ import annotations

import json

from PIL import Image

from attnseg.cli import main
from attnseg.experiments.quickstart import QuickstartSettings, quickstart


def test_quickstart_cli_tiny(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--train-cases", "3", "--test-cases", "1", "--no-figures",
            "--set", "train.epochs=1", "--set", "train.iters_per_epoch=2", "--set", "model.features=[4,8,16]",
            "--set", "train.progress=false"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "WT Dice" in printed and "Phantom_000" in printed and "whole-tumour Dice" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["mean"]) == {"WT", "TC", "ET"}
    assert 0.0 <= results["mean"]["WT"]["dice"] <= 1.0
    assert results["training"]["iterations"] == 2
    assert (out / "predictions" / "Phantom_000.nii.gz").is_file()
    assert main(args) == 2  # a second quickstart into the same folder needs --overwrite
    assert main([*args, "--overwrite"]) == 0


def test_quickstart_figures_are_the_runs_curve_and_the_first_cases(tmp_path):
    out = tmp_path / "qs"
    overrides = (
        "train.epochs=1",
        "train.iters_per_epoch=2",
        "model.features=[4,8,16]",
        "train.progress=false",
    )
    settings = QuickstartSettings(n_train=3, n_test=2, threads=1, overrides=overrides)
    results = quickstart(out, settings, log=lambda _m: None)
    cases = [out / "figures" / "Phantom_000.png", out / "figures" / "Phantom_001.png"]
    assert results["figures"] == [str(out / "run" / "training_curve.png"), *map(str, cases)]
    assert sorted(out / "figures" / p.name for p in (out / "figures").iterdir()) == cases
    # one curve PNG: the one training keeps, not a second copy under figures/
    assert [p.relative_to(out).as_posix() for p in out.rglob("*curve*.png")] == ["run/training_curve.png"]
    with Image.open(out / "run" / "training_curve.png") as png:
        assert png.size == (1300, 380)
    for path in cases:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size[0] > 500
    assert json.loads((out / "results.json").read_text())["figures"] == results["figures"]
    assert set(results["timings"]) == {
        "data_s",
        "train_s",
        "evaluate_s",
        "figures_s",
        "total_s",
        "process_cpu_s",
    }
