"""Mirror test-time augmentation on a model trained by ``benchmarks/train_hippocampus.py``.

Scores ``RUN/ours/model.pt`` on the run's 40 test cases (``RUN/split.json``) with its own sliding
windows (40x56x40, overlap 0.5, gaussian, bf16), once per mirror setting: none, axis 0 (left-right,
the axis the recipe flips in training) and all 2^3 axes (axis 1 runs anterior-posterior, so its
mirror swaps the two classes). Informational: it looks at the test cases after training.

    python benchmarks/hippocampus_tta.py work/hippo_bench/<run>
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_hippocampus as bench  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run folder of train_hippocampus.py")
    ap.add_argument("--data", type=Path, default=bench.DATA)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from attnseg.inference import sliding_window_inference
    from attnseg.metrics import evaluate_case
    from attnseg.models import load_model

    torch.set_num_threads(args.threads)
    split = json.loads((args.run / "split.json").read_text())
    raw = bench.load_raw(args.data, split["test"])
    model = load_model(args.run / "ours" / "model.pt").eval()
    patch = tuple(json.loads((args.run / "ours" / "derived.json").read_text())["patch_size"])
    for label, tta in (("no TTA", False), ("mirror axis 0", [0]), ("all 2^3 mirrors", True)):
        rows = []
        for case_id in split["test"]:
            image, truth, spacing = raw[case_id]
            logits = sliding_window_inference(
                bench.normalize_ours(image), model, patch, 0.5, 2, "gaussian", tta, autocast=True
            )
            pred = logits.argmax(0).numpy().astype(np.uint8)
            m = evaluate_case(pred, truth, spacing, classes=bench.CLASSES, lesions=False)
            rows.append([m[name]["dice"] for name in bench.CLASSES])
        dice = np.asarray(rows).mean(0)
        print(
            f"{label:<17} Dice anterior {dice[0]:.4f} posterior {dice[1]:.4f} mean {dice.mean():.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
