"""The HTML report: tables equal the CSV they come from, no external URL, paired tests by hand, and a
real headless-Chromium load (skipped when /usr/bin/chromium is absent)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from attnseg.cli import main
from attnseg.errors import DataError
from attnseg.metrics.stats import higher_is_better
from attnseg.viz.report import (
    _example_cases,
    _fmt,
    build_compare_report,
    build_report,
    paired_tests,
    read_evaluation,
)

CHROMIUM = "/usr/bin/chromium"
HEADER = ["case_id", "target", "dice", "iou", "sensitivity", "fpr", "tp_vox", "hd_mm", "hd95_mm", "assd_mm",
          "small_lesion_fnr"]  # fmt: skip


def write_eval(
    folder: Path, dice: dict[str, list[float]], hd95: dict[str, list[float]], percentile=95.0
) -> Path:
    """A hand-made evaluation folder: 5 cases, targets from ``dice``; other metrics derived simply."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for i in range(5):
        for target in dice:
            d, h = dice[target][i], hd95[target][i]
            lines.append([f"case_{i}", target, repr(d), repr(d / (2 - d)), repr(d), "0.001", repr(float(100 * i)),
                          repr(h + 1.0), repr(h), repr(h / 2), "0.0"])  # fmt: skip
    with open(folder / "metrics_per_case.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(lines)
    settings = {"targets": {t: [1] for t in dice}, "percentile": percentile, "hd_convention": "max"}
    (folder / "summary.json").write_text(json.dumps({"n_cases": 5, "settings": settings}))
    return folder


DICE_A = {"WT": [0.5, 0.7, 0.9, 0.6, 0.8], "ET": [0.2, 0.4, 0.3, 0.1, 0.5]}
HD_A = {"WT": [4.0, 2.0, 1.0, 3.0, 5.0], "ET": [9.0, 7.5, 8.0, 6.0, 10.0]}


class Tables(HTMLParser):
    """Tables by id: rows of (attrs, text) cells; every src/href; script and style text."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.current: dict | None = None
        self.row: list | None = None
        self.row_attrs: dict = {}
        self.cell: list | None = None
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.in_head = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href", "action", "data", "poster"):
            if key in attrs:
                self.urls.append((tag, key, attrs[key] or ""))
        if tag == "table":
            self.current = {"id": attrs.get("id"), "head": [], "rows": []}
            self.tables[attrs.get("id")] = self.current
        elif tag == "thead":
            self.in_head = True
        elif tag == "tbody":
            self.in_head = False
        elif tag == "tr" and self.current is not None:
            self.row, self.row_attrs = [], attrs
        elif tag in ("td", "th") and self.row is not None:
            self.cell = [attrs, ""]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append((self.cell[0], self.cell[1].strip()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.in_head:
                self.current["head"] = [text for _, text in self.row]
            else:
                self.current["rows"].append((self.row_attrs, self.row))
            self.row = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


def parse(path: Path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def assert_self_contained(path: Path, parser: Tables) -> None:
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    for tag, key, url in parser.urls:
        assert url.startswith(("data:", "#")), f"<{tag} {key}={url[:60]!r}> is not embedded"
    assert "@import" not in text and "url(" not in text
    assert parser.tags.count("html") == 1 and parser.tags.count("body") == 1
    assert "Content-Security-Policy" in text


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_tables_match_the_csv(tmp_path):
    folder = write_eval(tmp_path / "eval", DICE_A, HD_A)
    out = build_report(folder, tmp_path / "report.html")
    parser = parse(out)
    assert_self_contained(out, parser)
    rows = csv_rows(folder / "metrics_per_case.csv")

    per_case = parser.tables["per-case-table"]
    assert per_case["head"][:4] == ["case", "target", "Dice", "IoU"]
    assert len(per_case["rows"]) == len(rows) == 10
    shown = ["dice", "iou", "hd95_mm", "hd_mm", "assd_mm", "sensitivity", "fpr"]
    for (attrs, cells), row in zip(per_case["rows"], rows):
        assert (cells[0][1], cells[1][1]) == (row["case_id"], row["target"])
        assert attrs["data-target"] == row["target"]
        by_metric = {a["data-metric"]: (a["data-value"], text) for a, text in cells[2:]}
        assert sorted(by_metric) == sorted(shown)  # tp_vox and small_lesion_fnr only in the CSV download
        for m in shown:
            assert by_metric[m][0] == row[m]  # the CSV's exact text
            assert by_metric[m][1] == _fmt(float(row[m]), m)

    summary = parser.tables["summary-table"]
    assert summary["head"] == ["metric", "WT", "ET"]
    metrics = [attrs["data-metric"] for attrs, _ in summary["rows"]]
    assert metrics == ["dice", "iou", "hd95_mm", "hd_mm", "assd_mm", "sensitivity", "fpr"]
    dice_row = summary["rows"][0][1]
    wt = dice_row[1][0]
    # WT Dice 0.5, 0.7, 0.9, 0.6, 0.8: mean 0.7, sample std sqrt(0.1 / 4) = 0.158..., median 0.7
    assert float(wt["data-mean"]) == pytest.approx(0.7)
    assert float(wt["data-std"]) == pytest.approx(math.sqrt(0.025))
    assert float(wt["data-median"]) == pytest.approx(0.7) and wt["data-n"] == "5"
    assert dice_row[1][1].startswith("0.7000 ± 0.1581 · med 0.7000")
    for attrs, cells in summary["rows"]:
        m = attrs["data-metric"]
        for cell_attrs, _ in cells[1:]:
            values = [float(r[m]) for r in rows if r["target"] == cell_attrs["data-target"]]
            assert float(cell_attrs["data-mean"]) == pytest.approx(np.mean(values), abs=1e-12)
            assert float(cell_attrs["data-median"]) == pytest.approx(np.median(values), abs=1e-12)
    # the full CSV is downloadable from inside the file
    import base64

    link = [u for tag, key, u in parser.urls if u.startswith("data:text/csv;base64,")]
    assert base64.b64decode(link[0].split(",", 1)[1]) == (folder / "metrics_per_case.csv").read_bytes()
    # two box plots and a note on how to draw the example cases
    assert sum(u.startswith("data:image/png;base64,") for _, _, u in parser.urls) == 2
    text = out.read_text()
    assert "By mean Dice: best case_4, median case_1, worst case_3" in text  # see test_example_cases


def test_paired_tests_by_hand(tmp_path):
    a = read_evaluation(write_eval(tmp_path / "a", DICE_A, HD_A))
    dice_b = {"WT": [d + 0.1 for d in DICE_A["WT"]], "ET": list(DICE_A["ET"])}
    hd_b = {"WT": [h - 1 for h in HD_A["WT"]], "ET": [9.0, 8.5, 8.0, 6.0, 11.0]}
    b = read_evaluation(write_eval(tmp_path / "b", dice_b, hd_b))
    rows = {(r["target"], r["metric"]): r for r in paired_tests(a, b, ["dice", "HD"])}
    wt = rows[("WT", "dice")]
    # 5 positive differences: the exact two-sided signed-rank p is 2 / 2^5
    assert wt["n"] == 5 and wt["b_better"] == 5 and wt["b_worse"] == 0
    assert wt["mean_diff"] == pytest.approx(0.1) and wt["p_value"] == pytest.approx(0.0625)
    assert rows[("ET", "dice")]["p_value"] == 1.0 and rows[("ET", "dice")]["b_better"] == 0
    hd = rows[("WT", "hd95_mm")]  # lower is better: 5 improvements
    assert (
        hd["b_better"] == 5
        and hd["mean_diff"] == pytest.approx(-1.0)
        and hd["p_value"] == pytest.approx(0.0625)
    )
    et_hd = rows[("ET", "hd95_mm")]  # +1 and +1 (worse), three zeros dropped: exact p over 2 pairs = 0.5
    assert (et_hd["b_better"], et_hd["b_worse"]) == (0, 2) and et_hd["p_value"] == pytest.approx(0.5)
    assert higher_is_better("dice") and higher_is_better("lesion_sensitivity")
    assert (
        not higher_is_better("hd95_mm")
        and not higher_is_better("fpr")
        and not higher_is_better("small_lesion_fnr")
        and not higher_is_better("fp_vox")
        and not higher_is_better("fn_vox")
    )

    out = build_compare_report(a, b, tmp_path / "cmp.html", names=("unet", "attention"))
    parser = parse(out)
    assert_self_contained(out, parser)
    table = parser.tables["paired-table"]
    assert table["head"][3:6] == ["unet", "attention", "Δ mean (attention − unet)"]
    expected = paired_tests(a, b)
    assert len(table["rows"]) == len(expected)
    for (attrs, cells), r in zip(table["rows"], expected):
        assert (attrs["data-target"], attrs["data-metric"]) == (r["target"], r["metric"])
        values = [c[0].get("data-value") for c in cells[2:]]
        assert values == [str(r["n"]), repr(r["mean_a"]), repr(r["mean_b"]), repr(r["mean_diff"]),
                          str(r["b_better"]), str(r["b_worse"]), repr(r["p_value"])]  # fmt: skip
    for tid, ev in (("per-case-a", a), ("per-case-b", b)):
        got = [(c[0][1], c[1][1], c[2][0]["data-value"]) for _, c in parser.tables[tid]["rows"]]
        assert got == [(r["case_id"], r["target"], r["dice"]) for r in ev.rows]
    assert parser.tables["summary-a"]["head"] == ["metric", "WT", "ET"]


def with_nsd(folder: Path, nsd_1mm: dict[str, list[float]]) -> Path:
    """``folder``'s evaluation with NSD columns after hd95_mm: nsd_1mm as given, nsd_2mm = (1 + it) / 2."""
    rows = csv_rows(folder / "metrics_per_case.csv")
    header = HEADER[:9] + ["nsd_1mm", "nsd_2mm"] + HEADER[9:]
    with open(folder / "metrics_per_case.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, header, lineterminator="\n")
        writer.writeheader()
        for i, row in enumerate(rows):
            value = nsd_1mm[row["target"]][i // len(nsd_1mm)]
            writer.writerow({**row, "nsd_1mm": repr(value), "nsd_2mm": repr((1 + value) / 2)})
    return folder


def test_nsd_columns_in_the_tables_and_the_paired_tests(tmp_path):
    nsd_a = {"WT": [0.5, 0.6, 0.7, 0.8, 0.9], "ET": [0.3, 0.3, 0.3, 0.3, 0.3]}
    a = read_evaluation(with_nsd(write_eval(tmp_path / "a", DICE_A, HD_A), nsd_a))
    nsd_b = {"WT": [v + 0.05 for v in nsd_a["WT"]], "ET": [0.3, 0.3, 0.3, 0.3, 0.2]}
    b = read_evaluation(with_nsd(write_eval(tmp_path / "b", DICE_A, HD_A), nsd_b))
    out = build_report(a, tmp_path / "report.html")
    summary = parse(out).tables["summary-table"]
    metrics = [attrs["data-metric"] for attrs, _ in summary["rows"]]
    assert metrics == [
        "dice",
        "iou",
        "hd95_mm",
        "nsd_1mm",
        "nsd_2mm",
        "hd_mm",
        "assd_mm",
        "sensitivity",
        "fpr",
    ]
    nsd_row = summary["rows"][3]
    assert nsd_row[1][0][1] == "NSD 1 mm"
    assert float(nsd_row[1][1][0]["data-mean"]) == pytest.approx(0.7)  # WT
    assert nsd_row[1][1][1].startswith("0.7000 ± 0.1581")
    rows = {(r["target"], r["metric"]): r for r in paired_tests(a, b)}
    wt = rows[("WT", "nsd_1mm")]  # higher is better: 5 improvements, exact p = 2 / 2^5
    assert (wt["b_better"], wt["b_worse"]) == (5, 0) and wt["p_value"] == pytest.approx(0.0625)
    assert wt["mean_diff"] == pytest.approx(0.05)
    et = rows[("ET", "nsd_2mm")]
    assert (et["b_better"], et["b_worse"]) == (0, 1) and et["mean_diff"] == pytest.approx(-0.01)
    metrics_in_order = [m for t, m in rows if t == "WT"]
    assert metrics_in_order[:4] == ["dice", "hd95_mm", "nsd_1mm", "nsd_2mm"]


def test_example_cases_and_errors(tmp_path):
    ev = read_evaluation(write_eval(tmp_path / "e", DICE_A, HD_A))
    # mean Dice per case: 0.35, 0.55, 0.6, 0.35, 0.65 -> best case_4, median case_1 (0.55), worst case_3
    # (case_0 and case_3 tie at 0.35: the later id sorts last)
    assert _example_cases(ev) == [("best", "case_4"), ("median", "case_1"), ("worst", "case_3")]
    with pytest.raises(DataError, match="run 'attnseg evaluate"):
        read_evaluation(tmp_path / "nothing")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="expected case_id,target"):
        read_evaluation(bad)


def test_report_from_a_real_evaluation_with_figures(tmp_path, capsys):
    """evaluate writes the CSV; the report finds the data and predictions and draws three cases."""
    from attnseg.io.nifti import save_image

    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    truth_dir, pred_dir, image_dir = tmp_path / "labelsTr", tmp_path / "pred", tmp_path / "imagesTr"
    rng = np.random.default_rng(0)
    for i in range(3):
        truth = np.zeros((16, 14, 6), np.uint8)
        truth[4:10, 3:9, 1:5] = 1
        pred = np.roll(truth, i, axis=0)
        image = rng.normal(size=(16, 14, 6)).astype(np.float32) + 2 * truth
        save_image(truth_dir / f"c{i}.nii.gz", truth, affine=affine)
        save_image(pred_dir / f"c{i}.nii.gz", pred, affine=affine)
        save_image(image_dir / f"c{i}_0000.nii.gz", image, affine=affine)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 3,
        "file_ending": ".nii.gz"}))  # fmt: skip
    assert (
        main(["evaluate", str(pred_dir), str(truth_dir), "--out", str(tmp_path / "eval"), "--no-lesions"])
        == 0
    )
    capsys.readouterr()
    assert main(["report", str(tmp_path / "eval"), "--out", str(tmp_path / "r.html")]) == 0
    assert "self-contained" in capsys.readouterr().out
    parser = parse(tmp_path / "r.html")
    assert_self_contained(tmp_path / "r.html", parser)
    rows = csv_rows(tmp_path / "eval" / "metrics_per_case.csv")
    got = [(c[0][1], c[1][1], c[2][0]["data-value"]) for _, c in parser.tables["per-case-table"]["rows"]]
    assert got == [(r["case_id"], r["target"], r["dice"]) for r in rows]
    pngs = [u for _, _, u in parser.urls if u.startswith("data:image/png")]
    assert len(pngs) == 2 + 3  # box plots + best/median/worst
    text = (tmp_path / "r.html").read_text()
    assert "best: c0" in text and "worst: c2" in text
    # 'attnseg evaluate --report' writes the same report next to the CSV
    args = ["evaluate", str(pred_dir), str(truth_dir), "--no-lesions", "--report"]
    assert main([*args, "--out", str(tmp_path / "eval2")]) == 0
    assert f"wrote {tmp_path / 'eval2' / 'report.html'}" in capsys.readouterr().out
    again = parse(tmp_path / "eval2" / "report.html")
    assert again.tables["per-case-table"]["rows"] == parser.tables["per-case-table"]["rows"]
    assert main(args) == 2
    assert "--report needs --out" in capsys.readouterr().err


def _chromium(args: list[str], tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{name}"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        f"--log-net-log={tmp_path / f'{name}.netlog.json'}", *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def _page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network for (the browser's own update pings are not the page's)."""
    data = json.loads(netlog.read_text())
    start = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in data["events"]:
        params = event.get("params") or {}
        if (
            event["type"] == start
            and "url" in params
            and "file://" in params.get("network_isolation_key", "")
        ):
            urls.append(params["url"])
    return urls


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None, reason="no /usr/bin/chromium"
)
def test_report_in_headless_chromium(tmp_path):
    a = write_eval(tmp_path / "a", DICE_A, HD_A)
    b = write_eval(tmp_path / "b", {"WT": [d + 0.05 for d in DICE_A["WT"]], "ET": DICE_A["ET"]}, HD_A)
    report = build_compare_report(a, b, tmp_path / "report.html", names=("unet", "attention"))
    url = report.resolve().as_uri()

    dom = _chromium(["--dump-dom", url], tmp_path, "dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []  # no console error, no blocked or failed resource
    assert _page_requests(tmp_path / "dom.netlog.json") == []  # and no network request at all
    assert 'id="paired-table"' in dom.stdout
    assert '<span class="count">10 row(s)</span>' in dom.stdout  # the inline script ran

    shot = tmp_path / "report.png"
    run = _chromium(
        ["--window-size=1280,1600", "--hide-scrollbars", f"--screenshot={shot}", url], tmp_path, "shot"
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as png:
        assert png.size == (1280, 1600)
        assert np.unique(np.asarray(png.convert("L").resize((64, 80)))).size > 20  # content, not blank

    # the checks do catch a faulty page: an external image is blocked (console) and requested nowhere
    bad = tmp_path / "bad.html"
    bad.write_text(report.read_text().replace("</main>", '<img src="https://example.invalid/x.png"></main>'))
    run = _chromium(["--dump-dom", bad.resolve().as_uri()], tmp_path, "bad")
    assert any("example.invalid" in line for line in _console_lines(run.stderr))
    plain = tmp_path / "plain.html"
    plain.write_text('<!DOCTYPE html><html><body><img src="https://example.invalid/y.png"></body></html>')
    _chromium(["--dump-dom", plain.resolve().as_uri()], tmp_path, "plain")
    assert _page_requests(tmp_path / "plain.netlog.json") == ["https://example.invalid/y.png"]


def test_lesion_size_table_sums_the_csv_counts(tmp_path):
    """Two cases, one target: truth lesions, detected and false positives per bin, summed by hand."""
    bins = ("lt3mm", "3to5mm", "5to10mm", "ge10mm")
    header = [
        "case_id",
        "target",
        "dice",
        *(f"{c}_{b}" for b in bins for c in ("n_truth", "n_detected", "n_fp")),
    ]
    counts = {  # case -> bin -> (truth, detected, fp)
        "case_0": {"lt3mm": (2, 0, 1), "3to5mm": (1, 1, 0), "5to10mm": (0, 0, 0), "ge10mm": (1, 1, 0)},
        "case_1": {"lt3mm": (1, 1, 2), "3to5mm": (2, 1, 1), "5to10mm": (0, 0, 0), "ge10mm": (0, 0, 0)},
    }
    folder = tmp_path / "eval"
    folder.mkdir()
    with open(folder / "metrics_per_case.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for case, per_bin in counts.items():
            w.writerow([case, "1", "0.5", *(repr(float(v)) for b in bins for v in per_bin[b])])
    out = build_report(folder, tmp_path / "r.html")
    table = parse(out).tables["size-bin-table"]
    rows = {attrs["data-bin"]: [text for _, text in cells] for attrs, cells in table["rows"]}
    assert rows["lt3mm"][2:] == ["1/3 (0.33)", "1.50"]
    assert rows["3to5mm"][2:] == ["2/3 (0.67)", "0.50"]
    assert rows["5to10mm"][2:] == ["no lesion", "0.00"]
    assert rows["ge10mm"][1:] == ["≥ 10 mm", "1/1 (1.00)", "0.00"]
