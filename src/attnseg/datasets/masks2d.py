"""A 2D dataset's mask encoding: decided once from all its masks, cached on the dataset.

``mask_set_encoding(dataset)`` reads every 2D label file of the dataset once (value histograms
only), applies the rules of ``attnseg.io.mask_encoding`` and caches the result in
``dataset.info["mask_encoding"]``; ``load_case``, ``attnseg check``, training and figures read the
masks through it, so they all agree on what a stored value means. Declared labels (``labels=``,
``dataset.json``) take part: stored values that are all declared are read as they are.
"""

from __future__ import annotations

from attnseg.datasets.base import Dataset, spatial_dims_of
from attnseg.io.images2d import mask_set_encoding as _files_encoding
from attnseg.io.mask_encoding import MaskEncoding, MaskSetEncoding

CACHE_KEY = "mask_encoding"


def mask_set_encoding(dataset: Dataset) -> MaskSetEncoding | None:
    """The dataset's 2D mask encoding (computed on first use, then cached); None without 2D labels."""
    cached = dataset.info.get(CACHE_KEY)
    if cached is not None:
        return cached
    paths = [
        c.label
        for c in dataset.cases
        if c.label is not None and spatial_dims_of(c.label) == 2 and c.label.is_file()
    ]
    if not paths:
        return None
    declared = dataset.label_values if dataset.info.get("labels_declared") and dataset.labels else None
    encoding = _files_encoding(paths, declared)
    dataset.info[CACHE_KEY] = encoding
    return encoding


def mask_encoding_for(dataset: Dataset, path) -> MaskEncoding | None:
    """The encoding to read the 2D mask ``path`` of ``dataset`` with (None: the file's own rules)."""
    encoding = mask_set_encoding(dataset)
    return None if encoding is None else encoding.encoding_for(str(path))
