"""Dice + HD95 on real label maps: attnseg.metrics vs MONAI, same process, same masks, same values.

    python benchmarks/bench_metrics.py [--brats-cases 4] [--hippocampus 100] [--repeats 3]

Inputs (read in place from ../shared/data):
- BraTS 2018 seg maps (240 x 240 x 155, 1 mm): truth = WT/TC/ET region, prediction = the region
  eroded by one voxel, grown back at random on half of its border, plus 5 isolated false-positive
  voxels anywhere in the volume (they stretch the bounding box of the pair to the whole volume).
- MSD Task04 hippocampus label maps: truth = label 1 and label 2, prediction = a ragged dilation.

Both libraries get binary masks already in their preferred form (numpy bool for us, a float
(1, 1, *spatial) tensor for MONAI); the time is the median of ``--repeats`` calls of Dice + HD95
(``compute_dice`` + ``compute_hausdorff_distance(percentile=95)``). MONAI and torch use 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from attnseg.metrics import dice, hausdorff_distance

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def perturb(truth: np.ndarray, rng: np.random.Generator, strays: int) -> np.ndarray:
    pred = ndi.binary_erosion(truth) | (ndi.binary_dilation(truth) & (rng.random(truth.shape) > 0.5))
    if strays:
        idx = np.stack([rng.integers(0, n, strays) for n in truth.shape], axis=1)
        pred[tuple(idx.T)] = True
    return pred


def brats_pairs(n_cases: int, rng: np.random.Generator):
    import nibabel as nib

    root = DATA / "brats2018_flair_t1_wt"
    for case in sorted(p.name for p in root.iterdir() if p.is_dir())[:n_cases]:
        seg = np.asanyarray(nib.load(root / case / f"{case}_seg.nii.gz").dataobj)
        for name, values in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
            truth = np.isin(seg, values)
            yield f"{case} {name}", perturb(truth, rng, strays=5), truth, (1.0, 1.0, 1.0)


def hippocampus_pairs(n_pairs: int, rng: np.random.Generator):
    import nibabel as nib

    files = sorted((DATA / "Task04_Hippocampus" / "labelsTr").glob("hippocampus_*.nii.gz"))
    count = 0
    for path in files:
        label = np.asanyarray(nib.load(path).dataobj)
        for value in (1, 2):
            if count == n_pairs:
                return
            truth = label == value
            pred = ndi.binary_dilation(truth) & (rng.random(truth.shape) > 0.3) | truth & (
                rng.random(truth.shape) > 0.1
            )
            count += 1
            yield f"{path.name} {value}", pred, truth, (1.0, 1.0, 1.0)


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(pairs, repeats: int, monai_metrics) -> dict[str, float]:
    ours_total = monai_total = 0.0
    worst = 0.0
    n = 0
    for _name, pred, truth, spacing in pairs:
        p_t = torch.from_numpy(pred)[None, None].float()
        t_t = torch.from_numpy(truth)[None, None].float()

        def ours(pred=pred, truth=truth, spacing=spacing):
            return dice(pred, truth), hausdorff_distance(pred, truth, spacing, percentile=95)

        def monai(p_t=p_t, t_t=t_t, spacing=spacing):
            d = monai_metrics.compute_dice(p_t, t_t, include_background=True)
            h = monai_metrics.compute_hausdorff_distance(
                p_t, t_t, include_background=True, percentile=95, spacing=spacing
            )
            return float(d[0, 0]), float(h[0, 0])

        t_ours, v_ours = median_time(ours, repeats)
        t_monai, v_monai = median_time(monai, repeats)
        worst = max(worst, *(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(v_ours, v_monai)))
        ours_total += t_ours
        monai_total += t_monai
        n += 1
    return {"n": n, "ours_s": ours_total, "monai_s": monai_total, "worst_rel_diff": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brats-cases", type=int, default=4)
    parser.add_argument("--hippocampus", type=int, default=100, help="label pairs (2 per case)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import monai.metrics as monai_metrics
    except ImportError:
        print("MONAI is not installed (pip install monai): nothing to compare with", file=sys.stderr)
        return 1
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")  # MONAI deprecation chatter
    rng = np.random.default_rng(0)
    rows = []
    if (DATA / "brats2018_flair_t1_wt").is_dir() and args.brats_cases:
        res = run(list(brats_pairs(args.brats_cases, rng)), args.repeats, monai_metrics)
        rows.append(("BraTS 240x240x155 regions", res))
    if (DATA / "Task04_Hippocampus").is_dir() and args.hippocampus:
        res = run(list(hippocampus_pairs(args.hippocampus, rng)), args.repeats, monai_metrics)
        rows.append(("hippocampus label pairs", res))
    print(
        f"{'Dice + HD95':<28} {'pairs':>6} {'attnseg ms/pair':>16} {'MONAI ms/pair':>14} {'speed-up':>9} {'max rel diff':>13}"
    )
    for label, r in rows:
        ours_ms = 1000 * r["ours_s"] / r["n"]
        monai_ms = 1000 * r["monai_s"] / r["n"]
        print(
            f"{label:<28} {r['n']:>6} {ours_ms:>16.1f} {monai_ms:>14.1f} "
            f"{monai_ms / ours_ms:>8.1f}x {r['worst_rel_diff']:>13.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
