"""``attnseg quickstart``: the whole product on the embedded default data, in minutes on a laptop CPU.

1. writes synthetic BraTS-like phantom cases (``attnseg.phantom``): a training set and a held-out
   test set drawn with a different seed;
2. trains an Attention U-Net on the training set (``attnseg.training.run.train``, a small recipe
   tuned for a 2-core CPU: bf16 autocast, whole-volume patches, Dice + CE on the WT/TC/ET regions);
3. predicts the held-out cases with the saved ``model.pt`` (sliding window, as ``attnseg predict``);
4. scores them (Dice and HD95 per region of the model's label scheme, WT/TC/ET,
   ``attnseg.metrics.evaluate_case``), writes figures and ``results.json``, and prints the table.

Everything lands under ``--out`` (default ``quickstart/``)::

    OUT/data/  OUT/test/        phantom cases (BraTS layout)
    OUT/run/                    the training run (config.yaml, checkpoints, metrics, curves, model.pt)
    OUT/predictions/            one label map per test case (NIfTI)
    OUT/figures/                training curve and figures of the first 3 test cases (truth, prediction, gates)
    OUT/results.json            per-case and mean metrics, timings
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

from attnseg.errors import ConfigError

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
    from attnseg.io.nifti import load_label
    from attnseg.metrics import evaluate_case

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


def _figures(out: Path, model_file: Path, test_root: Path, case_ids: Sequence[str], log) -> list[Path]:
    """A figure for each of the first test cases (input channels, truth, gate maps, prediction)
    and the training curve."""
    written = []
    try:
        import torch

        from attnseg.datasets import discover, load_case
        from attnseg.inference.predict import load_for_inference
        from attnseg.io.nifti import load_label
        from attnseg.models import load_model
        from attnseg.training.data import preprocess
        from attnseg.viz import case_figure, forward_with_attention, save_figure
        from attnseg.viz.curves import plot_training_curves
    except ImportError as exc:  # figures are a bonus; the table is the result
        log(f"figures skipped: {exc}")
        return written
    fig_dir = out / "figures"
    try:
        written.append(plot_training_curves(out / "run", fig_dir / "training_curve.png"))
    except Exception as exc:  # noqa: BLE001 -- a figure must never fail the quickstart
        log(f"training-curve figure skipped: {exc}")
    try:
        settings = load_for_inference(model_file, "cpu").settings
        model = load_model(model_file)
        dataset = discover(test_root)
        for case_id in list(case_ids)[:MAX_CASE_FIGURES]:
            image, label, meta = load_case(dataset.case(case_id), dataset)
            image, _, _ = preprocess(image, None, meta.spacing_mm, settings.preprocess)
            pred, _ = load_label(out / "predictions" / f"{case_id}.nii.gz")
            with torch.inference_mode():
                output = forward_with_attention(model, image)
            fig = case_figure(
                image,
                spacing_mm=meta.spacing_mm,
                label=label,
                prediction=pred,
                maps=output.maps,
                channel_names=dataset.channel_names,
                title=f"{case_id} (held out)",
            )
            written.append(save_figure(fig, fig_dir / f"{case_id}.png"))
    except Exception as exc:  # noqa: BLE001
        log(f"case figures skipped: {type(exc).__name__}: {exc}")
    return written


def quickstart(
    out: str | Path = "quickstart",
    settings: QuickstartSettings | None = None,
    *,
    overwrite: bool = False,
    figures: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole quickstart (see the module docstring); returns ``results.json``'s content."""
    import torch

    from attnseg import phantom
    from attnseg.inference.predict import PredictOptions, predict_folder
    from attnseg.io.atomic import atomic_write_text
    from attnseg.training.run import train

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
    started = time.perf_counter()
    cpu_started = time.process_time()

    t = time.perf_counter()
    data = phantom.write_phantom_dataset(
        out / "data", s.n_train, s.seed, shape=s.shape, spacing_mm=s.spacing_mm
    )
    test = phantom.write_phantom_dataset(
        out / "test", s.n_test, s.seed + 1000, shape=s.shape, spacing_mm=s.spacing_mm
    )
    timings["data_s"] = time.perf_counter() - t
    log(
        f"phantom data: {s.n_train} training cases in {data}, {s.n_test} held-out cases in {test} "
        f"({'x'.join(map(str, s.shape))} voxels at {s.spacing_mm:g} mm, {timings['data_s']:.0f} s)"
    )

    t = time.perf_counter()
    overrides = [*QUICK_RECIPE, f"train.seed={s.seed}", f"train.threads={s.threads}", *s.overrides]
    result = train(data, out / "run", overrides=overrides, log=log)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    case_ids = phantom.case_ids(s.n_test)
    model_file = out / "run" / "model.pt"
    report = predict_folder(
        model_file,
        test,
        out / "predictions",
        PredictOptions(autocast=result.summary.get("precision") == "bf16", channels_last=True),
        overwrite=True,
        progress=False,
    )
    if report.failed:
        raise ConfigError(f"prediction failed for {report.failed}")
    per_case = evaluate_predictions(test, out / "predictions", case_ids, report.settings.label_scheme.targets)
    timings["evaluate_s"] = time.perf_counter() - t

    written: list[Path] = []
    if figures:
        t = time.perf_counter()
        written = _figures(out, model_file, test, case_ids, log)
        timings["figures_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    timings["process_cpu_s"] = time.process_time() - cpu_started

    mean = _mean(per_case)
    results = {
        "settings": {
            "n_train": s.n_train,
            "n_test": s.n_test,
            "shape": list(s.shape),
            "spacing_mm": s.spacing_mm,
            "seed": s.seed,
            "threads": s.threads,
            "recipe": overrides,
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
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    log("")
    log(f"held-out phantom cases ({s.n_test}), model {model_file}:")
    log(format_table(per_case))
    log(
        f"whole-tumour Dice {mean['WT']['dice']:.3f}; total {timings['total_s'] / 60:.1f} min "
        f"(data {timings['data_s']:.0f} s, training {timings['train_s']:.0f} s, "
        f"prediction + metrics {timings['evaluate_s']:.0f} s); results in {out / 'results.json'}"
    )
    return results
