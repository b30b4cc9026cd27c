"""``attnseg quickstart``: the whole product on the embedded default data, in minutes on a laptop CPU.

1. writes synthetic BraTS-like phantom cases (``attnseg.phantom``): a training set and a held-out
   test set drawn with a different seed;
2. trains an Attention U-Net on the training set (``attnseg.training.run.train``, a small recipe
   tuned for a 2-core CPU: bf16 autocast, whole-volume patches, Dice + CE on the WT/TC/ET regions);
3. predicts the held-out cases with the saved ``model.pt`` (sliding window, as ``attnseg predict``);
4. scores them (Dice and HD95 per region of the model's label scheme, WT/TC/ET,
   ``attnseg.metrics.evaluate_case``), draws the first cases
   (``attnseg.viz.visualize``, as ``attnseg visualize``), writes ``results.json`` and prints the table.

Orchestration only: :func:`quickstart` calls these steps in turn, passing :class:`QuickstartData`
and the training result; the maths and the figures are the library's.

Everything lands under ``--out`` (default ``quickstart/``)::

    OUT/data/  OUT/test/        phantom cases (BraTS layout)
    OUT/run/                    the training run (config.yaml, checkpoints, metrics, training_curve.png,
                                model.pt)
    OUT/predictions/            one label map per test case (NIfTI)
    OUT/figures/                figures of the first 3 test cases (input, truth, gates, prediction)
    OUT/results.json            per-case and mean metrics, timings, the figures (with the run's curve)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnseg import phantom
from attnseg.errors import ConfigError
from attnseg.inference.predict import PredictOptions, predict_folder
from attnseg.io.atomic import atomic_write_text
from attnseg.io.nifti import load_label
from attnseg.metrics import evaluate_case
from attnseg.training.loop import TrainResult
from attnseg.training.report import CURVE_NAME
from attnseg.training.run import train
from attnseg.viz.visualize import load_model_bundle, visualize_case

#: The training recipe (``--set`` keys); measured on a 2-core CPU, see the README.
QUICK_RECIPE: tuple[str, ...] = (
    "model.features=[16,32,64,128]",
    "data.split=none",
    "data.batch_size=2",
    "train.epochs=20",
    "train.iters_per_epoch=25",
    "train.time_limit_s=450",
    "train.schedule_by_time=true",
    "train.channels_last=true",
    "train.val_every=0",
    "train.precision=auto",
    "optim.lr=0.003",
    "optim.warmup_iters=10",
    "loss.name=dice_ce",
    # the held-out phantoms come from the same generator: mirror + intensity augmentation suffice,
    # and rotation/zoom/elastic grids would cost iterations the time budget does not have
    "augment.p_elastic=0.0",
    "augment.p_rotate=0.0",
    "augment.p_zoom=0.0",
)


@dataclass
class QuickstartSettings:
    n_train: int = 20
    n_test: int = 6
    shape: tuple[int, int, int] = (40, 40, 32)
    spacing_mm: float = 4.0
    seed: int = 0
    threads: int = 2
    overrides: Sequence[str] = field(default_factory=tuple)


MAX_CASE_FIGURES = 3
METRICS = ("dice", "hd95_mm")


def _clear_previous(out: Path, overwrite: bool) -> None:
    run = out / "run"
    if (run / "checkpoints" / "last.pt").exists() or (out / "results.json").exists():
        if not overwrite:
            raise ConfigError(f"{out}: holds a previous quickstart; pass --overwrite or another --out")
        for name in ("run", "predictions", "figures"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        (out / "results.json").unlink(missing_ok=True)


def evaluate_predictions(
    test_root: Path, pred_dir: Path, case_ids: Sequence[str], regions: Mapping[str, Sequence[int]]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{case: {region: {"dice", "hd95_mm"}}}`` for ``regions`` (name -> label values; the
    model's label scheme's, BraTS WT/TC/ET), HD95 in mm."""
    out = {}
    for case_id in case_ids:
        truth, meta = load_label(test_root / case_id / f"{case_id}_seg.nii.gz")
        pred, _ = load_label(pred_dir / f"{case_id}.nii.gz")
        rows = evaluate_case(pred, truth, meta.spacing_mm, regions=regions, lesions=False)
        out[case_id] = {r: {m: float(rows[r][m]) for m in METRICS} for r in regions}
    return out


def _mean(per_case: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Region -> metric -> mean over the cases."""
    regions = list(next(iter(per_case.values())))
    return {r: {m: float(np.mean([c[r][m] for c in per_case.values()])) for m in METRICS} for r in regions}


def format_table(per_case: dict[str, dict[str, dict[str, float]]]) -> str:
    mean = _mean(per_case)
    regions = list(mean)
    head = (
        f"{'case':<14}"
        + "".join(f"{r + ' Dice':>10}" for r in regions)
        + "".join(f"{r + ' HD95':>10}" for r in regions)
    )
    lines = [head, "-" * len(head)]
    for case_id, rows in per_case.items():
        lines.append(
            f"{case_id:<14}"
            + "".join(f"{rows[r]['dice']:>10.3f}" for r in regions)
            + "".join(f"{rows[r]['hd95_mm']:>10.1f}" for r in regions)
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'mean':<14}"
        + "".join(f"{mean[r]['dice']:>10.3f}" for r in regions)
        + "".join(f"{mean[r]['hd95_mm']:>10.1f}" for r in regions)
    )
    lines.append("(Dice: 1 is perfect; HD95 in mm, 95th percentile of surface distances)")
    return "\n".join(lines)


@dataclass
class QuickstartData:
    """The phantom sets (:func:`write_data`): training and held-out folders, held-out case ids."""

    train: Path
    test: Path
    case_ids: list[str]


def quickstart(
    out: str | Path = "quickstart",
    settings: QuickstartSettings | None = None,
    *,
    overwrite: bool = False,
    figures: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole quickstart (see the module docstring); returns ``results.json``'s content."""
    s = settings or QuickstartSettings()
    out = Path(out)
    if s.n_train < 2 or s.n_test < 1:
        raise ConfigError(
            f"quickstart needs at least 2 training and 1 test case, got {s.n_train} and {s.n_test}"
        )
    _clear_previous(out, overwrite)
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    timings: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    data = write_data(out, s, timings, log)
    result = train_model(out, s, data, timings, log)
    per_case = predict_and_score(out, data, result, timings)
    written: list[Path] = []
    if figures:
        t = time.perf_counter()
        written = draw_figures(out, data, log)
        timings["figures_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    timings["process_cpu_s"] = time.process_time() - cpu_started
    results = _results(s, result, per_case, timings, written)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    _print_results(out, s, results, log)
    return results


def write_data(out: Path, s: QuickstartSettings, timings: dict[str, float], log) -> QuickstartData:
    """``OUT/data`` (training) and ``OUT/test`` (held out, another seed) phantom sets."""
    t = time.perf_counter()
    train_root = phantom.write_phantom_dataset(
        out / "data", s.n_train, s.seed, shape=s.shape, spacing_mm=s.spacing_mm
    )
    test_root = phantom.write_phantom_dataset(
        out / "test", s.n_test, s.seed + 1000, shape=s.shape, spacing_mm=s.spacing_mm
    )
    timings["data_s"] = time.perf_counter() - t
    log(
        f"phantom data: {s.n_train} training cases in {train_root}, {s.n_test} held-out cases in {test_root} "
        f"({'x'.join(map(str, s.shape))} voxels at {s.spacing_mm:g} mm, {timings['data_s']:.0f} s)"
    )
    return QuickstartData(train_root, test_root, phantom.case_ids(s.n_test))


def recipe(s: QuickstartSettings) -> list[str]:
    """The training overrides: the recipe, the seed and threads, then the user's ``--set``."""
    return [*QUICK_RECIPE, f"train.seed={s.seed}", f"train.threads={s.threads}", *s.overrides]


def train_model(
    out: Path, s: QuickstartSettings, data: QuickstartData, timings: dict[str, float], log
) -> TrainResult:
    """``OUT/run``: an Attention U-Net trained on the training set with :func:`recipe`."""
    t = time.perf_counter()
    result = train(data.train, out / "run", overrides=recipe(s), log=log)
    timings["train_s"] = time.perf_counter() - t
    return result


def predict_and_score(
    out: Path, data: QuickstartData, result: TrainResult, timings: dict[str, float]
) -> dict[str, dict[str, dict[str, float]]]:
    """``OUT/predictions``: the held-out cases predicted with ``OUT/run/model.pt``; their metrics."""
    t = time.perf_counter()
    report = predict_folder(
        out / "run" / "model.pt",
        data.test,
        out / "predictions",
        PredictOptions(autocast=result.summary.get("precision") == "bf16", channels_last=True),
        overwrite=True,
        progress=False,
    )
    if report.failed:
        raise ConfigError(f"prediction failed for {report.failed}")
    per_case = evaluate_predictions(
        data.test, out / "predictions", data.case_ids, report.settings.label_scheme.targets
    )
    timings["evaluate_s"] = time.perf_counter() - t
    return per_case


def draw_figures(out: Path, data: QuickstartData, log) -> list[Path]:
    """The run's training curve (drawn by training) and ``OUT/figures/<case>.png`` for the first
    held-out cases: input channels, truth, every gate's map, prediction (``attnseg visualize``)."""
    written = [out / "run" / CURVE_NAME] if (out / "run" / CURVE_NAME).is_file() else []
    try:  # figures are a bonus; the table is the result
        bundle = load_model_bundle(out / "run" / "model.pt")
        for case_id in data.case_ids[:MAX_CASE_FIGURES]:
            figure = visualize_case(bundle, data.test, out / "figures" / f"{case_id}.png", case_id=case_id)
            written.append(figure.path)
    except Exception as exc:  # noqa: BLE001 -- a figure must never fail the quickstart
        log(f"case figures skipped: {type(exc).__name__}: {exc}")
    return written


def _results(
    s: QuickstartSettings,
    result: TrainResult,
    per_case: dict[str, dict[str, dict[str, float]]],
    timings: dict[str, float],
    written: Sequence[Path],
) -> dict[str, Any]:
    mean = _mean(per_case)
    return {
        "settings": {
            "n_train": s.n_train,
            "n_test": s.n_test,
            "shape": list(s.shape),
            "spacing_mm": s.spacing_mm,
            "seed": s.seed,
            "threads": s.threads,
            "recipe": recipe(s),
        },
        "training": {
            "iterations": result.iterations,
            "first_loss": result.summary.get("first_loss"),
            "last_loss": result.summary.get("last_loss"),
            "precision": result.summary.get("precision"),
        },
        "per_case": per_case,
        "mean": mean,
        "timings": timings,
        "figures": [str(p) for p in written if p],
    }


def _print_results(out: Path, s: QuickstartSettings, results: dict[str, Any], log) -> None:
    timings, mean = results["timings"], results["mean"]
    log("")
    log(f"held-out phantom cases ({s.n_test}), model {out / 'run' / 'model.pt'}:")
    log(format_table(results["per_case"]))
    log(
        f"whole-tumour Dice {mean['WT']['dice']:.3f}; total {timings['total_s'] / 60:.1f} min "
        f"(data {timings['data_s']:.0f} s, training {timings['train_s']:.0f} s, "
        f"prediction + metrics {timings['evaluate_s']:.0f} s); results in {out / 'results.json'}"
    )
