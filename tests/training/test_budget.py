"""``attnseg train --minutes``: the choices (pure) and the budget kept end to end on a tiny run."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from attnseg.cli import main
from attnseg.training import budget
from attnseg.training.budget import budget_defaults, choose_width, explicit_keys, measure_widths


def test_the_widest_width_that_reaches_the_iteration_floor_is_chosen():
    width, why = choose_width({8: 0.1, 16: 0.3, 24: 0.6, 32: 1.0}, 1800, 4000)
    assert width == 16  # 6000 iterations; 24 would do 3000
    assert why.startswith("the widest reaching 4000 iterations") and "16: 0.30 s/step ~6000 it" in why
    assert choose_width({8: 0.1, 16: 0.3}, 18000, 4000)[0] == 16  # a 5-hour budget: the widest measured
    width, why = choose_width({8: 1.0, 16: 3.0}, 600, 4000)
    assert width == 8 and why.startswith("the narrowest: no width reaches 4000")


def test_measuring_stops_at_the_first_width_that_cannot_reach_the_floor():
    seconds = {8: 0.1, 16: 0.3, 24: 0.9, 32: 2.0}
    calls = []

    def step_seconds(features):
        calls.append(features)
        return seconds[features[0]]

    measured = measure_widths(step_seconds, 3, budget_s=1800)
    assert measured == {8: 0.1, 16: 0.3, 24: 0.9}  # 24 gives 2000 < 4000: 32 is not measured
    assert calls[0] == (8, 16, 32)  # the throwaway first step, then one call per width
    assert len(calls) == 4


def test_settings_the_user_gave_are_found_in_the_file_and_the_overrides():
    found = explicit_keys({"model": {"features": [8, 16]}, "train": {"seed": 3}}, ["optim.lr=1e-3", "bad"])
    assert found == {"model.features", "train.seed", "optim.lr"}


def test_budget_defaults():
    defaults = budget_defaults(30)
    assert defaults["data"]["split"] == "none" and defaults["train"]["val_every"] == 0
    assert defaults["train"]["schedule_by_time"] is True and defaults["train"]["budget_minutes"] == 30.0
    assert (
        defaults["train"]["weight_averages"] == ["tail0.5"]
        and defaults["train"]["model_weights"] == "tail0.5"
    )
    with pytest.raises(ValueError, match="positive number of minutes"):
        budget_defaults(0)


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory):
    from attnseg import phantom

    root = tmp_path_factory.mktemp("phantom")
    return phantom.write_phantom_dataset(root / "data", 4, seed=0, shape=(24, 24, 16), spacing_mm=4.0)


TINY = ["--set", "train.threads=1", "--set", "train.progress=false"]


def history(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_minutes_keeps_the_budget_anneals_and_trains_every_case(tmp_path, tiny_phantom, capsys, monkeypatch):
    monkeypatch.setattr(budget, "WIDTHS", (8, 16))  # two cheap candidates keep the test short
    run = tmp_path / "run"
    start = time.perf_counter()
    assert main(["train", str(tiny_phantom), "--out", str(run), "--minutes", "0.3", *TINY]) == 0
    wall = time.perf_counter() - start
    assert 14 <= wall <= 18 + 4  # the 18-second budget, within a few seconds (the final save and plot)
    printed = capsys.readouterr().out
    assert "budget 0.3 min:" in printed and "learning rate annealed to 0 over it" in printed
    derived = json.loads((run / "derived.json").read_text())
    assert derived["budget"]["width"] in (8, 16) and derived["budget"]["minutes"] == 0.3
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["features"][0] == derived["budget"]["width"]
    assert config["train"]["budget_minutes"] == 0.3 and config["train"]["schedule_by_time"] is True
    assert config["train"]["time_limit_s"] == pytest.approx(18 - derived["budget"]["setup_s"], abs=0.1)
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 4 and split["val"] == []  # every labelled case, no validation
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "time_limit"
    records = history(run)
    peak = config["optim"]["lr"]
    assert records[-1]["lr"] < 0.05 * peak  # the schedule ran to (nearly) zero within the budget
    # model.pt is the mean of the weights over the last half of the budget
    assert (run / "model.pt").read_bytes() == (run / "averages" / "model_tail0.5.pt").read_bytes()
    assert "model.pt holds the weight average tail0.5" in printed


def test_resume_keeps_the_budget(tmp_path, tiny_phantom, capsys, monkeypatch):
    from attnseg.training.run import train

    monkeypatch.setattr(budget, "WIDTHS", (8,))
    run = tmp_path / "run"
    overrides = ["train.threads=1", "train.progress=false", "train.iters_per_epoch=5"]
    train(tiny_phantom, run, overrides=overrides, minutes=0.25, stop_after_epochs=1, log=lambda _m: None)
    first = history(run)
    assert len(first) == 1 and first[-1]["elapsed_seconds"] < 10
    limit = yaml.safe_load((run / "config.yaml").read_text())["train"]["time_limit_s"]
    # --minutes with another budget is refused; the same budget, or none, continues the run
    assert main(["train", str(tiny_phantom), "--out", str(run), "--resume", "--minutes", "1"]) == 2
    assert "--resume continues a run with its own budget" in capsys.readouterr().err
    assert main(["train", str(tiny_phantom), "--out", str(run), "--resume", "--minutes", "0.25"]) == 0
    records = history(run)
    assert len(records) > 1
    assert records[-1]["elapsed_seconds"] == pytest.approx(limit, abs=3)  # training time over both sessions
    assert records[-1]["lr"] < 0.05 * yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"]
