"""Validation on whole volumes: sliding-window logits, then Dice per class or region (the scored
channels' masks come from the label scheme, ``LabelScheme.masks_from_logits``). Voxels of the
scheme's ignore label are in neither mask, as in ``attnseg evaluate``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from attnseg.datasets.label_scheme import LabelScheme
from attnseg.inference import sliding_window_inference
from attnseg.metrics import dice
from attnseg.training.amp import Precision
from attnseg.transforms.loader import PreparedCase


def predict_logits(
    model: nn.Module,
    image: np.ndarray,
    patch_size: Sequence[int],
    precision: Precision,
    overlap: float = 0.5,
    batch_size: int = 2,
) -> torch.Tensor:
    """Float32 logits ``(K, *spatial)`` on the CPU for one ``(C, *spatial)`` volume (eval mode)."""

    def predictor(x: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            return model(x).float()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return sliding_window_inference(
                torch.from_numpy(image),
                predictor,
                patch_size,
                overlap=overlap,
                batch_size=batch_size,
                mode="gaussian",
                device=precision.device,
            )
    finally:
        model.train(was_training)


def dice_per_channel(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Dice per channel of binary ``(M, *spatial)`` masks; 1.0 when both are empty."""
    return [float(dice(p, t)) for p, t in zip(pred, truth)]


def validate(
    model: nn.Module,
    cases: Sequence[PreparedCase],
    target: LabelScheme,
    patch_size: Sequence[int],
    precision: Precision,
    overlap: float = 0.5,
    batch_size: int = 2,
) -> dict:
    """Mean Dice per scored channel over ``cases``, their mean, and per-case values."""
    names = target.channel_names
    per_case = {}
    for case in cases:
        logits = predict_logits(model, case.image, patch_size, precision, overlap, batch_size)
        pred = target.masks_from_logits(logits)
        ignored = target.ignored(case.label)
        if ignored is not None:
            pred &= ~ignored
        per_case[case.case_id] = dice_per_channel(pred, target.masks_from_labels(case.label))
    table = np.asarray(list(per_case.values()), dtype=np.float64).reshape(len(per_case), len(names))
    per_channel = table.mean(0) if len(per_case) else np.full(len(names), np.nan)
    return {
        "dice": {n: float(v) for n, v in zip(names, per_channel)},
        "dice_mean": float(per_channel.mean()) if len(names) else float("nan"),
        "per_case": per_case,
    }
