"""Which torch device ``auto`` means: a CUDA GPU, else Apple silicon's ``mps``, else the CPU.

One rule for training (``train.device=auto``) and prediction (``--device auto``). On ``mps``
attnseg runs in fp32 (autocast there is not tested) and uses no CUDA-only feature: no pinned memory,
no GradScaler (it is only enabled for fp16 on CUDA), and the fused AdamW kernel falls back to the
per-tensor loop where torch lacks it. Nothing has been run on a Mac yet: the choice and the guards
are tested with the availability monkeypatched. ``available_memory_bytes``: what the machine can
still give, the default memory budget of prediction.
"""

from __future__ import annotations

import os

import torch


def mps_available() -> bool:
    """True when this torch build has Apple's Metal backend and the machine offers it."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def auto_device_type() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"mps"`` on Apple silicon, else ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    if mps_available():
        return "mps"
    return "cpu"


def available_memory_bytes() -> int | None:
    """Memory the machine can still give this process: ``MemAvailable`` of ``/proc/meminfo`` (Linux),
    else the free physical pages; None when the system tells neither."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
