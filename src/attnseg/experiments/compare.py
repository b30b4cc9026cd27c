"""``attnseg compare``: the seed's experiment, U-Net vs Attention U-Net under identical conditions.

Both models are trained by ``attnseg.training.run.train`` from ONE configuration file written here
(``OUT/config.yaml``); the only overrides a run gets are ``model.name`` (``unet`` or
``attention_unet``) and ``train.seed``. Same split, same seeds, same data order, same augmentation,
same budget (iterations, or minutes with ``train.time_limit_s``). No held-out case is seen during
training: the runs train without validation, so ``model.pt`` holds the last weights and no case
chooses a checkpoint. The held-out cases are predicted by both models, case by case, alternating
(so a load spike on a shared machine hits both), scored with ``attnseg.metrics.evaluate_case`` and
compared case by case:

- per class/region: mean Dice, HD95, the normalized surface Dice at 1 and 2 mm, HD (the
  boundary's worst point) and ASSD in mm, voxel
  sensitivity, false positives (FP voxels, FP components, FPR), lesion-wise sensitivity and precision
  and the small-lesion detection rate (truth lesions with an equivalent diameter under 5 mm that
  the prediction touches), the lesion counts pooled over cases;
- per class/region and lesion size bin (< 3, 3-5, 5-10, >= 10 mm by equivalent diameter,
  ``attnseg.metrics.lesions``): both models' detection rates pooled over cases with bootstrap 95%
  CIs, their difference with a paired bootstrap CI and the Wilcoxon test on the per-case detected
  counts, and the false-positive components per case of that size
  (``attnseg.metrics.stats.paired_rate_statistics``);
- per model: parameters, training time and iterations, inference time per case;
- per metric: the mean paired difference (attention - plain) with a bootstrap 95% CI and the
  two-sided Wilcoxon signed-rank p-value over cases (``attnseg.metrics.stats.paired_statistics``,
  metric directions from ``attnseg.metrics.stats.HIGHER_IS_BETTER``). Few cases mean low power:
  with n non-zero differences the exact test cannot go below 2 / 2^n (6 cases: 0.031).

``compare`` is orchestration: prepare (data, held-out split, one configuration file), train each
pair, score the held-out cases, paired tables, write the outputs; each step returns a dataclass
the next one takes. The statistics are in ``attnseg.metrics.stats``, the report in ``attnseg.viz``.

Output folder::

    OUT/config.yaml                 the configuration both runs train from (derived values are in
                                    each run's own config.yaml)
    OUT/splits.json                 training cases (attnseg.datasets.splits format); held-out in compare.json
    OUT/runs/seed<S>/<model>/       the training runs (config.yaml, split.json, model.pt, curves, ...)
    OUT/runs/seed<S>/<model>/predictions/<case>.nii.gz   held-out predictions
    OUT/eval/<model>/               metrics_per_case.csv, summary.json (per case, averaged over seeds)
    OUT/compare.csv                 the table: one row per model and class/region
    OUT/paired.csv                  the paired tests: one row per class/region and metric
    OUT/size_bins.csv               detection per lesion size bin: one row per class/region and bin
    OUT/compare.json                everything above plus settings, per-case values and timings
    OUT/report.html                 the HTML report (compare mode), when ``report``
    OUT/data/, OUT/test/            phantom data (demo only)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnseg import phantom
from attnseg.config import RunConfig, apply_overrides, load_yaml, parse_override, save_yaml, to_dict
from attnseg.datasets import discover, load_case
from attnseg.datasets.splits import make_dataset_splits, save_splits
from attnseg.errors import ConfigError, DataError
from attnseg.inference.predict import PredictOptions, load_for_inference, predict_case
from attnseg.io.atomic import atomic_write_text
from attnseg.io.images2d import save_mask2d
from attnseg.io.nifti import save_image
from attnseg.metrics.evaluate import evaluate_case, per_case_csv, pooled_metrics, summarize
from attnseg.metrics.lesions import size_bin_keys
from attnseg.metrics.stats import (
    group_values,
    higher_is_better,
    mean_over_runs,
    paired_rate_statistics,
    paired_statistics,
)
from attnseg.metrics.surface_dice import DEFAULT_NSD_TOLERANCES_MM, nsd_key
from attnseg.training.loop import TrainResult
from attnseg.training.run import load_run_config, train
from attnseg.viz.report import build_compare_report, read_evaluation
from attnseg.viz.visualize import case_figure_maker

#: (model.name, display name); the first is the baseline (A), the second the challenger (B).
MODELS: tuple[tuple[str, str], tuple[str, str]] = (("unet", "UNet"), ("attention_unet", "AttentionUNet"))

#: Settings ``compare`` owns; a user override of them is refused (see ``_check_user_overrides``).
OWNED_KEYS = ("model.name", "train.seed", "data.split", "data.fold")

#: Demo training recipe (``--set`` keys) on top of the defaults: both models in about 12 minutes on
#: a busy 2-core CPU (see docs/compare.md).
DEMO_RECIPE: tuple[str, ...] = (
    "model.features=[8,16,32,64]",
    "data.patch_size=[32,32,32]",
    "data.batch_size=2",
    "train.epochs=10",
    "train.iters_per_epoch=20",
    "train.precision=auto",
    "train.channels_last=true",
    "optim.lr=0.003",
    "optim.warmup_iters=20",
    "loss.name=dice_ce",
    "augment.p_elastic=0.0",
)

#: The normalized surface Dice columns: nsd_1mm, nsd_2mm (the evaluation's default tolerances).
NSD_COLUMNS = tuple(nsd_key(t) for t in DEFAULT_NSD_TOLERANCES_MM)

#: Metrics compared case by case (directions: ``attnseg.metrics.stats.higher_is_better``); the
#: table shows more. ``n_small_detected``: the truth lesions are the same for both models, a paired count.
PAIRED_METRICS: tuple[str, ...] = (
    "dice",
    "hd95_mm",
    *NSD_COLUMNS,
    "hd_mm",
    "assd_mm",
    "sensitivity",
    "fpr",
    "fp_vox",
    "n_fp_lesions",
    "n_detected_lesions",
    "n_small_detected",
    "lesion_precision",
)

#: Per-voxel and per-case rows of the printed table, in order (lesion rows follow them).
PRINTED_VOXEL_METRICS: tuple[str, ...] = (
    "dice",
    "volume_dice",
    *(
        m
        for m in PAIRED_METRICS
        if m not in ("dice", "n_detected_lesions", "n_small_detected", "lesion_precision")
    ),
)

#: Columns of paired.csv, one row per class/region and metric.
PAIRED_COLUMNS = (
    "target", "metric", "unit", "higher_is_better", "n", "n_nonzero", "mean_a", "mean_b", "mean_diff",
    "ci_low", "ci_high", "wilcoxon_statistic", "p_value", "min_p", "b_better", "b_worse",
)  # fmt: skip

#: Columns of size_bins.csv, one row per class/region and lesion size bin: the truth lesions and the
#: cases holding them, both models' pooled detection rates with bootstrap CIs, the difference (B - A)
#: with its paired CI and Wilcoxon p over cases, and false-positive components of that size per case.
SIZE_BIN_COLUMNS = (
    "target", "bin", "unit", "n", "lesions", "detected_a", "detected_b", "rate_a", "ci_a_low", "ci_a_high",
    "rate_b", "ci_b_low", "ci_b_high", "rate_diff", "ci_low", "ci_high", "fn_reduction", "fn_reduction_ci_low",
    "fn_reduction_ci_high", "wilcoxon_statistic", "p_value",
    "n_nonzero", "min_p", "b_better", "b_worse", "fp_per_case_a", "fp_per_case_b", "fp_diff", "fp_ci_low",
    "fp_ci_high", "fp_p_value",
)  # fmt: skip

#: Table columns that are means over cases (the others pool lesion counts over cases).
MEAN_COLUMNS = (
    "dice",
    "hd95_mm",
    *NSD_COLUMNS,
    "hd_mm",
    "assd_mm",
    "sensitivity",
    "precision",
    "fpr",
    "fp_vox",
    "n_fp_lesions",
)

#: Columns of the table (compare.csv), per model and class/region; means over cases unless pooled.
TABLE_COLUMNS = MEAN_COLUMNS + (
    "small_detected",
    "small_total",
    "small_lesion_detection",
    "lesions_detected",
    "lesions_total",
    "lesion_sensitivity",
    "lesion_precision",
)


# --- configuration and table helpers -------------------------------------------------------------------
def config_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configurations (missing keys count)."""
    out: list[str] = []
    for key in sorted(set(a) | set(b), key=str):
        name = f"{prefix}{key}"
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(config_differences(va, vb, f"{name}."))
        elif va != vb:
            out.append(name)
    return out


_MISSING = object()


def table_row(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One table row (``TABLE_COLUMNS``) from per-case metric rows of one model and class/region:
    means over cases, and lesion rates pooled over cases (``attnseg.metrics.evaluate.pooled_metrics``:
    detected / total summed over cases)."""
    if not rows:
        raise ValueError("no cases")
    pooled = pooled_metrics(rows)
    row = {m: float(np.mean([r[m] for r in rows])) for m in MEAN_COLUMNS}
    row.update(
        small_detected=pooled["n_small_detected"],
        small_total=pooled["n_small_lesions"],
        small_lesion_detection=pooled["small_lesion_sensitivity"],
        lesions_detected=pooled["n_detected_lesions"],
        lesions_total=pooled["n_truth_lesions"],
        lesion_sensitivity=pooled["lesion_sensitivity"],
        lesion_precision=pooled["lesion_precision"],
    )
    return row


# --- settings and result --------------------------------------------------------------------------------
@dataclass
class CompareSettings:
    """How to compare. Held-out cases: every case of ``test_data`` when given (the demo's separate
    phantom set), else fold ``fold`` of a seeded ``folds``-fold split of DATA (by patient when the
    layout records patients), seeded by ``split_seed``. ``seeds``: one training run per model and
    seed; paired tests use each case's value averaged over seeds. When the held-out cases are
    slices of patients (the layout records groups), the paired unit is the patient (``group_values``),
    since slices of one patient are not independent. ``demo_small_lesions``: the demo data are the
    phantom's small-lesion mode with these settings (give ``demo_shape`` and ``demo_spacing_mm``
    for it, e.g. 64^3 at 1 mm). ``infer_batch_size``: sliding-window batch
    (None: 2 windows in 3D, 16 in 2D), the same for both models."""

    seeds: tuple[int, ...] = (0,)
    test_data: str | Path | None = None
    folds: int = 5
    fold: int = 0
    split_seed: int = 0
    iterations: int | None = None
    minutes: float | None = None
    threads: int = 2
    small_lesion_diameter_mm: float = 5.0
    n_boot: int = 10000
    infer_batch_size: int | None = None
    report: bool = True
    figures: bool = True
    # demo data (DATA omitted): phantom cases like ``attnseg quickstart``
    demo_train: int = 16
    demo_test: int = 8
    demo_shape: tuple[int, int, int] = (48, 48, 40)
    demo_spacing_mm: float = 2.5
    demo_seed: int = 0
    demo_small_lesions: phantom.SmallLesionSettings | None = None  # the small-lesion phantom instead


@dataclass
class CompareResult:
    out: Path
    table: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    models: dict[str, dict[str, Any]]
    held_out: list[str]
    text: str
    report: Path | None = None
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class ComparePlan:
    """What both models train on and are scored on (:func:`prepare`). ``settings.test_data`` is the
    demo's held-out folder when the data are phantoms."""

    out: Path
    data: Path
    settings: CompareSettings
    config: RunConfig
    test_set: Any  # the held-out cases' dataset (DATA itself when they are a fold of it)
    train_ids: list[str]
    test_ids: list[str]
    started: float  # time.perf_counter() at the start of the comparison


@dataclass
class HeldOutScores:
    """Both models on the held-out cases (:func:`score_held_out`). ``per_case``: model -> seed ->
    case -> target -> metric; ``targets``: target -> label values; ``groups``: case -> patient (the
    case itself when the layout records none)."""

    per_case: dict[str, dict[int, dict[str, dict[str, dict[str, float]]]]]
    infer_s: dict[str, list[float]]
    targets: dict[str, list[int]]
    truth_files: dict[str, str]
    groups: dict[str, str]
    parameters: dict[str, int]


@dataclass
class PairedTables:
    """The comparison's numbers (:func:`paired_tables`). ``averaged``: model -> case -> target ->
    metric, the mean over seeds; ``units``: the same per paired unit (case, or patient)."""

    models: dict[str, dict[str, Any]]
    table: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    unit: str
    unit_ids: list[str]
    averaged: dict[str, dict[str, dict[str, dict[str, float]]]]
    units: dict[str, dict[str, dict[str, dict[str, float]]]]
    size_bins: list[dict[str, Any]] = field(default_factory=list)


# --- helpers --------------------------------------------------------------------------------------------
def budget_overrides(iterations: int | None, minutes: float | None) -> list[str]:
    """``--iterations N``: ceil(N / 50) epochs of ceil(N / epochs) iterations (whole epochs, so the
    total can exceed N by less than one per epoch). ``--minutes M``: ``train.time_limit_s`` with the
    learning-rate schedule following the time spent; with no iteration budget the iteration cap is
    set far out of reach so that time decides."""
    out: list[str] = []
    if iterations is not None:
        if iterations < 1:
            raise ConfigError(f"--iterations must be >= 1, got {iterations}")
        epochs = max(1, math.ceil(iterations / 50))
        out += [f"train.epochs={epochs}", f"train.iters_per_epoch={math.ceil(iterations / epochs)}"]
    if minutes is not None:
        if not minutes > 0:
            raise ConfigError(f"--minutes must be > 0, got {minutes}")
        out += [f"train.time_limit_s={minutes * 60.0}", "train.schedule_by_time=true"]
        if iterations is None:
            out += ["train.epochs=100000", "train.iters_per_epoch=50"]
    return out


def _check_user_overrides(overrides: Sequence[str]) -> None:
    for text in overrides:
        keys, _ = parse_override(text)
        key = ".".join(keys)
        if key in OWNED_KEYS:
            hint = (
                "--seeds"
                if key == "train.seed"
                else ("--folds/--fold/--test" if key.startswith("data.") else "")
            )
            raise ConfigError(
                f"--set {text}: compare sets {key} itself (both models must differ only in model.name)"
                + (f"; use {hint}" if hint else "")
            )


def _prepare_out(out: Path, overwrite: bool) -> None:
    previous = [
        out / n
        for n in ("runs", "eval", "compare.json", "compare.csv", "paired.csv", "size_bins.csv", "report.html")
    ]
    if any(p.exists() for p in previous):
        if not overwrite:
            raise ConfigError(f"{out}: holds a previous comparison; pass --overwrite or another --out")
        for p in previous:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _demo_data(out: Path, s: CompareSettings, log: Callable[[str], None]) -> tuple[Path, Path]:
    """Phantom training and held-out sets (reused when a previous demo wrote the same ones)."""
    paths = []
    for name, n, seed in (("data", s.demo_train, s.demo_seed), ("test", s.demo_test, s.demo_seed + 1000)):
        folder = out / name
        record = folder / "phantom.json"
        same = False
        if record.is_file():
            try:
                saved = json.loads(record.read_text())
                small = None if s.demo_small_lesions is None else s.demo_small_lesions.to_dict()
                same = (
                    saved.get("seed") == seed
                    and saved.get("shape") == list(s.demo_shape)
                    and saved.get("spacing_mm") == float(s.demo_spacing_mm)
                    and saved.get("small_lesions") == small
                    and len(saved.get("cases", {})) == n
                )
            except (OSError, json.JSONDecodeError):
                same = False
        if not same:
            if folder.exists():
                shutil.rmtree(folder)
            phantom.write_phantom_dataset(
                folder,
                n,
                seed,
                shape=s.demo_shape,
                spacing_mm=s.demo_spacing_mm,
                small_lesions=s.demo_small_lesions,
            )
        paths.append(folder)
    mode = "" if s.demo_small_lesions is None else "small-lesion "
    log(
        f"{mode}phantom data: {s.demo_train} training cases in {paths[0]}, {s.demo_test} held-out cases in {paths[1]} "
        f"({'x'.join(map(str, s.demo_shape))} voxels at {s.demo_spacing_mm:g} mm)"
    )
    return paths[0], paths[1]


def _held_out(data_root: Path, s: CompareSettings) -> tuple[Any, Any, list[str], list[str]]:
    """(training dataset, held-out dataset, training ids, held-out ids)."""
    dataset = discover(data_root)
    labelled = [c.case_id for c in dataset.cases if c.label is not None]
    if s.test_data is not None:
        test = discover(s.test_data)
        test_ids = [c.case_id for c in test.cases if c.label is not None]
        if not test_ids:
            raise DataError(f"{s.test_data}: no held-out case has a label; compare scores against labels")
        if Path(s.test_data).resolve() == Path(data_root).resolve():
            raise ConfigError(f"--test {s.test_data} is the training data; pass a separate folder")
        return dataset, test, sorted(labelled), test_ids
    fold = make_dataset_splits(dataset, s.folds, s.split_seed)[s.fold] if 0 <= s.fold < s.folds else None
    if fold is None:
        raise ConfigError(f"--fold {s.fold}: the split has folds 0..{s.folds - 1}")
    keep = set(labelled)
    train_ids = [c for c in fold["train"] if c in keep]
    test_ids = [c for c in fold["val"] if c in keep]
    if not test_ids or len(train_ids) < 1:
        raise DataError(
            f"{data_root}: fold {s.fold} of {s.folds} leaves {len(train_ids)} training and {len(test_ids)} "
            "held-out labelled case(s); compare needs both"
        )
    return dataset, dataset, train_ids, test_ids


def _save_prediction(path: Path, labels: np.ndarray, meta) -> Path:
    if labels.ndim == 2 and getattr(meta, "header", None) is None:
        path = path.with_suffix("").with_suffix(".png") if path.name.endswith(".nii.gz") else path
        save_mask2d(path, labels)
    else:
        save_image(path, labels, meta)
    return path


def _count_parameters(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(
            [repr(r[c]) if isinstance(r[c], float) else ("" if r[c] is None else r[c]) for c in columns]
        )
    atomic_write_text(path, buf.getvalue())


# --- the experiment -------------------------------------------------------------------------------------
def compare(
    data: str | Path | None,
    out: str | Path,
    *,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    settings: CompareSettings | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> CompareResult:
    """Train UNet and AttentionUNet identically, evaluate both on the same held-out cases, compare
    them case by case; write the files of the module docstring and return the table. ``data`` None:
    phantom demo data written under ``out`` first."""
    s = settings or CompareSettings()
    if not s.seeds:
        raise ConfigError("--seeds: give at least one seed")
    if len(set(s.seeds)) != len(s.seeds):
        raise ConfigError(f"--seeds {list(s.seeds)}: each seed once")
    _check_user_overrides(overrides)
    out = Path(out)
    _prepare_out(out, overwrite)
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    plan = prepare(data, out, s, config_file, overrides, log)
    runs = train_pairs(plan, log)
    scores = score_held_out(plan, runs)
    tables = paired_tables(plan, runs, scores)
    return write_outputs(plan, scores, tables, log)


def prepare(
    data: str | Path | None,
    out: Path,
    s: CompareSettings,
    config_file: str | Path | None,
    overrides: Sequence[str],
    log: Callable[[str], None],
) -> ComparePlan:
    """Phantom data when ``data`` is None; the held-out cases; ``OUT/splits.json``; ``OUT/config.yaml``
    (defaults <- demo recipe <- ``config_file`` <- ``overrides`` <- budget, split)."""
    started = time.perf_counter()
    demo = data is None
    if demo:
        data, test_root = _demo_data(out, s, log)
        s = dataclasses.replace(s, test_data=test_root)
    data = Path(data)
    dataset, test_set, train_ids, test_ids = _held_out(data, s)
    splits_file = save_splits(out / "splits.json", [{"train": train_ids, "val": []}], k=1, seed=s.split_seed)
    base = to_dict(RunConfig())
    if demo:
        base = apply_overrides(base, list(DEMO_RECIPE))
    user = [*([f"train.threads={s.threads}"] if s.threads > 0 else []), *overrides]
    user += budget_overrides(s.iterations, s.minutes)
    forced = [f"data.split={splits_file.resolve()}", "data.fold=0"]
    config = load_run_config(config_file, [*user, *forced], base=base)
    save_yaml(out / "config.yaml", config)
    log(
        f"compare: {len(train_ids)} training case(s) from {data}, {len(test_ids)} held-out case(s)"
        f"{'' if s.test_data is None else f' from {s.test_data}'}; seeds {list(s.seeds)}; "
        f"budget {config.train.epochs} x {config.train.iters_per_epoch} iterations"
        + (f" or {config.train.time_limit_s:g} s" if config.train.time_limit_s else "")
        + f"; config {out / 'config.yaml'}"
    )
    return ComparePlan(out, data, s, config, test_set, train_ids, test_ids, started)


def train_pairs(plan: ComparePlan, log: Callable[[str], None]) -> dict[int, dict[str, TrainResult]]:
    """For each seed, both models from ``OUT/config.yaml`` (overrides: ``model.name``, ``train.seed``);
    seed -> model name -> training result. Checks that the two runs of a seed differ in name only."""
    runs: dict[int, dict[str, TrainResult]] = {}
    for k, seed in enumerate(plan.settings.seeds):
        runs[seed] = {}
        # alternate which model trains first, so one-time start-up costs do not always hit the same one
        for name, display in MODELS if k % 2 == 0 else tuple(reversed(MODELS)):
            run_dir = plan.out / "runs" / f"seed{seed}" / name
            log(f"\n=== training {display} (seed {seed}) -> {run_dir}")
            runs[seed][name] = train(
                plan.data,
                run_dir,
                config_file=plan.out / "config.yaml",
                overrides=[f"model.name={name}", f"train.seed={seed}"],
                log=log,
            )
        _check_fair(plan.out / "runs" / f"seed{seed}")
    return runs


def _check_fair(seed_dir: Path) -> None:
    """The two runs of one seed must have the same configuration except ``model.name``, and the
    same split (a bug guard: compare built them from one file)."""
    (a, _), (b, _) = MODELS
    diff = config_differences(
        load_yaml(seed_dir / a / "config.yaml"), load_yaml(seed_dir / b / "config.yaml")
    )
    if diff != ["model.name"]:
        raise AssertionError(f"{seed_dir}: the two runs differ in {diff}, expected only model.name")
    split_a = json.loads((seed_dir / a / "split.json").read_text())
    split_b = json.loads((seed_dir / b / "split.json").read_text())
    if split_a != split_b:
        raise AssertionError(f"{seed_dir}: the two runs have different splits")


def score_held_out(plan: ComparePlan, runs: Mapping[int, Mapping[str, TrainResult]]) -> HeldOutScores:
    """Each held-out case loaded once and predicted by every model, alternating which goes first (a
    load spike or a cold cache hits both); predictions saved in each run's ``predictions/``; scored
    with ``attnseg.metrics.evaluate_case``."""
    s = plan.settings
    names = [n for n, _ in MODELS]
    loaded = {
        (seed, name): load_for_inference(runs[seed][name].run_dir / "model.pt", "cpu")
        for seed in s.seeds
        for name in names
    }
    first = loaded[(s.seeds[0], names[0])].settings
    targets = first.label_scheme.targets  # name -> label values: each region, or each class
    scores = HeldOutScores(
        per_case={name: {seed: {} for seed in s.seeds} for name in names},
        infer_s={name: [] for name in names},
        targets=targets,
        truth_files={},
        groups={},
        parameters={n: _count_parameters(loaded[(s.seeds[0], n)].predictor) for n in names},
    )
    group_of = dict(zip(plan.test_set.case_ids, plan.test_set.groups))
    batch = s.infer_batch_size or (16 if first.spatial_dims == 2 else 2)
    for i, case_id in enumerate(plan.test_ids):
        case = plan.test_set.case(case_id)
        image, truth, meta = load_case(case, plan.test_set)
        scores.truth_files[case_id] = str(case.label)
        scores.groups[case_id] = group_of.get(case_id, case_id)
        spacing = tuple(meta.spacing_mm)[: truth.ndim] if meta.spacing_mm else None
        order = names if i % 2 == 0 else names[::-1]
        for seed in s.seeds:
            for name in order:
                run = runs[seed][name]
                options = PredictOptions(batch_size=batch, autocast=run.summary.get("precision") == "bf16")
                pred = predict_case(loaded[(seed, name)], image, meta.spacing_mm, options, case_id=case_id)
                scores.infer_s[name].append(pred.seconds)
                _save_prediction(run.run_dir / "predictions" / f"{case_id}.nii.gz", pred.labels, meta)
                scores.per_case[name][seed][case_id] = evaluate_case(
                    pred.labels,
                    truth,
                    spacing,
                    regions=targets,
                    small_lesion_diameter_mm=s.small_lesion_diameter_mm,
                    nsd_tolerances_mm=DEFAULT_NSD_TOLERANCES_MM,
                )
    return scores


def paired_tables(
    plan: ComparePlan, runs: Mapping[int, Mapping[str, TrainResult]], scores: HeldOutScores
) -> PairedTables:
    """Per model: parameters and times. Table: one row per model and target over every (seed,
    case). Paired tests (``attnseg.metrics.stats``) over cases, or patients when the held-out cases
    are slices of patients, on each case's values averaged over seeds."""
    s = plan.settings
    names = [n for n, _ in MODELS]
    models = {name: _model_summary(name, [runs[seed][name] for seed in s.seeds], scores) for name in names}
    table = []
    for name in names:
        for t in scores.targets:
            rows = [scores.per_case[name][seed][c][t] for seed in s.seeds for c in plan.test_ids]
            row = {"model": models[name]["display"], "model_name": name, "target": t}
            row.update(n_cases=len(plan.test_ids), n_seeds=len(s.seeds), **table_row(rows))
            row["parameters"] = models[name]["parameters"]
            row["train_s"] = models[name]["train_s"]
            row["iterations"] = int(np.mean(models[name]["iterations"]))
            row["infer_s_per_case"] = models[name]["infer_s_per_case"]
            table.append(row)

    averaged = {name: mean_over_runs(scores.per_case[name]) for name in names}
    by_patient = any(scores.groups[c] != c for c in plan.test_ids)
    units = {n: group_values(averaged[n], scores.groups) if by_patient else averaged[n] for n in names}
    unit_ids = list(units[names[0]])
    metrics = PAIRED_METRICS
    if by_patient and all(
        "volume_dice" in units[n][u][t] for n in names for u in unit_ids for t in scores.targets
    ):
        metrics = ("dice", "volume_dice", *(m for m in PAIRED_METRICS if m != "dice"))
        for row in table:  # the mean over patients of each patient's volume Dice
            row["volume_dice"] = float(
                np.mean([units[row["model_name"]][u][row["target"]]["volume_dice"] for u in unit_ids])
            )
    unit = "patient" if by_patient else "case"
    paired = []
    a, b = names
    for t in scores.targets:
        for metric in metrics:
            higher = higher_is_better(metric)
            st = paired_statistics(
                [units[a][u][t][metric] for u in unit_ids],
                [units[b][u][t][metric] for u in unit_ids],
                higher_is_better=higher,
                n_boot=s.n_boot,
                seed=0,
            )
            paired.append({"target": t, "metric": metric, "unit": unit, "higher_is_better": higher, **st})
    size_bins = size_bin_tables(
        units, names, unit_ids, list(scores.targets), unit, s.n_boot, s.small_lesion_diameter_mm
    )
    return PairedTables(models, table, paired, unit, unit_ids, averaged, units, size_bins)


def size_bin_tables(
    units: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    names: Sequence[str],
    unit_ids: Sequence[str],
    targets: Sequence[str],
    unit: str = "case",
    n_boot: int = 10000,
    small_mm: float | None = None,
) -> list[dict[str, Any]]:
    """Per target and lesion size bin (``SIZE_BIN_COLUMNS``): detection rates of both models with
    bootstrap CIs, the paired difference and its Wilcoxon test over units (``paired_rate_statistics``
    on the per-unit detected counts, already averaged over seeds), and the false-positive components
    of the bin per unit (``paired_statistics`` on ``n_fp_<bin>``). A bin with no truth lesion in any
    unit gets no detection numbers (None), only its false positives. With ``small_mm``, each target
    ends with the row ``small`` (every lesion under ``small_mm``: ``n_small_lesions``,
    ``n_small_detected``; no false-positive columns)."""
    a, b = names
    rows: list[dict[str, Any]] = []
    if not unit_ids:
        return rows
    for t in targets:
        for bin_ in size_bin_keys(list(units[a][unit_ids[0]][t])):
            col = {k: f"{k}_{bin_}" for k in ("n_truth", "n_detected", "n_fp")}
            total = [units[a][u][t][col["n_truth"]] for u in unit_ids]
            row: dict[str, Any] = dict.fromkeys(SIZE_BIN_COLUMNS)
            row.update(target=t, bin=bin_, unit=unit, n=0, lesions=float(sum(total)))
            if sum(total) > 0:
                det = {m: [units[m][u][t][col["n_detected"]] for u in unit_ids] for m in names}
                row.update(paired_rate_statistics(det[a], det[b], total, n_boot=n_boot, seed=0))
            fp = paired_statistics(
                [units[a][u][t][col["n_fp"]] for u in unit_ids],
                [units[b][u][t][col["n_fp"]] for u in unit_ids],
                higher_is_better=False,
                n_boot=n_boot,
                seed=0,
            )
            row.update(
                fp_per_case_a=fp["mean_a"],
                fp_per_case_b=fp["mean_b"],
                fp_diff=fp["mean_diff"],
                fp_ci_low=fp["ci_low"],
                fp_ci_high=fp["ci_high"],
                fp_p_value=fp["p_value"],
            )
            rows.append(row)
        if small_mm is not None and "n_small_lesions" in units[a][unit_ids[0]][t]:
            total = [units[a][u][t]["n_small_lesions"] for u in unit_ids]
            row = dict.fromkeys(SIZE_BIN_COLUMNS)
            row.update(target=t, bin=f"small_lt{small_mm:g}mm", unit=unit, n=0, lesions=float(sum(total)))
            if sum(total) > 0:
                det = {m: [units[m][u][t]["n_small_detected"] for u in unit_ids] for m in names}
                row.update(paired_rate_statistics(det[a], det[b], total, n_boot=n_boot, seed=0))
            rows.append(row)
    return rows


def _model_summary(name: str, results: Sequence[TrainResult], scores: HeldOutScores) -> dict[str, Any]:
    """One model's parameters, training and inference times over its seeds."""
    return {
        "display": dict(MODELS)[name],
        "parameters": scores.parameters[name],
        "train_s": float(np.mean([r.seconds for r in results])),
        "train_s_per_seed": [float(r.seconds) for r in results],
        "iterations": [int(r.iterations) for r in results],
        "stopped": [r.stopped for r in results],
        "precision": results[0].summary.get("precision"),
        "last_loss": [r.summary.get("last_loss") for r in results],
        # median: robust to a load spike on a shared machine; every time is in infer_s
        "infer_s_per_case": float(np.median(scores.infer_s[name])),
        "infer_s": [float(v) for v in scores.infer_s[name]],
        "run_dirs": [str(r.run_dir) for r in results],
    }


def write_outputs(
    plan: ComparePlan, scores: HeldOutScores, tables: PairedTables, log: Callable[[str], None]
) -> CompareResult:
    """``OUT/eval/<model>/``, ``compare.csv``, ``paired.csv``, the printed text, ``report.html``
    (when asked) and ``compare.json``; prints the text."""
    out, s = plan.out, plan.settings
    names = [n for n, _ in MODELS]
    eval_dirs = {name: _write_evaluation(plan, scores, tables, name) for name in names}
    table_cols = [
        "model", "model_name", "target", "n_cases", "n_seeds", *TABLE_COLUMNS,
        "parameters", "train_s", "iterations", "infer_s_per_case",
    ]  # fmt: skip
    if "volume_dice" in tables.table[0]:
        table_cols.insert(table_cols.index("dice") + 1, "volume_dice")
    _write_csv(out / "compare.csv", tables.table, table_cols)
    _write_csv(out / "paired.csv", tables.paired, PAIRED_COLUMNS)
    _write_csv(out / "size_bins.csv", tables.size_bins, SIZE_BIN_COLUMNS)
    files = {
        "csv": str(out / "compare.csv"),
        "paired": str(out / "paired.csv"),
        "size_bins": str(out / "size_bins.csv"),
    }
    text = format_table(
        tables.table,
        tables.paired,
        tables.models,
        len(plan.test_ids),
        list(s.seeds),
        s.small_lesion_diameter_mm,
        tables.unit,
        len(tables.unit_ids),
    )
    if tables.size_bins:
        text += "\n" + format_size_bins(tables.size_bins, tables.unit, len(tables.unit_ids))
    if len(s.seeds) > 1:
        text += "\n" + format_seeds(scores.per_case, names, list(s.seeds), list(scores.targets))
    text += "\n" + format_case_deltas(tables.units, names, tables.unit_ids, list(scores.targets), tables.unit)
    report_path = _report(plan, eval_dirs, tables.paired, log) if s.report else None
    if report_path is not None:
        files["report"] = str(report_path)
    payload = _payload(plan, scores, tables, text)
    atomic_write_text(out / "compare.json", json.dumps(payload, indent=1) + "\n")
    files["json"] = str(out / "compare.json")
    log("")
    log(text)
    log(f"\nfiles: {', '.join(files.values())}; total {payload['wall_s'] / 60:.1f} min")
    return CompareResult(
        out, tables.table, tables.paired, payload["models"], list(plan.test_ids), text, report_path, files
    )


def _write_evaluation(plan: ComparePlan, scores: HeldOutScores, tables: PairedTables, name: str) -> Path:
    """``OUT/eval/<model>/``: metrics_per_case.csv and summary.json as ``attnseg evaluate`` writes
    them, of the per-case values averaged over seeds (the report's input)."""
    s = plan.settings
    folder = plan.out / "eval" / name
    summary = summarize(
        tables.averaged[name],
        settings={
            "targets": scores.targets,
            "percentile": 95.0,
            "hd_convention": "max",
            "nsd_tolerances_mm": list(DEFAULT_NSD_TOLERANCES_MM),
            "small_lesion_diameter_mm": s.small_lesion_diameter_mm,
            "seeds": list(s.seeds),
            "pred_dir": str(plan.out / "runs" / f"seed{s.seeds[0]}" / name / "predictions"),
            "truth_dir": str(s.test_data or plan.data),
        },
    )
    atomic_write_text(folder / "metrics_per_case.csv", per_case_csv(tables.averaged[name]))
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1) + "\n")
    return folder


def _payload(plan: ComparePlan, scores: HeldOutScores, tables: PairedTables, text: str) -> dict[str, Any]:
    """``compare.json``: everything, with settings, per-case values per seed and timings."""
    s = plan.settings
    names = [n for n, _ in MODELS]
    return {
        "models": {n: {"name": n, **m} for n, m in tables.models.items()},
        "baseline": names[0],
        "challenger": names[1],
        "data": str(plan.data),
        "held_out": {
            "source": str(s.test_data or plan.data),
            "cases": list(plan.test_ids),
            "truth": scores.truth_files,
            "paired_unit": tables.unit,
            "units": tables.unit_ids,
        },
        "settings": {
            "seeds": list(s.seeds),
            "folds": s.folds,
            "fold": s.fold,
            "split_seed": s.split_seed,
            "iterations": s.iterations,
            "minutes": s.minutes,
            "threads": s.threads,
            "small_lesion_diameter_mm": s.small_lesion_diameter_mm,
            "n_boot": s.n_boot,
            "confidence": 0.95,
        },
        "config": to_dict(plan.config),
        "identical_except": ["model.name"],
        "table": tables.table,
        "paired": tables.paired,
        "size_bins": tables.size_bins,
        "per_case": {n: {str(seed): scores.per_case[n][seed] for seed in s.seeds} for n in names},
        "wall_s": time.perf_counter() - plan.started,
        "text": text,
    }


def _report(
    plan: ComparePlan, eval_dirs: Mapping[str, Path], paired: Sequence[Mapping[str, Any]], log
) -> Path | None:
    """The HTML report in compare mode (attnseg.viz.report); a failure here never fails the run."""
    s = plan.settings
    (a, da), (b, db) = MODELS
    makers = [None, None]
    if s.figures:
        try:
            makers = [
                case_figure_maker(
                    s.test_data or plan.data, model=plan.out / "runs" / f"seed{s.seeds[0]}" / n / "model.pt"
                )
                for n in (a, b)
            ]
        except Exception as exc:  # noqa: BLE001 -- figures are a bonus; the table is the result
            log(f"report figures skipped: {type(exc).__name__}: {exc}")
    try:
        return build_compare_report(
            read_evaluation(eval_dirs[a]),
            read_evaluation(eval_dirs[b]),
            plan.out / "report.html",
            names=(da, db),
            title=f"{da} vs {db} on the same held-out cases",
            paired=paired,
            case_figure_a=makers[0],
            case_figure_b=makers[1],
        )
    except Exception as exc:  # noqa: BLE001
        log(f"report skipped: {type(exc).__name__}: {exc}")
        return None


# --- text -----------------------------------------------------------------------------------------------
LABELS = {
    "dice": "Dice",
    "volume_dice": "Dice (patient volume)",
    "hd95_mm": "HD95 (mm)",
    **{nsd_key(t): f"NSD {t:g} mm" for t in DEFAULT_NSD_TOLERANCES_MM},
    "hd_mm": "HD max (mm)",
    "assd_mm": "ASSD (mm)",
    "sensitivity": "sensitivity (voxels)",
    "precision": "precision (voxels)",
    "fpr": "FPR",
    "fp_vox": "FP voxels",
    "n_fp_lesions": "FP components",
    "n_detected_lesions": "lesions detected",
    "n_small_detected": "small lesions detected",
    "lesion_sensitivity": "lesion sensitivity",
    "lesion_precision": "lesion precision",
}


def _num(value: float, metric: str) -> str:
    if metric in ("fpr",):
        return f"{value:.2e}"
    if metric in ("fp_vox",):
        return f"{value:.1f}"
    if metric.endswith("_mm"):
        return f"{value:.2f}"
    if metric.startswith("n_"):
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(
    table: Sequence[Mapping[str, Any]],
    paired: Sequence[Mapping[str, Any]],
    models: Mapping[str, Mapping[str, Any]],
    n_cases: int,
    seeds: Sequence[int],
    small_mm: float = 5.0,
    unit: str = "case",
    n_units: int | None = None,
) -> str:
    """The printed table: per class/region, both models' values, the paired difference (B - A) with
    its bootstrap 95% CI and the Wilcoxon p-value over ``n_units`` units (cases or patients); then
    parameters and times per model."""
    n_units = n_cases if n_units is None else n_units
    units = f"{unit}s" if unit != "case" else "cases"
    (a, da), (b, db) = MODELS
    by = {(r["model_name"], r["target"]): r for r in table}
    tests = {(r["target"], r["metric"]): r for r in paired}
    targets = list(dict.fromkeys(r["target"] for r in table))
    tw = max(7, *(len(str(t)) + 1 for t in targets))  # the target column: never run into the metric
    head = f"{'target':<{tw}}{'metric':<26}{da:>12}{db:>14}{'diff (B-A)':>12}  {'95% CI':<21}{'p':>7}  B better/worse"
    lines = [
        f"{n_cases} held-out case(s)"
        + (f" from {n_units} {units}" if unit != "case" else "")
        + f", seed(s) {list(seeds)}; A = {da}, B = {db}; means over cases (lesion rates pooled over cases)",
        head,
        "-" * len(head),
    ]
    for t in targets:
        ra, rb = by[(a, t)], by[(b, t)]
        first = True
        for metric in PRINTED_VOXEL_METRICS:
            if metric not in ra:
                continue
            st = tests.get((t, metric))
            va, vb = ra[metric], rb[metric]
            line = (
                f"{t if first else '':<{tw}}{LABELS[metric]:<26}{_num(va, metric):>12}{_num(vb, metric):>14}"
            )
            if st is not None:
                ci = f"[{_signed(st['ci_low'], metric)}, {_signed(st['ci_high'], metric)}]"
                line += (
                    f"{_signed(st['mean_diff'], metric):>12}  {ci:<21}{st['p_value']:>7.3f}  "
                    f"{st['b_better']}/{st['b_worse']}"
                )
            lines.append(line)
            first = False
        for key, label, metric in (
            ("small", f"small (<{small_mm:g} mm) detected", "n_small_detected"),
            ("lesion_sensitivity", "lesions detected", "n_detected_lesions"),
            ("lesion_precision", "lesion precision", "lesion_precision"),
        ):
            if key == "small":
                va = (
                    f"{ra['small_detected']:.0f}/{ra['small_total']:.0f} ({ra['small_lesion_detection']:.2f})"
                )
                vb = (
                    f"{rb['small_detected']:.0f}/{rb['small_total']:.0f} ({rb['small_lesion_detection']:.2f})"
                )
            elif key == "lesion_sensitivity":
                va = _detected(ra)
                vb = _detected(rb)
            else:
                va, vb = f"{ra[key]:.3f}", f"{rb[key]:.3f}"
            line = f"{'':<{tw}}{label:<26}{va:>12}{vb:>14}"
            st = tests.get((t, metric))
            if st is not None:  # paired over cases on the per-case counts / rates
                ci = f"[{st['ci_low']:+.2f}, {st['ci_high']:+.2f}]"
                line += f"{st['mean_diff']:>+12.2f}  {ci:<21}{st['p_value']:>7.3f}  {st['b_better']}/{st['b_worse']}"
            lines.append(line)
    lines.append("-" * len(head))
    for name, d in MODELS:
        m = models[name]
        its = m["iterations"]
        lines.append(
            f"{d:<14} {m['parameters']:>10,} parameters; training {m['train_s']:.0f} s for "
            f"{its[0] if len(set(its)) == 1 else its} iterations"
            f" ({m['train_s'] / max(1, np.mean(its)):.2f} s/it); inference {m['infer_s_per_case']:.2f} s/case (median)"
        )
    lines += [
        f"diff = B - A: mean over {units} of the paired differences; 95% CI: percentile bootstrap over {units};",
        f"p: two-sided Wilcoxon signed-rank test over {units}. 'detected' rows: counts pooled over cases (rate);",
        f"their diff is in lesions per {unit}. Lesion precision: pooled; its diff is of per-{unit} precisions.",
    ]
    if unit != "case":
        lines.append(
            f"Paired unit: the {unit} (slices of one {unit} are not independent): per-{unit} means of the "
            "rates and distances, sums of the counts."
        )
        if any("volume_dice" in r for r in table):
            lines.append(
                f"Dice (patient volume): per {unit}, 2TP / (2TP + FP + FN) over all its slices, then the mean "
                f"over {units}; the Dice row is the mean over slices, where a tumour-free slice with any false "
                "positive scores 0."
            )
    lines += [
        f"Low power: with {n_units} {units} the exact test cannot go below p = "
        f"{min(1.0, 2.0 / 2.0**n_units):.3g}, and nothing is corrected for the {len(paired)} tests.",
    ]
    return "\n".join(lines)


def _detected(row: Mapping[str, Any]) -> str:
    return f"{row['lesions_detected']:.0f}/{row['lesions_total']:.0f} ({row['lesion_sensitivity']:.2f})"


def _signed(value: float, metric: str) -> str:
    if metric == "fpr":
        return f"{value:+.1e}"
    if metric == "fp_vox":
        return f"{value:+.1f}"
    if metric.endswith("_mm") or metric.startswith("n_"):
        return f"{value:+.2f}"
    return f"{value:+.3f}"


def format_size_bins(
    rows: Sequence[Mapping[str, Any]], unit: str = "case", n_units: int | None = None
) -> str:
    """The size-bin table: per class/region and bin, both models' detected/total (rate and its
    bootstrap 95% CI), the rate difference (B - A) with its paired CI and the Wilcoxon p over units,
    and false-positive components of that size per unit (A, B, p)."""
    (_, da), (_, db) = MODELS
    units = f"{unit}s" if unit != "case" else "cases"
    tw = max(7, *(len(str(r["target"])) + 1 for r in rows))
    head = (
        f"{'target':<{tw}}{'lesion size':<12}{da + ' detected':>26}{db + ' detected':>30}"
        f"{'diff (B-A)':>12}  {'95% CI':<17}{'p':>7}  {'FN cut (B vs A)':<24}{'FP/' + unit + ' A':>9}{'B':>6}{'p':>7}"
    )
    lines = [
        "detection by lesion size (equivalent diameter), pooled over " + units + ":",
        head,
        "-" * len(head),
    ]
    last = None
    for r in rows:
        size = _bin_label(r["bin"])
        first = r["target"] != last
        last = r["target"]
        line = f"{r['target'] if first else '':<{tw}}{size:<12}"
        if r["rate_a"] is None:
            line += f"{'no lesion':>26}{'no lesion':>30}{'':>12}  {'':<17}{'':>7}  {'':<24}"
        else:
            cell_a = f"{r['detected_a']:.1f}/{r['lesions']:.0f} {r['rate_a']:.2f} [{r['ci_a_low']:.2f}, {r['ci_a_high']:.2f}]"
            cell_b = f"{r['detected_b']:.1f}/{r['lesions']:.0f} {r['rate_b']:.2f} [{r['ci_b_low']:.2f}, {r['ci_b_high']:.2f}]"
            ci = f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
            line += f"{cell_a:>26}{cell_b:>30}{r['rate_diff']:>+12.2f}  {ci:<17}{r['p_value']:>7.3f}"
            cut = (
                "A misses none"
                if r["fn_reduction"] is None
                else f"{r['fn_reduction']:+.0%} [{r['fn_reduction_ci_low']:+.0%}, {r['fn_reduction_ci_high']:+.0%}]"
            )
            line += f"  {cut:<24}"
        if r["fp_per_case_a"] is not None:
            line += f"{r['fp_per_case_a']:>9.2f}{r['fp_per_case_b']:>6.2f}{r['fp_p_value']:>7.3f}"
        lines.append(line.rstrip())
    lines += [
        "-" * len(head),
        f"detected: truth lesions of that size touched by the prediction, mean over seeds, summed over {units};",
        f"CI: percentile bootstrap over the {units} holding such lesions (the difference resamples the same "
        f"{units} for both models);",
        f"p: two-sided Wilcoxon signed-rank test on the per-{unit} differences in detected lesions. "
        "FP: false-positive components of that size (their own equivalent diameter) per "
        f"{unit}, with the Wilcoxon p of the paired difference. FN cut: 1 - missed by B / missed by A "
        "(the share of A's false negatives B avoids; negative: B misses more) with its bootstrap CI. "
        "'all <N mm': every lesion under the small-lesion size.",
    ]
    return "\n".join(lines)


def format_seeds(
    per_case: Mapping[str, Mapping[int, Mapping[str, Mapping[str, Mapping[str, float]]]]],
    names: Sequence[str],
    seeds: Sequence[int],
    targets: Sequence[str],
) -> str:
    """Per training seed and class/region: each model's mean Dice over the held-out cases, truth
    lesions detected and small lesions detected (pooled over cases). The paired tests treat cases as
    the unit and average the seeds; this table shows how much the runs themselves differ."""
    (a, da), (b, db) = ((n, dict(MODELS)[n]) for n in names)
    head = f"{'seed':<6}{'target':<8}{'Dice ' + da:>14}{'Dice ' + db:>20}{'lesions ' + da:>18}{'lesions ' + db:>24}{'small ' + da:>16}{'small ' + db:>22}"
    lines = ["per training seed (mean Dice over cases; lesions detected, pooled over cases):", head]
    for seed in seeds:
        for t in targets:
            cells = []
            for m in (a, b):
                rows = [case[t] for case in per_case[m][seed].values()]
                cells.append(float(np.mean([r["dice"] for r in rows])))
            counts = []
            for key, total in (
                ("n_detected_lesions", "n_truth_lesions"),
                ("n_small_detected", "n_small_lesions"),
            ):
                for m in (a, b):
                    rows = [case[t] for case in per_case[m][seed].values()]
                    counts.append(f"{sum(r[key] for r in rows):.0f}/{sum(r[total] for r in rows):.0f}")
            lines.append(
                f"{seed:<6}{t:<8}{cells[0]:>14.3f}{cells[1]:>20.3f}{counts[0]:>18}{counts[1]:>24}{counts[2]:>16}{counts[3]:>22}"
            )
    return "\n".join(lines)


def _bin_label(name: str) -> str:
    """``lt3mm`` -> ``< 3 mm``, ``3to5mm`` -> ``3-5 mm``, ``ge10mm`` -> ``>= 10 mm``,
    ``small_lt5mm`` -> ``all < 5 mm``."""
    if name.startswith("small_"):
        return "all " + _bin_label(name[len("small_") :])
    core = name[:-2]
    if core.startswith("lt"):
        return f"< {core[2:]} mm"
    if core.startswith("ge"):
        return f">= {core[2:]} mm"
    return core.replace("to", "-") + " mm"


def format_case_deltas(
    values: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    names: Sequence[str],
    unit_ids: Sequence[str],
    targets: Sequence[str],
    unit: str = "case",
) -> str:
    """Per held-out case (or patient): Dice of B - Dice of A per class/region (positive: B better)."""
    a, b = names
    width = max([18, *(len(u) + 2 for u in unit_ids)])
    columns = [(t, "dice", f"dDice {t}") for t in targets]
    if all("volume_dice" in values[a][u][t] for u in unit_ids for t in targets):
        columns += [(t, "volume_dice", f"dDice(vol) {t}") for t in targets]
    cw = max(12, *(len(label) + 2 for _, _, label in columns))
    head = f"{unit:<{width}}" + "".join(f"{label:>{cw}}" for _, _, label in columns)
    lines = [f"per-{unit} Dice difference (B - A):", head]
    for u in unit_ids:
        lines.append(
            f"{u:<{width}}"
            + "".join(f"{values[b][u][t][m] - values[a][u][t][m]:>+{cw}.3f}" for t, m, _ in columns)
        )
    return "\n".join(lines)


__all__ = [
    "DEMO_RECIPE",
    "MODELS",
    "PAIRED_METRICS",
    "ComparePlan",
    "CompareResult",
    "CompareSettings",
    "HeldOutScores",
    "PairedTables",
    "budget_overrides",
    "compare",
    "config_differences",
    "format_seeds",
    "format_size_bins",
    "format_table",
    "size_bin_tables",
    "table_row",
]
