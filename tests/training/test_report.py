"""The metrics-log reader (JSONL, CSV, nested, truncated, resumed) and the one training-curve figure,
drawn from the loop's records while training and from the log file by ``attnseg visualize RUN``."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from attnseg.errors import DataError
from attnseg.training.report import (
    is_run_folder,
    plot_training_curves,
    read_metrics_log,
    records_log,
    write_metrics,
)


def write_jsonl(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_jsonl_nested_truncated_and_resumed(tmp_path):
    records = [
        {
            "epoch": 1,
            "lr": 0.01,
            "train_loss": 1.0,
            "val_dice": {"WT": 0.5, "ET": 0.25},
            "val_dice_mean": 0.375,
        },
        {"epoch": 2, "lr": 0.005, "train_loss": 0.8},
        {"epoch": 2, "lr": 0.005, "train_loss": 0.7, "val_dice": {"WT": 0.6, "ET": 0.4}},  # resumed: wins
        {"epoch": 3, "learning_rate": 0.001, "loss": "0.5", "val_dice": {"WT": None, "ET": 0.5}},
        ["not", "a", "record"],
    ]
    write_jsonl(tmp_path / "metrics.jsonl", records, tail='{"epoch": 4, "train_lo')  # half-written line
    assert is_run_folder(tmp_path)
    log = read_metrics_log(tmp_path)
    assert log.skipped_lines == 2
    assert [r["epoch"] for r in log.records] == [1, 2, 3]
    assert log.series("train_loss") == ([1, 2, 3], [1.0, 0.7, 0.5])  # "loss" is train_loss, "0.5" a number
    assert log.series("lr") == ([1, 2, 3], [0.01, 0.005, 0.001])  # learning_rate is lr
    assert log.dice_names == ["WT", "ET"]
    assert log.series("val_dice_WT") == ([1, 2], [0.5, 0.6])  # None is a gap
    assert log.series("val_dice_ET") == ([1, 2, 3], [0.25, 0.4, 0.5])
    assert log.series("val_dice_mean") == ([1], [0.375])


def test_csv_fallback_and_missing_epoch(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "train_loss,lr,val_dice_a,val_dice_mean\n0.9,0.1,,\n0.6,0.05,0.7,0.7\nnan,0.02,0.8,0.8\n"
    )
    log = read_metrics_log(tmp_path)
    assert [r["epoch"] for r in log.records] == [1, 2, 3]  # line numbers
    assert log.series("train_loss") == ([1, 2], [0.9, 0.6])  # NaN is a gap
    assert log.series("val_dice_a") == ([2, 3], [0.7, 0.8])
    assert log.dice_names == ["a"]
    assert not is_run_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no metrics log"):
        read_metrics_log(tmp_path / "nope")


def test_reads_what_training_writes(tmp_path):
    history = [
        {"epoch": e, "lr": 1e-3 / e, "train_loss": 1.0 / e, "val_dice": {"WT": e / 10, "TC": e / 20},
         "val_dice_mean": 3 * e / 40}
        for e in range(1, 4)
    ]  # fmt: skip
    write_metrics(tmp_path, history)
    log = read_metrics_log(tmp_path)
    assert log.path.name == "metrics.jsonl"
    assert log.series("val_dice_TC") == ([1, 2, 3], [0.05, 0.1, 0.15])
    (tmp_path / "metrics.jsonl").unlink()
    csv_log = read_metrics_log(tmp_path)  # the flattened CSV gives the same series
    assert csv_log.series("val_dice_TC") == log.series("val_dice_TC")
    assert csv_log.dice_names == ["WT", "TC"]


def test_plot_training_curves(tmp_path):
    records = []
    for e in range(1, 21):
        r = {"epoch": e, "lr": 1e-3 * math.cos(e / 40), "train_loss": 1 / e, "train_ce": 0.5 / e}
        if e % 5 == 0:
            r["val_dice"] = {"WT": 1 - 1 / e, "ET": 0.5 - 0.5 / e}
            r["val_dice_mean"] = (1.5 - 1.5 / e) / 2
        records.append(r)
    write_jsonl(tmp_path / "metrics.jsonl", records)
    fig = plot_training_curves(tmp_path)
    panels = [ax for ax in fig.axes if ax.get_label() == "panel:curve"]
    assert [ax.get_title() for ax in panels] == ["training loss", "validation Dice", "learning rate"]
    dice_lines = panels[1].get_lines()
    assert [ln.get_label() for ln in dice_lines] == [
        "WT",
        "ET",
        "mean",
        "best mean 0.713 (epoch 20)",
    ]  # (1.5 - 0.075) / 2
    assert list(dice_lines[0].get_xdata()) == [5, 10, 15, 20]
    assert [ln.get_label() for ln in panels[0].get_lines()] == ["train", "ce"]
    path = plot_training_curves(tmp_path, tmp_path / "curves.png")
    with Image.open(path) as png:
        assert png.size == (1300, 380)


def test_plot_without_validation(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", [{"epoch": 1, "train_loss": 1.0}])
    fig = plot_training_curves(tmp_path)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "no validation logged" in texts and "no learning rate logged" in texts


def test_the_loop_records_and_the_log_file_draw_the_same_figure(tmp_path):
    # the loop keeps nested records in memory and plots them; visualize reads the file it wrote
    history = [
        {"epoch": e, "lr": 1e-3 / e, "train_loss": 1.0 / e, "train_dice": 0.5 / e, "gates_frozen": False,
         "epoch_seconds": 2.0, **({"val_dice": {"WT": e / 10}, "val_dice_mean": e / 10} if e % 2 == 0 else {})}
        for e in range(1, 7)
    ]  # fmt: skip
    write_metrics(tmp_path, history)
    in_memory, on_disk = records_log(history), read_metrics_log(tmp_path)
    assert in_memory.path is None and in_memory.records == on_disk.records
    drawn = []
    for source in (history, tmp_path):
        fig = plot_training_curves(source, title="t")
        panels = [ax for ax in fig.axes if ax.get_label() == "panel:curve"]
        drawn.append([[(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()]
                      for ax in panels])  # fmt: skip
    assert drawn[0] == drawn[1]
    assert [label for label, _, _ in drawn[0][1]] == ["WT", "mean", "best mean 0.600 (epoch 6)"]
    assert [label for label, _, _ in drawn[0][0]] == ["train", "dice"]  # epoch_seconds is no loss
    path = plot_training_curves(history, tmp_path / "training_curve.png")
    with Image.open(path) as png:
        assert png.size == (1300, 380)
    # the default title names the run folder, whichever source
    assert [t.get_text() for t in plot_training_curves(history).texts] == ["training curves"]
    assert [t.get_text() for t in plot_training_curves(tmp_path).texts] == [
        f"training curves: {tmp_path.name}"
    ]


def test_training_never_imports_viz():
    """Layers: training is left of viz, so the curve figure is training's and viz imports it."""
    root = Path(__file__).resolve().parents[2] / "src" / "attnseg" / "training"
    for file in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("attnseg.viz", "attnseg.experiments", "attnseg.cli")), (
                    file,
                    name,
                )
