"""`attnseg train` end to end on tiny phantom data (quickstart: tests/experiments/test_quickstart.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from attnseg.cli import main

TINY = [
    "--set", "model.features=[4,8,16]",
    "--set", "data.folds=3",
    "--set", "train.epochs=3",
    "--set", "train.iters_per_epoch=3",
    "--set", "train.val_every=3",
    "--set", "data.batch_size=2",
    "--set", "train.progress=false",
    "--set", "train.threads=2",
    "--set", "optim.lr=0.01",
    "--set", "optim.warmup_iters=2",
    "--set", "augment.p_elastic=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory):
    from attnseg import phantom

    root = tmp_path_factory.mktemp("phantom")
    return phantom.write_phantom_dataset(root / "data", 6, seed=0, shape=(24, 24, 16), spacing_mm=4.0)


def test_train_cli_writes_the_run_folder_and_learns(tmp_path, tiny_phantom, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_phantom), "--out", str(run), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "derived from the data: spatial_dims=3, in_channels=4, out_channels=3" in printed
    assert "patch_size=[24, 24, 16]" in printed
    assert "best val" in printed
    for name in ("config.yaml", "split.json", "derived.json", "metrics.jsonl", "metrics.csv", "training_curve.png",
                 "summary.json", "model.pt", "checkpoints/last.pt", "checkpoints/best.pt"):  # fmt: skip
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["patch_size"] == [24, 24, 16] and config["model"]["in_channels"] == 4
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 4 and len(split["val"]) == 2 and not set(split["train"]) & set(split["val"])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # the loss went down
    assert set(history[-1]["val_dice"]) == {"WT", "TC", "ET"}

    # a second run into the same folder is refused; --resume with more epochs continues
    assert main(["train", str(tiny_phantom), "--out", str(run), *TINY]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(tiny_phantom), "--out", str(run), "--resume", "--set", "train.epochs=4"]) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]


def test_train_cli_reports_config_errors_in_one_line(tmp_path, tiny_phantom, capsys):
    code = main(["train", str(tiny_phantom), "--out", str(tmp_path / "r"), "--set", "optim.nme=sgd"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnseg train: error: unknown setting(s) optim.nme") and "\n" not in err


def test_train_progress_off_a_terminal_is_one_line_per_epoch(tmp_path, tiny_phantom, capsys):
    """A log file or CI log gets whole lines, one per epoch, not every redraw of a bar."""
    args = [a if a != "train.progress=false" else "train.progress=true" for a in TINY]
    assert main(["train", str(tiny_phantom), "--out", str(tmp_path / "run"), *args]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    epoch_lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(": loss " in line for line in epoch_lines)
