"""Accuracy on real data in a fixed wall-clock budget: attnseg's recipe vs a typical MONAI recipe.

Data: ``../shared/data/Task04_Hippocampus`` (MSD Task04, 200 labelled cases, 1 mm, labels
1 anterior / 2 posterior). One seeded split (``attnseg.datasets.splits.make_splits(ids, k=5,
seed)``, fold 0: 160 train / 40 test) is saved as ``OUT/split.json`` and used by both contenders.

Contender A (ours): ``AttentionUNet`` (16, 32, 64, 128) trained through ``attnseg.training.train``
with the recipe in ``ours_recipe`` (saved as ``OUT/<run>/ours_recipe.yaml``): patch and batch size
derived by the plan (40x56x40, batch 2), deep supervision, Dice + CE, AdamW 2e-3, linear warm-up
then cosine decay that follow the *time* budget (``train.schedule_by_time``), bf16 autocast,
light augmentation (left-right flip, small rotation/zoom/intensity changes, no elastic), no
validation during training (the budget goes to training; the last weights are scored).

Contender B (MONAI): ``monai.networks.nets.AttentionUnet(spatial_dims=3, in_channels=1,
out_channels=3, channels=(16, 32, 64, 128), strides=(2, 2, 2))``, fp32, the recipe the issue
quotes: ``NormalizeIntensityd(nonzero=True)``, whole volumes padded to 48x64x48
(``SpatialPadd``), ``RandFlipd`` (left-right, p 0.5), ``CacheDataset`` + ``DataLoader`` batch 8,
``DiceCELoss(to_onehot_y=True, softmax=True)``, ``Adam(lr=1e-3)``, constant rate.

Both train for the same wall-clock budget (``--minutes`` each, sequentially, data loading not
counted), with ``torch.set_num_threads(--threads)``. The budget is wall-clock on a shared machine,
so the CPU seconds each contender actually got and the load average are printed next to it.

Evaluation, the same for both: each contender's own normalisation, then one whole-volume window
(every case zero-padded, centred, to 48x64x48 by ``attnseg.inference.sliding_window_inference``),
fp32, argmax; ``attnseg.metrics.evaluate_case`` on the 40 test cases: Dice and HD95 (mm) of
anterior (1) and posterior (2), means over cases. A third row scores ours with its own inference
(sliding windows 40x56x40, overlap 0.5, gaussian, bf16), for information.

Command (the numbers in docs/benchmarks-hippocampus.md; about 65 minutes, on an idle machine):

    nohup python benchmarks/train_hippocampus.py > work/hippo_bench30.log 2>&1 &

That is the issue's budget, 30 minutes per contender (the default). Quick check of the pipeline:
``--minutes 0.3``.
Results: ``OUT/<run>/results.json`` (``--out``, default ``work/hippo_bench``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "Task04_Hippocampus"
CLASSES = {"anterior": 1, "posterior": 2}
FEATURES = (16, 32, 64, 128)
MONAI_BATCH = 8


def cpu_seconds() -> float:
    """CPU time of this process (all threads), user + system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_avg() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- data ---------------------------------------------------------------------------------------------
def load_raw(data_root: Path, case_ids: list[str]):
    """``case_id -> (image (1, *spatial) float32 as on disk, label (*spatial) int64, spacing_mm)``."""
    from attnseg.datasets import discover, load_case

    dataset = discover(data_root, "msd")
    out = {}
    for case_id in case_ids:
        image, label, meta = load_case(dataset.case(case_id), dataset)
        out[case_id] = (image.astype(np.float32), np.asarray(label, dtype=np.int64), tuple(meta.spacing_mm))
    return out


def make_split(data_root: Path, seed: int) -> dict[str, list[str]]:
    """Fold 0 of attnseg's seeded 5-fold split: 160 train / 40 test for 200 cases."""
    from attnseg.datasets import discover
    from attnseg.datasets.splits import make_splits

    dataset = discover(data_root, "msd")
    fold = make_splits([c.case_id for c in dataset.cases if c.label is not None], k=5, seed=seed)[0]
    return {"train": fold["train"], "test": fold["val"]}


def whole_window(shapes) -> tuple[int, ...]:
    """The smallest window that holds every case, each axis a multiple of 8 (both networks' stride)."""
    return tuple(int(math.ceil(max(s[a] for s in shapes) / 8) * 8) for a in range(3))


# --- contender A: attnseg -----------------------------------------------------------------------------
def ours_recipe(minutes: float, threads: int, seed: int, split_file: Path) -> dict:
    """The settings passed to ``attnseg.training.train`` (anything left out: attnseg's defaults or
    derived from the data by the plan)."""
    epochs, iters_per_epoch = 1000, 80  # an upper bound: the time limit ends the run
    return {
        "model": {"name": "attention_unet", "features": list(FEATURES), "deep_supervision": True},
        "data": {"layout": "msd", "split": str(split_file), "fold": 0},
        "preprocess": {"normalization": "zscore_nonzero"},
        "augment": {
            "fg_fraction": 0.33,
            "p_rotate": 0.1,
            "rotate_deg": 10.0,
            "p_zoom": 0.1,
            "zoom_range": [0.9, 1.1],
            "p_elastic": 0.0,
            "flip_axes": [0],  # axis 0 is left-right here; 1 (anterior-posterior) would swap the classes
            "p_flip": 0.5,
            "p_gamma": 0.15,
            "p_scale": 0.1,
            "p_shift": 0.1,
            "p_noise": 0.05,
        },
        "loss": {"name": "dice_ce", "include_background": False, "batch_dice": True},
        "optim": {
            "name": "adamw",
            "lr": 2e-3,
            "weight_decay": 1e-4,
            "schedule": "cosine",
            # the schedule runs on the share of the time budget spent (schedule_by_time), in units
            # of epochs * iters_per_epoch: warm-up = the first 3% of the budget
            "warmup_iters": int(0.03 * epochs * iters_per_epoch),
            "min_lr": 0.0,
            "grad_clip_norm": 12.0,
        },
        "train": {
            "epochs": epochs,
            "iters_per_epoch": iters_per_epoch,
            "seed": seed,
            "device": "cpu",
            "precision": "bf16",
            "threads": threads,
            "val_every": 0,
            "time_limit_s": 60.0 * minutes,
            "schedule_by_time": True,
            "progress": False,
        },
    }


def train_ours(data_root: Path, run_dir: Path, split: dict, minutes: float, threads: int, seed: int) -> dict:
    from attnseg.config import save_yaml
    from attnseg.io.atomic import atomic_write_text
    from attnseg.models import load_model
    from attnseg.training import train

    split_file = run_dir / "ours_split.json"  # nnU-Net form: one fold, no validation cases
    atomic_write_text(split_file, json.dumps([{"train": split["train"], "val": []}], indent=1) + "\n")
    recipe = ours_recipe(minutes, threads, seed, split_file)
    save_yaml(run_dir / "ours_recipe.yaml", recipe)
    load0, cpu0 = load_avg(), cpu_seconds()
    result = train(data_root, run_dir / "ours", config_file=run_dir / "ours_recipe.yaml", log=log)
    cpu = cpu_seconds() - cpu0  # includes loading the cases (a few seconds)
    derived = json.loads((run_dir / "ours" / "derived.json").read_text())
    batch = int(derived.get("batch_size") or 2)
    return {
        "model": load_model(result.summary["model_file"]),
        "iterations": result.iterations,
        "samples": result.iterations * batch,
        "train_seconds": result.seconds,
        "cpu_seconds": cpu,
        "load_before": load0,
        "load_after": load_avg(),
        "batch": batch,
        "patch": derived.get("patch_size"),
        "stopped": result.stopped,
        "last_loss": result.summary.get("last_loss"),
    }


# --- contender B: MONAI --------------------------------------------------------------------------------
def train_monai(raw: dict, split: dict, window, minutes: float, seed: int) -> dict:
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.networks.nets import AttentionUnet
    from monai.transforms import Compose, EnsureTyped, NormalizeIntensityd, RandFlipd, SpatialPadd

    keys = ["image", "label"]
    transforms = Compose(
        [
            NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
            SpatialPadd(keys=keys, spatial_size=window),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            EnsureTyped(keys=keys, track_meta=False),
        ]
    )
    items = [{"image": raw[c][0], "label": raw[c][1][None]} for c in split["train"]]
    dataset = CacheDataset(items, transforms, progress=False)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=MONAI_BATCH, shuffle=True, num_workers=0, generator=generator)
    torch.manual_seed(seed)
    model = AttentionUnet(spatial_dims=3, in_channels=1, out_channels=3, channels=FEATURES, strides=(2, 2, 2))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    budget_s = 60.0 * minutes
    load0, cpu0 = load_avg(), cpu_seconds()
    iterations = samples = epoch = 0
    losses: list[float] = []
    started = time.perf_counter()
    done = False
    model.train()
    while not done:
        epoch += 1
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            iterations += 1
            samples += batch["image"].shape[0]
            losses.append(float(loss.detach()))
            if time.perf_counter() - started >= budget_s:
                done = True
                break
        log(
            f"monai epoch {epoch}: loss {np.mean(losses[-20:]):.4f}, {iterations} iterations, "
            f"{time.perf_counter() - started:.0f} s"
        )
    model.eval()
    return {
        "model": model,
        "iterations": iterations,
        "samples": samples,
        "train_seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu0,
        "load_before": load0,
        "load_after": load_avg(),
        "batch": MONAI_BATCH,
        "patch": list(window),
        "stopped": "time_limit",
        "last_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
    }


# --- evaluation ----------------------------------------------------------------------------------------
def normalize_ours(image: np.ndarray) -> np.ndarray:
    from attnseg.config import PreprocessConfig
    from attnseg.transforms.preprocess import preprocess

    return preprocess(image, None, (1.0, 1.0, 1.0), PreprocessConfig(normalization="zscore_nonzero"))[0]


def normalize_monai(image: np.ndarray) -> np.ndarray:
    from monai.transforms import NormalizeIntensity

    return np.asarray(NormalizeIntensity(nonzero=True, channel_wise=True)(image), dtype=np.float32)


def evaluate(model, normalize, raw: dict, test_ids: list[str], window, overlap=0.5, bf16=False) -> dict:
    """Mean Dice and HD95 (mm) per class over the test cases; ``window`` >= every case = one window."""
    from attnseg.inference import sliding_window_inference
    from attnseg.metrics import evaluate_case

    model.eval()
    rows = {}
    started = time.perf_counter()
    for case_id in test_ids:
        image, label, spacing = raw[case_id]
        logits = sliding_window_inference(
            normalize(image), model, window, overlap=overlap, batch_size=2, mode="gaussian", autocast=bf16
        )
        pred = logits.argmax(0).numpy().astype(np.uint8)
        metrics = evaluate_case(pred, label, spacing, classes=CLASSES, lesions=False)
        rows[case_id] = {name: {"dice": m["dice"], "hd95_mm": m["hd95_mm"]} for name, m in metrics.items()}
    out = {"per_case": rows, "seconds": time.perf_counter() - started}
    for name in CLASSES:
        out[f"dice_{name}"] = float(np.mean([r[name]["dice"] for r in rows.values()]))
        out[f"hd95_{name}"] = float(np.mean([r[name]["hd95_mm"] for r in rows.values()]))
    out["dice_mean"] = float(np.mean([out[f"dice_{n}"] for n in CLASSES]))
    out["hd95_mean"] = float(np.mean([out[f"hd95_{n}"] for n in CLASSES]))
    return out


def table(rows: list[tuple[str, dict, dict]], n_train: int) -> str:
    head = (
        f"{'contender':<34} {'iters':>6} {'epochs':>6} {'CPU s':>6} {'Dice ant':>8} {'Dice post':>9} "
        f"{'Dice mean':>9} {'HD95 ant':>8} {'HD95 post':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, t, e in rows:
        lines.append(
            f"{name:<34} {t['iterations']:>6d} {t['samples'] / n_train:>6.1f} {t['cpu_seconds']:>6.0f} "
            f"{e['dice_anterior']:>8.4f} {e['dice_posterior']:>9.4f} {e['dice_mean']:>9.4f} "
            f"{e['hd95_anterior']:>8.2f} {e['hd95_posterior']:>9.2f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "work" / "hippo_bench")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget per contender")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("ours", "monai"), default=None, help="train one contender only")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data}: dataset not found", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    run_dir = args.out / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    load_start = load_avg()
    log(
        f"load average at start (1/5/15 min): {load_start} on {os.cpu_count()} CPUs; "
        f"threads {torch.get_num_threads()}; budget {args.minutes:g} min per contender; run {run_dir}"
    )

    from attnseg.io.atomic import atomic_write_text

    split = make_split(args.data, args.seed)
    atomic_write_text(run_dir / "split.json", json.dumps({"seed": args.seed, **split}, indent=1) + "\n")
    raw = load_raw(args.data, split["train"] + split["test"])
    window = whole_window([raw[c][1].shape for c in raw])
    log(
        f"split: {len(split['train'])} train / {len(split['test'])} test (seed {args.seed}); whole window {window}"
    )

    results: dict = {
        "minutes": args.minutes,
        "threads": args.threads,
        "load_start": load_start,
        "split": split,
    }
    rows = []
    if args.only in (None, "ours"):
        log("contender A: attnseg AttentionUNet, attnseg.training.train")
        ours = train_ours(args.data, run_dir, split, args.minutes, args.threads, args.seed)
        log(
            f"ours: {ours['iterations']} iterations in {ours['train_seconds']:.0f} s, load {ours['load_after']}"
        )
        model = ours.pop("model")
        e_same = evaluate(model, normalize_ours, raw, split["test"], window)
        e_own = evaluate(model, normalize_ours, raw, split["test"], tuple(ours["patch"]), bf16=True)
        rows.append(("ours (attnseg), whole volume", ours, e_same))
        rows.append(("ours, own sliding window (bf16)", ours, e_own))
        results["ours"] = {"train": ours, "eval_whole": e_same, "eval_own": e_own}
    if args.only in (None, "monai"):
        log("contender B: MONAI AttentionUnet, typical MONAI recipe")
        monai_t = train_monai(raw, split, window, args.minutes, args.seed)
        log(
            f"monai: {monai_t['iterations']} iterations in {monai_t['train_seconds']:.0f} s, load {monai_t['load_after']}"
        )
        model = monai_t.pop("model")
        e_monai = evaluate(model, normalize_monai, raw, split["test"], window)
        rows.append(("MONAI recipe, whole volume", monai_t, e_monai))
        results["monai"] = {"train": monai_t, "eval_whole": e_monai}

    results["load_end"] = load_avg()
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1) + "\n")
    n_train = len(split["train"])
    print()
    print(
        f"Task04_Hippocampus, {n_train} train / {len(split['test'])} test cases, {args.minutes:g} min per contender, "
        f"{args.threads} threads"
    )
    print(f"load average (1/5/15 min): start {load_start}, end {results['load_end']}")
    print(table(rows, n_train))
    print("epochs = training samples seen / training cases; CPU s = process CPU time during training")
    if "ours" in results and "monai" in results:
        a, b = results["ours"]["eval_whole"], results["monai"]["eval_whole"]
        for key in ("dice_anterior", "dice_posterior", "dice_mean"):
            print(f"{key}: ours - MONAI = {a[key] - b[key]:+.4f}, ours / MONAI = {a[key] / b[key]:.3f}")
        print(f"hd95_mean: ours / MONAI = {a['hd95_mean'] / b['hd95_mean']:.3f}")
        ta, tb = results["ours"]["train"], results["monai"]["train"]
        print(f"CPU seconds during training: ours / MONAI = {ta['cpu_seconds'] / tb['cpu_seconds']:.2f}")
    print(f"results: {run_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
