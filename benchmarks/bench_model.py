"""Training step and inference: attnseg's AttentionUNet vs MONAI's AttentionUnet, in one process.

    pip install -e ".[bench]"
    python benchmarks/bench_model.py                      # 64^3 and 96^3 train steps, 128^3 inference
    python benchmarks/bench_model.py --sizes 64 --repeats 3 --no-memory   # quick look

Both models have widths (16, 32, 64, 128), 4 -> 3 channels, batch 2, Adam, cross-entropy. MONAI's
model runs as its users run it (fp32, default memory layout). Steps alternate between the models so
that machine noise hits both alike; medians are printed with their ratio. Peak memory is measured
in a fresh subprocess per variant (VmHWM minus the RSS before the first step). The script also prints
the GFLOP of one step (torch.utils.flop_counter) and the rate of a large matmul measured in the same
run, so utilisation can be read beside each ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

CHANNELS = (16, 32, 64, 128)


def build(variant: str):
    if variant.startswith("monai"):
        from monai.networks.nets import AttentionUnet

        return AttentionUnet(
            spatial_dims=3, in_channels=4, out_channels=3, channels=CHANNELS, strides=(2, 2, 2)
        )
    import attnseg.models.blocks as blocks
    from attnseg import AttentionUNet

    blocks.FUSED_NORM_ACT = "stock" not in variant  # "ours_stock": stock InstanceNorm + LeakyReLU modules
    gating = "decoder" if "decoder" in variant else "coarse"
    norm = "batch" if "bn" in variant else "instance"
    checkpointing = "ckpt" in variant  # activation checkpointing: memory for time
    return AttentionUNet(3, 4, 3, features=CHANNELS, gating=gating, norm=norm, checkpointing=checkpointing)


def is_bf16(variant: str) -> bool:
    return variant.endswith("bf16")


def make_step(variant: str, size: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build(variant)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(2, 4, size, size, size)
    y = torch.randint(0, 3, (2, size, size, size))
    bf16 = is_bf16(variant)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return model, step, x, y


def step_gflop(variant: str, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model, _, x, y = make_step(variant, size)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x).float(), y).backward()
    return counter.get_total_flops() / 1e9


def matmul_gflops(dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_child(variant: str, size: int, mode: str) -> None:
    """Run in a fresh process: print peak RSS growth (MiB) over two steps or one inference."""
    torch.set_num_threads(2)
    if mode == "train":
        _, step, _, _ = make_step(variant, size)
        base = rss_kib("VmRSS")
        step()
        step()
    else:
        model = build(variant).eval()
        x = torch.randn(1, 4, size, size, size)
        base = rss_kib("VmRSS")
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=is_bf16(variant)):
            model(x)
    print(json.dumps({"peak_mib": (rss_kib("VmHWM") - base) / 1024, "hwm_mib": rss_kib("VmHWM") / 1024}))


def measure_memory(variant: str, size: int, mode: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", variant, str(size), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def time_interleaved(steps: dict, repeats: int) -> dict[str, list[float]]:
    for step in steps.values():  # warm-up: oneDNN primitive creation, allocator
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--infer-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="monai,ours,ours_bf16")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--memory-child", nargs=3, metavar=("VARIANT", "SIZE", "MODE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.memory_child:
        variant, size, mode = args.memory_child
        memory_child(variant, int(size), mode)
        return

    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    cpu_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"torch {torch.__version__}, {args.threads} threads, CPU bf16 support: {cpu_bf16}")
    rate32, rate16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"4096^2 matmul: fp32 {rate32:.0f} GFLOP/s, bf16 {rate16:.0f} GFLOP/s")

    for size in args.sizes:
        print(f"\n== train step, batch 2, 4 -> 3 channels, {size}^3 patch, widths {CHANNELS}")
        flop = {v: step_gflop(v, size) for v in variants}
        steps = {v: make_step(v, size)[1] for v in variants}
        times = time_interleaved(steps, args.repeats)
        memory = {} if args.no_memory else {v: measure_memory(v, size, "train") for v in variants}
        ref = statistics.median(times[variants[0]])
        ref_mem = memory.get(variants[0])
        print(
            f"{'variant':<14}{'median s':>10}{'speed-up':>10}{'GFLOP':>8}{'GFLOP/s':>9}{'util':>7}{'peak MiB':>10}{'mem ratio':>10}"
        )
        for v in variants:
            med = statistics.median(times[v])
            rate = flop[v] / med
            peak = memory.get(v)
            util = rate / (rate16 if is_bf16(v) else rate32)
            print(
                f"{v:<14}{med:>10.3f}{ref / med:>10.2f}{flop[v]:>8.1f}{rate:>9.1f}{util:>7.0%}"
                + (f"{peak:>10.0f}{peak / ref_mem:>10.2f}" if peak is not None else "")
            )

    size = args.infer_size
    print(f"\n== inference, 1 x 4 x {size}^3, no grad")
    models = {v: build(v).eval() for v in variants}
    x = torch.randn(1, 4, size, size, size)

    def infer(v):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=is_bf16(v)):
                models[v](x)

        return run

    times = time_interleaved({v: infer(v) for v in variants}, max(3, args.repeats))
    memory = {} if args.no_memory else {v: measure_memory(v, size, "infer") for v in variants}
    ref = statistics.median(times[variants[0]])
    for v in variants:
        med = statistics.median(times[v])
        line = f"{v:<14}{med:>10.3f}{ref / med:>10.2f}"
        if memory:
            line += f"{memory[v]:>10.0f}{memory[v] / memory[variants[0]]:>10.2f}"
        print(line)
    print(f"\nload average {os.getloadavg()[0]:.1f} (other processes on this machine add noise)")


if __name__ == "__main__":
    main()
