"""After the network: probabilities from logits, and connected-component rules on label maps or masks.

Logits become a label map in one place, the model's label scheme
(:meth:`attnseg.datasets.label_scheme.LabelScheme.decode`: argmax -> label values for classes,
``sigmoid > threshold`` painted back into one label map for regions).

Conventions:

- Probabilities: softmax over channels (classes) or sigmoid per channel (regions), float32.
- Connected components use full connectivity (26 in 3D, 8 in 2D) by default. Removed voxels become
  background (0) in a label map, or off in a mask. Class 0 (background) is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cc3d
import numpy as np
import torch

__all__ = [
    "component_sizes_and_ids",
    "keep_largest_component",
    "postprocess_components",
    "probabilities_from_logits",
    "remove_small_components",
    "rules_from_card",
]


def _tensor(logits: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(logits)
    return t if t.dtype == torch.float32 else t.float()


def probabilities_from_logits(logits: torch.Tensor | np.ndarray, activation: str = "softmax") -> np.ndarray:
    """``(K, *spatial)`` logits -> float32 probabilities: softmax over channels, or sigmoid per channel."""
    t = _tensor(logits)
    if activation == "softmax":
        return torch.softmax(t, dim=0).numpy()
    if activation == "sigmoid":
        return torch.sigmoid(t).numpy()
    raise ValueError(f"activation={activation!r}: pass 'softmax' or 'sigmoid'")


# --- connected components ---------------------------------------------------------------------------
def _connectivity(ndim: int, connectivity: int | None) -> int:
    if connectivity is None:
        return 26 if ndim == 3 else 8
    allowed = {3: (6, 18, 26), 2: (4, 8)}.get(ndim)
    if allowed is None:
        raise ValueError(f"connected components need a 2D or 3D array, got {ndim}D")
    if connectivity not in allowed:
        raise ValueError(f"connectivity={connectivity} for a {ndim}D array: pass one of {allowed}")
    return connectivity


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Component ids (0 = off) and the voxel count of each id."""
    ids = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity)
    return ids, np.bincount(ids.ravel())


def component_sizes_and_ids(
    mask: np.ndarray, connectivity: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a binary mask: ids ``(*spatial)`` (0 = off; numbered in C order of
    their first voxel) and the voxel count of each id (index 0: the off voxels)."""
    mask = np.asarray(mask)
    return _components(mask, _connectivity(mask.ndim, connectivity))


def rules_from_card(entry: Mapping | None) -> tuple[bool | list[int], dict[int, int]]:
    """A model card's ``postprocessing`` entry (``{"keep_largest": [targets], "min_component_vox":
    {"target": N}}``, see ``attnseg.models.card``) as ``postprocess_components`` arguments
    ``(keep_largest, min_voxels)``; ``(False, {})`` for None."""
    if not entry:
        return False, {}
    keep = [int(t) for t in entry.get("keep_largest") or ()]
    small = {int(t): int(n) for t, n in dict(entry.get("min_component_vox") or {}).items()}
    return (keep or False), small


def _classes(labels: np.ndarray, classes: Iterable[int] | None) -> list[int]:
    present = [int(v) for v in np.unique(labels) if v != 0]
    if classes is None:
        return present
    wanted = {int(c) for c in classes}
    return [c for c in present if c in wanted]


def keep_largest_component(
    labels: np.ndarray, classes: Iterable[int] | None = None, *, connectivity: int | None = None
) -> np.ndarray:
    """Per class (every non-zero value, or ``classes``), keep only its largest connected component.

    Works on a label map or a binary mask (class 1). Ties keep the component found first in
    C order. Returns a new array of the same dtype.
    """
    labels = np.asarray(labels)
    conn = _connectivity(labels.ndim, connectivity)
    out = labels.copy()
    for c in _classes(labels, classes):
        mask = labels == c
        ids, sizes = _components(mask, conn)
        if len(sizes) <= 2:  # background and at most one component
            continue
        keep = int(np.argmax(sizes[1:])) + 1
        out[mask & (ids != keep)] = 0
    return out


def remove_small_components(
    labels: np.ndarray,
    min_voxels: int | Mapping[int, int],
    classes: Iterable[int] | None = None,
    *,
    connectivity: int | None = None,
) -> np.ndarray:
    """Per class, remove connected components with fewer than ``min_voxels`` voxels.

    ``min_voxels`` is one threshold for every class or a mapping class -> threshold (classes not in
    the mapping are left alone). Returns a new array of the same dtype.
    """
    labels = np.asarray(labels)
    conn = _connectivity(labels.ndim, connectivity)
    out = labels.copy()
    for c in _classes(labels, classes):
        threshold = min_voxels.get(c, 0) if isinstance(min_voxels, Mapping) else min_voxels
        if threshold <= 1:
            continue
        ids, sizes = _components(labels == c, conn)
        small = sizes < threshold
        small[0] = False
        if small.any():
            out[small[ids]] = 0
    return out


def postprocess_components(
    labels_or_masks: np.ndarray,
    *,
    keep_largest: bool | Iterable[int] = False,
    min_voxels: int | Mapping[int, int] = 0,
    connectivity: int | None = None,
    channels_first: bool = False,
) -> np.ndarray:
    """Apply the component rules to a label map, or to each mask of ``(R, *spatial)`` masks.

    ``keep_largest``: ``True`` for every class, or the classes (label values; for masks, the
    1-based region numbers) to reduce to their largest component. ``min_voxels``: see
    :func:`remove_small_components` (applied first, so a small stray blob never wins "largest").
    """
    if channels_first:
        out = np.empty_like(labels_or_masks)
        for r, mask in enumerate(labels_or_masks):
            region = r + 1
            if isinstance(min_voxels, Mapping):
                mv: int | Mapping[int, int] = {1: min_voxels.get(region, 0)}
            else:
                mv = min_voxels
            if keep_largest is True or keep_largest is False:
                kl: bool | list[int] = keep_largest
            else:
                kl = region in {int(c) for c in keep_largest}
            out[r] = postprocess_components(
                np.asarray(mask).astype(np.uint8), keep_largest=kl, min_voxels=mv, connectivity=connectivity
            ).astype(labels_or_masks.dtype)
        return out
    out = np.asarray(labels_or_masks)
    if (isinstance(min_voxels, Mapping) and min_voxels) or (
        not isinstance(min_voxels, Mapping) and min_voxels > 1
    ):
        out = remove_small_components(out, min_voxels, connectivity=connectivity)
    if keep_largest is not False:
        out = keep_largest_component(
            out, None if keep_largest is True else keep_largest, connectivity=connectivity
        )
    return out
