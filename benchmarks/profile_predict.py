"""Where ``predict_case``'s time goes on a real BraTS case: the network's forward timed apart from the
rest (box, z-score, blending, argmax, probabilities), and cProfile's top entries.

Setting: the first case of ``../shared/data/brats2018_flair_t1_wt`` (the phantom when absent),
attnseg's AttentionUNet 16-128 (untrained), 96^3 windows, overlap 0.5, batch 2, 2 threads,
probabilities kept (as ``bench_inference.py``'s ``case`` row)::

    cd benchmarks && python profile_predict.py          # float32
    cd benchmarks && python profile_predict.py --bf16   # bfloat16 autocast
    cd benchmarks && python profile_predict.py --ct 64  # the CT-sized volume with K = 64 classes

``--ct K``: ``bench_inference.py``'s CT setting instead (a FLAIR stretched to 1 x 512 x 512 x 400, its
small ``Conv3d(1, 4, 3) -> ReLU -> Conv3d(4, K, 1)`` network, 64^3 windows, overlap 0.25, batch 2, no
crop, ``--max-memory-gb`` 2.5 by default, labels only), where the network is cheap and the rest shows.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnseg.config import PreprocessConfig
from attnseg.inference.predict import InferenceSettings, LoadedModel, PredictOptions, predict_case
from attnseg.models import AttentionUNet
from bench_inference import CT_BATCH, CT_OVERLAP, CT_PATCH, ct_network, ct_volume, load_real_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--ct", type=int, metavar="K", help="the CT-sized volume with K classes")
    parser.add_argument("--max-memory-gb", type=float, default=2.5, help="the budget of the --ct run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.perf_counter()
    if args.ct:
        with tempfile.TemporaryDirectory(prefix="profile-ct-") as tmp:
            what = ct_volume((512, 512, 400), Path(tmp) / "volume.npy")
            image = np.load(Path(tmp) / "volume.npy")
        net = ct_network(args.ct)
        settings = InferenceSettings(3, 1, args.ct, CT_PATCH, PreprocessConfig(normalization="zscore"))
        options = PredictOptions(
            overlap=CT_OVERLAP, batch_size=CT_BATCH, crop_nonzero=False, max_memory_gb=args.max_memory_gb
        )
        keep_probabilities = False
    else:
        image, what = load_real_case()
        net = AttentionUNet(3, 4, 3, (16, 32, 64, 128)).eval()
        settings = InferenceSettings(3, 4, 3, (96, 96, 96), PreprocessConfig())
        options = PredictOptions(overlap=0.5, batch_size=2, autocast=args.bf16)
        keep_probabilities = True
    t_load = time.perf_counter() - start
    loaded = LoadedModel(net, settings)
    network_s = [0.0]
    forward = net.forward

    def timed(x):
        begin = time.perf_counter()
        y = forward(x)
        network_s[0] += time.perf_counter() - begin
        return y

    net.forward = timed
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = predict_case(loaded, image, (1.0, 1.0, 1.0), options, with_probabilities=keep_probabilities)
    profiler.disable()
    total = time.perf_counter() - start
    print(
        f"{what}: load {t_load:.2f} s (not in predict_case); predict_case {total:.2f} s, network "
        f"{network_s[0]:.2f} s ({network_s[0] / total:.0%}), other {total - network_s[0]:.2f} s; {result.plan}"
    )
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
    print(out.getvalue())


if __name__ == "__main__":
    main()
