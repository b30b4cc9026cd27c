"""What a run leaves behind besides checkpoints: metrics log (JSONL and CSV), training curves, summary."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnseg.io.atomic import atomic_write, atomic_write_text


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"val_dice": {"a": 1}}`` -> ``{"val_dice_a": 1}`` (for CSV columns)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}_"))
        else:
            out[name] = value
    return out


def write_metrics(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """``metrics.jsonl`` (one JSON object per epoch) and ``metrics.csv`` (flattened), atomically."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    rows = [flatten(r) for r in history]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


def plot_training_curves(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Loss and learning rate per epoch (left), validation Dice per channel (right); PNG."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, [r.get("train_loss") for r in history], "o-", label="train loss", color="C0")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [r.get("lr") for r in history], "--", color="C1", label="learning rate")
    ax_lr.set_ylabel("learning rate", color="C1")
    ax_loss.set_title("training")
    val = [r for r in history if r.get("val_dice")]
    if val:
        names = list(val[0]["val_dice"])
        for i, name in enumerate(names):
            ax_dice.plot(
                [r["epoch"] for r in val], [r["val_dice"][name] for r in val], "o-", label=name, color=f"C{i}"
            )
        ax_dice.plot([r["epoch"] for r in val], [r["val_dice_mean"] for r in val], "k--", label="mean")
        ax_dice.set_ylim(0, 1)
        ax_dice.legend(loc="lower right")
    else:
        ax_dice.text(0.5, 0.5, "no validation ran", ha="center", va="center", transform=ax_dice.transAxes)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    ax_dice.set_title("validation (whole volumes)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def format_summary(summary: dict[str, Any]) -> str:
    """The one-screen summary printed at the end of a run."""
    lines = [
        f"run        {summary['run_dir']}",
        f"stopped    {summary['stopped']} after {summary['epochs']} epoch(s), {summary['iterations']} "
        f"iteration(s), {summary['seconds'] / 60:.1f} min ({summary['seconds_per_iter']:.2f} s/iteration)",
        f"device     {summary['device']}, precision {summary['precision']}, {summary['world_size']} process(es)",
        f"train loss {summary['first_loss']:.4f} (epoch 1) -> {summary['last_loss']:.4f} (last epoch)",
    ]
    if summary.get("best_dice") is not None:
        per = ", ".join(f"{k} {v:.4f}" for k, v in summary["best_dice_per_channel"].items())
        lines.append(
            f"best val   mean Dice {summary['best_dice']:.4f} at epoch {summary['best_epoch']} ({per})"
        )
    else:
        lines.append("best val   (no validation ran)")
    if summary.get("skipped_batches"):
        lines.append(f"skipped    {summary['skipped_batches']} batch(es) with a non-finite loss")
    lines.append(f"model      {summary['model_file']}")
    lines.append(f"resume     attnseg train ... --out {summary['run_dir']} --resume")
    return "\n".join(lines)
