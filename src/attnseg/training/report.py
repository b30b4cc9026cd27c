"""What a run leaves behind besides checkpoints: the metrics log (JSONL and CSV), its reader, the
training-curve figure, and the one-screen summary.

The curve figure lives here, next to the log it draws, so that training can refresh
``RUN/training_curve.png`` while it runs (as nnU-Net's logger draws ``progress.png``) without
importing ``attnseg.viz``; ``attnseg visualize RUN`` redraws the same file with the same function.
It is drawn on a ``matplotlib.figure.Figure`` (no pyplot: no global figure list, no backend switch).

The reader is tolerant on purpose (a run may still be writing, or come from an older version):

- ``RUN/metrics.jsonl`` (one JSON object per epoch) is preferred, ``RUN/metrics.csv`` is the
  fallback; a path to either file works too.
- Nested values are flattened: ``{"val_dice": {"WT": 0.8}}`` -> ``val_dice_WT``.
- Lines that do not parse (a half-written last line) are skipped and counted; values that are not
  finite numbers become NaN (a gap in the curve).
- ``epoch`` defaults to the line number; ``loss`` is read as ``train_loss``; ``learning_rate`` as
  ``lr``. Validation Dice columns are ``val_dice_<name>`` (``val_dice_mean`` is drawn dashed).
- A resumed run may repeat epochs: the last record of an epoch wins.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from attnseg.errors import DataError
from attnseg.io.atomic import atomic_write, atomic_write_text

__all__ = [
    "MetricsLog",
    "find_metrics_log",
    "flatten",
    "format_summary",
    "is_run_folder",
    "plot_training_curves",
    "read_metrics_log",
    "records_log",
    "write_metrics",
]

LOG_NAMES = ("metrics.jsonl", "metrics.csv")
CURVE_NAME = "training_curve.png"
_ALIASES = {"loss": "train_loss", "learning_rate": "lr", "val_dice": "val_dice_mean"}


# --- writing ------------------------------------------------------------------------------------------
def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"val_dice": {"a": 1}}`` -> ``{"val_dice_a": 1}`` (for CSV columns)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
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


# --- reading ------------------------------------------------------------------------------------------
@dataclass
class MetricsLog:
    """Per-epoch records (flat dicts of floats, sorted by epoch) and how many lines were skipped.
    ``path``: the log file read, None for records kept in memory (:func:`records_log`)."""

    path: Path | None
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
    out: dict[str, float] = {}
    for key, value in flatten(raw).items():
        v = _number(value)
        if v is None:
            continue
        key = _ALIASES.get(key, key)
        if key not in out or not math.isfinite(out[key]):
            out[key] = v
    if "epoch" not in out or not math.isfinite(out["epoch"]):
        out["epoch"] = float(line_no)
    return out


def records_log(raws: Sequence[Mapping[str, Any]], path: Path | None = None, skipped: int = 0) -> MetricsLog:
    """A :class:`MetricsLog` of per-epoch records as the training loop keeps them (or as read from a
    log file): flattened, numbers only, sorted by epoch, the last record of a repeated epoch kept."""
    records = [_normalise(r, i + 1) for i, r in enumerate(raws)]
    by_epoch: dict[float, dict[str, float]] = {}
    for r in records:
        by_epoch[r["epoch"]] = r
    records = [by_epoch[e] for e in sorted(by_epoch)]
    columns: list[str] = []
    for r in records:
        columns += [c for c in r if c not in columns]
    return MetricsLog(path, records, skipped, columns)


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
    return records_log(raws, log_path, skipped)


# --- the figure ---------------------------------------------------------------------------------------
def plot_training_curves(
    log: MetricsLog | Sequence[Mapping[str, Any]] | str | Path,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    dpi: int = 100,
):
    """Three panels: loss (train, and validation when logged; loss terms dotted), validation Dice
    per class (mean dashed, best epoch starred), learning rate.

    ``log``: a :class:`MetricsLog`, the per-epoch records themselves (the training loop's history),
    or a run folder / log file. Returns the Figure, or writes it as PNG to ``path`` (atomically) and
    returns the path. The figure is 13 x 3.8 inches (1300 x 380 pixels at ``dpi`` 100).
    """
    if isinstance(log, (str, Path)):
        log = read_metrics_log(log)
    elif not isinstance(log, MetricsLog):
        log = records_log(log)
    if title is None:
        folder = log.path.parent if log.path is not None else Path(path).parent if path is not None else None
        title = f"training curves: {folder.name}" if folder is not None else "training curves"
    fig = Figure(figsize=(13, 3.8), dpi=100, layout="constrained")
    ax_loss, ax_dice, ax_lr = fig.subplots(1, 3)
    for ax in (ax_loss, ax_dice, ax_lr):
        ax.set_label("panel:curve")
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("epoch")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    marker = "o" if len(log.records) <= 30 else None
    _loss_panel(ax_loss, log, marker)
    _dice_panel(ax_dice, log, marker)
    _lr_panel(ax_lr, log)
    fig.suptitle(title, fontsize=11)
    if path is None:
        return fig
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    with atomic_write(Path(path), "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _loss_panel(ax, log: MetricsLog, marker: str | None) -> None:
    drawn = False
    for key, name, colour in (("train_loss", "train", "C0"), ("val_loss", "validation", "C1")):
        xs, ys = log.series(key)
        if xs:
            ax.plot(xs, ys, marker=marker, ms=3, color=colour, label=name)
            drawn = True
    extra_losses = sorted(
        c for c in log.columns if c.startswith("train_") and c != "train_loss" and not c.endswith("seconds")
    )
    for i, key in enumerate(extra_losses):
        xs, ys = log.series(key)
        if xs:
            ax.plot(xs, ys, lw=1, ls=":", color=f"C{i + 2}", label=key.removeprefix("train_"))
    if drawn:
        ax.legend(fontsize=8, framealpha=0.85, edgecolor="none", loc="best")
    else:
        _empty(ax, "no loss logged")
    ax.set_ylabel("loss")
    ax.set_title("training loss")


def _dice_panel(ax, log: MetricsLog, marker: str | None) -> None:
    names = log.dice_names
    for i, name in enumerate(names):
        xs, ys = log.series(f"val_dice_{name}")
        if xs:
            ax.plot(xs, ys, marker=marker, ms=3, color=f"C{i}", label=name)
    xs, ys = log.series("val_dice_mean")
    if xs:
        ax.plot(xs, ys, "k--", lw=1.5, label="mean")
    if names or xs:
        ax.set_ylim(0, 1.02)
        if xs:
            best_y, best_x = max(zip(ys, xs), key=lambda t: (t[0], -t[1]))  # earliest best epoch
            ax.plot(
                [best_x], [best_y], "k*", ms=9, ls="none", label=f"best mean {best_y:.3f} (epoch {best_x:g})"
            )
        ax.legend(fontsize=8, framealpha=0.85, edgecolor="none", loc="best")
    else:
        _empty(ax, "no validation logged")
    ax.set_ylabel("Dice")
    ax.set_title("validation Dice")


def _lr_panel(ax, log: MetricsLog) -> None:
    xs, ys = log.series("lr")
    if xs:
        ax.plot(xs, ys, color="C3")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.set_ylim(bottom=0)
    else:
        _empty(ax, "no learning rate logged")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate")


# --- the summary --------------------------------------------------------------------------------------
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
