"""Sliding-window inference: attnseg vs MONAI ``sliding_window_inference``, side by side in one process.

Setting (issue 5): a ``(4, 240, 240, 155)`` volume, ``96^3`` windows, overlap 0.5, gaussian blending,
networks at widths (16, 32, 64, 128), 3 output channels, MONAI's ``AttentionUnet`` through MONAI's
sliding window (float32) as the reference. Rows (``--rows``):

- ``overhead``: an elementwise predictor (almost free) on a random volume, so the time is the
  window machinery itself (extraction, weighting, accumulation), ours vs MONAI's.
- ``same``: attnseg's AttentionUNet through MONAI's and through our sliding window (float32, random
  volume): the machinery with a real network, same overlap, gaussian mode.
- ``end``: random volume, MONAI's net + sliding window vs attnseg's ``AttentionUNet`` + ours in
  float32 and under bfloat16 autocast (accumulation stays float32). A random volume has no zero
  background, so this isolates the network and precision.
- ``case``: a real BraTS case (``../shared/data/brats2018_flair_t1_wt``, 4 x 240 x 240 x 155; the
  synthetic phantom when absent). MONAI: z-scored volume (not timed), whole-volume sliding window.
  Ours: ``attnseg.inference.predict_case`` end to end (z-score inside the brain, timed), which
  predicts inside the brain's bounding box only (nnU-Net's crop; everything outside is background
  by construction), float32 and bf16.

- ``ct``: a CT-sized volume, 1 x 512 x 512 x 400 (a real BraTS FLAIR stretched to that size, the
  phantom when the data is absent) with K = 2, 16 and 64 output classes (``--ct-classes``), one
  fresh subprocess per contender and K reporting seconds (raw volume to label map: z-score, windows,
  argmax) and its peak RSS (``VmHWM`` of the child), ours (``predict_case``, whole volume, no
  crop, ``--ct-max-memory-gb`` as its budget) vs MONAI's ``sliding_window_inference`` + argmax on
  the same network. The network is a small one so a row takes a minute or two on 2 threads:
  ``Conv3d(1, 4, 3) -> ReLU -> Conv3d(4, K, 1)``, 64^3 windows, overlap 0.25, batch 2. MONAI keeps
  a ``K x volume`` float32 output and a count map: when that exceeds the available memory the row
  says "does not fit" without running it; a child that fails is reported with its exit status.

- ``fresh``: MONAI's ``end`` run alone in a fresh process that never imports attnseg, to show that
  running after ours in one process does not slow MONAI down. (Ours runs its window loop inside
  ``attnseg.heap.keep_freed_memory``: glibc keeps freed activations for the next window instead of
  unmapping them; on exit it restores glibc's mmap and the thresholds glibc's own adjustment settles
  at. MONAI runs with glibc's defaults, as its users run it.)

Every row reports the median of ``--repeats`` runs (the ``ct`` rows: one run each); the runs of a row alternate between the contenders
(this machine is shared and noisy). Quality is reported next to speed: largest logit difference and
argmax agreement of bf16 vs float32 (same weights, same windows). The networks are untrained (random
weights, near-tied logits), so these numbers bound the precision effect only; the box changes where
windows sit, which an untrained network with instance norm does not tolerate as a trained one does
(see the closing notes for Dice of a trained model with and without the box).

Commands (quoted in the closing notes)::

    python benchmarks/bench_inference.py                          # all rows, the issue's setting
    python benchmarks/bench_inference.py --rows case --repeats 1  # the real-case row only
    python benchmarks/bench_inference.py --quick                  # (4, 128, 128, 96) random volume
    python benchmarks/bench_inference.py --rows ct                # the CT-sized rows only
    python benchmarks/bench_inference.py --rows end fresh         # MONAI in one process with ours and alone

Utilisation: next to each ratio, the GFLOP of one window (torch's FLOP counter) and the achieved
GFLOP/s of each contender (windows x GFLOP / seconds) as a share of a 4096^2 matmul's rate measured
in the same process (fp32; bf16 rows against the bf16 matmul), as ``inference_utilisation.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2018_flair_t1_wt"


def side_by_side(fns: dict, repeats: int) -> dict:
    """Alternate the contenders run by run; return {name: (median seconds, last output)}."""
    times: dict = {name: [] for name in fns}
    outs: dict = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), outs[name]) for name in fns}


def agreement(a: torch.Tensor, b: torch.Tensor, where: tuple | None = None) -> str:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if where is not None:
        a, b = a[where], b[where]
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    same = (a.argmax(0) == b.argmax(0)).float().mean().item()
    return f"max |diff| {diff:.2e} (of {scale:.2e}), argmax agreement {100 * same:.3f}%"


def load_real_case() -> tuple[np.ndarray, str]:
    from attnseg.datasets import discover, load_case

    if SHARED.is_dir():
        dataset = discover(SHARED)
        case = dataset.cases[0]
        image, _, _ = load_case(case, dataset)
        return image, f"BraTS 2018 case {case.case_id}"
    from attnseg import phantom

    case = phantom.make_case(np.random.default_rng(0), shape=(240, 240, 155), spacing_mm=1.0)
    return case.image, "phantom case (shared data absent)"


# --- the CT-sized rows: one fresh process per contender and class count ---------------------------------
CT_PATCH = (64, 64, 64)
CT_OVERLAP = 0.25
CT_BATCH = 2


def ct_network(classes: int) -> torch.nn.Module:
    """The CT rows' network (seeded: every child builds the same weights)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, classes, 1)
    ).eval()


def ct_volume(shape: tuple[int, int, int], path: Path) -> str:
    """A real case's FLAIR stretched to ``shape`` (trilinear), saved as float32 ``(1, *shape)`` .npy."""
    image, what = load_real_case()
    flair = torch.from_numpy(np.ascontiguousarray(image[:1]))[None]
    stretched = torch.nn.functional.interpolate(flair, size=shape, mode="trilinear", align_corners=False)
    np.save(path, stretched[0].numpy().astype(np.float32))
    return f"{what}, FLAIR stretched to {shape}"


def rss_gb() -> float:
    """Peak RSS of this process's own address space, GB: ``VmHWM``. (``ru_maxrss`` of a child started
    with fork/vfork + exec starts at the parent's RSS on Linux, so it would report the benchmark's
    parent; it is the fallback where /proc is absent.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def ct_child(contender: str, classes: int, volume_path: str, labels_path: str, budget: float | None) -> None:
    """Run one CT row in this (fresh) process; print one JSON line. MONAI is imported by its own child
    only: its import alone adds about 0.15 GB to a process's peak RSS."""
    from attnseg.config import PreprocessConfig
    from attnseg.inference.predict import InferenceSettings, LoadedModel, PredictOptions, predict_case
    from attnseg.transforms import normalize_zscore

    net = ct_network(classes)
    image = np.load(volume_path)
    before = rss_gb()
    plan = ""
    start = time.perf_counter()
    if contender == "ours":
        settings = InferenceSettings(3, 1, classes, CT_PATCH, PreprocessConfig(normalization="zscore"))
        options = PredictOptions(
            overlap=CT_OVERLAP, batch_size=CT_BATCH, crop_nonzero=False, max_memory_gb=budget
        )
        result = predict_case(LoadedModel(net, settings), image, (1.0, 1.0, 1.0), options)
        labels, plan = result.labels, result.plan or ""
    else:
        from monai.inferers import sliding_window_inference as monai_swi

        x = torch.from_numpy(normalize_zscore(image, nonzero=False))
        with torch.no_grad():
            logits = monai_swi(x[None], CT_PATCH, CT_BATCH, net, overlap=CT_OVERLAP, mode="gaussian")
        # argmax in slabs into uint8: a whole-volume int64 argmax would add 8 bytes/voxel to MONAI's peak
        labels = np.empty(logits.shape[2:], dtype=np.uint8)
        for i in range(0, labels.shape[0], 32):
            labels[i : i + 32] = logits[0, :, i : i + 32].argmax(0).numpy()
        del logits
    seconds = time.perf_counter() - start
    np.save(labels_path, labels)
    print(
        "CT-RESULT " + json.dumps({"seconds": seconds, "rss_gb": rss_gb(), "before_gb": before, "plan": plan})
    )


def fresh_child(args) -> None:
    """MONAI's ``end`` run in this fresh process (attnseg never imported); prints ``FRESH <median s>``."""
    from monai.inferers import sliding_window_inference as monai_swi
    from monai.networks.nets import AttentionUnet as MonaiAttentionUnet

    assert "attnseg" not in sys.modules
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    volume = torch.randn(*args.shape)
    net = MonaiAttentionUnet(
        3, args.shape[0], args.out_channels, tuple(args.features), (2,) * (len(args.features) - 1)
    ).eval()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.no_grad():
            patch = (args.patch,) * 3
            monai_swi(volume[None], patch, args.batch_size, net, overlap=args.overlap, mode="gaussian")
        times.append(time.perf_counter() - start)
    print(f"FRESH {statistics.median(times)}")


def available_gb() -> float:
    from attnseg.devices import available_memory_bytes

    available = available_memory_bytes()
    return available / 1e9 if available else float("inf")


def ct_rows(args, threads: int, matmul_gflops: float) -> list[tuple]:
    """Rows ``(name, monai, ours, note)`` where a time is seconds or a string saying why there is none."""
    from attnseg.inference import window_positions
    from inference_utilisation import forward_gflop

    rows = []
    shape = tuple(args.ct_shape)
    n_windows = len(list(itertools.product(*window_positions(shape, CT_PATCH, CT_OVERLAP))))
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        volume_path = Path(tmp) / "volume.npy"
        what = ct_volume(shape, volume_path)
        voxels = int(np.prod(shape))
        print(
            f"ct rows: {what}; network Conv3d(1,4,3)-ReLU-Conv3d(4,K,1), window {CT_PATCH}, overlap "
            f"{CT_OVERLAP}, {n_windows} windows, batch {CT_BATCH}, {threads} threads, one fresh process per "
            f"cell; ours' budget --max-memory-gb {args.ct_max_memory_gb}"
        )
        for classes in args.ct_classes:
            window_gflop = forward_gflop(ct_network(classes), torch.zeros(1, 1, *CT_PATCH))
            results: dict = {}
            for contender in ("monai", "ours"):
                need = (classes + 1) * voxels * 4 / 1e9  # MONAI: K x volume output + count map, float32
                free = available_gb()
                if contender == "monai" and need > 0.9 * free:
                    results[contender] = (
                        f"does not fit: its output + count buffers need {need:.1f} GB, {free:.1f} GB available"
                    )
                    continue
                labels_path = Path(tmp) / f"{contender}-{classes}.npy"
                command = [
                    sys.executable,
                    __file__,
                    "--ct-child",
                    contender,
                    "--ct-classes",
                    str(classes),
                    "--ct-volume",
                    str(volume_path),
                    "--ct-labels",
                    str(labels_path),
                    "--threads",
                    str(threads),
                ]
                if args.ct_max_memory_gb is not None:
                    command += ["--ct-max-memory-gb", str(args.ct_max_memory_gb)]
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.ct_timeout)
                lines = [line for line in done.stdout.splitlines() if line.startswith("CT-RESULT ")]
                if done.returncode != 0 or not lines:
                    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    results[contender] = f"failed (exit status {done.returncode}): {tail}"
                    continue
                results[contender] = json.loads(lines[0][len("CT-RESULT ") :])
                results[contender]["labels"] = labels_path
            notes = []
            for contender in ("monai", "ours"):
                r = results[contender]
                if isinstance(r, dict):
                    rate = n_windows * window_gflop / r["seconds"]
                    notes.append(
                        f"{contender}: peak RSS {r['rss_gb']:.2f} GB (volume loaded: {r['before_gb']:.2f} GB), "
                        f"{rate:.1f} GFLOP/s ({rate / matmul_gflops:.1%} of fp32 matmul)"
                    )
            if all(isinstance(r, dict) for r in results.values()):
                same = np.mean(np.load(results["monai"]["labels"]) == np.load(results["ours"]["labels"]))
                notes.append(f"label agreement ours vs MONAI {100 * same:.3f}%")
            if isinstance(results["ours"], dict) and results["ours"]["plan"]:
                notes.append(f"ours {results['ours']['plan']}")
            notes.append(f"window {window_gflop:.3f} GFLOP")
            cell = {c: (r["seconds"] if isinstance(r, dict) else r) for c, r in results.items()}
            name = f"CT {'x'.join(map(str, shape))}, K = {classes}"
            rows.append((name, cell["monai"], cell["ours"], "; ".join(notes)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4, 240, 240, 155], help="C X Y Z")
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--out-channels", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="windows per forward, both sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a (4, 128, 128, 96) random volume")
    parser.add_argument(
        "--rows",
        nargs="+",
        default=["overhead", "end", "case", "ct", "fresh"],
        choices=["overhead", "same", "end", "case", "ct", "fresh"],
    )
    parser.add_argument("--ct-shape", type=int, nargs=3, default=[512, 512, 400], help="the ct rows' volume")
    parser.add_argument("--ct-classes", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument(
        "--ct-max-memory-gb",
        type=float,
        default=None,
        help="ours' budget in the ct rows (default: the machine's)",
    )
    parser.add_argument("--ct-timeout", type=float, default=600, help="seconds one ct child may take")
    parser.add_argument("--ct-child", choices=["ours", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--fresh-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ct-volume", help=argparse.SUPPRESS)
    parser.add_argument("--ct-labels", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ct_child:
        torch.set_num_threads(args.threads)
        ct_child(args.ct_child, args.ct_classes[0], args.ct_volume, args.ct_labels, args.ct_max_memory_gb)
        return
    if args.quick:
        args.shape = [4, 128, 128, 96]
    if args.fresh_child:
        fresh_child(args)
        return
    from monai.inferers import sliding_window_inference as monai_swi
    from monai.networks.nets import AttentionUnet as MonaiAttentionUnet

    from attnseg.config import PreprocessConfig
    from attnseg.inference import sliding_window_inference, window_positions
    from attnseg.inference.predict import (
        InferenceSettings,
        LoadedModel,
        PredictOptions,
        nonzero_bbox,
        predict_case,
    )
    from attnseg.models import AttentionUNet
    from attnseg.transforms import normalize_zscore
    from inference_utilisation import forward_gflop, matmul_rates

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    channels = args.shape[0]
    volume = torch.randn(*args.shape)
    patch = (args.patch,) * 3
    bs, ov, k = args.batch_size, args.overlap, args.out_channels
    n_windows = len(list(itertools.product(*window_positions(args.shape[1:], patch, ov))))
    print(
        f"random volume {tuple(args.shape)} ({n_windows} windows), window {patch}, overlap {ov}, gaussian, "
        f"batch {bs}, {args.threads} threads, median of {args.repeats}, torch {torch.__version__}"
    )
    ours_net = AttentionUNet(3, channels, k, tuple(args.features)).eval()
    monai_net = MonaiAttentionUnet(
        3, channels, k, tuple(args.features), (2,) * (len(args.features) - 1)
    ).eval()
    n_params = (sum(p.numel() for p in monai_net.parameters()), sum(p.numel() for p in ours_net.parameters()))
    print(f"parameters: MONAI AttentionUnet {n_params[0]:,}, attnseg AttentionUNet {n_params[1]:,}")
    rows = []
    networked = {"same", "end", "case"} & set(args.rows)
    if networked or "ct" in args.rows:
        peak32, peak16 = matmul_rates()
        print(f"matmul 4096^2 ({args.threads} threads): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    if networked:
        one = torch.zeros(1, channels, *patch)
        g_ours, g_monai = forward_gflop(ours_net, one), forward_gflop(monai_net, one)
        print(f"one window: ours {g_ours:.1f} GFLOP, MONAI {g_monai:.1f} GFLOP")

    def utilisation(work_monai: float, t_monai: float, work_ours: float, t_ours: float, bf16=False) -> str:
        """Achieved GFLOP/s (GFLOP done / seconds) as a share of the matmul rate."""
        peak = peak16 if bf16 else peak32
        a, b = work_monai / t_monai, work_ours / t_ours
        return (
            f"GFLOP/s MONAI {a:.0f} ({a / peak32:.0%} of fp32 matmul), ours {b:.0f} "
            f"({b / peak:.0%} of {'bf16' if bf16 else 'fp32'} matmul)"
        )

    def monai_run(net, x=volume):
        with torch.no_grad():
            return monai_swi(x[None], patch, bs, net, overlap=ov, mode="gaussian")[0]

    def ours_run(net, x=volume, **kw):
        return sliding_window_inference(x, net, patch, ov, bs, "gaussian", **kw)

    if "overhead" in args.rows:

        def cheap(batch):  # elementwise: a 1x1x1 Conv3d is not free on CPU (oneDNN reorders)
            return batch[:, :k] * 2.0 + 1.0

        r = side_by_side({"monai": lambda: monai_run(cheap), "ours": lambda: ours_run(cheap)}, args.repeats)
        rows.append(("overhead, elementwise predictor", r["monai"][0], r["ours"][0], ""))

    if "same" in args.rows:
        r = side_by_side(
            {"monai": lambda: monai_run(ours_net), "ours": lambda: ours_run(ours_net)}, args.repeats
        )
        note = "MONAI's vs our window placement: " + agreement(r["monai"][1], r["ours"][1])
        note += "; " + utilisation(n_windows * g_ours, r["monai"][0], n_windows * g_ours, r["ours"][0])
        rows.append(("same model (ours), float32", r["monai"][0], r["ours"][0], note))

    if "end" in args.rows:
        r = side_by_side(
            {
                "monai": lambda: monai_run(monai_net),
                "fp32": lambda: ours_run(ours_net),
                "bf16": lambda: ours_run(ours_net, autocast=True),
            },
            args.repeats,
        )
        work = (n_windows * g_monai, r["monai"][0], n_windows * g_ours)
        rows.append(
            ("random volume: ours float32", r["monai"][0], r["fp32"][0], utilisation(*work, r["fp32"][0]))
        )
        note = "bf16 vs float32: " + agreement(r["fp32"][1], r["bf16"][1])
        note += "; " + utilisation(*work, r["bf16"][0], bf16=True)
        rows.append(("random volume: ours bf16", r["monai"][0], r["bf16"][0], note))

    if "case" in args.rows:
        image, what = load_real_case()
        normalised = torch.from_numpy(normalize_zscore(image))
        box = nonzero_bbox(image)
        n_box = len(list(itertools.product(*window_positions([s.stop - s.start for s in box], patch, ov))))
        n_full = len(list(itertools.product(*window_positions(image.shape[1:], patch, ov))))
        print(
            f"case row: {what}, brain box {[(s.start, s.stop) for s in box]}: {n_box} windows inside the box, "
            f"{n_full} over the whole volume"
        )
        settings = InferenceSettings(3, channels, k, patch, PreprocessConfig())  # classes 0..k-1
        loaded = LoadedModel(ours_net, settings)

        def ours_case(autocast):
            options = PredictOptions(overlap=ov, batch_size=bs, autocast=autocast)
            return predict_case(
                loaded, image, (1.0, 1.0, 1.0), options, with_probabilities=True
            ).probabilities

        r = side_by_side(
            {
                "monai": lambda: monai_run(monai_net, normalised),
                "fp32": lambda: ours_case(False),
                "bf16": lambda: ours_case(True),
            },
            args.repeats,
        )
        work = (n_full * g_monai, r["monai"][0], n_box * g_ours)
        rows.append(
            ("real case: ours float32 + box", r["monai"][0], r["fp32"][0], utilisation(*work, r["fp32"][0]))
        )
        note = "bf16 vs float32 (probabilities): " + agreement(r["fp32"][1], r["bf16"][1])
        note += "; " + utilisation(*work, r["bf16"][0], bf16=True)
        rows.append(("real case: ours bf16 + box", r["monai"][0], r["bf16"][0], note))

    if "ct" in args.rows:
        rows += ct_rows(args, args.threads, peak32)

    if "fresh" in args.rows:
        command = [sys.executable, __file__, "--fresh-child", "--repeats", str(args.repeats)]
        command += [
            "--threads",
            str(args.threads),
            "--shape",
            *map(str, args.shape),
            "--patch",
            str(args.patch),
        ]
        command += ["--overlap", str(args.overlap), "--features", *map(str, args.features)]
        command += ["--out-channels", str(k), "--batch-size", str(bs)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("FRESH "))
        seconds = float(line.split()[1])
        rows.append(("MONAI alone, fresh process", seconds, "not run", "the same MONAI run as the end row"))

    print(f"\n{'row':<34} {'MONAI s':>9} {'ours s':>9} {'speed-up':>9}  quality, memory, utilisation")
    for name, t_monai, t_ours, note in rows:
        timed = isinstance(t_monai, float) and isinstance(t_ours, float)
        cells = [f"{t:9.2f}" if isinstance(t, float) else f"{'-':>9}" for t in (t_monai, t_ours)]
        ratio = f"{t_monai / t_ours:8.2f}x" if timed else f"{'-':>9}"
        why = "; ".join(
            f"{who}: {t}" for who, t in (("MONAI", t_monai), ("ours", t_ours)) if isinstance(t, str)
        )
        print(f"{name:<34} {cells[0]} {cells[1]} {ratio}  " + "; ".join(x for x in (why, note) if x))


if __name__ == "__main__":
    main()
