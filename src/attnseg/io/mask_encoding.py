"""How the values stored in 2D mask files encode classes: one decision per dataset, from value histograms.

A 2D mask file does not say how it encodes classes: 0/1, 0/255 or 0/65535 binary masks, class
indices, JPEG-compressed versions of either, or a binary mask resized with an interpolating filter
(anti-aliased edges). The decision is made once per **dataset**, on the value histogram of all its
masks pooled (``decide_set``), so that a multi-class file holding only class 2 is read as class 2,
not as a binary mask. A mask file read alone (``attnseg predict``/``evaluate`` on one file) gets the
same rules applied to its own histogram.

Rules (``classify``), in order, on a histogram (stored value -> pixels):

1. only 0: ``empty`` (background only).
2. a palette PNG: the palette indices are class indices (``indices``; one non-zero index is binary).
3. lossless, labels declared and every value declared: ``indices``, as stored.
4. lossless, values {0, v} for any single v > 0: ``binary``, v is foreground (1) whatever the bit
   depth: 0/1, 0/255 in 8 or 16 bit, 0/65535, 0/v.
5. lossless, two piles with a thin spread between them: ``smoothed``, a binary 0/v mask resized with
   an interpolating filter. The piles are 0 and v, the most frequent non-zero value; at least
   ``MIN_SPREAD_VALUES`` other values (between them, or beyond them where a bicubic or Lanczos
   filter overshoots in float or 32-bit data) each lie on fewer than ``THIN_FRACTION`` as many
   pixels as v and fewer than 0; and v >= ``SMOOTH_MIN_LEVEL`` or some value is fractional (so
   small class indices 0..15 are never taken for edges). A value >= v / 2 is foreground
   (threshold at half). One value between the piles is not enough when the values could be class
   indices (0/128/255 masks exist); it is for fractions and values above 255.
6. lossy (JPEG): ``lossy``; every value is read as the nearest *level* (a tie goes up), which
   rounds away ringing and chroma noise. A level is a value on at least ``LEVEL_FRACTION`` as many
   pixels as the most frequent non-zero value, and 0.

   * small values (all <= ``LOSSY_SMALL_MAX``) are rounded class indices: the levels are the
     values up to the largest such value, so overshoot above the top class is read as the top
     class (a 0/1 JPEG whose ringing left 2s and 3s is read as 0/1);
   * larger values are piles spread by ringing: the levels are the values that are also the most
     frequent within +-``LEVEL_WINDOW``, a pile within ``LEVEL_WINDOW`` of 0 being background (a
     0/255 JPEG is thresholded at 128).

   Levels {0, v} are a binary mask (v -> 1); more levels are class indices as stored.
7. lossless, whole numbers 0..255 with at most ``MAX_CLASS_VALUES`` non-zero values: ``indices``,
   as stored.
8. anything else: ``accident`` (e.g. 59 values: a mask resized with smoothing whose edges are not a
   thin spread, or an image saved as a mask). ``attnseg check`` fails on it, training refuses it;
   loading keeps the stored values when they are whole numbers in 0..255.

A declared label v keeps its value: levels {0, v} with v declared are read as v, not 1.

Mixed datasets (``decide_set``): every file is first classified alone. Files whose own top level
is >= 128 form one group per such level (0/255-style masks meant for viewing);
all other files form the class-index group; files that alone are ``accident`` belong to no group.
The largest group's pooled histogram sets the dataset's encoding; every non-empty file outside it
is a *misfit*: ``attnseg check`` names it, and it is decoded by its own rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from attnseg.errors import DataError

LEVEL_FRACTION = 0.05  # lossy: a level holds >= 5 % of the pixels of the most frequent non-zero value
THIN_FRACTION = 0.25  # smoothed: each edge value holds < 25 % of the pixels of the foreground pile
MIN_SPREAD_VALUES = 2  # smoothed: at least this many other values besides the two piles
SMOOTH_MIN_LEVEL = 16  # smoothed: the foreground pile is >= 16 (or the edge values are fractional)
MAX_CLASS_VALUES = 15  # class indices: at most 15 non-zero values, all whole numbers in 0..255
LOSSY_SMALL_MAX = 31  # lossy: values up to 31 are class indices with ringing (at most 15 classes + noise)
LEVEL_WINDOW = 32  # lossy, larger values: a level is the most frequent value within +-32
DISPLAY_LEVEL = 128  # a file whose main non-zero value is >= 128 is a 0/v mask for viewing

KINDS = ("empty", "binary", "smoothed", "lossy", "indices", "accident")


@dataclass(frozen=True)
class Histogram:
    """Stored value -> number of pixels, of one mask or of several pooled; ``values`` ascending."""

    values: np.ndarray
    counts: np.ndarray
    lossy: bool = False
    palette: bool = False

    @property
    def n_values(self) -> int:
        return int(self.values.size)

    @property
    def whole(self) -> bool:
        return bool(np.all(self.values == np.rint(self.values)))

    def count(self, value: float) -> int:
        hit = np.flatnonzero(self.values == value)
        return int(self.counts[hit[0]]) if hit.size else 0

    def top_nonzero(self) -> float | None:
        """The most frequent non-zero value (the smaller one on a tie), None when all are 0."""
        nz = self.values != 0
        if not nz.any():
            return None
        vals, counts = self.values[nz], self.counts[nz]
        return _num(vals[int(np.argmax(counts))])

    def span(self) -> str:
        return f"{_fmt(self.values[0])}..{_fmt(self.values[-1])}" if self.n_values else "none"


def _num(x) -> float | int:
    x = float(x)
    return int(x) if x == int(x) else x


def _fmt(x) -> str:
    return f"{_num(x):g}" if isinstance(_num(x), float) else str(_num(x))


def value_histogram(data: np.ndarray, *, lossy: bool = False, palette: bool = False) -> Histogram:
    """The histogram of a grey (H, W) mask array (whole-number floats become integers)."""
    data = np.asarray(data)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise DataError("mask has NaN or infinite values")
        if np.array_equal(data, np.rint(data)):
            data = data.astype(np.int64)
    if data.dtype in (np.uint8, np.uint16):
        counts = np.bincount(data.ravel())
        values = np.flatnonzero(counts)
        return Histogram(values.astype(np.int64), counts[values].astype(np.int64), lossy, palette)
    values, counts = np.unique(data, return_counts=True)
    values = values.astype(np.float64 if values.dtype.kind == "f" else np.int64)
    return Histogram(values, counts.astype(np.int64), lossy, palette)


def pool(histograms: Iterable[Histogram]) -> Histogram:
    """Sum of several histograms; lossy when any is, palette when all are."""
    hists = list(histograms)
    if not hists:
        return Histogram(np.zeros(0, np.int64), np.zeros(0, np.int64))
    values = np.concatenate([h.values for h in hists])
    counts = np.concatenate([h.counts for h in hists])
    if values.dtype.kind == "f" and np.array_equal(values, np.rint(values)):
        values = values.astype(np.int64)
    unique, inverse = np.unique(values, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=counts).astype(np.int64)
    return Histogram(unique, summed, any(h.lossy for h in hists), all(h.palette for h in hists))


@dataclass(frozen=True)
class MaskEncoding:
    """How stored values map to class indices.

    ``levels``: the stored values that are classes (ascending); ``outputs``: the class index each
    level is read as. ``nearest``: every value is read as its nearest level (smoothed, lossy);
    otherwise values are read as stored, levels renamed to their outputs.
    """

    kind: str
    levels: tuple[float, ...]
    outputs: tuple[int, ...]
    nearest: bool
    n_values: int
    span: str
    lossy: bool = False

    @property
    def classes(self) -> list[int]:
        return sorted(set(self.outputs))

    @property
    def foreground(self) -> bool:
        return any(o != 0 for o in self.outputs)

    def describe(self) -> str:
        """One phrase, e.g. "binary 0/255 (255 -> 1)"."""
        lv = "/".join(_fmt(v) for v in self.levels)
        fg = _fmt(self.levels[-1]) if self.levels else "?"
        if self.kind == "empty":
            return "background only (every value 0)"
        if self.kind == "binary":
            return f"binary {lv} ({fg} -> {self.outputs[-1]})"
        if self.kind == "smoothed":
            return (
                f"binary {lv} resized with smoothing ({self.n_values} values {self.span}): "
                f"thresholded at half, value >= {_fmt(self.levels[-1] / 2)} -> {self.outputs[-1]}"
            )
        if self.kind == "lossy":
            kind = "binary" if len(self.levels) <= 2 and self.outputs[-1] == 1 else "class indices"
            renamed = [f"{_fmt(v)} -> {o}" for v, o in zip(self.levels, self.outputs) if v != o]
            return (
                f"JPEG {kind} {lv} with compression noise ({self.n_values} values {self.span}): "
                f"each value read as the nearest of {lv}" + (f", {', '.join(renamed)}" if renamed else "")
            )
        if self.kind == "indices":
            return f"class indices {', '.join(_fmt(v) for v in self.levels)} as stored"
        return (
            f"{self.n_values} distinct values {self.span}: neither class indices (at most "
            f"{MAX_CLASS_VALUES} non-zero whole values in 0..255) nor a binary 0/v mask, resized "
            "with smoothing or an image saved as a mask?"
        )


def _encoding(kind, levels, outputs, nearest, hist: Histogram) -> MaskEncoding:
    return MaskEncoding(
        kind=kind,
        levels=tuple(_num(v) for v in levels),
        outputs=tuple(int(o) for o in outputs),
        nearest=nearest,
        n_values=hist.n_values,
        span=hist.span(),
        lossy=hist.lossy,
    )


def _binary_outputs(levels: Sequence[float], declared: set[int] | None) -> list[int]:
    """0 stays 0; the one non-zero level is 1, unless it is itself a declared label."""
    v = levels[-1]
    return [0 if x == 0 else (int(v) if declared and v in declared else 1) for x in levels]


def _smoothed(hist: Histogram) -> float | None:
    """The foreground pile v of a binary 0/v mask resized with smoothing, or None."""
    v, c0 = hist.top_nonzero(), hist.count(0)
    if v is None or v <= 0 or not c0:
        return None
    others = hist.counts[(hist.values != 0) & (hist.values != v)]
    indices_possible = hist.whole and hist.values.max() <= 255  # else one edge value is enough
    if others.size < (MIN_SPREAD_VALUES if indices_possible else 1):
        return None
    if not (np.all(others < THIN_FRACTION * hist.count(v)) and np.all(others < c0)):
        return None
    return v if (v >= SMOOTH_MIN_LEVEL or not hist.whole) else None


def _lossy_levels(hist: Histogram) -> np.ndarray:
    vals, counts = hist.values, hist.counts
    nz = vals != 0
    substantial = counts >= LEVEL_FRACTION * counts[nz].max()
    if vals.max() <= LOSSY_SMALL_MAX:  # rounded class indices: everything up to the top class
        top = vals[substantial & nz].max()
        return vals[vals <= top]
    peaks = [
        i
        for i in np.flatnonzero(substantial & (vals >= LEVEL_WINDOW))
        if counts[i] == counts[np.abs(vals - vals[i]) <= LEVEL_WINDOW].max()
    ]
    return np.unique(np.concatenate([[0], vals[peaks]])).astype(vals.dtype)


def classify(hist: Histogram, declared: Iterable[int] | None = None) -> MaskEncoding:
    """The encoding of a histogram (one file or a dataset pooled); the rules are in the module docstring.

    >>> classify(value_histogram(np.array([0, 0, 255, 255], np.uint16))).describe()
    'binary 0/255 (255 -> 1)'
    >>> classify(value_histogram(np.array([0] * 90 + [1] * 40 + [2]), lossy=True)).outputs
    (0, 1)
    """
    declared_set = {int(v) for v in declared} | {0} if declared else None
    vals = hist.values
    nz = vals != 0
    if not nz.any():
        return _encoding("empty", [0], [0], False, hist)
    nonzero = vals[nz]
    if hist.palette:
        if nonzero.size == 1:
            levels = [0, nonzero[0]]
            return _encoding("binary", levels, _binary_outputs(levels, declared_set), False, hist)
        return _encoding("indices", vals, vals, False, hist)
    if hist.lossy:
        levels = _lossy_levels(hist)
        lv_nonzero = levels[levels != 0]
        if lv_nonzero.size == 1:
            return _encoding("lossy", levels, _binary_outputs(list(levels), declared_set), True, hist)
        if lv_nonzero.size <= MAX_CLASS_VALUES and levels.max() <= 255 and np.all(levels == np.rint(levels)):
            return _encoding("lossy", levels, levels, True, hist)
        return _encoding("accident", vals, vals if hist.whole else [0] * vals.size, False, hist)
    if hist.whole and declared_set and set(vals.astype(int).tolist()) <= declared_set:
        return _encoding("indices", vals, vals, False, hist)
    if nonzero.size == 1 and hist.whole and nonzero[0] > 0:
        levels = [0, nonzero[0]]
        return _encoding("binary", levels, _binary_outputs(levels, declared_set), False, hist)
    pile = _smoothed(hist)
    if pile is not None:
        levels = [0, pile]
        return _encoding("smoothed", levels, _binary_outputs(levels, declared_set), True, hist)
    if hist.whole and vals.min() >= 0 and vals.max() <= 255 and nonzero.size <= MAX_CLASS_VALUES:
        return _encoding("indices", vals, vals, False, hist)
    return _encoding("accident", vals, vals if hist.whole else [0] * vals.size, False, hist)


def decode(data: np.ndarray, encoding: MaskEncoding, *, where: str = "mask") -> np.ndarray:
    """Stored (H, W) values -> uint8 class indices under ``encoding``.

    >>> jpeg = classify(value_histogram(np.array([0] * 90 + [1] * 40 + [2]), lossy=True))
    >>> decode(np.array([0, 1, 2, 3]), jpeg).tolist()  # ringing above the top class is read as it
    [0, 1, 1, 1]
    """
    data = np.asarray(data)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    levels = np.asarray(encoding.levels, dtype=np.float64)
    outputs = np.asarray(encoding.outputs, dtype=np.int64)
    if encoding.nearest and levels.size:
        middles = (levels[1:] + levels[:-1]) / 2
        return outputs[np.searchsorted(middles, data, side="right")].astype(np.uint8)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.rint(data)):
            raise DataError(
                f"{where}: mask has non-integer values, e.g. {np.unique(data[data != np.rint(data)])[:3].tolist()}"
                "; expected class indices or a binary mask"
            )
        data = data.astype(np.int64)
    for v, o in zip(encoding.levels, encoding.outputs):
        if v != o:  # binary 0/v: v -> 1 (v may be 65535)
            data = np.where(data == v, o, data)
    if data.size and (data.min() < 0 or data.max() > 255):
        raise DataError(
            f"{where}: mask values {data.min()}..{data.max()} are not class indices 0..255 "
            f"({encoding.describe()})"
        )
    return data.astype(np.uint8)


# --- a set of masks (a dataset) ---------------------------------------------------------------------
@dataclass(frozen=True)
class MaskSetEncoding:
    """The encoding of a set of mask files: one for the set, each misfit file with its own.

    ``encoding``: the dataset's; ``follows``: files read by it (empty files included);
    ``misfits``: file -> its own encoding, for the non-empty files that do not follow the dataset's.
    """

    encoding: MaskEncoding
    files: tuple[str, ...]
    follows: tuple[str, ...]
    misfits: dict[str, MaskEncoding] = field(default_factory=dict)
    own: dict[str, MaskEncoding] = field(default_factory=dict)

    def encoding_for(self, name: str) -> MaskEncoding:
        return self.misfits.get(str(name), self.encoding)

    @property
    def all_background(self) -> bool:
        return all(e.kind == "empty" for e in self.own.values())

    @property
    def accident(self) -> bool:
        return self.encoding.kind == "accident"

    def note(self) -> str | None:
        """A one-line note when the dataset's values are rounded or thresholded (said once)."""
        if self.encoding.kind in ("smoothed", "lossy"):
            note = f"{len(self.follows)} of {len(self.files)} masks are {self.encoding.describe()}"
            if self.encoding.kind == "lossy" and len([o for o in set(self.encoding.outputs) if o]) > 1:
                # JPEG blurs every edge: where class 2 meets class 0 the edge passes through 1
                note += (
                    "; WARNING: JPEG compression blurs the edges between classes, so class boundaries "
                    "(and thin structures) are approximate: keep class-index masks as PNG"
                )
            return note
        return None

    def file_problems(self) -> dict[str, str]:
        """File -> why it does not fit (the set's encoding is an accident, or the file is a misfit)."""
        out: dict[str, str] = {}
        n, k = len(self.files), len(self.follows)
        if self.accident:
            for name, own in self.own.items():
                if own.kind != "empty":
                    out[name] = (
                        f"{own.describe() if own.kind == 'accident' else f'{own.n_values} values {own.span}'}"
                        f"; the dataset's masks together hold {self.encoding.describe()}"
                    )
            return out
        for name, own in self.misfits.items():
            out[name] = (
                f"{own.describe()}; the dataset's masks are {self.encoding.describe()} ({k} of {n} files)"
                + ("" if own.kind == "accident" else ", so this file is read by its own rule")
            )
        return out


def _group_key(own: MaskEncoding, hist: Histogram) -> str | None:
    """By the file's own top level, not its most frequent value: a 0/255 JPEG of a small structure
    can hold more ringing values near 0 than pixels at 255, and is still a 0/255 mask."""
    if own.kind in ("empty", "accident"):
        return None
    top = max(own.levels)
    return f"display {_fmt(top)}" if top >= DISPLAY_LEVEL else "indices"


def decide_set(histograms: Mapping[str, Histogram], declared: Iterable[int] | None = None) -> MaskSetEncoding:
    """The dataset's encoding from every file's histogram (see "Mixed datasets" in the module docstring)."""
    declared = list(declared) if declared else None
    names = [str(n) for n in histograms]
    own = {str(n): classify(h, declared) for n, h in histograms.items()}
    groups: dict[str, list[str]] = {}
    for name, hist in zip(names, histograms.values()):
        key = _group_key(own[name], hist)
        if key is not None:
            groups.setdefault(key, []).append(name)
    if groups:
        key = sorted(groups, key=lambda k: (-len(groups[k]), k))[0]
        chosen = groups[key]
    else:  # every non-empty file is an accident alone (or all are empty): judge them together
        chosen = [n for n in names if own[n].kind != "empty"]
    by_name = {str(n): h for n, h in histograms.items()}
    encoding = classify(pool(by_name[n] for n in chosen), declared) if chosen else classify(pool([]))
    follows = [n for n in names if n in set(chosen) or own[n].kind == "empty"]
    misfits = {n: own[n] for n in names if n not in set(follows)}
    return MaskSetEncoding(encoding, tuple(names), tuple(follows), misfits, own)


__all__ = [
    "Histogram",
    "MaskEncoding",
    "MaskSetEncoding",
    "classify",
    "decide_set",
    "decode",
    "pool",
    "value_histogram",
]
