"""attnseg: Attention U-Net for medical image segmentation.

The public API is re-exported here lazily (PEP 562), so ``import attnseg`` and the CLI start without
importing torch until a model, a loss or inference is actually used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # settings and errors
    "ModelConfig": "attnseg.config",
    "AttnsegError": "attnseg.errors",
    "ConfigError": "attnseg.errors",
    "DataError": "attnseg.errors",
    "ModelFileError": "attnseg.errors",
    # models
    "AttentionUNet": "attnseg.models",
    "UNet": "attnseg.models",
    "AttentionGate": "attnseg.models",
    "build_model": "attnseg.models",
    "load_model": "attnseg.models",
    "save_model": "attnseg.models",
    # files and datasets
    "load_image": "attnseg.io.nifti",
    "load_label": "attnseg.io.nifti",
    "save_image": "attnseg.io.nifti",
    "discover": "attnseg.datasets",
    "load_case": "attnseg.datasets",
    "LabelScheme": "attnseg.datasets",
    # metrics
    "dice": "attnseg.metrics",
    "hausdorff_distance": "attnseg.metrics",
    "evaluate_case": "attnseg.metrics",
    # inference
    "sliding_window_inference": "attnseg.inference",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attnseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
