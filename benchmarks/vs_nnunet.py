"""nnU-Net v2 against attnseg on Task04_Hippocampus: same training cases, same wall-clock budget, same test cases.

Data: ``../shared/data/Task04_Hippocampus`` (MSD Task04, 200 labelled cases), read in place through
symlinks. The split is the one of ``benchmarks/train_hippocampus.py`` (``make_split``: fold 0 of
``attnseg.datasets.splits.make_splits(ids, k=5, seed)``, 160 train / 40 test).

nnU-Net v2 (``nnunetv2`` from PyPI) lives in its own virtual environment, ``work/nnunet_venv``
(git-ignored, 1.9 GB), with its own copy of torch; nothing of it enters attnseg's environment.
Set-up, once (80 s here: ``python -m venv``, one ``pip install nnunetv2==2.8.1 torch==2.13.0`` --
torch pinned on the same command line so pip takes the local CPU build, not a multi-GB CUDA one;
nnunetv2 2.8.1 asks for ``torch>=2.1.2,!=2.9.*`` --, then the trainer module of step 3 below)::

    python benchmarks/vs_nnunet.py --setup

The benchmark (30 minutes of training per contender, one after the other; about 60 minutes in all on
an idle 2-core machine: nnU-Net's one epoch takes 24 of its 30)::

    nohup python benchmarks/vs_nnunet.py > work/vs_nnunet.log 2>&1 &

with nnU-Net also trained at twice the budget (two epochs, 48 minutes; about 110 minutes in all)::

    nohup python benchmarks/vs_nnunet.py --nnunet-budget-factor 2 > work/vs_nnunet.log 2>&1 &

Quick check of every step (about 5 minutes; the numbers mean nothing)::

    python benchmarks/vs_nnunet.py --minutes 2 --train-cases 20 --test-cases 5 --nnunet-iters-per-epoch 5

Steps, each a subprocess timed on its own (wall seconds, CPU seconds of the process tree, peak RSS,
load average before/after), in this order, never two at once:

1. symlink folders under the run folder: an MSD folder of the training cases (ours), nnU-Net's raw
   ``Dataset004_Hippocampus`` (``imagesTr/<case>_0000.nii.gz``, ``labelsTr``, ``imagesTs`` = test
   images), the test images and test labels;
2. ``nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres`` (its defaults otherwise), not counted in
   the budget;
3. ``nnUNetv2_train 4 3d_fullres all -tr <variant> -device cpu``. nnU-Net trains a fixed number of
   epochs, not for a time, so the variant's epoch count is what fits the budget: ``--nnunet-epoch-minutes``
   (24: the issue's measurement of one epoch of 250 training + 50 validation iterations of its default
   3d_fullres plan, patch 40x56x40, batch 6, fp32, on 2 cores) scaled by the iterations per epoch,
   ``epochs = max(1, floor(0.9 * budget / epoch time))``: 1 epoch at 30 minutes (the stock
   ``nnUNetTrainer_1epoch``'s setting), 2 at 60. Its poly learning rate steps once per epoch
   (``lr = 0.01 * (1 - epoch / epochs) ** 0.9``), so one epoch runs at a constant 0.01 and two at
   0.01 then 0.0054. The variant, ``nnUNetTrainerBench_<epochs>x<iterations>``, is ``nnUNetTrainer``
   with ``num_epochs``, ``num_iterations_per_epoch`` and ``num_val_iterations_per_epoch``
   (iterations / 5, as 250 / 50) set: with 250 iterations it trains exactly like the stock
   ``nnUNetTrainer_1epoch`` (or the ``2epochs`` the issue asks for). nnU-Net finds ``-tr`` by class
   name: it imports every module of ``nnunetv2/training/nnUNetTrainer`` in the installed package,
   top-level modules first, then the subpackages (``primus``, ``variants``), and only then the folders
   in ``nnUNet_extTrainer``; the predictor does the same lookup with the name saved in the
   checkpoint. ``primus`` imports timm, which imports torchvision, and PyPI's torchvision is a CUDA
   build that cannot load its operators next to the CPU torch (``operator torchvision::nms does not
   exist``): so the stock variants under ``variants/`` and ``nnUNet_extTrainer`` both fail here. The
   set-up therefore writes ``vs_nnunet_trainers.py`` (``TRAINER_SOURCE`` below; it makes the classes
   from their names on demand) into the venv's ``site-packages/nnunetv2/training/nnUNetTrainer/``,
   where the lookup finds it before reaching ``primus`` (each run rewrites it if it differs). Two
   more things, both for the benchmark: torch threads = ``--threads`` (``nnUNetv2_train -device
   cpu`` itself calls ``torch.set_num_threads(multiprocessing.cpu_count())``: the same on a 2-core
   machine), and the end-of-training validation skipped: with fold ``all`` it predicts every
   training case; ``--nnunet-final-validation`` runs it afterwards, timed as its own step (``nnUNetv2_train ... --val``). Data augmentation: ``nnUNet_n_proc_DA=0``
   (``--nnunet-da-procs``): augmentation runs in the training process between steps, as ours does,
   so the process tree uses the budgeted cores; with 1 worker a third busy process would share the
   two cores;
4. ``nnUNetv2_predict -i imagesTs -d 4 -c 3d_fullres -f all -tr <variant> -device cpu`` (mirroring
   on, its default; ``-npp 1 -nps 1`` worker processes for pre- and post-processing instead of 3 each);
5. ``attnseg train <the training cases' folder> --out RUN --minutes M`` with ``--set
   train.threads=T --set train.device=cpu`` (``--minutes``: every labelled case trains, no
   validation, the whole command's wall clock is the budget, see ``attnseg.training.budget``);
6. ``attnseg predict RUN/model.pt <test images> OUT --threads T`` (its defaults: no TTA);
7. scoring, on the test cases: ``attnseg evaluate --labels anterior=1,posterior=2`` (Dice and HD95 in mm)
   and ``nnUNetv2_evaluate_folder`` (nnU-Net's own Dice; it has no HD95) as a cross-check; paired
   Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of the per-case mean Dice (our metrics).

Every subprocess gets ``OMP_NUM_THREADS=MKL_NUM_THREADS=T``. CPU seconds and the largest process's
peak RSS come from ``os.wait4`` (the step's process and the children it waited for); the peak RSS of
the whole process tree is sampled from ``/proc`` every half second. Inference seconds per case: the
predict command's wall time / cases (start-up and model loading included, for both), and "steady",
the spacing of the output files' modification times (without them).

Output: ``RUN/results.json`` (``--out``, default ``work/vs_nnunet/<time>``), the logs of every step in
``RUN/logs/``, and the table printed at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_hippocampus import DATA, make_split  # noqa: E402  (the split of the 30-minute benchmark)

VENV = ROOT / "work" / "nnunet_venv"
NNUNET_VERSION = "2.8.1"
TORCH_VERSION = "2.13.0"  # attnseg's; the local CPU wheel
DATASET_ID = 4
DATASET_NAME = f"Dataset{DATASET_ID:03d}_Hippocampus"
CLASSES = {"anterior": 1, "posterior": 2}
STOCK_ITERS, STOCK_VAL_ITERS = 250, 50
BUDGET_SAFETY = 0.9  # nnU-Net's epochs are chosen to fill at most this share of the budget
TRAINER_MODULE = "vs_nnunet_trainers"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_avg() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


# --- set-up -------------------------------------------------------------------------------------------
def venv_bin(name: str) -> Path:
    return VENV / "bin" / name


def create_nnunet_venv() -> None:
    """``work/nnunet_venv`` with ``nnunetv2`` and torch pinned to attnseg's version (CPU build)."""
    if venv_bin("nnUNetv2_train").exists():
        log(f"{VENV}: nnunetv2 already installed")
        return
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [
            str(venv_bin("python")),
            "-m",
            "pip",
            "install",
            f"nnunetv2=={NNUNET_VERSION}",
            f"torch=={TORCH_VERSION}",
        ],
        check=True,
    )
    log(f"set-up done in {time.perf_counter() - started:.0f} s: {VENV}")


def require_nnunet_venv() -> None:
    if not venv_bin("nnUNetv2_train").exists():
        sys.exit(f"{VENV}: nnU-Net is not installed; run `python benchmarks/vs_nnunet.py --setup` first")


# --- measured subprocesses ------------------------------------------------------------------------------
def process_tree_rss_bytes(root_pid: int) -> int:
    """Sum of the resident set sizes of ``root_pid`` and all its descendants, from ``/proc``."""
    parent_of, rss_of = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(entry)] = int(fields[1])
        rss_of[int(entry)] = int(fields[21]) * page
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parent_of.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss_of.get(pid, 0) for pid in tree)


def run_measured(name: str, cmd: list[str], env: dict, logs: Path) -> dict:
    """Run one step; its output goes to ``logs/<name>.log``. Returns wall/CPU seconds, peak RSS, load."""
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{name}.log"
    log(f"{name}: {' '.join(map(str, cmd))}  (log {log_file})")
    load_before, started = load_avg(), time.perf_counter()
    peak_tree = [0]
    with open(log_file, "w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak_tree[0] = max(peak_tree[0], process_tree_rss_bytes(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    result = {
        "command": " ".join(map(str, cmd)),
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_largest_process_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "peak_rss_tree_mb": peak_tree[0] / 2**20,
        "load_before": load_before,
        "load_after": load_avg(),
        "log": str(log_file),
        "returncode": proc.returncode,
    }
    log(
        f"{name}: {seconds:.0f} s wall, {result['cpu_seconds']:.0f} CPU s, peak RSS "
        f"{result['peak_rss_tree_mb']:.0f} MB (tree), load {result['load_after']}"
    )
    if proc.returncode != 0:
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); last lines of {log_file}:\n{tail}")
    return result


def inference_seconds_per_case(step: dict, pred_dir: Path, n_cases: int) -> None:
    """Adds the command's wall seconds per case and the steady rate: the spacing of the output files'
    modification times (start-up and model loading left out)."""
    step["seconds_per_case"] = step["seconds"] / n_cases
    times = sorted(f.stat().st_mtime for f in pred_dir.glob("*.nii.gz"))
    step["steady_seconds_per_case"] = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def nnunet_env(run_dir: Path, threads: int, da_procs: int) -> dict:
    """nnU-Net's paths (all under the run folder), its trainer folder, threads and worker counts."""
    env = thread_env(threads)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    nn = run_dir / "nnunet"
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        nnUNet_raw=str(nn / "raw"),
        nnUNet_preprocessed=str(nn / "preprocessed"),
        nnUNet_results=str(nn / "results"),
        nnUNet_n_proc_DA=str(da_procs),
        nnUNet_def_n_proc=str(threads),
        nnUNet_compile="false",  # nnU-Net never compiles on a CPU; said explicitly
        ATTNSEG_BENCH_THREADS=str(threads),
        ATTNSEG_BENCH_SKIP_FINAL_VALIDATION="1",
    )
    return env


# --- data folders (symlinks into the dataset) -------------------------------------------------------------
def link(target: Path, name: Path) -> None:
    name.parent.mkdir(parents=True, exist_ok=True)
    name.symlink_to(target.resolve())


def make_data_folders(
    data: Path, run_dir: Path, train_ids: list[str], test_ids: list[str]
) -> dict[str, Path]:
    """Symlink folders: ours (MSD layout), nnU-Net raw (v2 layout), test images, test labels."""
    source = json.loads((data / "dataset.json").read_text())
    ours = run_dir / "data" / "train_msd"
    for case in train_ids:
        link(data / "imagesTr" / f"{case}.nii.gz", ours / "imagesTr" / f"{case}.nii.gz")
        link(data / "labelsTr" / f"{case}.nii.gz", ours / "labelsTr" / f"{case}.nii.gz")
    items = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train_ids]
    ours_json = {**source, "numTraining": len(train_ids), "numTest": 0, "training": items, "test": []}
    (ours / "dataset.json").write_text(json.dumps(ours_json, indent=1) + "\n")

    raw = run_dir / "nnunet" / "raw" / DATASET_NAME
    for case in train_ids:
        link(data / "imagesTr" / f"{case}.nii.gz", raw / "imagesTr" / f"{case}_0000.nii.gz")
        link(data / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr" / f"{case}.nii.gz")
    for case in test_ids:
        link(data / "imagesTr" / f"{case}.nii.gz", raw / "imagesTs" / f"{case}_0000.nii.gz")
    nnunet_json = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, **CLASSES},
        "numTraining": len(train_ids),
        "file_ending": ".nii.gz",
        "name": "Hippocampus (attnseg benchmarks/vs_nnunet.py)",
    }
    (raw / "dataset.json").write_text(json.dumps(nnunet_json, indent=1) + "\n")

    test_images, test_labels = run_dir / "data" / "test_images", run_dir / "data" / "test_labels"
    for case in test_ids:
        link(data / "imagesTr" / f"{case}.nii.gz", test_images / f"{case}.nii.gz")
        link(data / "labelsTr" / f"{case}.nii.gz", test_labels / f"{case}.nii.gz")
    return {"ours_train": ours, "nnunet_raw": raw, "test_images": test_images, "test_labels": test_labels}


# --- nnU-Net --------------------------------------------------------------------------------------------
def nnunet_schedule(budget_minutes: float, epoch_minutes: float, iters_per_epoch: int) -> dict:
    """Epochs of ``iters_per_epoch`` (+ 1/5 as many validation iterations) that fit the budget."""
    minutes_per_epoch = epoch_minutes * iters_per_epoch / STOCK_ITERS
    epochs = max(1, math.floor(BUDGET_SAFETY * budget_minutes / minutes_per_epoch))
    val_iters = max(1, round(iters_per_epoch * STOCK_VAL_ITERS / STOCK_ITERS))
    return {
        "trainer": f"nnUNetTrainerBench_{epochs}x{iters_per_epoch}",
        "epochs": epochs,
        "iters_per_epoch": iters_per_epoch,
        "val_iters_per_epoch": val_iters,
        "budget_minutes": budget_minutes,
        "estimated_minutes": epochs * minutes_per_epoch,
        "lr_per_epoch": [round(0.01 * (1 - e / epochs) ** 0.9, 5) for e in range(epochs)],
    }


TRAINER_SOURCE = '''"""Trainer variants of attnseg's benchmarks/vs_nnunet.py (written there by its --setup).

nnUNetTrainerBench_<E>x<I>: nnUNetTrainer with E epochs of I training and max(1, I/5) validation
iterations (nnU-Net's 250 and 50 scaled), made on demand from the name (module __getattr__), so
the name saved in a checkpoint finds the same class again. Two changes for the benchmark: torch
threads from ATTNSEG_BENCH_THREADS (nnUNetv2_train -device cpu takes every core), and with
ATTNSEG_BENCH_SKIP_FINAL_VALIDATION=1 no end-of-training validation (fold all: every training case).
This module sits at the top of nnunetv2/training/nnUNetTrainer because nnU-Net's lookup by class
name imports the top-level modules first; a subpackage or nnUNet_extTrainer is only searched after
every module of the package was imported, primus's too, which needs a working torchvision.
"""

import os
import re

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class _BenchTrainer(nnUNetTrainer):
    EPOCHS, ITERS, VAL_ITERS = 1000, 250, 50

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.EPOCHS
        self.num_iterations_per_epoch = self.ITERS
        self.num_val_iterations_per_epoch = self.VAL_ITERS
        if os.environ.get("ATTNSEG_BENCH_THREADS"):
            torch.set_num_threads(int(os.environ["ATTNSEG_BENCH_THREADS"]))

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("ATTNSEG_BENCH_SKIP_FINAL_VALIDATION") == "1":
            self.print_to_log_file("final validation skipped (ATTNSEG_BENCH_SKIP_FINAL_VALIDATION=1)")
            return
        super().perform_actual_validation(save_probabilities)


_made = {}


def __getattr__(name):
    match = re.fullmatch(r"nnUNetTrainerBench_(\\d+)x(\\d+)", name)
    if not match:
        raise AttributeError(name)
    if name not in _made:
        epochs, iters = int(match[1]), int(match[2])
        attrs = {"EPOCHS": epochs, "ITERS": iters, "VAL_ITERS": max(1, round(iters / 5)), "__module__": __name__}
        _made[name] = type(name, (_BenchTrainer,), attrs)
    return _made[name]
'''


def nnunet_package_dir() -> Path:
    found = sorted(VENV.glob("lib/python*/site-packages/nnunetv2"))
    if not found:
        sys.exit(f"{VENV}: nnunetv2 not found; run `python benchmarks/vs_nnunet.py --setup` first")
    return found[0]


def install_trainer_module() -> Path:
    """Write ``TRAINER_SOURCE`` into the venv's ``nnunetv2/training/nnUNetTrainer/`` (when it differs)."""
    path = nnunet_package_dir() / "training" / "nnUNetTrainer" / f"{TRAINER_MODULE}.py"
    if not path.is_file() or path.read_text() != TRAINER_SOURCE:
        path.write_text(TRAINER_SOURCE)
        log(f"wrote nnU-Net trainer variants: {path}")
    return path


def nnunet_epoch_seconds(train_log: Path) -> list[float]:
    """Per-epoch wall seconds as nnU-Net logs them (``Epoch time: 1234.5 s``)."""
    out = []
    for line in train_log.read_text(errors="replace").splitlines():
        if "Epoch time:" in line:
            try:
                out.append(float(line.split("Epoch time:")[1].split("s")[0]))
            except ValueError:
                pass
    return out


def nnunet_plans_summary(run_dir: Path) -> dict:
    plans = json.loads((run_dir / "nnunet" / "preprocessed" / DATASET_NAME / "nnUNetPlans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg.get("architecture", {}).get("arch_kwargs", {})
    return {
        "patch_size": cfg.get("patch_size"),
        "batch_size": cfg.get("batch_size"),
        "features_per_stage": arch.get("features_per_stage"),
        "spacing": cfg.get("spacing"),
    }


def train_and_predict_nnunet(
    run_dir: Path, schedule: dict, env: dict, logs: Path, n_test: int, final_validation: bool
) -> dict:
    trainer = schedule["trainer"]
    common = [str(DATASET_ID), "3d_fullres", "all", "-tr", trainer, "-device", "cpu"]
    train = run_measured(f"nnunet_train_{trainer}", [venv_bin("nnUNetv2_train"), *common], env, logs)
    train["epoch_seconds"] = nnunet_epoch_seconds(logs / f"nnunet_train_{trainer}.log")
    out = {"schedule": schedule, "train": train}
    if final_validation:
        val_env = {**env, "ATTNSEG_BENCH_SKIP_FINAL_VALIDATION": "0"}
        out["final_validation"] = run_measured(
            f"nnunet_final_validation_{trainer}",
            [venv_bin("nnUNetv2_train"), *common, "--val"],
            val_env,
            logs,
        )
    pred_dir = run_dir / "nnunet" / f"pred_{trainer}"
    raw = run_dir / "nnunet" / "raw" / DATASET_NAME
    predict_cmd = [
        venv_bin("nnUNetv2_predict"),
        *("-i", raw / "imagesTs", "-o", pred_dir, "-d", DATASET_ID, "-c", "3d_fullres", "-f", "all"),
        *("-tr", trainer, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"),
    ]
    out["predict"] = run_measured(f"nnunet_predict_{trainer}", predict_cmd, env, logs)
    inference_seconds_per_case(out["predict"], pred_dir, n_test)
    out["pred_dir"] = str(pred_dir)
    return out


# --- ours -----------------------------------------------------------------------------------------------
def train_and_predict_ours(
    folders: dict, run_dir: Path, minutes: float, threads: int, logs: Path, n_test: int, seed: int = 0
):
    env = thread_env(threads)
    run = run_dir / "ours" / "run"
    cmd = ["attnseg", "train", folders["ours_train"], "--out", run, "--minutes", f"{minutes:g}"]
    cmd += ["--set", f"train.threads={threads}", "--set", "train.device=cpu", "--set", "train.progress=false"]
    cmd += ["--set", f"train.seed={seed}"]
    train = run_measured("ours_train", cmd, env, logs)
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    train["iterations"] = summary.get("iterations")
    train["summary"] = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    derived_file = run / "derived.json"
    if derived_file.is_file():
        derived = json.loads(derived_file.read_text())
        train["patch_size"], train["batch_size"] = derived.get("patch_size"), derived.get("batch_size")
    pred_dir = run_dir / "ours" / "pred"
    cmd = ["attnseg", "predict", run / "model.pt", folders["test_images"], pred_dir]
    predict = run_measured("ours_predict", [*cmd, "--threads", str(threads), "--quiet"], env, logs)
    inference_seconds_per_case(predict, pred_dir, n_test)
    return {"train": train, "predict": predict, "pred_dir": str(pred_dir)}


# --- scoring --------------------------------------------------------------------------------------------
def score_with_attnseg(pred_dir: Path, labels: Path, out: Path, logs: Path, threads: int, name: str) -> dict:
    """``attnseg evaluate``: per-case Dice and HD95 (mm) of both classes, and their means."""
    cmd = ["attnseg", "evaluate", pred_dir, labels, "--out", out, "--labels", "anterior=1,posterior=2"]
    run_measured(f"evaluate_attnseg_{name}", [*cmd, "--no-lesions"], thread_env(threads), logs)
    per_case: dict[str, dict[str, float]] = {}
    with open(out / "metrics_per_case.csv") as f:  # one row per case and class
        for row in csv.DictReader(f):
            entry = per_case.setdefault(row["case_id"], {})
            entry[f"dice_{row['target']}"] = float(row["dice"])
            entry[f"hd95_{row['target']}"] = float(row["hd95_mm"])
    for entry in per_case.values():
        entry["dice_mean"] = sum(entry[f"dice_{c}"] for c in CLASSES) / len(CLASSES)
        entry["hd95_mean"] = sum(entry[f"hd95_{c}"] for c in CLASSES) / len(CLASSES)
    keys = sorted({k for entry in per_case.values() for k in entry})
    means = {k: sum(e[k] for e in per_case.values()) / len(per_case) for k in keys}
    return {"mean": means, "per_case": per_case}


def score_with_nnunet(pred_dir: Path, labels: Path, run_dir: Path, logs: Path, env: dict, name: str) -> dict:
    """``nnUNetv2_evaluate_folder``: nnU-Net's own Dice per class (a cross-check of ours)."""
    pre = run_dir / "nnunet" / "preprocessed" / DATASET_NAME
    out = run_dir / "eval" / name / "nnunet_summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [venv_bin("nnUNetv2_evaluate_folder"), labels, pred_dir, "-djfile", pre / "dataset.json"]
    cmd += ["-pfile", pre / "nnUNetPlans.json", "-o", out, "-np", "1"]
    run_measured(f"evaluate_nnunet_{name}", cmd, env, logs)
    summary = json.loads(out.read_text())
    mean = summary["mean"]
    result = {f"dice_{cls}": mean[str(v)]["Dice"] for cls, v in CLASSES.items()}
    result["dice_mean"] = summary["foreground_mean"]["Dice"]
    return result


def paired_wilcoxon(a: dict, b: dict) -> dict:
    """Wilcoxon signed-rank test on per-case mean Dice, ``a - b`` over the cases both have."""
    from scipy.stats import wilcoxon

    cases = sorted(set(a["per_case"]) & set(b["per_case"]))
    diff = [a["per_case"][c]["dice_mean"] - b["per_case"][c]["dice_mean"] for c in cases]
    out = {"n": len(cases), "mean_diff": sum(diff) / len(diff), "a_better": sum(d > 0 for d in diff)}
    try:
        out["p"] = float(wilcoxon(diff).pvalue)
    except ValueError as exc:  # all differences zero, or too few cases
        out["p"], out["note"] = float("nan"), str(exc)
    return out


# --- the report -----------------------------------------------------------------------------------------
def results_table(rows: list[dict]) -> str:
    head = (
        f"{'contender':<30} {'iters':>6} {'train s':>7} {'CPU s':>6} {'RSS MB':>6} {'s/case':>6} {'steady':>6} "
        f"{'Dice ant':>8} {'Dice post':>9} {'Dice mean':>9} {'HD95 ant':>8} {'HD95 post':>9} {'nnU Dice':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        m, t, pr = r["ours_metrics"]["mean"], r["train"], r["predict"]
        steady = pr["steady_seconds_per_case"]
        lines.append(
            f"{r['name']:<30} {r['iterations']:>6} {t['seconds']:>7.0f} {t['cpu_seconds']:>6.0f} "
            f"{t['peak_rss_tree_mb']:>6.0f} {pr['seconds_per_case']:>6.2f} "
            f"{steady if steady is None else f'{steady:.2f}':>6} "
            f"{m['dice_anterior']:>8.4f} {m['dice_posterior']:>9.4f} {m['dice_mean']:>9.4f} "
            f"{m['hd95_anterior']:>8.2f} {m['hd95_posterior']:>9.2f} {r['nnunet_metrics']['dice_mean']:>8.4f}"
        )
    return "\n".join(lines)


def print_report(results: dict, rows: list[dict]) -> None:
    factors = [k.removeprefix("nnunet_x") + "x" for k in results if k.startswith("nnunet_x")]
    print()
    print(
        f"Task04_Hippocampus, {results['n_train']} train / {results['n_test']} test cases, "
        f"{results['minutes']:g} min of training per contender (nnU-Net: {', '.join(factors) or 'not run'}), "
        f"{results['threads']} threads on {results['cpus']} CPUs"
    )
    if "nnunet_plan_and_preprocess" in results["steps"]:
        step = results["steps"]["nnunet_plan_and_preprocess"]
        print(
            f"nnU-Net plan and preprocess (not in the budget): {step['seconds']:.0f} s, "
            f"{step['cpu_seconds']:.0f} CPU s; plan 3d_fullres {results['nnunet_plan']}"
        )
    print(f"load average (1/5/15 min): start {results['load_start']}, end {results['load_end']}")
    print(results_table(rows))
    print(
        "iters: training iterations. train s, CPU s, RSS MB: the training command's wall seconds, CPU "
        "seconds and peak RSS of its process tree. s/case: the predict command's wall seconds per test case; "
        "steady: the same without start-up (spacing of the output files). Dice, HD95 (mm): attnseg evaluate, "
        "means over the test cases. nnU Dice: nnUNetv2_evaluate_folder's mean Dice of both classes."
    )
    for r in rows:
        t = r["train"]
        extra = ""
        if "epoch_seconds" in t:
            extra = f", epoch seconds {[round(x) for x in t['epoch_seconds']]}"
            extra += f", lr per epoch {r['schedule']['lr_per_epoch']}"
        print(f"{r['name']}: load during training {t['load_before']} -> {t['load_after']}{extra}")
        if "final_validation" in r:
            v = r["final_validation"]
            print(
                f"{r['name']}: end-of-training validation (every training case) {v['seconds']:.0f} s, not in the budget"
            )
    for key in [k for k in results if k.startswith("wilcoxon_")]:
        w = results[key]
        print(
            f"{key}: per-case mean Dice, ours - nnU-Net = {w['mean_diff']:+.4f}, ours better on "
            f"{w['a_better']}/{w['n']}, Wilcoxon p = {w['p']:.2g}"
        )
    print(f"results: {results['run_dir']}/results.json (whole benchmark {results['wall_seconds']:.0f} s)")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", action="store_true", help="create work/nnunet_venv with nnunetv2, then stop")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default work/vs_nnunet/<time>)")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget per contender (wall clock)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="split seed (train_hippocampus.py's)")
    ap.add_argument("--train-seed", type=int, default=0, help="attnseg's training seed (train.seed)")
    ap.add_argument("--train-cases", type=int, default=None, help="first N training cases only (quick check)")
    ap.add_argument("--test-cases", type=int, default=None, help="first N test cases only (quick check)")
    ap.add_argument(
        "--nnunet-budget-factor",
        type=float,
        nargs="*",
        default=[1.0],
        help="budgets of nnU-Net as multiples of --minutes; `--nnunet-budget-factor 2` trains it at 1x and 2x",
    )
    ap.add_argument(
        "--nnunet-epoch-minutes",
        type=float,
        default=24.0,
        help="minutes of one nnU-Net epoch of 250 training + 50 validation iterations (measured: 24 on 2 cores)",
    )
    ap.add_argument("--nnunet-iters-per-epoch", type=int, default=STOCK_ITERS, help="250: nnU-Net's own")
    ap.add_argument(
        "--nnunet-da-procs", type=int, default=0, help="nnUNet_n_proc_DA (0: in the training process)"
    )
    ap.add_argument(
        "--nnunet-final-validation",
        action="store_true",
        help="also run nnU-Net's end-of-training validation (every training case), timed on its own",
    )
    ap.add_argument("--only", choices=("ours", "nnunet"), default=None)
    return ap.parse_args(argv)


def run_nnunet(args, run_dir: Path, folders: dict, env: dict, results: dict, n_test: int) -> list[dict]:
    """Plan and preprocess once, then train, predict and score nnU-Net at each budget factor."""
    logs = run_dir / "logs"
    factors = sorted({1.0, *args.nnunet_budget_factor})
    results["nnunet_trainer_module"] = str(install_trainer_module())
    plan_env = {**env, "nnUNet_n_proc_DA": str(args.threads)}  # the planner sets torch threads to it; 0 fails
    plan_cmd = [venv_bin("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres"]
    plan_cmd += ["-np", str(args.threads), "-npfp", str(args.threads), "--verify_dataset_integrity"]
    results["steps"]["nnunet_plan_and_preprocess"] = run_measured(
        "nnunet_plan_and_preprocess", plan_cmd, plan_env, logs
    )
    results["nnunet_plan"] = nnunet_plans_summary(run_dir)
    log(f"nnU-Net plan (3d_fullres): {results['nnunet_plan']}")
    rows = []
    for factor in factors:
        schedule = nnunet_schedule(
            factor * args.minutes, args.nnunet_epoch_minutes, args.nnunet_iters_per_epoch
        )
        log(
            f"nnU-Net at {factor:g}x the budget ({schedule['budget_minutes']:g} min): {schedule['trainer']}, "
            f"{schedule['epochs']} epoch(s) x {schedule['iters_per_epoch']} iterations, estimated "
            f"{schedule['estimated_minutes']:.1f} min, lr per epoch {schedule['lr_per_epoch']}"
        )
        nn = train_and_predict_nnunet(run_dir, schedule, env, logs, n_test, args.nnunet_final_validation)
        name = f"nnunet_x{factor:g}"
        pred = Path(nn["pred_dir"])
        nn["ours_metrics"] = score_with_attnseg(
            pred, folders["test_labels"], run_dir / "eval" / name, logs, args.threads, name
        )
        nn["nnunet_metrics"] = score_with_nnunet(pred, folders["test_labels"], run_dir, logs, env, name)
        nn["iterations"] = schedule["epochs"] * schedule["iters_per_epoch"]
        nn["name"] = f"nnU-Net 3d_fullres {factor:g}x ({schedule['epochs']} ep)"
        results[name] = nn
        rows.append(nn)
    return rows


def run_ours(args, run_dir: Path, folders: dict, env: dict, results: dict, n_test: int) -> dict:
    """``attnseg train --minutes``, ``attnseg predict``, scored by both evaluators."""
    logs = run_dir / "logs"
    log(f"ours: attnseg train --minutes {args.minutes:g}")
    ours = train_and_predict_ours(folders, run_dir, args.minutes, args.threads, logs, n_test, args.train_seed)
    pred = Path(ours["pred_dir"])
    ours["ours_metrics"] = score_with_attnseg(
        pred, folders["test_labels"], run_dir / "eval" / "ours", logs, args.threads, "ours"
    )
    if (run_dir / "nnunet" / "preprocessed" / DATASET_NAME / "nnUNetPlans.json").is_file():
        ours["nnunet_metrics"] = score_with_nnunet(pred, folders["test_labels"], run_dir, logs, env, "ours")
    else:  # --only ours: nnUNetv2_evaluate_folder needs the plans
        ours["nnunet_metrics"] = {"dice_mean": float("nan")}
    ours["iterations"] = ours["train"].get("iterations")
    ours["name"] = "ours (attnseg train --minutes)"
    results["ours"] = ours
    return ours


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.setup:
        create_nnunet_venv()
        install_trainer_module()
        return 0
    if not args.data.is_dir():
        print(f"{args.data}: dataset not found", file=sys.stderr)
        return 2
    if args.only != "ours":
        require_nnunet_venv()
    run_dir = (args.out or ROOT / "work" / "vs_nnunet" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        sys.exit(f"{run_dir}: exists and is not empty; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(
        f"run {run_dir}: {args.minutes:g} min of training per contender, {args.threads} threads, "
        f"load {load_avg()} on {os.cpu_count()} CPUs"
    )
    if args.threads != os.cpu_count():
        log(f"note: nnUNetv2_predict -device cpu uses all {os.cpu_count()} cores whatever --threads says")

    split = make_split(args.data, args.seed)
    train_ids, test_ids = split["train"][: args.train_cases], split["test"][: args.test_cases]
    (run_dir / "split.json").write_text(
        json.dumps({"seed": args.seed, "train": train_ids, "test": test_ids}) + "\n"
    )
    folders = make_data_folders(args.data, run_dir, train_ids, test_ids)
    log(
        f"split: {len(train_ids)} train / {len(test_ids)} test (seed {args.seed}); symlinks in {run_dir / 'data'}"
    )
    results: dict = {
        "run_dir": str(run_dir),
        "minutes": args.minutes,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "nnunet_da_procs": args.nnunet_da_procs,
        "n_train": len(train_ids),
        "n_test": len(test_ids),
        "split_seed": args.seed,
        "load_start": load_avg(),
        "steps": {},
    }
    env = nnunet_env(run_dir, args.threads, args.nnunet_da_procs)
    rows = []
    if args.only != "ours":
        rows += run_nnunet(args, run_dir, folders, env, results, len(test_ids))
    if args.only != "nnunet":
        rows.insert(0, run_ours(args, run_dir, folders, env, results, len(test_ids)))
        for key in [k for k in results if k.startswith("nnunet_x")]:
            results[f"wilcoxon_ours_vs_{key}"] = paired_wilcoxon(
                results["ours"]["ours_metrics"], results[key]["ours_metrics"]
            )
    results["load_end"] = load_avg()
    results["wall_seconds"] = time.perf_counter() - started
    (run_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print_report(results, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
