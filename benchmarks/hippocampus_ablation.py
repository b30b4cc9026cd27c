"""Ablations of the ``attnseg train --minutes 30`` recipe on Task04_Hippocampus, fold by fold.

One training run per (fold, seed) gives several contenders on the same trajectory, scored on the
fold's 40 held-out cases (fold K of ``attnseg.datasets.splits.make_splits(ids, k=5, seed=0)``, the
split of ``benchmarks/train_hippocampus.py`` and ``benchmarks/vs_nnunet.py`` for K = 0):

- the recipe of ``--minutes 30`` (``attnseg.training.budget.budget_defaults``, width 16, the patch
  and batch the plan derives) at a **fixed iteration count** (default 7000, what 30 minutes give on
  an idle 2-core machine here: 7032 and 6401 in the two ``vs_nnunet.py`` runs) with the cosine
  schedule over iterations instead of time, so the result does not depend on how busy the machine
  is (several folds can train at once, one thread each);
- weight averages kept during that run (``train.weight_averages``: EMA and tail/SWA), each scored
  as its own model file;
- for every model file, inference variants: plain (what ``attnseg predict`` does by default),
  mirroring TTA on the trained axis (``--tta``), keeping the largest component per class
  (``--keep-largest``), and both.

Scoring: ``attnseg evaluate --labels anterior=1,posterior=2`` (Dice, HD95 in mm), means over the 40
cases; paired Wilcoxon signed-rank test of each contender's per-case mean Dice against the plain
``model.pt``. Usage (about 50 min per run at one thread on an idle machine)::

    nohup python benchmarks/hippocampus_ablation.py --fold 0 --seed 0 --threads 1 > work/abl_f0.log 2>&1 &
    python benchmarks/hippocampus_ablation.py --fold 0 --iterations 40 --test-cases 4   # pipeline check
    python benchmarks/hippocampus_ablation.py --table work/hippo_ablation/*/results.json  # pooled table

Results: ``work/hippo_ablation/fold<K>_seed<S>/results.json`` (per-case values of every contender).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attnseg.datasets import discover  # noqa: E402
from attnseg.datasets.splits import make_splits  # noqa: E402
from attnseg.training.budget import WARMUP_SHARE, budget_defaults  # noqa: E402
from vs_nnunet import run_measured, score_with_attnseg, thread_env  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "Task04_Hippocampus"
WIDTH = 16  # what --minutes 30 measured and chose in both vs_nnunet.py runs
AVERAGES = ("ema0.999", "ema0.9995", "tail0.25", "tail0.5")
INFERENCE = {
    "plain": [],
    "tta": ["--tta"],
    "largest": ["--keep-largest"],
    "tta+largest": ["--tta", "--keep-largest"],
}


def link(target: Path, name: Path) -> None:
    name.parent.mkdir(parents=True, exist_ok=True)
    if not name.exists():
        name.symlink_to(target.resolve())


def fold_split(fold: int) -> dict[str, list[str]]:
    dataset = discover(DATA, "msd")
    ids = [c.case_id for c in dataset.cases if c.label is not None]
    split = make_splits(ids, k=5, seed=0)[fold]
    return {"train": split["train"], "test": split["val"]}


def make_folders(run_dir: Path, split: dict[str, list[str]]) -> dict[str, Path]:
    """An MSD folder of the training cases and flat folders of test images and labels (symlinks)."""
    source = json.loads((DATA / "dataset.json").read_text())
    train = run_dir / "data" / "train_msd"
    for case in split["train"]:
        for sub in ("imagesTr", "labelsTr"):
            link(DATA / sub / f"{case}.nii.gz", train / sub / f"{case}.nii.gz")
    items = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in split["train"]]
    meta = {**source, "numTraining": len(items), "numTest": 0, "training": items, "test": []}
    (train / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    images, labels = run_dir / "data" / "test_images", run_dir / "data" / "test_labels"
    for case in split["test"]:
        link(DATA / "imagesTr" / f"{case}.nii.gz", images / f"{case}.nii.gz")
        link(DATA / "labelsTr" / f"{case}.nii.gz", labels / f"{case}.nii.gz")
    return {"train": train, "test_images": images, "test_labels": labels}


def recipe_overrides(iterations: int, seed: int, threads: int, averages: tuple[str, ...]) -> list[str]:
    """``--set`` items: the ``--minutes`` defaults, scheduled over a fixed number of iterations."""
    items = []
    for section, values in budget_defaults(30).items():
        for key, value in values.items():
            if (section, key) in (("train", "schedule_by_time"), ("train", "budget_minutes")):
                continue
            items.append(f"{section}.{key}={value}")
    epochs = max(1, iterations // 250)
    items += [
        f"model.features=[{WIDTH},{2 * WIDTH},{4 * WIDTH},{8 * WIDTH}]",
        f"train.epochs={epochs}",
        f"train.iters_per_epoch={iterations // epochs}",
        f"optim.warmup_iters={max(1, round(WARMUP_SHARE * iterations))}",
        f"train.seed={seed}",
        f"train.threads={threads}",
        "train.device=cpu",
        "train.progress=false",
        f"train.weight_averages=[{','.join(averages)}]",
    ]
    return items


def per_case_mean(scores: dict) -> dict[str, float]:
    return {case: v["dice_mean"] for case, v in scores["per_case"].items()}


def run(args) -> Path:
    run_dir = args.out or Path("work/hippo_ablation") / f"fold{args.fold}_seed{args.seed}"
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    split = fold_split(args.fold)
    if args.test_cases:
        split["test"] = split["test"][: args.test_cases]
    folders = make_folders(run_dir, split)
    env = thread_env(args.threads)
    model_dir = run_dir / "run"
    results: dict = {"fold": args.fold, "seed": args.seed, "iterations": args.iterations, "split": split}
    if args.models:  # score given model files (e.g. of `attnseg train --minutes` runs) on this fold
        models = {f"m{i}": Path(m) for i, m in enumerate(args.models)}
        results["models"] = {k: str(v) for k, v in models.items()}
    elif not (model_dir / "model.pt").is_file():
        cmd = ["attnseg", "train", folders["train"], "--out", model_dir]
        for item in recipe_overrides(args.iterations, args.seed, args.threads, AVERAGES):
            cmd += ["--set", item]
        results["train"] = run_measured("train", cmd, env, logs)
    if not args.models:
        models = {"last": model_dir / "model.pt"}
        models.update({spec: model_dir / "averages" / f"model_{spec}.pt" for spec in AVERAGES})
    results["contenders"] = {}
    for model_name, model_file in models.items():
        if not model_file.is_file():
            print(f"missing {model_file}; skipped", flush=True)
            continue
        for inf_name, flags in INFERENCE.items():
            name = f"{model_name}/{inf_name}"
            pred = run_dir / "pred" / model_name / inf_name
            cmd = [
                "attnseg",
                "predict",
                model_file,
                folders["test_images"],
                pred,
                "--threads",
                str(args.threads),
            ]
            run_measured(
                f"predict_{model_name}_{inf_name}", [*cmd, "--quiet", "--overwrite", *flags], env, logs
            )
            key = name.replace("/", "_")
            scores = score_with_attnseg(
                pred, folders["test_labels"], run_dir / "eval" / key, logs, args.threads, key
            )
            results["contenders"][name] = scores
            m = scores["mean"]
            print(
                f"{name:28s} ant {m['dice_anterior']:.4f} post {m['dice_posterior']:.4f} mean {m['dice_mean']:.4f}",
                flush=True,
            )
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    return run_dir / "results.json"


def table(files: list[Path]) -> None:
    """Means over every case of every given run, and the paired test against ``last/plain``."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    names = list(runs[0]["contenders"])
    print(
        f"{len(runs)} run(s): "
        + ", ".join(f"fold {r['fold']} seed {r['seed']} ({r['iterations']} it)" for r in runs)
    )
    print(
        f"{'contender':26s} {'Dice ant':>9s} {'Dice post':>9s} {'Dice mean':>9s} {'HD95 mean':>9s} {'diff':>8s} {'better':>7s} {'p':>8s}"
    )
    base_name = "last/plain" if "last/plain" in names else names[0]
    base = np.concatenate([list(per_case_mean(r["contenders"][base_name]).values()) for r in runs])
    for name in names:
        if not all(name in r["contenders"] for r in runs):
            continue
        per = [r["contenders"][name] for r in runs]
        values = {
            k: np.mean([np.mean([c[k] for c in p["per_case"].values()]) for p in per])
            for k in ("dice_anterior", "dice_posterior", "dice_mean", "hd95_mean")
        }
        case_means = np.concatenate([list(per_case_mean(p).values()) for p in per])
        diff = case_means - base
        p_value = wilcoxon(diff).pvalue if np.any(diff != 0) else 1.0
        print(
            f"{name:26s} {values['dice_anterior']:9.4f} {values['dice_posterior']:9.4f} {values['dice_mean']:9.4f} "
            f"{values['hd95_mean']:9.2f} {diff.mean():+8.4f} {int((diff > 0).sum()):3d}/{len(diff):<3d} {p_value:8.2g}"
        )
    print(
        f"means over runs of the per-run means; diff/better/p: per-case mean Dice vs {base_name}, pooled over runs"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=7000)
    ap.add_argument("--test-cases", type=int, default=0, help="score only the first N test cases (checks)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--models", type=Path, nargs="+", help="score these model files instead of training")
    ap.add_argument("--table", type=Path, nargs="+", help="print the pooled table of these results.json")
    args = ap.parse_args()
    if args.table:
        table(args.table)
        return
    started = time.time()
    out = run(args)
    print(f"wrote {out} in {(time.time() - started) / 60:.1f} min", flush=True)
    table([out])


if __name__ == "__main__":
    main()
