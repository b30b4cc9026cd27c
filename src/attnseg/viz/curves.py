"""Training curves from a run folder's metrics log: loss, validation Dice per class, learning rate.

The reader is tolerant on purpose (a run may still be writing, or come from an older version):

- ``RUN/metrics.jsonl`` (one JSON object per epoch) is preferred, ``RUN/metrics.csv`` is the
  fallback; a path to either file works too.
- Nested values are flattened: ``{"val_dice": {"WT": 0.8}}`` -> ``val_dice_WT``.
- Lines that do not parse (a half-written last line) are skipped and counted; values that are not
  finite numbers become NaN (a gap in the curve).
- ``epoch`` defaults to the line number; ``loss`` is read as ``train_loss``; ``learning_rate`` as
  ``lr``. Validation Dice columns are ``val_dice_<name>`` (``val_dice_mean`` is drawn dashed).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnseg.errors import DataError

__all__ = ["MetricsLog", "find_metrics_log", "is_run_folder", "plot_training_curves", "read_metrics_log"]

LOG_NAMES = ("metrics.jsonl", "metrics.csv")
_ALIASES = {"loss": "train_loss", "learning_rate": "lr", "val_dice": "val_dice_mean"}


@dataclass
class MetricsLog:
    """Per-epoch records (flat dicts of floats, sorted by epoch) and how many lines were skipped."""

    path: Path
    records: list[dict[str, float]]
    skipped_lines: int = 0
    columns: list[str] = field(default_factory=list)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of the records that have a finite ``key``."""
        xs, ys = [], []
        for r in self.records:
            v = r.get(key)
            if v is not None and math.isfinite(v):
                xs.append(r["epoch"])
                ys.append(v)
        return xs, ys

    @property
    def dice_names(self) -> list[str]:
        """Class/region names of the ``val_dice_<name>`` columns (``mean`` excluded), in log order."""
        return [
            c[len("val_dice_") :] for c in self.columns if c.startswith("val_dice_") and c != "val_dice_mean"
        ]


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}_"))
        else:
            out[name] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _normalise(raw: Mapping[str, Any], line_no: int) -> dict[str, float]:
    flat = _flatten(raw)
    out: dict[str, float] = {}
    for key, value in flat.items():
        v = _number(value)
        if v is None:
            continue
        key = _ALIASES.get(key, key)
        if key not in out or not math.isfinite(out[key]):
            out[key] = v
    if "epoch" not in out or not math.isfinite(out["epoch"]):
        out["epoch"] = float(line_no)
    return out


def is_run_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a metrics log (``metrics.jsonl`` or ``metrics.csv``)."""
    path = Path(path)
    return path.is_dir() and any((path / n).is_file() for n in LOG_NAMES)


def find_metrics_log(path: str | Path) -> Path:
    """The metrics log of a run folder (JSONL preferred), or ``path`` itself if it is a log file."""
    path = Path(path)
    if path.is_file():
        return path
    for name in LOG_NAMES:
        if (path / name).is_file():
            return path / name
    raise DataError(f"{path}: no metrics log found (expected {' or '.join(LOG_NAMES)} in the run folder)")


def read_metrics_log(path: str | Path) -> MetricsLog:
    """Read a run's per-epoch metrics (see the module docstring for what is tolerated)."""
    log_path = find_metrics_log(path)
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{log_path}: cannot read the metrics log: {exc}") from None
    raws: list[Mapping[str, Any]] = []
    skipped = 0
    if log_path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        for row in reader:
            if row and any(v for v in row.values()):
                raws.append({k: v for k, v in row.items() if k is not None})
    else:
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if isinstance(obj, Mapping):
                raws.append(obj)
            else:
                skipped += 1
    records = [_normalise(r, i + 1) for i, r in enumerate(raws)]
    # a resumed run may repeat epochs: the last record of an epoch wins
    by_epoch: dict[float, dict[str, float]] = {}
    for r in records:
        by_epoch[r["epoch"]] = r
    records = [by_epoch[e] for e in sorted(by_epoch)]
    columns: list[str] = []
    for r in records:
        columns += [c for c in r if c not in columns]
    return MetricsLog(log_path, records, skipped, columns)


def plot_training_curves(
    log: MetricsLog | str | Path,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    dpi: int = 100,
):
    """Three panels: loss (train, and validation when logged), validation Dice per class (mean
    dashed, best epoch starred), learning rate.

    Returns the Figure, or writes it as PNG to ``path`` (atomically) and returns the path. The
    figure is 13 x 3.8 inches.
    """
    from attnseg.viz.figures import _pyplot, save_figure

    if not isinstance(log, MetricsLog):
        log = read_metrics_log(log)
    plt = _pyplot()
    fig, (ax_loss, ax_dice, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100, layout="constrained")
    for ax in (ax_loss, ax_dice, ax_lr):
        ax.set_label("panel:curve")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("epoch")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    def empty(ax, text):
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")

    marker = "o" if len(log.records) <= 30 else None
    drawn = False
    for key, name, colour in (("train_loss", "train", "C0"), ("val_loss", "validation", "C1")):
        xs, ys = log.series(key)
        if xs:
            ax_loss.plot(xs, ys, marker=marker, ms=3, color=colour, label=name)
            drawn = True
    extra_losses = sorted(
        c for c in log.columns if c.startswith("train_") and c != "train_loss" and not c.endswith("seconds")
    )
    for i, key in enumerate(extra_losses):
        xs, ys = log.series(key)
        if xs:
            ax_loss.plot(xs, ys, lw=1, ls=":", color=f"C{i + 2}", label=key.removeprefix("train_"))
    if drawn:
        ax_loss.legend(fontsize=8, framealpha=0.85, edgecolor="none", loc="best")
    else:
        empty(ax_loss, "no loss logged")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")

    names = log.dice_names
    for i, name in enumerate(names):
        xs, ys = log.series(f"val_dice_{name}")
        if xs:
            ax_dice.plot(xs, ys, marker=marker, ms=3, color=f"C{i}", label=name)
    xs, ys = log.series("val_dice_mean")
    if xs:
        ax_dice.plot(xs, ys, "k--", lw=1.5, label="mean")
    if names or xs:
        ax_dice.set_ylim(0, 1.02)
        if xs:
            best_y, best_x = max(zip(ys, xs), key=lambda t: (t[0], -t[1]))  # earliest best epoch
            ax_dice.plot(
                [best_x], [best_y], "k*", ms=9, ls="none", label=f"best mean {best_y:.3f} (epoch {best_x:g})"
            )
        ax_dice.legend(fontsize=8, framealpha=0.85, edgecolor="none", loc="best")
    else:
        empty(ax_dice, "no validation logged")
    ax_dice.set_ylabel("Dice")
    ax_dice.set_title("validation Dice")

    xs, ys = log.series("lr")
    if xs:
        ax_lr.plot(xs, ys, color="C3")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax_lr.set_ylim(bottom=0)
    else:
        empty(ax_lr, "no learning rate logged")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("learning rate")
    fig.suptitle(title or f"training curves: {log.path.parent.name}", fontsize=11)
    if path is None:
        return fig
    return save_figure(fig, path, dpi=dpi)
