"""Sliding-window inference: attnseg vs MONAI ``sliding_window_inference``, side by side in one process.

Setting (issue 5): a ``(1, 4, 240, 240, 155)`` volume, ``96^3`` windows, overlap 0.5, gaussian blending,
networks at widths (16, 32, 64, 128), 3 output channels. Rows:

- ``overhead``: an elementwise predictor (almost free), so the time is the machinery itself (window extraction, weighting, accumulation), ours vs MONAI's.
- ``same model``: attnseg's AttentionUNet through MONAI's and through our sliding window (float32):
  the window machinery with a real network, same overlap, gaussian mode.
- ``end to end``: MONAI's ``AttentionUnet`` + MONAI's sliding window (float32, MONAI's defaults apart
  from overlap/mode/batch) vs attnseg's ``AttentionUNet`` + ours, float32 and under bfloat16 autocast
  (accumulation stays float32).

Every row reports the median of ``--repeats`` runs; the runs of a row alternate between the two sides
(this machine is shared and noisy). Quality is reported next to speed: the largest logit difference and
the argmax agreement of bf16 vs float32 (same weights), and ours vs MONAI's window placement.

Commands (quoted in the closing notes)::

    python benchmarks/bench_inference.py                      # the issue's setting, 2 threads
    python benchmarks/bench_inference.py --quick              # (4, 128, 128, 96) volume, for a short check
    python benchmarks/bench_inference.py --rows overhead same # only some rows
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


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


def agreement(a: torch.Tensor, b: torch.Tensor) -> str:
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    same = (a.argmax(0) == b.argmax(0)).float().mean().item()
    return f"max |diff| {diff:.2e} (of max |logit| {scale:.2e}), argmax agreement {100 * same:.3f}%"


def main() -> None:
    from monai.inferers import sliding_window_inference as monai_swi
    from monai.networks.nets import AttentionUnet as MonaiAttentionUnet

    from attnseg.inference import sliding_window_inference
    from attnseg.models import AttentionUNet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4, 240, 240, 155], help="C X Y Z")
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--out-channels", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="windows per forward, both sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a (4, 128, 128, 96) volume")
    parser.add_argument(
        "--rows", nargs="+", default=["overhead", "same", "end"], choices=["overhead", "same", "end"]
    )
    args = parser.parse_args()
    if args.quick:
        args.shape = [4, 128, 128, 96]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    channels = args.shape[0]
    volume = torch.randn(*args.shape)
    patch = (args.patch,) * 3
    bs, ov = args.batch_size, args.overlap
    print(
        f"volume {tuple(args.shape)}, window {patch}, overlap {ov}, gaussian, batch {bs}, "
        f"{args.threads} threads, median of {args.repeats}, torch {torch.__version__}"
    )
    rows = []

    def monai_run(net):
        with torch.no_grad():
            return monai_swi(volume[None], patch, bs, net, overlap=ov, mode="gaussian")[0]

    def ours_run(net, **kw):
        return sliding_window_inference(volume, net, patch, ov, bs, "gaussian", **kw)

    if "overhead" in args.rows:
        k = args.out_channels

        def cheap(batch):  # elementwise: a 1x1x1 Conv3d is not free on CPU (oneDNN reorders)
            return batch[:, :k] * 2.0 + 1.0

        r = side_by_side({"monai": lambda: monai_run(cheap), "ours": lambda: ours_run(cheap)}, args.repeats)
        rows.append(
            (
                "overhead (elementwise predictor)",
                r["monai"][0],
                r["ours"][0],
                agreement(r["monai"][1], r["ours"][1]),
            )
        )

    ours_net = AttentionUNet(3, channels, args.out_channels, tuple(args.features)).eval()
    if "same" in args.rows:
        r = side_by_side(
            {"monai": lambda: monai_run(ours_net), "ours": lambda: ours_run(ours_net)}, args.repeats
        )
        rows.append(
            ("same model, float32", r["monai"][0], r["ours"][0], agreement(r["monai"][1], r["ours"][1]))
        )

    if "end" in args.rows:
        monai_net = MonaiAttentionUnet(
            3, channels, args.out_channels, tuple(args.features), (2,) * (len(args.features) - 1)
        ).eval()
        r = side_by_side(
            {
                "monai": lambda: monai_run(monai_net),
                "fp32": lambda: ours_run(ours_net),
                "bf16": lambda: ours_run(ours_net, autocast=True),
            },
            args.repeats,
        )
        quality = "bf16 vs fp32: " + agreement(r["fp32"][1], r["bf16"][1])
        rows.append(("end to end, ours float32", r["monai"][0], r["fp32"][0], ""))
        rows.append(("end to end, ours bf16 autocast", r["monai"][0], r["bf16"][0], quality))
        n_params = (
            sum(p.numel() for p in monai_net.parameters()),
            sum(p.numel() for p in ours_net.parameters()),
        )
        print(f"parameters: MONAI AttentionUnet {n_params[0]:,}, attnseg AttentionUNet {n_params[1]:,}")

    print(f"\n{'row':<34} {'MONAI s':>9} {'ours s':>9} {'speed-up':>9}  quality")
    for name, t_monai, t_ours, note in rows:
        print(f"{name:<34} {t_monai:9.2f} {t_ours:9.2f} {t_monai / t_ours:8.2f}x  {note}")


if __name__ == "__main__":
    main()
