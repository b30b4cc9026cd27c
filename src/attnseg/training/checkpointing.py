"""Training checkpoints: the model file plus everything needed to continue exactly.

A checkpoint is a superset of ``attnseg.models.model_file``'s model file (so ``load_model`` reads it)
with ``run_config``, ``optimizer``, ``scaler``, ``schedule`` (a pure function of the iteration, so
only its name and the iteration are stored), ``epoch``/``iteration``, ``history``, ``best`` and
every RNG state (torch CPU and CUDA, numpy's global generator, Python's ``random``). Everything is
plain data or tensors, so ``torch.load(weights_only=True)`` loads it; writes are atomic (temp file +
rename), so a run killed mid-write leaves the previous checkpoint intact. The training data order
is not an RNG state: every patch is drawn from a generator seeded by ``(seed, epoch, position)``
(see ``attnseg.transforms.batch_plan``), so it needs nothing saved.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attnseg.errors import ModelFileError
from attnseg.models.model_file import read_model_file, save_model

CHECKPOINT_KEYS = ("run_config", "optimizer", "epoch", "iteration", "rng")


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    run_config: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    iteration: int,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a training checkpoint atomically (``epoch`` = epochs completed)."""
    payload = {
        "kind": "training_checkpoint",
        "run_config": run_config,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "schedule": {"name": run_config.get("optim", {}).get("schedule"), "iteration": iteration},
        "epoch": int(epoch),
        "iteration": int(iteration),
        "history": history,
        "best": best,
        "rng": rng_state(),
    }
    if extra:
        payload.update(extra)
    return save_model(path, model, payload)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``) and check it has what resuming needs."""
    payload = read_model_file(path)
    missing = [k for k in CHECKPOINT_KEYS if k not in payload]
    if missing:
        raise ModelFileError(
            f"{path}: a model file, not a training checkpoint (no {', '.join(missing)}); "
            "resume from RUN/checkpoints/last.pt"
        )
    return payload


def restore(
    payload: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    *,
    restore_rng: bool = True,
) -> None:
    """Load weights, optimizer and scaler state (and the RNG states) from a checkpoint payload."""
    module = model.module if hasattr(model, "module") else model
    module.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler") is not None:
        scaler.load_state_dict(payload["scaler"])
    if restore_rng:
        set_rng_state(payload["rng"])
