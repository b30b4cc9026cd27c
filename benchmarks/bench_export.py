"""Deployment speed: PyTorch fp32 / bf16 vs onnxruntime fp32 / INT8, one table, measured in one process.

Rows: PyTorch fp32 (the model as ``attnseg predict`` runs it), PyTorch bf16 (``--bf16``: autocast),
ONNX fp32 (``attnseg export``), ONNX INT8 (``attnseg export --int8``: depth-folded convolutions,
QOperator, uint8 activations, per-channel int8 weights, calibrated on windows of the other BraTS
cases). Columns: median time of one 96^3 window (4 -> 3 channels); a measured sliding-window
prediction (overlap 0.5, gaussian, batch 1) of the brain's bounding box of a real BraTS case,
which is what ``attnseg predict`` runs by default on z-score-in-brain data (outside the box is
background); the full 240x240x155 grid as 48 x the window time (the windows are the same work);
file size; Dice against the expert labels and against the fp32 prediction (mean over the
WT/TC/ET sigmoid channels, logit > 0) on that case, and against fp32 on one held-out window.
Timings are interleaved (method after method, repeated) so that load changes hit every row alike.

Without ``--model`` the network has random weights (seeded), or, with ``--train-steps N``, is fitted
for N steps on 48^3 patches of the other cases (WT/TC/ET, BCE) so that the masks compared are
tumour-like. With random weights "Dice vs fp32" compares near-random segmentations (logits near
ties) and is a pessimistic bound; a trained ``RUN/model.pt`` (4 -> 3) gives the number that matters.

Command (the numbers in docs/deployment.md):

    python benchmarks/bench_export.py --threads 2 --repeats 3 \
        --features 16,32,64,128 --whole 16,32,64,128 --train-steps 80
    python benchmarks/bench_export.py --threads 2 --repeats 2 --features 32,64,128,256 --calibration-size 64

``--whole`` lists the configurations that get the measured brain-box prediction (minutes each).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brats2018_flair_t1_wt"
PATCH = (96, 96, 96)


def _dice_regions(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over channels of two boolean ``(R, *spatial)`` masks (1.0 when both are empty)."""
    scores = []
    for x, y in zip(a, b):
        total = x.sum() + y.sum()
        scores.append(1.0 if total == 0 else 2.0 * float((x & y).sum()) / float(total))
    return float(np.mean(scores))


def _median_times(fns: dict, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up: allocations, onnxruntime's first-run planning, oneDNN kernels
        f()
    for _ in range(repeats):
        for name, f in fns.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


def quick_fit(model, dataset, case_ids, steps: int, patch=(48, 48, 48), seed: int = 0) -> float:
    """A few optimizer steps on WT/TC/ET (sigmoid, BCE) so that "Dice vs fp32" compares real masks."""
    import torch.nn.functional as F

    from attnseg.config import PreprocessConfig
    from attnseg.datasets import labels_to_regions, load_case
    from attnseg.export.quantize import _crop_or_pad, window_starts
    from attnseg.transforms.preprocess import preprocess

    cases = []
    for case in dataset.cases:
        if case.case_id in case_ids:
            image, label, meta = load_case(case, dataset)
            image, label, _ = preprocess(image, label, meta.spacing_mm, PreprocessConfig())
            regions = labels_to_regions(label, dataset.regions).astype(np.float32)
            cases.append((image, regions, label))
    rng = np.random.default_rng(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small patches: one thread is faster than two on a shared machine
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        image, regions, label = cases[step % len(cases)]
        start = window_starts(image.shape[1:], patch, rng, label, foreground=step % 3 != 2)
        x = torch.from_numpy(_crop_or_pad(image, start, patch)[None])
        y = torch.from_numpy(_crop_or_pad(regions, start, patch)[None])
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        loss_value = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    torch.set_num_threads(threads)
    return loss_value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", action="append", default=None, help="e.g. 16,32,64,128 (repeatable)")
    parser.add_argument("--model", default=None, help="a trained 4 -> 3 model file instead of random weights")
    parser.add_argument("--data", default=str(DATA), help="BraTS folder (4 cases)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--whole", action="append", default=[], help="features with a measured whole volume")
    parser.add_argument("--calibration-windows", type=int, default=10)
    parser.add_argument(
        "--calibration-size", type=int, default=96, help="calibration window edge (the INT8 graph is dynamic)"
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="fit the random network this many steps first (64^3 patches)",
    )
    args = parser.parse_args(argv)

    from attnseg.config import PreprocessConfig
    from attnseg.datasets import discover, labels_to_regions, load_case
    from attnseg.export import OnnxPredictor, export_onnx, quantize_model
    from attnseg.export.quantize import calibration_windows
    from attnseg.inference.predict import nonzero_bbox
    from attnseg.inference.sliding_window import sliding_window_inference, window_positions
    from attnseg.models import AttentionUNet, load_model
    from attnseg.transforms.preprocess import preprocess

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not data.is_dir():
        print(f"{data} is not present; pass --data", file=sys.stderr)
        return 1
    dataset = discover(data)
    case_ids = [c.case_id for c in dataset.cases]
    test_case = dataset.cases[-1]
    image, label, meta = load_case(test_case, dataset)
    image, label, _ = preprocess(image, label, meta.spacing_mm, PreprocessConfig())
    n_windows = int(np.prod([len(s) for s in window_positions(image.shape[1:], PATCH, 0.5)]))
    # what `attnseg predict` runs by default for zscore_nonzero data: the brain's bounding box
    box = nonzero_bbox(image)
    brain = np.ascontiguousarray(image[(slice(None), *box)])
    truth = labels_to_regions(label, dataset.regions).astype(bool)[(slice(None), *box)]
    n_brain = int(np.prod([len(s) for s in window_positions(brain.shape[1:], PATCH, 0.5)]))
    calib = calibration_windows(data, PATCH, n_windows=args.calibration_windows, case_ids=case_ids[:-1])
    window = torch.from_numpy(calib[-1])  # a real, held-out window (foreground or not)
    if args.calibration_size != PATCH[0]:
        size = (args.calibration_size,) * 3
        calib = calibration_windows(data, size, n_windows=args.calibration_windows, case_ids=case_ids[:-1])

    configs = args.features or ["16,32,64,128", "32,64,128,256"]
    print(
        f"# torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
        f"{args.threads} thread(s), {os.cpu_count()} CPU(s) visible; window {PATCH}; whole volume "
        f"{tuple(image.shape[1:])} = {n_windows} windows at overlap 0.5, its brain box "
        f"{tuple(brain.shape[1:])} = {n_brain} windows; case {test_case.case_id}; "
        f"calibration: {len(calib) - 2} windows of {', '.join(case_ids[:-1])}"
    )
    for spec in configs:
        features = tuple(int(f) for f in spec.split(","))
        torch.manual_seed(0)
        if args.model:
            model = load_model(args.model).eval()
            features = model.features
        else:
            model = AttentionUNet(3, 4, 3, features=features).eval()
            if args.train_steps:
                start = time.perf_counter()
                loss = quick_fit(model, dataset, case_ids[:-1], args.train_steps)
                print(
                    f"# fitted {features} for {args.train_steps} steps on {', '.join(case_ids[:-1])}: "
                    f"last BCE {loss:.3f}, {time.perf_counter() - start:.0f} s"
                )
        with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
            fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            extra = {"patch_size": list(PATCH)}
            export_onnx(model, fp32_path, example_size=PATCH, exporter="torchscript", metadata=extra)
            q = quantize_model(
                model, int8_path, calib, metadata=extra, exporter="torchscript", min_agreement=None
            )
            ort32 = OnnxPredictor(fp32_path, threads=args.threads)
            ort8 = OnnxPredictor(int8_path, threads=args.threads)

            def torch32(x, model=model):
                with torch.inference_mode():
                    return model(x)

            def torch16(x, model=model):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(x).float()

            methods = {
                "PyTorch fp32": (torch32, None),
                "PyTorch bf16": (torch16, None),
                "ONNX fp32": (ort32, fp32_path.stat().st_size),
                "ONNX INT8": (ort8, int8_path.stat().st_size),
            }
            window_s = _median_times(
                {k: (lambda f=f: f(window)) for k, (f, _) in methods.items()}, args.repeats
            )
            ref_window = torch32(window).numpy() > 0
            agree = {k: _dice_regions(ref_window, np.asarray(f(window)) > 0) for k, (f, _) in methods.items()}
            whole_s: dict[str, float] = {}
            vs_truth: dict[str, float] = {}
            dice: dict[str, float] = {}
            if spec in args.whole:
                masks = {}
                for name, (f, _) in methods.items():
                    start = time.perf_counter()
                    logits = sliding_window_inference(brain, f, PATCH, overlap=0.5, batch_size=1)
                    whole_s[name] = time.perf_counter() - start
                    masks[name] = logits.numpy() > 0
                dice = {k: _dice_regions(masks["PyTorch fp32"], m) for k, m in masks.items()}
                vs_truth = {k: _dice_regions(truth, m) for k, m in masks.items()}
        params = sum(p.numel() for p in model.parameters())
        base_w = window_s["PyTorch fp32"]
        print(
            f"\n## features {features} ({params / 1e6:.2f} M parameters"
            f"{', trained: ' + args.model if args.model else ''}"
            f"{', random weights' if not args.model and not args.train_steps else ''}"
            f"{f', fitted {args.train_steps} steps' if not args.model and args.train_steps else ''}); INT8: "
            f"{q.integer_ops} QLinearConv, {q.float_convs} float (ConvTranspose)\n"
        )
        print(
            f"| method | 96^3 window (s) | vs fp32 | brain box, {n_brain} windows (s) | vs fp32 | "
            f"240x240x155 = {n_windows} x window (s) | file (MB) | Dice vs truth (case) | Dice vs fp32 (case) | Dice vs fp32 (window) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, (_, size) in methods.items():
            if whole_s:
                whole = f"{whole_s[name]:.1f}"
                ratio = f"{whole_s['PyTorch fp32'] / whole_s[name]:.2f}x"
                d = f"{vs_truth[name]:.4f} | {dice[name]:.4f}"
            else:
                whole = "-"
                ratio = "-"
                d = "- | -"
            mb = f"{size / 1e6:.2f}" if size else f"{4 * params / 1e6:.2f} (weights)"
            print(
                f"| {name} | {window_s[name]:.2f} | {base_w / window_s[name]:.2f}x | {whole} | {ratio} | "
                f"{n_windows * window_s[name]:.0f} | {mb} | "
                f"{d} | {agree[name]:.4f} |"
            )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
