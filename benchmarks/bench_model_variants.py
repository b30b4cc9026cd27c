"""Gating and norm variants of AttentionUNet: CPU time of one bf16 training step, single thread.

    python benchmarks/bench_model_variants.py [--size 48] [--repeats 3]

Single-thread CPU time (time.process_time) is used because it is far less sensitive than wall
time to other processes on a shared machine; the variants run interleaved and medians are printed.
Widths (16, 32, 64, 128), batch 2, 4 -> 3 channels, Adam, cross-entropy, bf16 autocast.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from attnseg import AttentionUNet


def make_step(size: int, gating: str, norm: str):
    torch.manual_seed(0)
    model = AttentionUNet(3, 4, 3, (16, 32, 64, 128), gating=gating, norm=norm)
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(2, 4, size, size, size)
    y = torch.randint(0, 3, (2, size, size, size))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = {
        f"{gating}/{norm}": make_step(args.size, gating, norm)
        for gating in ("coarse", "decoder")
        for norm in ("instance", "batch", "group")
    }
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.process_time()
            step()
            times[name].append(time.process_time() - start)
    ref = statistics.median(times["coarse/instance"])
    print(f"bf16 train step, {args.size}^3, single thread, CPU seconds (median of {args.repeats})")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<18}{med:>8.3f} s{med / ref:>8.2f}x of coarse/instance")


if __name__ == "__main__":
    main()
