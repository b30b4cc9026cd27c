"""BraTS label schemes and overlapping regions (WT/TC/ET), as pure functions on arrays.

Label values by scheme (``brats_scheme(year)``):

=========  ==================================================  ==============================
scheme     labels                                              regions
=========  ==================================================  ==============================
2015       1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing   WT {1,2,3,4}  TC {1,3,4}  ET {4}
(<=2016)
2017       1 NCR/NET, 2 ED (edema), 4 ET (enhancing)           WT {1,2,4}    TC {1,4}    ET {4}
(2017-22)
2023       1 NETC, 2 SNFH (edema), 3 ET (enhancing)            WT {1,2,3}    TC {1,3}    ET {3}
(>=2023)
msd        1 edema, 2 non-enhancing, 3 enhancing (Task01)      WT {1,2,3}    TC {2,3}    ET {3}
=========  ==================================================  ==============================

WT (whole tumour) is every tumour label; TC (tumour core) is WT minus edema; ET is the enhancing
label. Regions overlap (ET within TC within WT), so a model predicts them as independent sigmoid
channels. ``regions_to_labels`` goes back by painting regions from the largest to the smallest:
each voxel gets the label of the smallest region that contains it. Where a region's own part
holds more than one label (2015's TC minus ET is {1, 3}), the lowest value is used unless
``fill`` says otherwise (BraTS 2017 merged 3 into 1 for the same reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from attnseg.errors import ConfigError, DataError

BRATS_LABELS: dict[str, dict[str, int]] = {
    "2015": {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3, "enhancing": 4},
    "2017": {"background": 0, "NCR/NET": 1, "ED": 2, "ET": 4},
    "2023": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3},
    "msd": {"background": 0, "edema": 1, "non-enhancing": 2, "enhancing": 3},
}

BRATS_REGIONS: dict[str, dict[str, list[int]]] = {
    "2015": {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]},
    "2017": {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]},
    "2023": {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]},
    "msd": {"WT": [1, 2, 3], "TC": [2, 3], "ET": [3]},
}


def brats_scheme(year: int | str | None) -> str:
    """The label scheme of a BraTS edition: ``"2015"`` (up to 2016), ``"2017"`` (2017-2022), ``"2023"``.

    ``None`` means the 2017-2021 convention (the ``_flair/_seg`` file naming); ``"msd"`` and the
    scheme names themselves pass through.
    """
    if year is None:
        return "2017"
    if isinstance(year, str):
        key = year.lower().removeprefix("brats").strip("-_ ")
        if key in BRATS_REGIONS:
            return key
        if not key.isdigit():
            raise ConfigError(
                f"unknown BraTS scheme {year!r}; expected a year or one of {sorted(BRATS_REGIONS)}"
            )
        year = int(key)
    year = int(year)
    if year < 100:
        year += 2000
    if year <= 2016:
        return "2015"
    if year <= 2022:
        return "2017"
    return "2023"


def brats_labels(year: int | str | None) -> dict[str, int]:
    return dict(BRATS_LABELS[brats_scheme(year)])


def brats_regions(year: int | str | None, names: Sequence[str] | None = None) -> dict[str, list[int]]:
    """WT/TC/ET label sets for a BraTS edition; ``names`` picks a subset in the given order."""
    table = BRATS_REGIONS[brats_scheme(year)]
    if names is None:
        return {k: list(v) for k, v in table.items()}
    unknown = [n for n in names if n.upper() not in table]
    if unknown:
        raise ConfigError(f"unknown BraTS region(s) {unknown}; expected some of {list(table)}")
    return {n.upper(): list(table[n.upper()]) for n in names}


def _check_regions(regions: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    if not regions:
        raise ConfigError("regions: at least one region is needed")
    out = {}
    for name, values in regions.items():
        vals = [int(v) for v in values]
        if not vals:
            raise ConfigError(f"region {name!r} has no label values")
        if 0 in vals:
            raise ConfigError(f"region {name!r} contains background label 0")
        out[str(name)] = vals
    return out


def labels_to_regions(label: np.ndarray, regions: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Label map ``(*spatial)`` -> ``(R, *spatial)`` uint8, channel r = 1 where the label is in region r."""
    regions = _check_regions(regions)
    label = np.asarray(label)
    out = np.empty((len(regions), *label.shape), dtype=np.uint8)
    for r, values in enumerate(regions.values()):
        out[r] = np.isin(label, values)
    return out


def paint_order(
    regions: Mapping[str, Sequence[int]], fill: Mapping[str, int] | None = None
) -> list[tuple[str, int]]:
    """(region, label value) pairs in painting order: largest region first, then nested ones.

    A region's value is its "own" label: its set minus the labels of the regions painted after it
    that lie inside it (WT {1,2,4} minus TC {1,4} -> 2). Ties in size keep the given order.
    """
    regions = _check_regions(regions)
    fill = dict(fill or {})
    names = sorted(regions, key=lambda n: -len(regions[n]))  # stable: keeps given order on ties
    order = []
    for i, name in enumerate(names):
        own = set(regions[name])
        for later in names[i + 1 :]:
            if set(regions[later]) <= set(regions[name]):
                own -= set(regions[later])
        if name in fill:
            value = int(fill[name])
            if value not in regions[name]:
                raise ConfigError(
                    f"fill value {value} for region {name!r} is not one of its labels {regions[name]}"
                )
        elif own:
            value = min(own)
        else:
            continue  # fully covered by smaller regions: painting it would be overwritten anyway
        order.append((name, value))
    return order


def class_order_paint(
    regions: Mapping[str, Sequence[int]],
    names_in_file_order: Sequence[str],
    class_order: Sequence[int],
    where: str,
) -> list[tuple[str, int]]:
    """nnU-Net v2's ``regions_class_order`` -> (region, label value) pairs in painting order.

    nnU-Net paints region ``i`` (the ``i``-th non-background entry of dataset.json's ``labels``, in
    file order) with ``regions_class_order[i]``, in that order, later regions over earlier ones.
    ``names_in_file_order`` are those entries' names; each value must be one of its region's labels.
    """
    names = [n for n in names_in_file_order if n in regions]
    order = [int(v) for v in class_order]
    if len(order) != len(names):
        raise DataError(
            f"{where}: regions_class_order {order} has {len(order)} value(s) for {len(names)} region(s) {names}"
        )
    for name, value in zip(names, order):
        if value not in regions[name]:
            raise DataError(
                f"{where}: regions_class_order paints region {name!r} with {value}, which is not one of "
                f"its labels {list(regions[name])}"
            )
    return list(zip(names, order))


def regions_to_labels(
    region_maps: np.ndarray,
    regions: Mapping[str, Sequence[int]],
    *,
    threshold: float = 0.5,
    fill: Mapping[str, int] | None = None,
    order: Sequence[tuple[str, int]] | None = None,
) -> np.ndarray:
    """``(R, *spatial)`` region masks or probabilities -> label map ``(*spatial)`` uint8.

    Channels follow ``regions``' order. Float input is thresholded (``> threshold``); boolean or
    integer input is used as a mask. ``order``: explicit (region, value) painting order, later over
    earlier (a dataset's nnU-Net ``regions_class_order``, see ``class_order_paint``). Without it,
    attnseg's rule: regions are painted largest first, each with its own lowest label, so a voxel gets
    the label of the smallest region that claims it (an ET voxel outside TC still becomes ET).
    """
    regions = _check_regions(regions)
    maps = np.asarray(region_maps)
    if maps.shape[0] != len(regions):
        raise DataError(
            f"region maps have {maps.shape[0]} channels; {len(regions)} regions given ({list(regions)})"
        )
    masks = maps > threshold if maps.dtype.kind == "f" else maps.astype(bool)
    index = {name: r for r, name in enumerate(regions)}
    values = [v for vals in regions.values() for v in vals]
    out = np.zeros(maps.shape[1:], dtype=np.uint8 if max(values) <= 255 else np.int32)
    if order is not None:
        unknown = [name for name, _ in order if name not in index]
        if unknown:
            raise DataError(f"painting order names regions {unknown} that are not among {list(regions)}")
    for name, value in order if order is not None else paint_order(regions, fill):
        out[masks[index[name]]] = value
    return out


def labels_to_indices(label: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Label values -> contiguous class indices 0..K-1 (BraTS 2017: 0,1,2,4 -> 0,1,2,3).

    A value not in ``values`` raises DataError (it would silently become a wrong class).
    """
    values = np.asarray(sorted(int(v) for v in values))
    label = np.asarray(label)
    idx = np.searchsorted(values, label)
    idx_clipped = np.clip(idx, 0, len(values) - 1)
    bad = values[idx_clipped] != label
    if np.any(bad):
        extra = sorted(set(np.unique(label[bad]).tolist()))
        raise DataError(f"label values {extra} are not among the declared values {values.tolist()}")
    return idx_clipped.astype(np.uint8 if len(values) <= 256 else np.int32)


def indices_to_labels(indices: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """The way back from ``labels_to_indices``: class index k -> the k-th smallest label value."""
    table = np.asarray(sorted(int(v) for v in values))
    out = table[np.asarray(indices)]
    return out.astype(np.uint8) if table.max() <= 255 and table.min() >= 0 else out.astype(np.int32)
