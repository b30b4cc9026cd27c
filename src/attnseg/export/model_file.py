"""A model file -> an ONNX file, fp32 or INT8: what ``attnseg export`` runs.

Kept apart from ``export.onnx`` (the fp32 graph) and ``export.quantize`` (INT8 from that graph) so
that neither of those imports the other's caller: quantize uses onnx, this module uses both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnseg.errors import ConfigError
from attnseg.export.onnx import DEFAULT_OPSET, check_parity, export_onnx
from attnseg.export.quantize import calibration_windows as make_windows
from attnseg.export.quantize import quantize_model
from attnseg.models.card import read_model_card
from attnseg.models.ensemble import ensemble_from_files, ensemble_members
from attnseg.models.model_file import model_from_payload, read_model_file


def export_model_file(
    model_path: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    int8: bool = False,
    calibration: str | Path | None = None,
    calibration_windows: int = 16,
    calibration_cases: int = 8,
    exporter: str = "auto",
    opset: int = DEFAULT_OPSET,
    fold: bool | None = None,
    quant_format: str = "qoperator",
    tolerance: float = 1e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Export a model file (``save_model``/training ``model.pt``) with its metadata; optionally INT8.

    An ensemble (a cross-validation folder, or several model files: ``models.ensemble``) becomes
    one ONNX file holding every member (``EnsembleModel``: the mean of their probabilities per
    window, output as log-probabilities or logits of the mean, which predict decodes as it does
    any model's logits); its metadata lists the members under ``ensemble``. fp32 only.

    ``calibration``: the dataset folder the model was trained on. Needed for ``int8``; for fp32 it
    adds a parity check on real windows (same tolerance as the random one). ``fold``: default on
    for INT8 (3D), off for fp32 (measured faster each way). Returns a summary for printing.
    """
    members = ensemble_members(model_path)
    if members is not None:
        if int8:
            raise ConfigError("--int8 of an ensemble is not supported; export it in float32 (drop --int8)")
        model, card = ensemble_from_files(members)
        ensemble = {
            "members": [str(p) for p in members],
            "activation": model.activation,
            "output": "log of the mean softmax"
            if model.activation == "softmax"
            else "logit of the mean sigmoid",
        }
        model_path = (
            str(model_path) if not isinstance(model_path, (list, tuple)) else ", ".join(map(str, model_path))
        )
    else:
        model_path = model_path[0] if isinstance(model_path, (list, tuple)) else model_path
        payload = read_model_file(model_path)
        card = read_model_card(payload, path=model_path)
        model = model_from_payload(payload, model_path).eval()
        ensemble = None
    # the whole card travels: `attnseg predict model.onnx` reads it back with read_model_card
    extra = {**card.to_dict(), "model_file_version": card.version}
    if ensemble is not None:  # one graph: every member on each window, their probabilities averaged
        extra["ensemble"] = ensemble
    patch = card.patch_size
    windows: list[np.ndarray] = []
    if calibration is not None:
        windows = make_windows(
            calibration,
            patch,
            n_windows=calibration_windows,
            max_cases=calibration_cases,
            preprocess=extra.get("preprocess"),
            seed=seed,
        )
    summary: dict[str, Any] = {
        "model": str(model_path),
        "out": str(out),
        "patch_size": list(patch),
        "defaulted": list(card.defaulted),  # card fields the model file did not record
    }
    if int8:
        if not windows:
            raise ConfigError("--int8 needs --calibration DATA: the dataset folder the model was trained on")
        report = quantize_model(
            model,
            out,
            windows,
            metadata=extra,
            fold=True if fold is None else fold,
            quant_format=quant_format,
            exporter=exporter,
        )
        summary.update(
            precision="int8",
            exporter=report.exporter,
            float_size_bytes=report.float_size_bytes,
            size_bytes=report.int8_size_bytes,
            integer_ops=report.integer_ops,
            float_convs=report.float_convs,
            max_abs_diff=report.max_abs_diff,
            argmax_agreement=report.argmax_agreement,
            calibration_windows=report.calibration_windows,
        )
        return summary
    report = export_onnx(
        model,
        out,
        example_size=patch,
        opset=opset,
        exporter=exporter,
        fold=bool(fold),
        metadata=extra,
        tolerance=tolerance,
        seed=seed,
    )
    summary.update(
        precision="float32",
        exporter=report.exporter,
        size_bytes=report.size_bytes,
        parity_random=str(report.parity),
    )
    if windows:
        real = torch.from_numpy(np.concatenate(windows[:2]))
        summary["parity_real"] = str(check_parity(model, out, real, tolerance=tolerance, what=str(out)))
    return summary


__all__ = ["export_model_file"]
