"""Fine-tuning from a model file vs training from scratch, on 20 Task04_Hippocampus cases (issue 18).

Set-up (every number below is a default; the run's ``results.json`` records what was used):

- **Split**: fold 0 of ``attnseg.datasets.splits.make_splits(ids, k=5, seed=0)``, the split of
  ``benchmarks/train_hippocampus.py``, ``vs_nnunet.py`` and ``hippocampus_ablation.py``: 160
  training cases, 40 held-out test cases. From the 160, ``--cases`` (20) are drawn with
  ``random.Random(--seed).sample`` as the **small dataset**; the other 140 are the **source** data.
  The source model sees neither the 20 nor the 40; the 40 are never trained on by anyone.
- **Recipe**: the one of ``hippocampus_ablation.py`` (``attnseg train --minutes 30``'s defaults:
  Attention U-Net width 16, deep supervision, Dice + CE, AdamW 2e-3, 3% warm-up then cosine to 0,
  light augmentation, no validation, ``model.pt`` = the average of the last half of the weights)
  at a **fixed iteration count**, so results do not depend on
  how busy the machine is; one thread per training run.
- **Source model**: that recipe, ``--source-iterations`` (1200), on the 140 source cases.
- **For each budget** in ``--budgets`` (300 1000 iterations): *scratch* = the recipe on the 20
  cases from a random initialisation; *fine-tuned* = the same command plus ``--init
  SOURCE/model.pt`` (every tensor loaded: same classes, same channel). Same iterations, same
  seed, same learning-rate schedule: only the starting weights differ. No freezing.
- **Scoring**: ``attnseg predict`` with its defaults (sliding windows, no TTA), then ``attnseg
  evaluate --labels anterior=1,posterior=2`` on the 40 test cases: Dice and HD95 (mm) per class,
  means over cases; the paired Wilcoxon test of per-case mean Dice, fine-tuned - scratch. The
  source model itself is scored too (trained on 140 other cases: what fine-tuning starts from).

Up to ``--jobs`` (2) training runs at once (source and scratch runs first, the fine-tuned runs as
soon as the source model exists). Run it from a checkout with ``PYTHONPATH=$PWD/src`` (the steps
are ``attnseg`` subprocesses)::

    PYTHONPATH=$PWD/src nohup python benchmarks/hippocampus_finetune.py > work/hippo_finetune.log 2>&1 &
    PYTHONPATH=$PWD/src python benchmarks/hippocampus_finetune.py --source-iterations 20 --budgets 10 --test-cases 3   # check
    python benchmarks/hippocampus_finetune.py --table work/hippo_finetune/results.json

Results: ``OUT/results.json`` (``--out``, default ``work/hippo_finetune``), one folder per run,
``logs/`` with every step's output. The defaults train 3500 iterations in all (1845 CPU seconds of
training in the run of docs/benchmarks-hippocampus.md, 51.5 min of wall clock on a shared machine);
a run whose ``model.pt`` exists is not trained again, so a stopped run continues.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scipy.stats import wilcoxon  # noqa: E402

from attnseg.training.budget import TAIL_AVERAGE  # noqa: E402
from hippocampus_ablation import fold_split, make_folders, per_case_mean, recipe_overrides  # noqa: E402
from vs_nnunet import log, run_measured, score_with_attnseg, thread_env  # noqa: E402


def small_and_source(train: list[str], n_cases: int, seed: int) -> tuple[list[str], list[str]]:
    """``n_cases`` of the training cases drawn with ``random.Random(seed)`` and the rest, both sorted."""
    small = sorted(random.Random(seed).sample(sorted(train), n_cases))
    return small, sorted(set(train) - set(small))


def train_cmd(data: Path, out: Path, iterations: int, args, init: Path | None = None) -> list:
    cmd = ["attnseg", "train", data, "--out", out]
    for item in recipe_overrides(iterations, args.seed, 1, (TAIL_AVERAGE,)):
        cmd += ["--set", item]
    return [*cmd, "--init", init] if init else cmd


def train_and_score(name: str, cmd: list, model_dir: Path, test: dict, out: Path) -> dict:
    """Train (unless ``model_dir/model.pt`` exists), predict the test images, evaluate."""
    logs, env = out / "logs", thread_env(1)
    result: dict = {}
    if not (model_dir / "model.pt").is_file():
        result["train"] = run_measured(f"train_{name}", cmd, env, logs)
    pred = out / "pred" / name
    predict = ["attnseg", "predict", model_dir / "model.pt", test["test_images"], pred, "--threads", "1"]
    result["predict"] = run_measured(f"predict_{name}", [*predict, "--quiet", "--overwrite"], env, logs)
    result["scores"] = score_with_attnseg(pred, test["test_labels"], out / "eval" / name, logs, 1, name)
    m = result["scores"]["mean"]
    log(f"{name}: Dice ant {m['dice_anterior']:.4f} post {m['dice_posterior']:.4f} mean {m['dice_mean']:.4f}")
    return result


def run(args) -> Path:
    out = args.out
    split = fold_split(0)
    small, source = small_and_source(split["train"], args.cases, args.seed)
    test = split["test"][: args.test_cases] if args.test_cases else split["test"]
    assert not set(small) & set(source) and not set(test) & (set(small) | set(source))
    data_small = make_folders(out / "small", {"train": small, "test": test})
    data_source = make_folders(out / "source", {"train": source, "test": []})
    results: dict = {
        "split": {"small": small, "source": source, "test": test},
        "source_iterations": args.source_iterations,
        "budgets": args.budgets,
        "seed": args.seed,
        "runs": {},
    }
    source_model = out / "runs" / "source"
    jobs = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        cmd = train_cmd(data_source["train"], source_model, args.source_iterations, args)
        jobs["source"] = pool.submit(train_and_score, "source", cmd, source_model, data_small, out)
        for budget in args.budgets:
            name, model_dir = f"scratch_{budget}", out / "runs" / f"scratch_{budget}"
            cmd = train_cmd(data_small["train"], model_dir, budget, args)
            jobs[name] = pool.submit(train_and_score, name, cmd, model_dir, data_small, out)
        jobs["source"].result()  # the fine-tuned runs need its model file
        for budget in args.budgets:
            name, model_dir = f"finetuned_{budget}", out / "runs" / f"finetuned_{budget}"
            cmd = train_cmd(data_small["train"], model_dir, budget, args, init=source_model / "model.pt")
            jobs[name] = pool.submit(train_and_score, name, cmd, model_dir, data_small, out)
        results["runs"] = {name: job.result() for name, job in jobs.items()}
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return path


def table(path: Path) -> None:
    """The printed table: one row per model, then fine-tuned - scratch per budget (paired)."""
    r = json.loads(path.read_text())
    n_small, n_source, n_test = (len(r["split"][k]) for k in ("small", "source", "test"))
    print(
        f"Task04_Hippocampus: {n_small} training cases, {n_test} test cases; source model trained on "
        f"{n_source} other cases for {r['source_iterations']} iterations; 1 thread per run"
    )
    head = f"{'model':16s} {'iters':>6s} {'train CPU s':>11s} {'Dice ant':>9s} {'Dice post':>9s} {'Dice mean':>9s} {'HD95 mean':>9s}"
    print(head)
    print("-" * len(head))
    rows = [("source", r["source_iterations"])]
    for budget in r["budgets"]:
        rows += [(f"scratch_{budget}", budget), (f"finetuned_{budget}", budget)]
    for name, iters in rows:
        run_ = r["runs"][name]
        m = run_["scores"]["mean"]
        cpu = run_.get("train", {}).get("cpu_seconds", float("nan"))
        print(
            f"{name:16s} {iters:6d} {cpu:11.0f} {m['dice_anterior']:9.4f} {m['dice_posterior']:9.4f} "
            f"{m['dice_mean']:9.4f} {m['hd95_mean']:9.2f}"
        )
    for budget in r["budgets"]:
        ft = per_case_mean(r["runs"][f"finetuned_{budget}"]["scores"])
        sc = per_case_mean(r["runs"][f"scratch_{budget}"]["scores"])
        diff = [ft[c] - sc[c] for c in sorted(ft)]
        p = wilcoxon(diff).pvalue if any(diff) else 1.0
        print(
            f"{budget} iterations: fine-tuned - scratch mean Dice {sum(diff) / len(diff):+.4f}, "
            f"better on {sum(d > 0 for d in diff)}/{len(diff)} cases, Wilcoxon p = {p:.2g}"
        )
    print("train CPU s excludes the source model's for the fine-tuned rows; HD95 in mm, mean of both classes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20, help="size of the small training set")
    ap.add_argument("--source-iterations", type=int, default=1200)
    ap.add_argument("--budgets", type=int, nargs="+", default=[300, 1000], help="iterations per run")
    ap.add_argument("--seed", type=int, default=0, help="draws the small set; seeds every run")
    ap.add_argument("--jobs", type=int, default=2, help="training runs at once (one thread each)")
    ap.add_argument("--test-cases", type=int, default=0, help="score only the first N test cases (checks)")
    ap.add_argument("--out", type=Path, default=Path("work/hippo_finetune"))
    ap.add_argument("--table", type=Path, help="print the table of this results.json")
    args = ap.parse_args()
    if args.table:
        table(args.table)
        return
    started = time.time()
    path = run(args)
    print(f"wrote {path} in {(time.time() - started) / 60:.1f} min", flush=True)
    table(path)


if __name__ == "__main__":
    main()
