"""Training-patch augmentation, ours vs MONAI, in one process, one worker; and case loading cold vs cached.

Command (needs ``pip install -e ".[bench]"`` for MONAI):

    python benchmarks/bench_augment.py --rounds 8 --threads 1

Task: a 4 x 240 x 240 x 155 BraTS volume with its label (``../shared/data/brats2018_flair_t1_wt``;
an up-sampled phantom when that folder is absent) -> one 96^3 training patch with elastic
deformation + affine (rotation up to 15 deg, zoom 0.85-1.15) + gamma + a foreground-oversampled
crop (1 in 3 patches centred on foreground).

- **ours**: ``PatchSampler`` -- all spatial changes in one B-spline sampling grid over the patch,
  one ``grid_sample`` of the image and one of the label; class locations prepared once per case
  (as ``CaseStore`` caches them).
- **MONAI crop-first**: ``RandCropByPosNegLabeld`` (128^3, pos=1, neg=2, fg/bg indices precomputed
  once by ``FgBgToIndicesd`` as a CacheDataset user would) -> ``Rand3DElasticd`` on the 128^3 crop
  (sigma 5-8, magnitude 100-200: the margin gives the deformation support) -> ``RandAffined`` to
  96^3 -> ``RandAdjustContrastd``.
- **MONAI crop-first, one resample**: the same but the rotation/zoom passed to ``Rand3DElasticd``
  (``spatial_size=96``), so MONAI too resamples once -- its fastest form that we know of.
- **MONAI whole-volume**: ``Rand3DElasticd`` and ``RandAffined`` on the whole 240x240x155 volume,
  then ``RandCropByPosNegLabeld`` to 96^3 (indices recomputed: the label moved), then
  ``RandAdjustContrastd``.

Methods run interleaved, round by round, so that load from other processes on a shared machine
hits all of them alike; the table gives medians and ratios to ours. ``--threads`` sets torch's
intra-op threads for every method (DataLoader workers run with 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "brats2018_flair_t1_wt"


def load_volume():
    """Normalised image (4, 240, 240, 155) float32, label uint8, and where it came from."""
    from attnseg.transforms import normalize_zscore

    if DATA.is_dir():
        from attnseg.datasets import discover, load_case

        dataset = discover(DATA)
        case = dataset.cases[0]
        image, label, _ = load_case(case, dataset)
        return normalize_zscore(image), label.astype(np.uint8), f"{DATA.name}/{case.case_id}", dataset
    import torch.nn.functional as F

    from attnseg.phantom import make_case

    case = make_case(np.random.default_rng(0))
    image = F.interpolate(torch.from_numpy(case.image)[None], size=(240, 240, 155), mode="trilinear")[0]
    label = F.interpolate(
        torch.from_numpy(case.label)[None, None].float(), size=(240, 240, 155), mode="nearest"
    )
    return normalize_zscore(image.numpy()), label[0, 0].numpy().astype(np.uint8), "phantom up-sampled", None


def build_ours(label):
    from attnseg.config import AugmentConfig
    from attnseg.transforms import PatchSampler, class_locations

    cfg = AugmentConfig(
        fg_fraction=1 / 3,
        p_rotate=1.0,
        rotate_deg=15.0,
        p_zoom=1.0,
        zoom_range=(0.85, 1.15),
        p_elastic=1.0,
        p_flip=0.0,
        p_gamma=1.0,
        gamma_range=(0.7, 1.5),
        p_scale=0.0,
        p_shift=0.0,
        p_noise=0.0,
    )
    sampler = PatchSampler((96, 96, 96), cfg, classes=[0, 1, 2, 4])
    t = time.perf_counter()
    locations = class_locations(label, [1, 2, 4])
    return sampler, locations, time.perf_counter() - t


def build_monai(seed: int):
    from monai.transforms import (
        Compose,
        FgBgToIndicesd,
        Rand3DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandCropByPosNegLabeld,
    )

    keys = ["image", "label"]
    modes = ("bilinear", "nearest")
    rot = (np.deg2rad(15.0),) * 3
    scale = (0.15,) * 3
    elastic = {"sigma_range": (5, 8), "magnitude_range": (100, 200), "prob": 1.0, "padding_mode": "zeros"}
    gamma = RandAdjustContrastd(keys=["image"], prob=1.0, gamma=(0.7, 1.5))
    index = FgBgToIndicesd(keys="label")
    crop128 = RandCropByPosNegLabeld(
        keys=keys,
        label_key="label",
        spatial_size=(128,) * 3,
        pos=1,
        neg=2,
        num_samples=1,
        fg_indices_key="label_fg_indices",
        bg_indices_key="label_bg_indices",
    )
    crop_first = Compose(
        [
            crop128,
            Rand3DElasticd(keys=keys, mode=modes, **elastic),
            RandAffined(
                keys=keys,
                prob=1.0,
                rotate_range=rot,
                scale_range=scale,
                spatial_size=(96,) * 3,
                mode=modes,
                padding_mode="zeros",
            ),
            gamma,
        ]
    )
    crop_first_one = Compose(
        [
            RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=(128,) * 3,
                pos=1,
                neg=2,
                num_samples=1,
                fg_indices_key="label_fg_indices",
                bg_indices_key="label_bg_indices",
            ),
            Rand3DElasticd(
                keys=keys, mode=modes, spatial_size=(96,) * 3, rotate_range=rot, scale_range=scale, **elastic
            ),
            RandAdjustContrastd(keys=["image"], prob=1.0, gamma=(0.7, 1.5)),
        ]
    )
    whole = Compose(
        [
            Rand3DElasticd(keys=keys, mode=modes, **elastic),
            RandAffined(
                keys=keys, prob=1.0, rotate_range=rot, scale_range=scale, mode=modes, padding_mode="zeros"
            ),
            RandCropByPosNegLabeld(
                keys=keys, label_key="label", spatial_size=(96,) * 3, pos=1, neg=2, num_samples=1
            ),
            RandAdjustContrastd(keys=["image"], prob=1.0, gamma=(0.7, 1.5)),
        ]
    )
    for i, t in enumerate((crop_first, crop_first_one, whole)):
        t.set_random_state(seed + i)
    return index, crop_first, crop_first_one, whole


def time_loading(dataset, repeats: int) -> list[tuple[str, float]]:
    """Seconds to get one BraTS case ready for sampling: decode vs cached (memory, memory map)."""
    from attnseg.datasets import load_case
    from attnseg.transforms import CaseStore, VolumeCache

    case = dataset.cases[0]
    rows = []
    decode = []
    for _ in range(repeats):
        t = time.perf_counter()
        load_case(case, dataset)
        decode.append(time.perf_counter() - t)
    rows.append(("decode .nii.gz (nibabel, 5 files)", statistics.median(decode)))
    prepare = []
    for _ in range(repeats):
        store = CaseStore(dataset, cache=VolumeCache(None, memory_bytes=0))
        t = time.perf_counter()
        store.get(case.case_id)
        prepare.append(time.perf_counter() - t)
    rows.append(("cold: decode + z-score + class locations", statistics.median(prepare)))
    store = CaseStore(dataset)
    store.get(case.case_id)
    mem = []
    for _ in range(repeats):
        t = time.perf_counter()
        store.get(case.case_id)
        mem.append(time.perf_counter() - t)
    rows.append(("cached in memory", statistics.median(mem)))
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache" if (ROOT / ".cache").is_dir() else None) as tmp:
        store = CaseStore(dataset, cache=VolumeCache(tmp, mode="disk"))
        store.get(case.case_id)  # writes the .npy files
        disk = []
        for _ in range(repeats):
            fresh = CaseStore(dataset, cache=VolumeCache(tmp, mode="disk"))  # as a new run would
            t = time.perf_counter()
            prepared = fresh.get(case.case_id)
            float(prepared.image.sum())  # touch every page
            disk.append(time.perf_counter() - t)
        rows.append(("cached .npy memory map (page cache warm), all pages read", statistics.median(disk)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds; each times every method once")
    parser.add_argument("--ours-per-round", type=int, default=3, help="our patches per round (default 3)")
    parser.add_argument("--whole-rounds", type=int, default=3, help="rounds that include MONAI whole-volume")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-monai", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    image, label, source, dataset = load_volume()
    print(f"volume: {source}, image {image.shape} float32, label values {np.unique(label).tolist()}")
    sampler, locations, t_loc = build_ours(label)
    print(f"class locations (once per case, cached with the case): {t_loc:.2f} s")
    rng = np.random.default_rng(args.seed)
    ours = lambda: sampler(image, label, rng, locations=locations)  # noqa: E731
    methods = {"ours (one fused grid)": ours}
    if not args.skip_monai:
        try:
            import monai  # noqa: F401
        except ImportError:
            print("MONAI is not installed: pip install -e '.[bench]'", file=sys.stderr)
            return 1
        index, crop_first, crop_first_one, whole = build_monai(args.seed)
        data = {"image": torch.from_numpy(image), "label": torch.from_numpy(label[None].astype(np.float32))}
        t = time.perf_counter()
        indexed = index(dict(data))
        print(f"MONAI FgBgToIndicesd (once per case): {time.perf_counter() - t:.2f} s")
        methods["MONAI crop-first (crop 128 -> elastic -> affine 96)"] = lambda: crop_first(dict(indexed))
        methods["MONAI crop-first, affine inside Rand3DElasticd"] = lambda: crop_first_one(dict(indexed))
        methods["MONAI whole-volume (elastic, affine, then crop)"] = lambda: whole(dict(data))

    # check shapes once (and warm up)
    out = ours()
    assert out[0].shape == (4, 96, 96, 96) and out[1].shape == (96, 96, 96)
    for name, fn in methods.items():
        if "whole" not in name:
            fn()

    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.rounds):
        for name, fn in methods.items():
            if "whole" in name and r >= args.whole_rounds:
                continue
            n = args.ours_per_round if fn is ours else 1
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)

    base = statistics.median(times["ours (one fused grid)"])
    print(f"\n96^3 training patch from 4x240x240x155 + label, {args.threads} thread(s), one process")
    print(f"{'method':58s} {'n':>3s} {'median s':>9s} {'patches/s':>10s} {'x ours':>7s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:58s} {len(ts):3d} {med:9.3f} {1 / med:10.2f} {med / base:7.1f}")
    monai = {k: statistics.median(v) for k, v in times.items() if k.startswith("MONAI")}
    if monai:
        crop_first_name = "MONAI crop-first (crop 128 -> elastic -> affine 96)"
        whole_name = "MONAI whole-volume (elastic, affine, then crop)"
        faster = min(monai[crop_first_name], monai[whole_name])
        print(f"\nspeed-up vs MONAI's faster ordering (crop-first vs whole-volume): {faster / base:.1f}x")
        print(f"speed-up vs MONAI's fastest variant measured: {min(monai.values()) / base:.1f}x")

    if dataset is not None:
        print("\nloading one BraTS case ready for sampling (median of 3):")
        rows = time_loading(dataset, 3)
        cold = rows[1][1]
        for name, sec in rows:
            print(f"  {name:58s} {sec:8.3f} s  (cold / this: {cold / max(sec, 1e-9):.0f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
