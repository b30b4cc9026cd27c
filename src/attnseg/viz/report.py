"""One self-contained HTML report of an evaluation, or of two models compared on the same cases.

The report is a single file: images are PNG data URIs, CSS and JavaScript are inline, a
Content-Security-Policy forbids any network request, so it opens offline and can be mailed.

Sources (what ``attnseg evaluate --out DIR`` writes): ``DIR/metrics_per_case.csv`` (long format, one
row per case and target) and, optionally, ``DIR/summary.json`` (settings: targets, HD percentile,
prediction and truth folders). Every number in the tables is computed from the CSV here, and each
cell keeps the CSV's exact text in ``data-value`` (so sorting is numeric and a test can check each
row against the CSV).

Sections: summary per class/region (mean ± sample std, median), lesion detection by size (per size
bin: truth lesions, detected, rate pooled over cases, false-positive components per case, from the
CSV's ``n_truth_<bin>``/``n_detected_<bin>``/``n_fp_<bin>`` counts), the sortable per-case table, box
plots of Dice and HD95, and the best, median and worst cases (by the mean Dice over targets) drawn
with the truth, the prediction and, when the model is given, every attention gate's map. A
comparison adds the paired table: per target and metric, both means, the mean paired difference
(B - A), how many cases improved, and a two-sided Wilcoxon signed-rank p-value (zero differences
dropped; p = 1 when every difference is zero): ``attnseg.metrics.stats``, whose one direction table
(``HIGHER_IS_BETTER``) also decides the colours.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from attnseg import __version__
from attnseg.datasets import discover
from attnseg.errors import ConfigError, DataError
from attnseg.io.atomic import atomic_write_text
from attnseg.metrics.lesions import size_bin_keys
from attnseg.metrics.stats import higher_is_better, paired_statistics
from attnseg.viz.figures import _pyplot, figure_png
from attnseg.viz.visualize import case_figure_maker

__all__ = [
    "CaseFigures",
    "Evaluation",
    "build_compare_report",
    "build_report",
    "make_report",
    "paired_tests",
    "read_evaluation",
    "summary_rows",
]

CSV_NAME = "metrics_per_case.csv"
SUMMARY_NAME = "summary.json"

# metrics shown in the tables, in this order, when the CSV has them (all stay in the downloadable CSV)
TABLE_METRICS = (
    "dice",
    "iou",
    "HD",  # placeholder for the percentile Hausdorff column (hd95_mm by default)
    "NSD",  # placeholder for the normalized surface Dice columns (nsd_1mm, nsd_2mm by default)
    "hd_mm",
    "assd_mm",
    "sensitivity",
    "precision",
    "fpr",
    "volume_diff_ml",
    "lesion_sensitivity",
    "small_lesion_sensitivity",
)
PAIRED_METRICS = ("dice", "HD", "NSD", "assd_mm", "sensitivity", "fpr", "small_lesion_fnr")


# --- reading ----------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """A per-case CSV (rows as dicts of the CSV's text) and its summary JSON (may be empty)."""

    csv_path: Path
    header: list[str]
    rows: list[dict[str, str]]
    summary: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def targets(self) -> list[str]:
        out: list[str] = []
        for r in self.rows:
            if r["target"] not in out:
                out.append(r["target"])
        return out

    @property
    def cases(self) -> list[str]:
        out: list[str] = []
        for r in self.rows:
            if r["case_id"] not in out:
                out.append(r["case_id"])
        return out

    @property
    def metrics(self) -> list[str]:
        return [h for h in self.header if h not in ("case_id", "target")]

    @property
    def hd_metric(self) -> str | None:
        """The percentile Hausdorff column (``hd95_mm`` unless the evaluation chose another)."""
        percentile = (self.summary.get("settings") or {}).get("percentile")
        if percentile is not None:
            key = f"hd{float(percentile):g}_mm"
            if key in self.header:
                return key
        candidates = [h for h in self.metrics if h.startswith("hd") and h.endswith("_mm") and h != "hd_mm"]
        return candidates[0] if candidates else None

    @property
    def nsd_metrics(self) -> list[str]:
        """The normalized surface Dice columns (``nsd_1mm``, ``nsd_2mm``, ...), in the CSV's order."""
        return [h for h in self.metrics if h.startswith("nsd_") and h.endswith("mm")]

    def resolve(self, metric: str) -> str | None:
        if metric == "HD":
            return self.hd_metric
        if metric == "NSD":
            return next(iter(self.nsd_metrics), None)
        return metric if metric in self.header else None

    def expand(self, metric: str) -> list[str]:
        """The columns a table metric stands for: every NSD column for ``NSD``, else one or none."""
        if metric == "NSD":
            return self.nsd_metrics
        key = self.resolve(metric)
        return [] if key is None else [key]

    def value(self, row: Mapping[str, str], metric: str) -> float:
        return _to_float(row.get(metric, ""))

    def values(self, target: str, metric: str) -> dict[str, float]:
        """case id -> value of ``metric`` for ``target`` (finite values only)."""
        out = {}
        for r in self.rows:
            if r["target"] == target:
                v = self.value(r, metric)
                if math.isfinite(v):
                    out[r["case_id"]] = v
        return out


def _to_float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def read_evaluation(source: str | Path, name: str | None = None) -> Evaluation:
    """An evaluation folder (``metrics_per_case.csv`` [+ ``summary.json``]) or a CSV file."""
    source = Path(source)
    csv_path = source / CSV_NAME if source.is_dir() else source
    if not csv_path.is_file():
        raise DataError(
            f"{source}: no {CSV_NAME} here; run 'attnseg evaluate PRED TRUTH --out {source}' first"
        )
    try:
        text = csv_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read the per-case CSV ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{csv_path}: empty file; expected a header with case_id,target,...") from None
    if header[:2] != ["case_id", "target"]:
        raise DataError(
            f"{csv_path}: the header starts with {header[:2]}; expected case_id,target (attnseg evaluate's CSV)"
        )
    rows = []
    for line_no, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise DataError(
                f"{csv_path}: line {line_no} has {len(cells)} cells; the header has {len(header)}"
            )
        rows.append(dict(zip(header, cells)))
    if not rows:
        raise DataError(f"{csv_path}: no cases in the per-case CSV")
    summary: dict[str, Any] = {}
    summary_path = csv_path.parent / SUMMARY_NAME
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            summary = {}  # the CSV is the source of every number; the summary only adds settings
    return Evaluation(csv_path, header, rows, summary if isinstance(summary, dict) else {}, name or "")


# --- numbers ----------------------------------------------------------------------------------------
def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "n": 0}
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median": float(np.median(a)),
        "n": int(a.size),
    }


def summary_rows(evaluation: Evaluation, metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per target: ``{"target", metric: {"mean", "std", "median", "n"}}`` from the CSV."""
    metrics = _table_metrics(evaluation, metrics)
    out = []
    for target in evaluation.targets:
        row: dict[str, Any] = {"target": target}
        for m in metrics:
            row[m] = _stats(list(evaluation.values(target, m).values()))
        out.append(row)
    return out


def _table_metrics(evaluation: Evaluation, metrics: Sequence[str] | None = None) -> list[str]:
    out = []
    for m in metrics or TABLE_METRICS:
        out.extend(key for key in evaluation.expand(m) if key not in out)
    return out


def paired_tests(
    a: Evaluation, b: Evaluation, metrics: Sequence[str] | None = None, *, n_boot: int = 10000
) -> list[dict[str, Any]]:
    """Per target and metric over the cases both evaluations share: the paired statistics of
    :func:`attnseg.metrics.stats.paired_statistics` (means, mean difference B - A with its bootstrap
    CI, cases where B is better / worse by the metric's direction, two-sided Wilcoxon signed-rank
    p-value) with ``target`` and ``metric``."""
    rows = []
    for target in [t for t in a.targets if t in b.targets]:
        for key in [k for m in metrics or PAIRED_METRICS for k in a.expand(m) if k in b.expand(m)]:
            va, vb = a.values(target, key), b.values(target, key)
            cases = [c for c in va if c in vb]
            if not cases:
                continue
            st = paired_statistics(
                [va[c] for c in cases],
                [vb[c] for c in cases],
                higher_is_better=higher_is_better(key),
                n_boot=n_boot,
            )
            rows.append({"target": target, "metric": key, **st})
    return rows


def _fmt(value: float, metric: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if metric.endswith("_mm"):
        return f"{value:.2f}"
    if metric.endswith("_ml") or metric.startswith(("n_", "tp_", "fp_", "fn_")):
        return f"{value:.4g}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4f}"


def _label(metric: str) -> str:
    names = {
        "dice": "Dice",
        "iou": "IoU",
        "hd_mm": "HD (mm)",
        "assd_mm": "ASSD (mm)",
        "sensitivity": "sensitivity",
        "precision": "precision",
        "fpr": "FPR",
        "fnr": "FNR",
        "volume_diff_ml": "volume diff. (ml)",
        "lesion_sensitivity": "lesion sens.",
        "small_lesion_sensitivity": "small-lesion sens.",
        "small_lesion_fnr": "small-lesion FNR",
    }
    if metric in names:
        return names[metric]
    if metric.startswith("hd") and metric.endswith("_mm"):
        return f"HD{metric[2:-3]} (mm)"
    if metric.startswith("nsd_") and metric.endswith("mm"):
        return f"NSD {metric[4:-2]} mm"
    return metric


# --- figures ----------------------------------------------------------------------------------------
def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _box_plot(evaluations: Sequence[Evaluation], metric: str, title: str) -> bytes | None:

    keys = [e.resolve(metric) for e in evaluations]
    if any(k is None for k in keys):
        return None
    targets = [t for t in evaluations[0].targets if all(t in e.targets for e in evaluations)]
    if not targets:
        return None
    plt = _pyplot()
    n = len(evaluations)
    fig, ax = plt.subplots(
        figsize=(max(4.2, 1.3 * len(targets) * n + 1.5), 3.6), dpi=100, layout="constrained"
    )
    width = 0.7 / n
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for i, (e, key) in enumerate(zip(evaluations, keys)):
        data = [list(e.values(t, key).values()) or [float("nan")] for t in targets]
        positions = [j + (i - (n - 1) / 2) * width for j in range(len(targets))]
        bp = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.85,
            patch_artist=True,
            showmeans=True,
            meanprops=dict(marker="D", markerfacecolor="white", markeredgecolor="black", markersize=4),
            medianprops=dict(color="black"),
            flierprops=dict(marker="o", markersize=3, alpha=0.6),
        )
        for box in bp["boxes"]:
            box.set_facecolor(colours[i % len(colours)])
            box.set_alpha(0.75)
        rng = np.random.default_rng(0)  # jittered points, fixed seed: the same picture every time
        for pos, vals in zip(positions, data):
            ax.scatter(
                pos + rng.uniform(-width * 0.25, width * 0.25, len(vals)),
                vals,
                s=8,
                color="black",
                alpha=0.45,
                zorder=3,
            )
        if n > 1:
            ax.plot([], [], "s", color=colours[i % len(colours)], label=e.name or f"model {i + 1}")
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(targets)
    ax.set_ylabel(_label(keys[0]))
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if keys[0] in ("dice", "iou"):
        ax.set_ylim(-0.02, 1.02)
    if n > 1:
        ax.legend(frameon=False, fontsize=9)
    return figure_png(fig)


# a callable that draws one case: (case_id) -> PNG bytes, or None when it cannot
CaseFigures = Callable[[str], "bytes | None"]


def _example_cases(evaluation: Evaluation, score: Mapping[str, float] | None = None) -> list[tuple[str, str]]:
    """(label, case id) for the best, median and worst case by ``score`` (default: mean Dice over targets)."""
    if score is None:
        score = _mean_dice(evaluation)
    if not score:
        return []
    ordered = sorted(score, key=lambda c: (-score[c], c))
    picks = [("best", ordered[0]), ("median", ordered[(len(ordered) - 1) // 2]), ("worst", ordered[-1])]
    out, seen = [], set()
    for label, case in picks:
        if case not in seen:
            out.append((label, case))
            seen.add(case)
    return out


def _case_dice_text(evaluation: Evaluation, case_id: str) -> str:
    parts = [
        f"{r['target']} {_fmt(evaluation.value(r, 'dice'), 'dice')}"
        for r in evaluation.rows
        if r["case_id"] == case_id and "dice" in r
    ]
    return "Dice " + ", ".join(parts) if parts else ""


# --- HTML pieces --------------------------------------------------------------------------------------
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _summary_table(evaluation: Evaluation, table_id: str) -> str:
    """One row per metric, one column per target; each cell: mean ± std · median (from the CSV)."""
    metrics = _table_metrics(evaluation)
    stats = {row["target"]: row for row in summary_rows(evaluation, metrics)}
    targets = evaluation.targets
    head = "".join(f"<th>{_e(t)}</th>" for t in targets)
    body = []
    for m in metrics:
        cells = []
        for t in targets:
            st = stats[t][m]
            cells.append(
                f'<td data-target="{_e(t)}" data-value="{st["mean"]!r}" data-mean="{st["mean"]!r}" '
                f'data-std="{st["std"]!r}" data-median="{st["median"]!r}" data-n="{st["n"]}">'
                f'{_fmt(st["mean"], m)} <span class="sd">± {_fmt(st["std"], m)} · med {_fmt(st["median"], m)}</span></td>'
            )
        body.append(f'<tr data-metric="{_e(m)}"><td class="text">{_e(_label(m))}</td>{"".join(cells)}</tr>')
    return (
        f'<div class="table-wrap"><table id="{table_id}" class="summary"><thead><tr><th>metric</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        f'<p class="note">mean <span class="sd">± sample standard deviation · median</span> over '
        f"{len(evaluation.cases)} case(s), computed from {_e(evaluation.csv_path.name)}.</p>"
    )


def _size_bin_label(name: str) -> str:
    """``lt3mm`` -> ``< 3 mm``, ``3to5mm`` -> ``3-5 mm``, ``ge10mm`` -> ``≥ 10 mm``."""
    core = name[:-2]
    if core.startswith(("lt", "ge")):
        return f"{'<' if core.startswith('lt') else '≥'} {core[2:]} mm"
    return core.replace("to", "-") + " mm"


def _size_bin_table(evaluations: Sequence[Evaluation], table_id: str) -> str | None:
    """Lesion detection by size, one row per target and size bin, one column group per evaluation:
    detected / truth lesions (rate), pooled over cases, and false-positive components per case. None
    when the CSV has no size-bin counts."""
    first = evaluations[0]
    bins = size_bin_keys(first.metrics)
    if not bins:
        return None
    head = "".join(
        f"<th>{_e(ev.name or 'detected')}{' detected' if ev.name else ''}</th><th>FP / case</th>"
        for ev in evaluations
    )
    body = []
    for t in first.targets:
        for b in bins:
            cells = []
            for ev in evaluations:
                n = sum(ev.values(t, f"n_truth_{b}").values())
                det = sum(ev.values(t, f"n_detected_{b}").values())
                fp = ev.values(t, f"n_fp_{b}")
                fp_mean = sum(fp.values()) / len(fp) if fp else 0.0
                rate = f"{det:g}/{n:g} ({det / n:.2f})" if n else "no lesion"
                cells.append(
                    f'<td data-value="{(det / n) if n else float("nan")!r}">{_e(rate)}</td>'
                    f'<td data-value="{fp_mean!r}">{fp_mean:.2f}</td>'
                )
            body.append(
                f'<tr data-target="{_e(t)}" data-bin="{_e(b)}"><td class="text">{_e(t)}</td>'
                f'<td class="text">{_e(_size_bin_label(b))}</td>{"".join(cells)}</tr>'
            )
    return (
        f'<div class="table-wrap"><table id="{table_id}" class="summary"><thead><tr><th>target</th>'
        f"<th>lesion size</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        '<p class="note">Lesions: connected components, sized by equivalent diameter (the sphere of the '
        "same volume). Detected: truth lesions the prediction touches, summed over cases (rate in "
        "brackets); FP / case: predicted components touching no truth lesion, sized by their own "
        "diameter, per case.</p>"
    )


def _per_case_table(evaluation: Evaluation, table_id: str) -> str:
    metrics = _table_metrics(evaluation)
    head = "<th>case</th><th class='text'>target</th>" + "".join(f"<th>{_e(_label(m))}</th>" for m in metrics)
    body = []
    for r in evaluation.rows:
        cells = "".join(
            f'<td data-metric="{_e(m)}" data-value="{_e(r.get(m, ""))}">{_fmt(_to_float(r.get(m, "")), m)}</td>'
            for m in metrics
        )
        body.append(
            f'<tr data-target="{_e(r["target"])}" data-case="{_e(r["case_id"])}">'
            f'<td class="text" data-value="{_e(r["case_id"])}">{_e(r["case_id"])}</td>'
            f'<td class="text" data-value="{_e(r["target"])}">{_e(r["target"])}</td>{cells}</tr>'
        )
    options = "".join(f'<option value="{_e(t)}">{_e(t)}</option>' for t in evaluation.targets)
    csv_uri = "data:text/csv;base64," + base64.b64encode(evaluation.csv_path.read_bytes()).decode("ascii")
    return (
        f'<div class="controls" data-filter-for="{table_id}"><label>case <input type="search" '
        f'placeholder="filter by case id"></label><label>target <select><option value="">all</option>{options}'
        f'</select></label><span class="count"></span><a download="{_e(evaluation.csv_path.name)}" '
        f'href="{csv_uri}">download the full CSV ({len(evaluation.metrics)} metrics)</a></div>'
        f'<div class="table-wrap"><table id="{table_id}" class="sortable per-case"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        '<p class="note">Click a column header to sort. Values are rounded for display; sorting uses the exact values.</p>'
    )


def _paired_table(rows: Sequence[Mapping[str, Any]], name_a: str, name_b: str, table_id: str) -> str:
    head = (
        f"<th>target</th><th class='text'>metric</th><th>n</th><th>{_e(name_a)}</th><th>{_e(name_b)}</th>"
        f"<th>Δ mean ({_e(name_b)} − {_e(name_a)})</th><th>{_e(name_b)} better</th><th>{_e(name_b)} worse</th>"
        "<th>Wilcoxon p</th>"
    )
    body = []
    for r in rows:
        m = r["metric"]
        sign = 1.0 if higher_is_better(m) else -1.0
        better = sign * r["mean_diff"] > 0
        cls = ("better" if better else "worse") if r["p_value"] < 0.05 and r["mean_diff"] != 0 else ""
        body.append(
            f'<tr data-target="{_e(r["target"])}" data-metric="{_e(m)}">'
            f'<td class="text">{_e(r["target"])}</td><td class="text">{_e(_label(m))}</td>'
            f'<td data-value="{r["n"]}">{r["n"]}</td>'
            f'<td data-value="{r["mean_a"]!r}">{_fmt(r["mean_a"], m)}</td>'
            f'<td data-value="{r["mean_b"]!r}">{_fmt(r["mean_b"], m)}</td>'
            f'<td data-value="{r["mean_diff"]!r}" class="{cls}">{r["mean_diff"]:+.4g}</td>'
            f'<td data-value="{r["b_better"]}">{r["b_better"]}</td><td data-value="{r["b_worse"]}">{r["b_worse"]}</td>'
            f'<td data-value="{r["p_value"]!r}">{r["p_value"]:.3g}</td></tr>'
        )
    return (
        f'<div class="table-wrap"><table id="{table_id}" class="sortable paired"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        f'<p class="note">Per target and metric over the cases both models were evaluated on. "better" counts '
        f"cases where {_e(name_b)} improves on {_e(name_a)} (higher Dice/NSD/sensitivity, lower distances and error "
        "rates). Two-sided Wilcoxon signed-rank test (zero differences dropped; p = 1 when all are zero); "
        "green/red marks p &lt; 0.05, uncorrected for multiple comparisons.</p>"
    )


def _figure(png: bytes | None, caption: str, alt: str) -> str:
    if png is None:
        return f'<p class="note">{_e(caption)}: no figure (the case could not be drawn).</p>'
    return f'<figure class="figure"><img src="{png_data_uri(png)}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _settings_text(evaluation: Evaluation) -> str:
    settings = evaluation.summary.get("settings") or {}
    parts = []
    if settings.get("targets"):
        parts.append(
            "targets "
            + ", ".join(f"{_e(k)} = {'+'.join(map(str, v))}" for k, v in dict(settings["targets"]).items())
        )
    if "percentile" in settings:
        conv = settings.get("hd_convention")
        parts.append(
            f"HD percentile {settings['percentile']:g}" + (f" ({_e(conv)} convention)" if conv else "")
        )
    if settings.get("pred_dir"):
        parts.append(f"predictions {_e(settings['pred_dir'])}")
    if settings.get("truth_dir"):
        parts.append(f"truth {_e(settings['truth_dir'])}")
    missing = evaluation.summary.get("missing_predictions") or []
    if missing:
        parts.append(f"{len(missing)} truth case(s) without a prediction were not evaluated")
    return "; ".join(parts)


def _render(title: str, subtitle_lines: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:

    template = Template((Path(__file__).parent / "templates" / "report.html").read_text(encoding="utf-8"))
    nav = "".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(
        f'<section id="{sid}"><h2>{_e(name)}</h2>{content}</section>' for sid, name, content in sections
    )
    return template.substitute(
        title=_e(title),
        subtitle="".join(f"<p>{line}</p>" for line in subtitle_lines),
        nav=nav,
        body=body,
        version=_e(__version__),
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )


def _write(path: str | Path, text: str) -> Path:

    path = Path(path)
    atomic_write_text(path, text)
    return path


# --- reports ----------------------------------------------------------------------------------------
def build_report(
    evaluation: str | Path | Evaluation,
    out: str | Path,
    *,
    title: str | None = None,
    case_figure: CaseFigures | None = None,
) -> Path:
    """Write the HTML report of one evaluation to ``out`` (atomically) and return its path.

    ``case_figure(case_id) -> PNG bytes`` draws the best/median/worst cases (see
    :func:`attnseg.viz.visualize.case_figure_maker`); without it that section says how to get it.
    """
    ev = evaluation if isinstance(evaluation, Evaluation) else read_evaluation(evaluation)
    title = title or f"Segmentation report: {ev.csv_path.parent.name}"
    sections = [("summary", "Summary per class / region", _summary_table(ev, "summary-table"))]
    by_size = _size_bin_table([ev], "size-bin-table")
    if by_size is not None:
        sections.append(("lesion-size", "Lesion detection by size", by_size))
    sections.append(("per-case", "Per-case metrics", _per_case_table(ev, "per-case-table")))
    plots = []
    for metric, name in (("dice", "Dice"), ("HD", "HD95")):
        png = _box_plot([ev], metric, f"{name} per case")
        if png is not None:
            plots.append(
                f'<figure class="figure"><img src="{png_data_uri(png)}" alt="box plot of {name}"></figure>'
            )
    if plots:
        sections.append(
            (
                "plots",
                "Distributions",
                '<div class="pair">' + "".join(plots) + "</div>"
                '<p class="note">Boxes: quartiles; line: median; diamond: mean; dots: cases.</p>',
            )
        )
    examples = _example_cases(ev)
    if case_figure is not None and examples:
        parts = []
        for label, case_id in examples:
            caption = f"{label} case: {case_id} ({_case_dice_text(ev, case_id)})"
            parts.append(
                f"<h3>{_e(label)}: {_e(case_id)}</h3>"
                + _figure(case_figure(case_id), caption, f"{label} case")
            )
        sections.append(("cases", "Best, median and worst cases", "".join(parts)))
    elif examples:
        sections.append(
            (
                "cases",
                "Best, median and worst cases",
                '<p class="note">By mean Dice: '
                + ", ".join(f"{_e(label)} {_e(c)}" for label, c in examples)
                + ". Pass the data (and the model, for attention maps) to draw them: "
                "<code>attnseg report EVAL --data DATA --model MODEL</code>.</p>",
            )
        )
    subtitle = [f"{len(ev.cases)} case(s), {len(ev.targets)} target(s): {_e(', '.join(ev.targets))}"]
    settings = _settings_text(ev)
    if settings:
        subtitle.append(settings)
    return _write(out, _render(title, subtitle, sections))


def build_compare_report(
    evaluation_a: str | Path | Evaluation,
    evaluation_b: str | Path | Evaluation,
    out: str | Path,
    *,
    names: tuple[str, str] = ("A", "B"),
    title: str | None = None,
    paired: Sequence[Mapping[str, Any]] | None = None,
    case_figure_a: CaseFigures | None = None,
    case_figure_b: CaseFigures | None = None,
) -> Path:
    """Write the HTML report comparing two evaluations of the same cases (A = baseline, B = the other).

    ``paired``: rows as :func:`paired_tests` returns (computed here when omitted).
    """
    a = evaluation_a if isinstance(evaluation_a, Evaluation) else read_evaluation(evaluation_a)
    b = evaluation_b if isinstance(evaluation_b, Evaluation) else read_evaluation(evaluation_b)
    a.name, b.name = names
    shared_cases = [c for c in a.cases if c in b.cases]
    if not shared_cases:
        raise DataError(f"{a.csv_path} and {b.csv_path} share no case; a comparison needs the same cases")
    rows = list(paired) if paired is not None else paired_tests(a, b)
    title = title or f"Comparison: {names[0]} vs {names[1]}"
    side_by_side = (
        f'<div class="pair"><div><h3>{_e(names[0])}</h3>{_summary_table(a, "summary-a")}</div>'
        f"<div><h3>{_e(names[1])}</h3>{_summary_table(b, 'summary-b')}</div></div>"
    )
    sections = [
        ("paired", "Paired comparison", _paired_table(rows, names[0], names[1], "paired-table")),
        ("summary", "Summary per class / region, side by side", side_by_side),
    ]
    by_size = _size_bin_table([a, b], "size-bin-table")
    if by_size is not None:
        sections.append(("lesion-size", "Lesion detection by size", by_size))
    plots = []
    for metric, name in (("dice", "Dice"), ("HD", "HD95")):
        png = _box_plot([a, b], metric, f"{name} per case")
        if png is not None:
            plots.append(
                f'<figure class="figure"><img src="{png_data_uri(png)}" alt="box plots of {name}"></figure>'
            )
    if plots:
        sections.append(("plots", "Distributions", '<div class="pair">' + "".join(plots) + "</div>"))
    sections.append(
        (
            "per-case",
            "Per-case metrics",
            f'<div class="pair"><div><h3>{_e(names[0])}</h3>{_per_case_table(a, "per-case-a")}</div>'
            f"<div><h3>{_e(names[1])}</h3>{_per_case_table(b, 'per-case-b')}</div></div>",
        )
    )
    # example cases: the largest gain, the median change and the largest loss in mean Dice (B - A)
    da = {c: v for c, v in _mean_dice(a).items() if c in shared_cases}
    db = {c: v for c, v in _mean_dice(b).items() if c in shared_cases}
    delta = {c: db[c] - da[c] for c in da if c in db}
    examples = [
        (lbl.replace("best", "largest gain").replace("worst", "largest loss"), c)
        for lbl, c in _example_cases(a, delta)
    ]
    if examples and (case_figure_a is not None or case_figure_b is not None):
        parts = []
        for label, case_id in examples:
            parts.append(
                f"<h3>{_e(label)}: {_e(case_id)} (Δ mean Dice {delta[case_id]:+.4f})</h3><div class='pair'>"
            )
            for fig_maker, ev in ((case_figure_a, a), (case_figure_b, b)):
                if fig_maker is not None:
                    parts.append(
                        _figure(fig_maker(case_id), f"{ev.name}: {_case_dice_text(ev, case_id)}", ev.name)
                    )
            parts.append("</div>")
        sections.append(("cases", "Cases: largest gain, median, largest loss", "".join(parts)))
    subtitle = [
        f"{_e(names[0])}: {_e(a.csv_path)} · {_e(names[1])}: {_e(b.csv_path)}",
        f"{len(shared_cases)} shared case(s); targets {_e(', '.join(t for t in a.targets if t in b.targets))}",
    ]
    return _write(out, _render(title, subtitle, sections))


def _mean_dice(evaluation: Evaluation) -> dict[str, float]:
    per_case: dict[str, list[float]] = {}
    for r in evaluation.rows:
        v = evaluation.value(r, "dice")
        if math.isfinite(v):
            per_case.setdefault(r["case_id"], []).append(v)
    return {c: float(np.mean(v)) for c, v in per_case.items()}


def _guess_data(evaluation: Evaluation) -> Path | None:
    """The dataset folder behind an evaluation's truth folder (the folder itself or its parent)."""
    truth = (evaluation.summary.get("settings") or {}).get("truth_dir")
    if not truth:
        return None

    wanted = set(evaluation.cases)
    for folder in (Path(truth), Path(truth).parent):
        try:
            dataset = discover(folder)
        except (DataError, ConfigError, OSError):
            continue
        # a folder of label maps alone can look like images: require labelled cases of this evaluation
        if any(c.case_id in wanted and c.label is not None for c in dataset.cases):
            return folder
    return None


def _maker(evaluation: Evaluation, data, model, pred, device: str):

    data = Path(data) if data else _guess_data(evaluation)
    if pred is None and model is None:
        pred = (evaluation.summary.get("settings") or {}).get("pred_dir")
        pred = pred if pred and Path(pred).is_dir() else None
    return case_figure_maker(data, model=model, pred_dir=pred, device=device)


def make_report(
    evaluation: str | Path,
    out: str | Path,
    *,
    compare: str | Path | None = None,
    names: Sequence[str] | None = None,
    data: str | Path | None = None,
    model: str | Path | None = None,
    model_b: str | Path | None = None,
    pred: str | Path | None = None,
    pred_b: str | Path | None = None,
    title: str | None = None,
    device: str = "cpu",
) -> Path:
    """``attnseg report``: one evaluation, or two (``compare``), to one HTML file.

    Example-case figures need the images: ``data`` (default: the dataset behind the evaluation's
    truth folder, when it can be found). With ``model`` they show the attention maps; without, the
    predictions from ``pred`` (default: the evaluation's prediction folder).
    """
    a = read_evaluation(evaluation)
    if compare is None:
        return build_report(a, out, title=title, case_figure=_maker(a, data, model, pred, device))
    b = read_evaluation(compare)
    names = tuple(names) if names else (a.csv_path.parent.name, b.csv_path.parent.name)
    if len(names) != 2:
        raise DataError(f"--names needs two names (baseline, other); got {list(names)}")
    return build_compare_report(
        a,
        b,
        out,
        names=(str(names[0]), str(names[1])),
        title=title,
        case_figure_a=_maker(a, data, model, pred, device),
        case_figure_b=_maker(b, data, model_b, pred_b, device),
    )
