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

Every row reports the median of ``--repeats`` runs; the runs of a row alternate between the contenders
(this machine is shared and noisy). Quality is reported next to speed: largest logit difference and
argmax agreement of bf16 vs float32 (same weights, same windows). The networks are untrained (random
weights, near-tied logits), so these numbers bound the precision effect only; the box changes where
windows sit, which an untrained network with instance norm does not tolerate as a trained one does
(see the closing notes for Dice of a trained model with and without the box).

Commands (quoted in the closing notes)::

    python benchmarks/bench_inference.py                          # all rows, the issue's setting
    python benchmarks/bench_inference.py --rows case --repeats 1  # the real-case row only
    python benchmarks/bench_inference.py --quick                  # (4, 128, 128, 96) random volume
"""

from __future__ import annotations

import argparse
import itertools
import statistics
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


def main() -> None:
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
        default=["overhead", "end", "case"],
        choices=["overhead", "same", "end", "case"],
    )
    args = parser.parse_args()
    if args.quick:
        args.shape = [4, 128, 128, 96]
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
        rows.append(("random volume: ours float32", r["monai"][0], r["fp32"][0], ""))
        note = "bf16 vs float32: " + agreement(r["fp32"][1], r["bf16"][1])
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
        rows.append(("real case: ours float32 + box", r["monai"][0], r["fp32"][0], ""))
        note = "bf16 vs float32 (probabilities): " + agreement(r["fp32"][1], r["bf16"][1])
        rows.append(("real case: ours bf16 + box", r["monai"][0], r["bf16"][0], note))

    print(f"\n{'row':<34} {'MONAI s':>9} {'ours s':>9} {'speed-up':>9}  quality")
    for name, t_monai, t_ours, note in rows:
        print(f"{name:<34} {t_monai:9.2f} {t_ours:9.2f} {t_monai / t_ours:8.2f}x  {note}")


if __name__ == "__main__":
    main()
