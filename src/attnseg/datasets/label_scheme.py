"""What a network's output channels mean: label maps to targets (``encode``), logits to label maps
(``decode``). One frozen :class:`LabelScheme`, like nnU-Net's ``LabelManager``, serves training,
validation, prediction, figures, compare and quickstart, and travels in the model card
(``to_dict``/``from_dict``, under the card key ``"target"``).

Conventions:

- ``kind="labels"``: mutually exclusive classes, one softmax channel per label value. Channel ``k``
  is ``values[k]`` named ``names[k]``; ``values[0]`` is the background. Training targets are class
  indices; a label map comes back by argmax over the channels (ties go to the lower channel), then
  channel -> label value.
- ``kind="regions"``: overlapping regions (BraTS WT/TC/ET), one sigmoid channel per region. Channel
  ``r`` is the label set ``regions[r]`` named ``names[r]``; ``values`` lists every label value of the
  dataset (background 0 included). Training targets are ``(R, *spatial)`` binary masks; a region is
  on where ``sigmoid(logit) > threshold`` (``logit > log(t / (1 - t))``; 0.5 by default), and the
  regions are painted into one label map, later over earlier, in the scheme's ``painting`` order:

  * ``paint_order`` when the dataset declares one: nnU-Net v2's ``regions_class_order`` in its
    dataset.json paints the ``i``-th region (file order) with the ``i``-th listed value, in that
    order (``attnseg.datasets.regions.class_order_paint``);
  * otherwise attnseg's own rule (:data:`ATTNSEG_PAINT_RULE`, ``attnseg.datasets.regions.paint_order``).

- ``ignore_label``: one label value whose voxels are not annotated (sparse or partial annotations;
  nnU-Net v2's ``"ignore"`` entry in dataset.json, or ``data.ignore_label``). It is no class and no
  output channel; it must be the highest label value (nnU-Net's rule). ``encode`` gives those
  voxels :attr:`LabelScheme.ignore_index` (labels: ``K``, one past the last class index, as
  nnU-Net keeps it; regions: 255 in every channel), which the losses mask out
  (``attnseg.losses``, ``ignore_index``); foreground sampling never centres on them
  (``attnseg.transforms.sampling``) and the metrics leave them out (``attnseg.metrics.evaluate``,
  docs/metrics.md). This class is the one place that knows the value: every other module asks it.

Label maps are uint8 when every value fits in 0..255, else int32. Bad input is a ValueError that
says what to pass; ``from_labels`` (a dataset's declared labels and the run's ``data.target``)
raises ConfigError.

Example::

    >>> s = LabelScheme("regions", (0, 1, 2, 4), ("WT", "TC", "ET"), ((1, 2, 4), (1, 4), (4,)))
    >>> s.painting
    (('WT', 2), ('TC', 1), ('ET', 4))
    >>> s.decode(np.array([[-1.0, 1, 1], [-1, -1, 1], [-1, -1, 1]])).tolist()
    [0, 2, 4]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnseg.datasets.regions import paint_order as attnseg_paint_order
from attnseg.datasets.regions import regions_to_labels
from attnseg.errors import ConfigError, DataError

__all__ = ["ATTNSEG_PAINT_RULE", "IGNORE_NAME", "IGNORE_REGION_VALUE", "KINDS", "LabelScheme"]

KINDS = ("labels", "regions")
#: The label name that marks unannotated voxels in a dataset.json (nnU-Net v2's convention).
IGNORE_NAME = "ignore"
#: The target value of an ignored voxel in every channel of a regions target (uint8).
IGNORE_REGION_VALUE = 255
#: How regions become one label map when the dataset declares no order (said here, once).
ATTNSEG_PAINT_RULE = (
    "attnseg's rule: largest region first, each painted with its own lowest label, so a voxel gets "
    "the label of the smallest region that claims it"
)


def _as_array(logits: Any) -> np.ndarray:
    """A numpy float array of ``logits`` (numpy, or a CPU torch tensor)."""
    if hasattr(logits, "detach") and hasattr(logits, "cpu"):
        logits = logits.detach().cpu().numpy()
    arr = np.asarray(logits)
    return arr if arr.dtype.kind == "f" else arr.astype(np.float32)


@dataclass(frozen=True)
class LabelScheme:
    """The meaning of a model's output channels (see the module docstring for the conventions).

    ``paint_order``: regions only, (region, value) pairs painted in that order, later over earlier
    (a dataset's nnU-Net ``regions_class_order``); empty: :data:`ATTNSEG_PAINT_RULE`.
    ``ignore_label``: the label value of unannotated voxels (None: every voxel is annotated).
    """

    kind: str
    values: tuple[int, ...]
    names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...] = ()
    paint_order: tuple[tuple[str, int], ...] = ()
    ignore_label: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise lists and numpy ints once, here
        set_(self, "values", tuple(int(v) for v in self.values))
        set_(self, "names", tuple(str(n) for n in self.names))
        set_(self, "regions", tuple(tuple(int(v) for v in r) for r in self.regions))
        set_(self, "paint_order", tuple((str(n), int(v)) for n, v in self.paint_order))
        if self.ignore_label is not None:
            set_(self, "ignore_label", int(self.ignore_label))
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: pass 'labels' (softmax classes) or 'regions' (sigmoid)")
        if self.kind == "labels":
            self._check_labels()
        else:
            self._check_regions()
        self._check_ignore()

    def _check_ignore(self) -> None:
        if self.ignore_label is None:
            return
        every = {*self.values, *(v for r in self.regions for v in r)}
        if self.ignore_label <= max(every):
            raise ValueError(
                f"ignore label {self.ignore_label} must be the highest label value (nnU-Net's rule); the "
                f"classes use {sorted(every)}: give the unannotated voxels a value above {max(every)}"
            )

    def _check_labels(self) -> None:
        if not self.values:
            raise ValueError("a labels scheme needs its label values, background first, e.g. (0, 1)")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"label values {list(self.values)} repeat a value; give each class once")
        if len(self.names) != len(self.values):
            raise ValueError(
                f"{len(self.names)} class name(s) {list(self.names)} for {len(self.values)} label "
                f"value(s) {list(self.values)}; give one name per value"
            )
        if self.regions or self.paint_order:
            raise ValueError("a labels scheme has no regions and no paint_order; use kind='regions'")

    def _check_regions(self) -> None:
        if not self.regions or len(self.names) != len(self.regions):
            raise ValueError(
                f"regions {list(self.names)} with {len(self.regions)} label set(s); give one name "
                "per region, at least one region"
            )
        for name, vals in zip(self.names, self.regions):
            if not vals or 0 in vals:
                raise ValueError(
                    f"region {name!r} has label values {list(vals)}; give non-zero values (0 is background)"
                )
        unknown = [n for n, _ in self.paint_order if n not in self.names]
        if unknown:
            raise ValueError(
                f"paint_order names regions {unknown} the scheme does not have ({list(self.names)})"
            )

    # --- building ---------------------------------------------------------------------------------------
    @classmethod
    def from_labels(
        cls,
        labels: Mapping[str, int],
        regions: Mapping[str, Sequence[int]] | None = None,
        *,
        kind: str = "auto",
        paint_order: Sequence[Sequence] | None = None,
        ignore_label: int | None = None,
    ) -> LabelScheme:
        """A dataset's declared ``labels`` (name -> value, background included) and ``regions``
        (name -> values), as ``kind`` (``data.target``: auto, labels or regions; auto = regions when
        the dataset declares them). ``paint_order``: the dataset's (region, value) painting order.
        ``ignore_label``: ``data.ignore_label``; a label named :data:`IGNORE_NAME` declares it too
        (both: they must agree). Its value is taken out of the classes, whatever its name.

        Example: ``LabelScheme.from_labels({"background": 0, "tumour": 1}).values == (0, 1)``;
        ``LabelScheme.from_labels({"background": 0, "tumour": 1, "ignore": 2}).ignore_label == 2``.
        """
        if kind not in ("auto", *KINDS):
            raise ConfigError(f"data.target={kind!r}; pass auto, labels or regions")
        ignore_label = cls.declared_ignore_label(labels, ignore_label)
        if ignore_label is not None:
            labels = {n: v for n, v in labels.items() if int(v) != ignore_label}
            try:
                scheme = cls.from_labels(labels, regions, kind=kind, paint_order=paint_order)
                return dataclasses.replace(scheme, ignore_label=ignore_label)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if kind == "auto":
            kind = "regions" if regions else "labels"
        by_value = sorted(labels.items(), key=lambda kv: kv[1])
        values = tuple(int(v) for _, v in by_value)
        if not values:
            raise ConfigError(
                "the dataset declares no labels; pass them (e.g. labels={background: 0, tumour: 1})"
            )
        if kind == "regions":
            if not regions:
                raise ConfigError("data.target=regions but the dataset declares no regions")
            return cls("regions", values, tuple(regions), tuple(regions.values()), tuple(paint_order or ()))
        if len(values) < 2:
            raise ConfigError(
                f"only one label declared ({labels}); segmentation needs background and a class"
            )
        return cls("labels", values, tuple(str(n) for n, _ in by_value))

    @staticmethod
    def declared_ignore_label(labels: Mapping[str, int], ignore_label: int | None = None) -> int | None:
        """The ignore label of declared ``labels`` (the value named :data:`IGNORE_NAME`) and of the
        setting ``ignore_label`` (``data.ignore_label``), None when neither gives one. Declared
        labels with an ignore label above it are fine; two different values raise ConfigError, and so
        does an ignore label that is not the highest declared value (nnU-Net's rule)."""
        declared = labels.get(IGNORE_NAME)
        if declared is not None and ignore_label is not None and int(declared) != int(ignore_label):
            raise ConfigError(
                f"data.ignore_label={ignore_label} but the dataset declares {IGNORE_NAME!r} = {declared}; "
                "drop the setting or make them agree"
            )
        value = ignore_label if ignore_label is not None else declared
        if value is None:
            return None
        value = int(value)
        above = sorted(int(v) for n, v in labels.items() if n != IGNORE_NAME and int(v) > value)
        if above:
            raise ConfigError(
                f"ignore label {value} must be the highest label value (nnU-Net's rule); the dataset "
                f"declares {above} above it"
            )
        return value

    @classmethod
    def default(cls, out_channels: int) -> LabelScheme:
        """The scheme of a model that records none: classes ``0..K-1`` (``background``,
        ``label_1``, ...); one output channel is one sigmoid region, label 1 (``foreground``)."""
        if out_channels < 1:
            raise ValueError(f"out_channels={out_channels}: a model has at least one output channel")
        if out_channels == 1:
            return cls("regions", (0, 1), ("foreground",), ((1,),))
        names = ("background", *(f"label_{v}" for v in range(1, out_channels)))
        return cls("labels", tuple(range(out_channels)), names)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the model card: kind, values, names, regions (``[]`` for labels) and, when
        there is one, paint_order as ``[region, value]`` pairs."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "values": list(self.values),
            "names": list(self.names),
            "regions": [list(r) for r in self.regions],
        }
        if self.paint_order:
            out["paint_order"] = [[n, v] for n, v in self.paint_order]
        if self.ignore_label is not None:
            out["ignore_label"] = self.ignore_label
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelScheme:
        """The way back from :meth:`to_dict`. ``kind`` defaults to labels; a labels scheme without
        names gets ``label_<value>``, a regions scheme without values gets 0 and every region's
        labels; a labels scheme ignores stray ``regions``/``paint_order`` entries."""
        kind = d.get("kind", "labels")
        ignore = d.get("ignore_label")
        if kind == "regions":
            regions = [[int(v) for v in r] for r in d.get("regions") or []]
            values = d.get("values") or sorted({0, *(v for r in regions for v in r)})
            paint = d.get("paint_order") or ()
            return cls("regions", values, d.get("names") or [], regions, paint, ignore_label=ignore)
        values = [int(v) for v in d.get("values") or []]
        return cls(kind, values, d.get("names") or [f"label_{v}" for v in values], ignore_label=ignore)

    # --- what the channels are ----------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        return len(self.regions) if self.kind == "regions" else len(self.values)

    @property
    def activation(self) -> str:
        return "sigmoid" if self.kind == "regions" else "softmax"

    @property
    def channel_names(self) -> list[str]:
        """Names of the scored channels: regions, or the foreground classes."""
        return list(self.names) if self.kind == "regions" else list(self.names[1:])

    @property
    def region_map(self) -> dict[str, list[int]]:
        """Region name -> label values (``{}`` for labels)."""
        return {n: list(r) for n, r in zip(self.names, self.regions)} if self.kind == "regions" else {}

    @property
    def targets(self) -> dict[str, list[int]]:
        """What evaluation scores, name -> label values: each region's set, or each non-zero class."""
        if self.kind == "regions":
            return self.region_map
        return {n: [v] for n, v in zip(self.names, self.values) if v != 0}

    @property
    def background(self) -> int:
        """The label value of a voxel no class or region claims."""
        return self.values[0] if self.kind == "labels" else 0

    @property
    def file_values(self) -> tuple[int, ...]:
        """Every value a label map of this scheme may hold: :attr:`values` and the ignore label."""
        return (*self.values, *(() if self.ignore_label is None else (self.ignore_label,)))

    @property
    def ignore_index(self) -> int | None:
        """The training-target value of an ignored voxel (None without an ignore label): the class
        index ``K`` (one past the last channel) for labels, :data:`IGNORE_REGION_VALUE` in every
        channel for regions. Pass it to the losses (``ignore_index``)."""
        if self.ignore_label is None:
            return None
        return len(self.values) if self.kind == "labels" else IGNORE_REGION_VALUE

    def ignored(self, label: np.ndarray) -> np.ndarray | None:
        """Bool mask of the ignored voxels of a label map; None without an ignore label."""
        return None if self.ignore_label is None else np.asarray(label) == self.ignore_label

    @property
    def label_dtype(self) -> np.dtype:
        every = {0, *self.values, *(v for r in self.regions for v in r)}
        return np.dtype(np.uint8) if min(every) >= 0 and max(every) <= 255 else np.dtype(np.int32)

    @property
    def painting(self) -> tuple[tuple[str, int], ...]:
        """(region, value) pairs in painting order, later over earlier: ``paint_order`` when the
        dataset declared one, else :data:`ATTNSEG_PAINT_RULE`. ``()`` for labels."""
        if self.kind != "regions":
            return ()
        return self.paint_order or tuple(attnseg_paint_order(self.region_map))

    def describe(self) -> str:
        """One line: ``classes background=0, tumour=1`` or ``regions WT=[1, 2, 4], ...`` (and
        ``; ignore label 3`` when there is one)."""
        ignore = "" if self.ignore_label is None else f"; ignore label {self.ignore_label}"
        if self.kind == "regions":
            return f"regions {', '.join(f'{n}={v}' for n, v in self.region_map.items())}{ignore}"
        return f"classes {', '.join(f'{n}={v}' for n, v in zip(self.names, self.values))}{ignore}"

    # --- label maps <-> targets and logits ---------------------------------------------------------------
    def encode(self, label: np.ndarray) -> np.ndarray:
        """Label map -> training target: class indices ``(*spatial)`` int64, or regions
        ``(R, *spatial)`` uint8; ignored voxels get :attr:`ignore_index`. A value the scheme does not
        know raises DataError."""
        label = np.asarray(label)
        ignored = self.ignored(label)
        if ignored is not None:
            target = self._encode(np.where(ignored, self.background, label))
            target[..., ignored] = self.ignore_index
            return target
        return self._encode(label)

    def _encode(self, label: np.ndarray) -> np.ndarray:
        if self.kind == "regions":
            out = np.empty((len(self.regions), *label.shape), dtype=np.uint8)
            for r, vals in enumerate(self.regions):
                out[r] = np.isin(label, vals)
            return out
        values = np.asarray(self.values)
        if np.array_equal(values, np.arange(len(values))):
            if label.size and (label.min() < 0 or label.max() >= len(values)):
                raise DataError(self._unknown_values(label))
            return label.astype(np.int64)
        order = np.argsort(values)
        idx = np.clip(np.searchsorted(values[order], label), 0, len(values) - 1)
        if np.any(values[order][idx] != label):
            raise DataError(self._unknown_values(label))
        return order[idx].astype(np.int64)

    def _unknown_values(self, label: np.ndarray) -> str:
        extra = sorted(set(np.unique(label).tolist()) - set(self.file_values))
        return f"label values {extra} are not among the declared values {list(self.file_values)}"

    def _check_channels(self, logits: np.ndarray) -> None:
        if logits.ndim < 1 or logits.shape[0] != self.out_channels:
            k = logits.shape[0] if logits.ndim else 0
            what = (
                f"{len(self.values)} label values {list(self.values)}"
                if self.kind == "labels"
                else f"{len(self.regions)} regions {list(self.names)}"
            )
            raise ValueError(f"{k} class channels but {what}; pass logits (channels, *spatial)")

    def decode(self, logits: Any, *, threshold: float = 0.5) -> np.ndarray:
        """Logits ``(K, *spatial)`` (numpy or CPU torch) -> label map ``(*spatial)``: argmax ->
        label value, or regions ``sigmoid > threshold`` painted in :attr:`painting` order."""
        if self.kind == "regions":
            return self.paint(self.region_masks(logits, threshold=threshold))
        if hasattr(logits, "detach") and logits.is_floating_point():
            # a torch tensor (a piece of the sliding window's accumulators, often a strided view): torch's
            # max reads it in place (numpy's argmax moves the class axis last and copies all K channels;
            # torch's argmax(0) takes 0.53 s for 3 x 3 M voxels, max(0) 0.025 s); first maximum on ties
            self._check_channels(logits)
            index = logits.detach().cpu().max(0).indices.numpy()
        else:
            arr = _as_array(logits)
            self._check_channels(arr)
            index = np.argmax(arr, axis=0)
        if self.values == tuple(range(len(self.values))):
            return index.astype(self.label_dtype)
        return np.asarray(self.values, dtype=self.label_dtype)[index]

    def region_masks(self, logits: Any, *, threshold: float = 0.5) -> np.ndarray:
        """Region logits ``(R, *spatial)`` -> bool masks where ``sigmoid(logit) > threshold``."""
        if self.kind != "regions":
            raise ValueError("region_masks needs a regions scheme; decode a labels scheme with decode()")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold!r}: pass a probability strictly between 0 and 1")
        arr = _as_array(logits)
        self._check_channels(arr)
        return arr > arr.dtype.type(math.log(threshold / (1.0 - threshold)))

    def paint(self, masks: np.ndarray) -> np.ndarray:
        """Region masks ``(R, *spatial)`` -> label map, painted in :attr:`painting` order."""
        if self.kind != "regions":
            raise ValueError("paint needs a regions scheme")
        painted = regions_to_labels(np.asarray(masks, dtype=bool), self.region_map, order=self.painting)
        return painted.astype(self.label_dtype, copy=False)

    def masks_from_logits(self, logits: Any) -> np.ndarray:
        """Bool masks ``(M, *spatial)`` of the scored channels (:attr:`channel_names`): each
        region where its probability is > 0.5, or each foreground class where it is the argmax."""
        if self.kind == "regions":
            return self.region_masks(logits)
        arr = _as_array(logits)
        self._check_channels(arr)
        index = np.argmax(arr, axis=0)
        return np.stack([index == k for k in range(1, len(self.values))])

    def masks_from_labels(self, label: np.ndarray) -> np.ndarray:
        """The same masks from a label map (the truth); an ignored voxel is in none of them."""
        encoded = self.encode(label)
        if self.kind == "regions":
            return encoded == 1
        return np.stack([encoded == k for k in range(1, len(self.values))])

    def with_paint_order(self, order: Sequence[Sequence]) -> LabelScheme:
        """This scheme painting its regions in ``order`` ((region, value) pairs)."""
        return dataclasses.replace(self, paint_order=tuple((str(n), int(v)) for n, v in order))
