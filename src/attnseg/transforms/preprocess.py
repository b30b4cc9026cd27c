"""Per-case preprocessing, done once when a case is loaded: optional resampling to a target spacing,
a check that every voxel is finite, then per-channel normalisation.

Training (:class:`attnseg.transforms.loader.CaseStore`), prediction, export calibration and figures
all call :func:`preprocess`, so a model sees at inference exactly what it saw in training.

``PreprocessConfig.target_spacing_mm`` is one value per spatial axis, or one value for all axes
(isotropic, as MONAI's ``Spacing(pixdim=1.0)`` and TorchIO's ``Resample(1)`` read a single number):
``[1.0]`` on a 3D case means ``(1.0, 1.0, 1.0)`` mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attnseg.config import PreprocessConfig
from attnseg.errors import ConfigError, DataError
from attnseg.transforms.intensity import normalize_zscore
from attnseg.transforms.spatial import resample_to_spacing


def target_spacing(target_spacing_mm: Sequence[float], spatial_dims: int) -> tuple[float, ...]:
    """The target voxel size per axis for ``spatial_dims`` axes: one value is used for every axis.

    >>> target_spacing([1.5], 3)
    (1.5, 1.5, 1.5)
    >>> target_spacing([0.8, 0.8, 2.0], 3)
    (0.8, 0.8, 2.0)
    """
    target = tuple(float(s) for s in target_spacing_mm)
    if len(target) == 1:
        target = target * spatial_dims
    if len(target) != spatial_dims or any(not s > 0 for s in target):
        raise ConfigError(
            f"preprocess.target_spacing_mm={list(target_spacing_mm)}: pass one positive value (isotropic) "
            f"or {spatial_dims} (one per spatial axis)"
        )
    return target


def preprocess(
    image: np.ndarray,
    label: np.ndarray | None,
    spacing_mm: Sequence[float],
    config: PreprocessConfig,
    classes: Sequence[int] | None = None,
    case_id: str = "?",
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    """Resample (when ``config.target_spacing_mm`` is set), refuse NaN/inf, normalise per channel.

    ``image``: ``(C, *spatial)``; ``label``: ``(*spatial)`` or None, resampled per class over
    ``classes`` (default: the values present). Returns the image as contiguous float32, the label
    and the spacing after resampling (mm). ``case_id`` names the case in errors.
    """
    spacing = tuple(float(s) for s in spacing_mm)
    if config.target_spacing_mm is not None:
        try:
            target = target_spacing(config.target_spacing_mm, image.ndim - 1)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (case {case_id} has {image.ndim - 1} spatial axes)") from None
        image, _ = resample_to_spacing(image, spacing, target)
        if label is not None:
            label, _ = resample_to_spacing(label, spacing, target, is_label=True, classes=classes)
        spacing = target
    if not np.all(np.isfinite(image)):
        bad = int((~np.isfinite(image)).sum())
        raise DataError(f"case {case_id}: image has {bad} NaN/inf voxel(s); fix or drop the case")
    clip = tuple(config.clip_percentiles) if config.clip_percentiles else None
    if config.normalization == "zscore_nonzero":
        image = normalize_zscore(image, nonzero=True, clip=clip)
    elif config.normalization == "zscore":
        image = normalize_zscore(image, nonzero=False, clip=clip)
    elif config.normalization != "none":
        raise ConfigError(
            f"preprocess.normalization={config.normalization!r}; pass zscore_nonzero, zscore or none"
        )
    return np.ascontiguousarray(image, dtype=np.float32), label, spacing
