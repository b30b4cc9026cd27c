"""`attnseg train` end to end on tiny phantom data (quickstart: tests/experiments/test_quickstart.py)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from attnseg.cli import main
from attnseg.config import ModelConfig
from attnseg.models import build_model, load_model
from attnseg.models.model_file import save_model

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


# --- fine-tuning: --init MODEL.pt, --freeze encoder (tests/training/test_init.py: the parts) -----------
def _source_file(path, **options):
    """A model file for the phantom (3D, 4 channels) with 2 outputs (the phantom trains 3 regions)."""
    torch.manual_seed(3)
    config = {**dict(spatial_dims=3, in_channels=4, out_channels=2, features=(4, 8, 16)), **options}
    model = build_model(ModelConfig(**config))
    save_model(path, model)
    return model


def test_train_cli_init_fine_tunes_and_records_it(tmp_path, tiny_phantom, capsys):
    old = _source_file(tmp_path / "old.pt")
    run = tmp_path / "run"
    args = ["train", str(tiny_phantom), "--out", str(run), *TINY, "--init", str(tmp_path / "old.pt")]
    assert main([*args, "--freeze", "encoder:1"]) == 0
    printed = capsys.readouterr().out
    assert f"init from {tmp_path / 'old.pt'}: " in printed and "new head (2 -> 3 output channels" in printed
    assert "frozen: encoder for epochs 1-1" in printed
    assert "encoder frozen for epochs 1-1" in printed and "encoder unfrozen at epoch 2" in printed
    record = json.loads((run / "init.json").read_text())
    assert sorted(record["replaced"]) == ["head.bias", "head.weight"]
    assert len(record["loaded"]) == len(old.state_dict()) - 2
    assert record["frozen"] == {"encoder_epochs": 1, "gates_epochs": 0}
    assert record["source_model_config"]["out_channels"] == 2
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (
        config["train"]["init"] == str(tmp_path / "old.pt") and config["train"]["freeze_encoder_epochs"] == 1
    )
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["encoder_frozen"] for r in history] == [True, False, False]
    assert load_model(run / "model.pt").out_channels == 3
    assert json.loads((run / "summary.json").read_text())["init"] == str(tmp_path / "old.pt")

    # --init only starts a run: with --resume it is refused; a plain resume continues from the checkpoint
    assert (
        main(["train", str(tiny_phantom), "--out", str(run), "--resume", "--init", str(tmp_path / "old.pt")])
        == 2
    )
    assert "drop --init" in capsys.readouterr().err
    init_json = (run / "init.json").read_text()
    assert main(["train", str(tiny_phantom), "--out", str(run), "--resume", "--set", "train.epochs=4"]) == 0
    assert "init from" not in capsys.readouterr().out
    assert (run / "init.json").read_text() == init_json


def test_train_cli_init_refuses_an_incompatible_or_missing_model_in_one_line(tmp_path, tiny_phantom, capsys):
    _source_file(tmp_path / "wide.pt", features=(8, 16, 32))
    code = main(
        ["train", str(tiny_phantom), "--out", str(tmp_path / "r"), *TINY, "--init", str(tmp_path / "wide.pt")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"attnseg train: error: {tmp_path / 'wide.pt'}: model.features=[8, 16, 32]")
    assert "--set model.features=[8,16,32]" in err and "\n" not in err

    code = main(
        ["train", str(tiny_phantom), "--out", str(tmp_path / "s"), *TINY, "--init", str(tmp_path / "no.pt")]
    )
    assert code == 2
    assert (
        capsys.readouterr().err.strip() == f"attnseg train: error: {tmp_path / 'no.pt'}: model file not found"
    )
