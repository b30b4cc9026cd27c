"""How much of the CPU the 96^3 inference window uses: GFLOP of one forward pass (batch of 2
windows, 4 channels, widths 16-128) for attnseg's AttentionUNet and MONAI's AttentionUnet, the
achieved GFLOP/s of each (fp32; ours also under bf16 autocast), and the rate of a large matmul (fp32
and bf16) in the same process: the ceiling that ``bench_inference.py``'s ratios sit under.

    python benchmarks/inference_utilisation.py
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2]


def forward_gflop(model, x) -> float:
    """GFLOP of one forward pass of ``model`` on ``x`` (torch's FLOP counter: convolutions, matmuls)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops()) / 1e9


def matmul_rates(n: int = 4096) -> tuple[float, float]:
    """GFLOP/s of a large ``n x n`` matmul, fp32 and bf16, with the threads torch has now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    peak32 = 2 * n**3 / median_time(lambda: a @ b) / 1e9
    a16, b16 = a.bfloat16(), b.bfloat16()
    return peak32, 2 * n**3 / median_time(lambda: a16 @ b16) / 1e9


def main() -> int:
    from monai.networks.nets import AttentionUnet

    from attnseg.models import AttentionUNet

    torch.set_num_threads(2)
    x = torch.randn(2, 4, 96, 96, 96)
    ours = AttentionUNet(3, 4, 3, features=(16, 32, 64, 128)).eval()
    monai = AttentionUnet(
        spatial_dims=3, in_channels=4, out_channels=3, channels=(16, 32, 64, 128), strides=(2, 2, 2)
    ).eval()

    peak32, peak16 = matmul_rates()
    f_ours, f_monai = forward_gflop(ours, x) * 1e9, forward_gflop(monai, x) * 1e9

    def ours_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours(x)

    with torch.no_grad():
        t_monai = median_time(lambda: monai(x))
        t_ours = median_time(lambda: ours(x))
        t_bf16 = median_time(ours_bf16)
    print(f"matmul 4096^2: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s (2 threads)")
    print(f"forward, 2 windows of 4x96^3: GFLOP ours {f_ours / 1e9:.1f}, MONAI {f_monai / 1e9:.1f}")
    for name, f, t, peak in (
        ("MONAI fp32", f_monai, t_monai, peak32),
        ("ours fp32", f_ours, t_ours, peak32),
        ("ours bf16", f_ours, t_bf16, peak16),
    ):
        rate = f / t / 1e9
        print(f"{name:<11} {t:6.2f} s  {rate:5.0f} GFLOP/s  = {rate / peak:.0%} of its matmul rate")
    print(f"speed-up vs MONAI: fp32 {t_monai / t_ours:.2f}x, bf16 {t_monai / t_bf16:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
