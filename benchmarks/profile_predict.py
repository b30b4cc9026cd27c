"""Where ``predict_case``'s time goes on a real BraTS case: the network's forward timed apart from the
rest (box, z-score, blending, argmax, probabilities), and cProfile's top entries.

Setting: the first case of ``../shared/data/brats2018_flair_t1_wt`` (the phantom when absent),
attnseg's AttentionUNet 16-128 (untrained), 96^3 windows, overlap 0.5, batch 2, 2 threads,
probabilities kept (as ``bench_inference.py``'s ``case`` row)::

    cd benchmarks && python profile_predict.py          # float32
    cd benchmarks && python profile_predict.py --bf16   # bfloat16 autocast
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

import torch

from attnseg.config import PreprocessConfig
from attnseg.inference.predict import InferenceSettings, LoadedModel, PredictOptions, predict_case
from attnseg.models import AttentionUNet
from bench_inference import load_real_case


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.perf_counter()
    image, what = load_real_case()
    t_load = time.perf_counter() - start
    net = AttentionUNet(3, 4, 3, (16, 32, 64, 128)).eval()
    loaded = LoadedModel(net, InferenceSettings(3, 4, 3, (96, 96, 96), PreprocessConfig()))
    network_s = [0.0]
    forward = net.forward

    def timed(x):
        begin = time.perf_counter()
        y = forward(x)
        network_s[0] += time.perf_counter() - begin
        return y

    net.forward = timed
    options = PredictOptions(overlap=0.5, batch_size=2, autocast="--bf16" in sys.argv)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = predict_case(loaded, image, (1.0, 1.0, 1.0), options, with_probabilities=True)
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
