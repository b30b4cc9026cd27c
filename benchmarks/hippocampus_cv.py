"""5-fold cross-validation and the fold ensemble on Task04_Hippocampus, against one model trained
5x longer (issue 18 item 1).

The 200 cases split as in ``benchmarks/hippocampus_ablation.py`` (fold 0 of
``make_splits(ids, k=5, seed=0)``): 160 training cases, 40 held out. Two commands train at once,
one thread each, both with the ``--minutes 30`` recipe at a fixed iteration count
(``hippocampus_ablation.recipe_overrides``: width 16, deep supervision, cosine over iterations,
``model.pt`` = the tail-0.5 weight average), so the results do not depend on how busy the machine is:

- ``attnseg train TRAIN --out cv --folds 5 --fold all``: 5 folds of the 160 cases (128 train / 32
  validation each), N iterations per fold; out-of-fold Dice/HD95 and the postprocessing choice
  in ``cv/cv_summary.json``;
- ``attnseg train TRAIN --out single``: one model on all 160 cases, 5N iterations (the same number
  of optimiser steps as the 5 folds together).

Then on the 40 held-out cases: the 5-fold ensemble (``attnseg predict cv``, with the card's
postprocessing and without), fold 0's model alone, the 5N-iteration model; scored with ``attnseg
evaluate --labels anterior=1,posterior=2``; paired Wilcoxon signed-rank test of the per-case mean
Dice, ensemble vs the 5N model. CPU seconds: ``wait4`` of each training command (the CV one
includes its out-of-fold prediction and scoring). Usage::

    PYTHONPATH=src python benchmarks/hippocampus_cv.py --iterations 600 --out work/hippo_cv
    PYTHONPATH=src python benchmarks/hippocampus_cv.py --iterations 20 --test-cases 4 --out work/hippo_cv_check
    PYTHONPATH=src python benchmarks/hippocampus_cv.py --table work/hippo_cv/results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus_ablation import fold_split, make_folders, per_case_mean, recipe_overrides  # noqa: E402
from vs_nnunet import run_measured, score_with_attnseg, thread_env  # noqa: E402

ATTNSEG = [sys.executable, "-m", "attnseg"]
AVERAGES = ("tail0.5",)  # the recipe's model.pt


def train_both(folders: dict, run_dir: Path, iterations: int, seed: int, logs: Path) -> dict:
    """The CV command (N per fold) and the single model (5N), at once, one thread each."""
    env = thread_env(1)
    jobs = {
        "cv": [*ATTNSEG, "train", folders["train"], "--out", run_dir / "cv", "--folds", "5", "--fold", "all"],
        "single": [*ATTNSEG, "train", folders["train"], "--out", run_dir / "single"],
    }
    for name, its in (("cv", iterations), ("single", 5 * iterations)):
        for item in recipe_overrides(its, seed, 1, AVERAGES):
            jobs[name] += ["--set", item]
    results: dict = {}

    def work(name: str) -> None:
        results[name] = run_measured(f"train_{name}", jobs[name], env, logs)

    threads = [threading.Thread(target=work, args=(n,)) for n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--iterations", type=int, default=600, help="N: iterations per fold (the single model: 5N)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--test-cases", type=int, default=0, help="score only the first N held-out cases (checks)"
    )
    ap.add_argument("--out", type=Path, default=Path("work/hippo_cv"))
    ap.add_argument("--table", type=Path, help="print the tables of this results.json and stop")
    args = ap.parse_args()
    if args.table:
        print_table(json.loads(args.table.read_text()))
        return
    started = time.time()
    run_dir, logs = args.out, args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    split = fold_split(0)
    if args.test_cases:
        split["test"] = split["test"][: args.test_cases]
    folders = make_folders(run_dir, split)
    results: dict = {"iterations_per_fold": args.iterations, "seed": args.seed, "split": split}
    if not (run_dir / "cv" / "cv_summary.json").is_file() or not (run_dir / "single" / "model.pt").is_file():
        results["train"] = train_both(folders, run_dir, args.iterations, args.seed, logs)
    contenders = {
        "ensemble5/card-pp": [run_dir / "cv"],
        "ensemble5/no-pp": [run_dir / "cv", "--no-postprocessing"],
        "fold0/no-pp": [run_dir / "cv" / "fold_0" / "model.pt", "--no-postprocessing"],
        "single5N": [run_dir / "single" / "model.pt"],
    }
    results["contenders"] = {}
    for name, model in contenders.items():
        key = name.replace("/", "_")
        pred = run_dir / "pred" / key
        cmd = [
            *ATTNSEG,
            "predict",
            model[0],
            folders["test_images"],
            pred,
            "--threads",
            "1",
            "--quiet",
            "--overwrite",
            *model[1:],
        ]
        step = run_measured(f"predict_{key}", cmd, thread_env(1), logs)
        scores = score_with_attnseg(pred, folders["test_labels"], run_dir / "eval" / key, logs, 1, key)
        scores["predict"] = step
        results["contenders"][name] = scores
    cv = json.loads((run_dir / "cv" / "cv_summary.json").read_text())
    results["cv_summary"] = {k: cv[k] for k in ("folds", "postprocessing")}
    results["oof"] = {
        n: {m: t[m]["mean"] for m in ("dice", "hd95_mm")} for n, t in cv["oof"]["targets"].items()
    }
    results["oof_postprocessed"] = {
        n: {m: t[m]["mean"] for m in ("dice", "hd95_mm")}
        for n, t in cv["oof_postprocessed"]["targets"].items()
    }
    base = per_case_mean(results["contenders"]["single5N"])
    for scores in results["contenders"].values():
        ours = per_case_mean(scores)
        diff = np.array([ours[c] - base[c] for c in sorted(base)])
        scores["vs_single5N"] = {
            "mean_diff": float(diff.mean()),
            "better": int((diff > 0).sum()),
            "n": len(diff),
            "p_wilcoxon": float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0,
        }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print_table(results)
    print(f"wrote {run_dir / 'results.json'} in {(time.time() - started) / 60:.1f} min", flush=True)


def _lower(means: dict) -> dict:
    """dataset.json names the classes Anterior/Posterior; evaluate --labels anterior/posterior."""
    return {k.lower(): v for k, v in means.items()}


def print_table(results: dict) -> None:
    n = results["iterations_per_fold"]
    print(f"\ncross-validation estimates (160 training cases, {n} iterations per fold)")
    print(f"{'estimate':34s} {'Dice ant':>9s} {'Dice post':>9s} {'Dice mean':>9s} {'HD95 mean':>9s}")
    for f in results["cv_summary"]["folds"]:
        m = _lower(f["mean"])
        print(
            f"{'fold ' + str(f['fold']) + ' validation (' + str(f['n_val']) + ' cases)':34s} "
            f"{m['anterior']['dice']:9.4f} {m['posterior']['dice']:9.4f} "
            f"{(m['anterior']['dice'] + m['posterior']['dice']) / 2:9.4f} "
            f"{(m['anterior']['hd95_mm'] + m['posterior']['hd95_mm']) / 2:9.2f}"
        )
    for label, key in (
        ("out-of-fold (160 cases)", "oof"),
        ("out-of-fold + postprocessing", "oof_postprocessed"),
    ):
        m = _lower(results[key])
        print(
            f"{label:34s} {m['anterior']['dice']:9.4f} {m['posterior']['dice']:9.4f} "
            f"{(m['anterior']['dice'] + m['posterior']['dice']) / 2:9.4f} "
            f"{(m['anterior']['hd95_mm'] + m['posterior']['hd95_mm']) / 2:9.2f}"
        )
    print(f"postprocessing chosen: {results['cv_summary']['postprocessing']['rules']}")
    train = results.get("train", {})
    if train:
        print(
            f"\ntraining CPU seconds: 5 folds x {n} it (with OOF prediction) {train['cv']['cpu_seconds']:.0f} "
            f"({train['cv']['seconds']:.0f} s wall); one model x {5 * n} it {train['single']['cpu_seconds']:.0f} "
            f"({train['single']['seconds']:.0f} s wall)"
        )
    n_test = len(results["split"]["test"])
    print(f"\nheld-out test cases ({n_test})")
    print(
        f"{'model':22s} {'Dice ant':>9s} {'Dice post':>9s} {'Dice mean':>9s} {'HD95 mean':>9s} "
        f"{'diff':>8s} {'better':>7s} {'p':>8s} {'pred CPU s':>10s}"
    )
    for name, s in results["contenders"].items():
        m, v = s["mean"], s["vs_single5N"]
        print(
            f"{name:22s} {m['dice_anterior']:9.4f} {m['dice_posterior']:9.4f} {m['dice_mean']:9.4f} "
            f"{m['hd95_mean']:9.2f} {v['mean_diff']:+8.4f} {v['better']:3d}/{v['n']:<3d} {v['p_wilcoxon']:8.2g} "
            f"{s['predict']['cpu_seconds']:10.1f}"
        )
    print("diff/better/p: per-case mean Dice vs single5N (paired Wilcoxon signed-rank)")
    ens, one = (per_case_mean(results["contenders"][k]) for k in ("ensemble5/no-pp", "fold0/no-pp"))
    diff = np.array([ens[c] - one[c] for c in sorted(one)])
    p = wilcoxon(diff).pvalue if np.any(diff != 0) else 1.0
    print(
        f"ensemble5/no-pp vs fold0/no-pp (what averaging the folds adds): {diff.mean():+.4f}, "
        f"better on {int((diff > 0).sum())}/{len(diff)} cases, p = {p:.2g}"
    )


if __name__ == "__main__":
    main()
