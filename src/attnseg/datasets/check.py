"""Dataset integrity check (``attnseg check DATA``), in the spirit of nnU-Net's dataset verification.

For every case it reports, naming the case and the file:

- ``missing_image`` / ``missing_label``: a listed or expected file does not exist (or a label has
  no image);
- ``unreadable``: the header or the data cannot be read; a truncated or corrupt ``.gz`` is found
  because every file is decompressed in full once (gzip checks length and CRC);
- ``shape_mismatch`` / ``affine_mismatch``: channel files or image and label are not on one voxel
  grid (affines compared to ``AFFINE_ATOL`` mm);
- ``channel_count``: the case has a different number of channels than the dataset declares (or,
  when nothing is declared, than most cases);
- ``nan_inf``: image voxels that are NaN or infinite;
- ``bad_label_values``: non-integer, negative or non-finite label values;
- ``undeclared_labels``: label values outside those declared. When the layout declares none
  (paired folders), the usual values are inferred: those present in at least
  ``max(2, 10 % of labelled cases)`` cases; a value seen in fewer cases is reported, and the message
  says how to declare the labels instead;
- ``mask_encoding`` (2D masks): a file whose values do not fit the encoding decided for the
  dataset's masks (``attnseg.datasets.masks2d``: 0/255 among 0/1 masks, a grey image among
  binary masks), or every file when the dataset's values look like an encoding accident (59 values:
  a resized mask, an image saved as a mask); a decoding that rounds or thresholds (JPEG noise,
  smoothed edges) is said once as a note;
- ``absent_label``: a declared foreground label that no case's label map holds; ``no_foreground``:
  every label map is background only (nothing to segment);
- ``bad_ignore_label``: the ignore label (dataset.json's ``"ignore"``, or ``ignore_label``) is not
  the highest label value, or two values disagree (``LabelScheme.declared_ignore_label``);
- with an ignore label, the report gives the share of ignored (unannotated) voxels of every case
  (``ignored_share``), and notes the cases with no annotated voxel at all;
- DICOM series (``attnseg.datasets.dicom``): a series refused by the reader (gantry tilt, uneven
  spacing, mixed orientations, ...) is ``unreadable`` with the reader's reason; a SEG whose
  segments overlap is ``overlapping_segments`` (a label map keeps one label per voxel);
  ``several_segs``: more than one SEG references the series and no pattern picks one;
- discovery findings (labels without images, ambiguous patterns, counts that disagree with
  ``dataset.json``, one file under two case names: ``duplicate_file``).

Speed: headers are read first (shape, affine: a few hundred bytes each); then each file is
decompressed exactly once, into memory, and checked from that buffer.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.datasets.base import Case, Dataset, Problem, spatial_dims_of
from attnseg.datasets.dicom import is_dicom_case, load_dicom_case
from attnseg.datasets.discover import discover
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.datasets.masks2d import mask_encoding_for, mask_set_encoding
from attnseg.errors import ConfigError, DataError
from attnseg.io.images2d import load_image2d, load_mask2d, read_size2d
from attnseg.io.mask_encoding import MaskEncoding
from attnseg.io.nifti import (
    AFFINE_ATOL,
    as_label_array,
    channels_in_file,
    image_voxels,
    is_nifti,
    label_voxels,
    read_header,
    read_nifti,
)

RARE_FRACTION = 0.10


@dataclass
class CaseInfo:
    case_id: str
    channels: int | None = None
    shape: tuple[int, ...] | None = None
    spacing_mm: tuple[float, ...] | None = None
    spatial_dims: int | None = None
    label_voxels: dict[int, int] | None = None  # value -> voxel count
    label_path: str | None = None


@dataclass
class CheckReport:
    """The outcome of ``check_dataset``: problems (empty when the dataset passes) and a summary."""

    root: str
    layout: str
    n_cases: int
    channel_names: list[str]
    declared_labels: list[int] | None
    inferred_labels: list[int] | None
    problems: list[Problem]
    seconds: float
    label_case_counts: dict[int, int] = field(default_factory=dict)  # value -> number of cases with it
    shape_range: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    spacings_mm: list[tuple[float, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said once, not a failure (e.g. masks thresholded)
    ignore_label: int | None = None
    ignored_share: dict[str, float] = field(default_factory=dict)  # case id -> ignored voxels / voxels

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_cases(self) -> list[str]:
        return sorted({p.case_id for p in self.problems if p.case_id is not None})

    def format(self) -> str:
        """Human-readable report: one line per problem, then a summary."""
        lines = [f"attnseg check {self.root} (layout {self.layout}, {self.n_cases} cases)"]
        lines.append(f"  channels: {len(self.channel_names)} {self.channel_names}")
        if self.declared_labels is not None:
            lines.append(f"  labels declared: {self.declared_labels}")
        elif self.inferred_labels is not None:
            lines.append(f"  labels (none declared; inferred from the cases): {self.inferred_labels}")
        if self.label_case_counts:
            seen = ", ".join(f"{v}: {n}" for v, n in sorted(self.label_case_counts.items()))
            lines.append(f"  label values seen (value: cases): {seen}")
        if self.shape_range:
            lines.append(f"  spatial shape from {self.shape_range[0]} to {self.shape_range[1]}")
        if self.spacings_mm:
            shown = ", ".join(str(tuple(round(s, 3) for s in sp)) for sp in self.spacings_mm[:4])
            more = f" and {len(self.spacings_mm) - 4} more" if len(self.spacings_mm) > 4 else ""
            lines.append(f"  spacing (mm): {shown}{more}")
        if self.ignore_label is not None:
            lines.extend(self._ignored_lines())
        lines.extend(f"  note: {n}" for n in self.notes)
        for p in self.problems:
            lines.append(f"FAIL {p}")
        if self.ok:
            lines.append(f"OK: {self.n_cases} cases passed in {self.seconds:.2f} s")
        else:
            bad = self.bad_cases
            lines.append(
                f"{len(self.problems)} problem(s) in {len(bad)} of {self.n_cases} cases"
                + (f": {', '.join(bad)}" if bad else "")
                + f" (checked in {self.seconds:.2f} s)"
            )
        return "\n".join(lines)

    def _ignored_lines(self, shown: int = 20) -> list[str]:
        """The ignore label and the share of ignored voxels per case (the first ``shown`` cases)."""
        head = f"  ignore label {self.ignore_label} (not annotated)"
        if not self.ignored_share:
            return [f"{head}: no label map read"]
        shares = np.array(list(self.ignored_share.values()))
        per_case = ", ".join(f"{c} {100 * s:.1f}%" for c, s in list(self.ignored_share.items())[:shown])
        more = f" ... ({len(shares) - shown} more; all in --json)" if len(shares) > shown else ""
        return [
            f"{head}: share of voxels ignored per case: min {100 * shares.min():.1f}%, median "
            f"{100 * np.median(shares):.1f}%, max {100 * shares.max():.1f}%; "
            f"{int((shares > 0).sum())} of {len(shares)} cases have ignored voxels",
            f"  ignored per case: {per_case}{more}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "n_cases": self.n_cases,
            "ok": self.ok,
            "channel_names": self.channel_names,
            "declared_labels": self.declared_labels,
            "inferred_labels": self.inferred_labels,
            "label_case_counts": {str(k): v for k, v in sorted(self.label_case_counts.items())},
            "ignore_label": self.ignore_label,
            "ignored_share": dict(self.ignored_share),
            "bad_cases": self.bad_cases,
            "problems": [
                {"case": p.case_id, "path": p.path, "kind": p.kind, "message": p.message}
                for p in self.problems
            ],
            "seconds": round(self.seconds, 3),
        }


# --- reading, once per file -------------------------------------------------------------------------
def _rel(path: str | os.PathLike | None, root: Path) -> str:
    if path is None:
        return "?"
    path, root = Path(path).absolute(), root.absolute()
    try:  # the listed name, not a symlink's target: a linked file is reported under the name the data use
        return str(path.relative_to(root))
    except ValueError:
        pass
    try:  # the root itself may be given through a link
        return str(path.parent.resolve().relative_to(root.resolve()) / path.name)
    except ValueError:
        return str(path)


@dataclass
class _File:
    """What one read of one file gave: geometry from the header, the voxels, or the error."""

    shape: tuple[int, ...] | None = None
    affine: np.ndarray | None = None
    zooms: tuple[float, ...] | None = None
    channels: int = 1
    data: np.ndarray | None = None
    error: str | None = None


def _read_nifti(path: Path, *, label: bool) -> _File:
    """Read a file the way the loaders do (``read_nifti``, then the checks of ``load_image`` or
    ``load_label``): what passes here, training and prediction read. The file is decompressed once.

    When that fails, the header alone is read again (a few hundred bytes) so that shape and affine
    are still compared and the report says exactly what is wrong.
    """
    out = _File()
    try:
        img, data = read_nifti(path)
        data, meta = label_voxels(img, data, path) if label else image_voxels(img, data, path)
        out.shape, out.affine, out.zooms = meta.shape, meta.affine, meta.spacing_mm
        out.channels = 1 if label else int(data.shape[0])
        out.data = data
        return out
    except DataError as exc:
        out.error = str(exc).removeprefix(f"{path}: ")
    try:
        meta = read_header(path)
        out.shape, out.affine, out.zooms = meta.shape, meta.affine, meta.spacing_mm
        out.channels = channels_in_file(meta)
    except DataError:
        out.error += "; the header cannot be read either"
    return out


def _read_2d(path: Path, *, mask: bool, encoding: MaskEncoding | None = None) -> _File:
    out = _File(zooms=(1.0, 1.0))
    try:
        out.data = load_mask2d(path, encoding)[0] if mask else load_image2d(path)[0]
        out.shape = tuple(out.data.shape[-2:])
        out.channels = 1 if mask else int(out.data.shape[0])
        return out
    except DataError as exc:
        out.error = str(exc).removeprefix(f"{path}: ")
    try:  # the header may still give the size, for the shape comparison
        out.shape, out.channels = read_size2d(path)
    except DataError:
        pass
    return out


def _label_voxels(data: np.ndarray, where: str, add) -> dict[int, int] | None:
    """Voxel count of each label value, or None after reporting values the loader refuses (the
    loader's own conversion, ``as_label_array``) or that no label map should hold (negative)."""
    try:
        data = as_label_array(data, where)
    except DataError as exc:
        add("bad_label_values", str(exc))
        return None
    if data.size == 0:
        return {}
    if data.dtype == np.uint8:
        counts = np.bincount(data.ravel(), minlength=1)
        return {int(v): int(n) for v, n in enumerate(counts) if n}
    values, counts = np.unique(data, return_counts=True)
    if values[0] < 0:
        add("bad_label_values", f"{where} has negative values {values[values < 0][:5].tolist()}")
    return {int(v): int(n) for v, n in zip(values, counts)}


def _check_dicom_case(case: Case, dataset: Dataset, require_labels: bool) -> tuple[list[Problem], CaseInfo]:
    """A DICOM series read as predict and training read it (geometry checks, refusals), and its
    SEG placed on it: the same problems in the same words, plus overlapping segments."""
    problems: list[Problem] = []
    info = CaseInfo(case.case_id, spatial_dims=3)

    def add(kind: str, message: str, path=None) -> None:
        problems.append(Problem(case.case_id, str(path) if path is not None else None, kind, message))

    try:
        volume, segments = load_dicom_case(case)
    except DataError as exc:
        add(
            "unreadable",
            str(exc),
            case.label if case.label is not None and str(case.label) in str(exc) else None,
        )
        return problems, info
    info.channels, info.shape, info.spacing_mm = 1, volume.meta.shape, volume.meta.spacing_mm
    if not np.all(np.isfinite(volume.image)):
        add("nan_inf", f"{int(np.count_nonzero(~np.isfinite(volume.image)))} NaN/inf voxels after rescale")
    if segments is None:
        several = any(p.case_id == case.case_id and p.kind == "several_segs" for p in dataset.problems)
        if require_labels and not several:
            add("missing_label", "no DICOM SEG references this series")
        return problems, info
    info.label_path = str(case.label)
    try:
        label = segments.label_map()
    except DataError as exc:
        add("overlapping_segments", f"{_rel(case.label, Path(dataset.root))}: {exc}", case.label)
        return problems, info
    info.label_voxels = _label_voxels(label, str(case.label), lambda k, m: add(k, m, case.label))
    return problems, info


def _check_case(case: Case, dataset: Dataset, require_labels: bool) -> tuple[list[Problem], CaseInfo]:
    if is_dicom_case(case):
        return _check_dicom_case(case, dataset, require_labels)
    root = Path(dataset.root)
    problems: list[Problem] = []
    info = CaseInfo(case.case_id)

    def add(kind: str, message: str, path=None) -> None:
        problems.append(Problem(case.case_id, str(path) if path is not None else None, kind, message))

    if not case.images:
        add("missing_image", "no image files")
        return problems, info
    present = [p for p in case.images if p.exists()]
    for p in case.images:
        if not p.exists():
            add("missing_image", f"{_rel(p, root)}: image file not found", p)
    dims = spatial_dims_of(case.images[0])
    info.spatial_dims = dims

    ref: _File | None = None
    ref_path = None
    channels = 0
    complete = len(present) == len(case.images)
    for p in present:
        if dims == 3 and not is_nifti(p):
            add("unreadable", f"{_rel(p, root)}: expected a NIfTI file like the case's other channels", p)
            complete = False
            continue
        f = _read_nifti(p, label=False) if dims == 3 else _read_2d(p, mask=False)
        if f.error:
            add("unreadable", f"{_rel(p, root)}: {f.error}", p)
        if f.shape is None:
            complete = False
            continue
        channels += f.channels
        if ref is None:
            ref, ref_path = f, p
            info.shape, info.spacing_mm = f.shape, f.zooms
        elif f.shape != ref.shape:
            add(
                "shape_mismatch",
                f"{_rel(p, root)} has shape {f.shape}, {_rel(ref_path, root)} has {ref.shape}",
                p,
            )
        elif f.affine is not None and not np.allclose(f.affine, ref.affine, atol=AFFINE_ATOL, rtol=0):
            add("affine_mismatch", f"{_rel(p, root)} and {_rel(ref_path, root)} have different affines", p)
        if f.data is not None and f.data.dtype.kind == "f":
            bad = int(f.data.size - np.count_nonzero(np.isfinite(f.data)))
            if bad:
                add("nan_inf", f"{_rel(p, root)} has {bad} NaN/inf voxels", p)
        f.data = None  # keep memory flat on large cases
    if complete:
        info.channels = channels
        indices = dataset.info.get("channel_indices")
        if indices is not None:
            if channels <= max(indices):
                add("channel_count", f"has {channels} channel(s); channel {max(indices)} is selected")
        elif dataset.channel_names and channels != len(dataset.channel_names):
            add(
                "channel_count",
                f"has {channels} channel(s); the dataset declares {len(dataset.channel_names)} "
                f"({', '.join(dataset.channel_names)})",
            )

    label = case.label
    if label is None:
        if require_labels:
            expected = case.meta.get("expected_label")
            add(
                "missing_label",
                "no label file" + (f" (expected {_rel(expected, root)})" if expected else ""),
                expected,
            )
        return problems, info
    if not label.exists():
        add("missing_label", f"{_rel(label, root)}: label file not found", label)
        return problems, info
    info.label_path = str(label)
    where = _rel(label, root)
    if spatial_dims_of(label) == 3:
        f = _read_nifti(label, label=True)
    else:
        f = _read_2d(label, mask=True, encoding=mask_encoding_for(dataset, label))
    if f.error and f.channels == 1:  # several volumes: said below in words about labels
        add("unreadable", f"{where}: {f.error}", label)
    if f.shape is None:
        return problems, info
    if f.channels != 1:
        add("bad_label_values", f"{where} has {f.channels} channels; a label map has one", label)
        return problems, info
    if ref is not None and f.shape != ref.shape:
        add(
            "shape_mismatch",
            f"{where} has shape {f.shape}, image {_rel(ref_path, root)} has {ref.shape}",
            label,
        )
    elif (
        ref is not None
        and f.affine is not None
        and not np.allclose(f.affine, ref.affine, atol=AFFINE_ATOL, rtol=0)
    ):
        diff = float(np.abs(f.affine - ref.affine).max())
        add(
            "affine_mismatch",
            f"{where} and image {_rel(ref_path, root)} have different affines (largest difference {diff:.4g})",
            label,
        )
    if f.data is not None:
        info.label_voxels = _label_voxels(f.data, where, lambda k, m: add(k, m, label))
    return problems, info


def _inferred_values(infos: list[CaseInfo]) -> list[int] | None:
    labelled = [i for i in infos if i.label_voxels is not None]
    if not labelled:
        return None
    counts = Counter(v for i in labelled for v in i.label_voxels)
    if len(labelled) < 3:
        return sorted(counts)
    need = max(2, math.ceil(RARE_FRACTION * len(labelled)))
    return sorted(v for v, n in counts.items() if n >= need)


def _mask_encoding_problems(dataset: Dataset) -> tuple[list[Problem], list[str]]:
    """One ``mask_encoding`` problem per 2D mask file that does not fit the dataset's encoding, and
    the dataset's note (values rounded or thresholded), from ``mask_set_encoding``."""
    masks = mask_set_encoding(dataset)
    if masks is None:
        return [], []
    root = Path(dataset.root)
    case_of = {str(c.label): c.case_id for c in dataset.cases if c.label is not None}
    problems = [
        Problem(case_of.get(name), name, "mask_encoding", f"{_rel(name, root)}: {why}")
        for name, why in masks.file_problems().items()
    ]
    note = masks.note()
    return problems, [note] if note else []


def _ignore_label(dataset: Dataset, ignore_label: int | None) -> tuple[int | None, list[Problem]]:
    """The dataset's ignore label (its ``"ignore"`` label, or ``ignore_label``), or a problem."""
    try:
        return LabelScheme.declared_ignore_label(dataset.labels, ignore_label), []
    except ConfigError as exc:
        return None, [Problem(None, str(dataset.root), "bad_ignore_label", str(exc))]


def _ignored_shares(infos: list[CaseInfo], ignore_label: int) -> tuple[dict[str, float], list[str]]:
    """Case id -> share of its label map's voxels that are ``ignore_label``; a note naming the cases
    with no annotated voxel (they teach nothing)."""
    shares = {
        i.case_id: i.label_voxels.get(ignore_label, 0) / max(1, sum(i.label_voxels.values()))
        for i in infos
        if i.label_voxels is not None
    }
    empty = [c for c, s in shares.items() if s == 1.0]
    if not empty:
        return shares, []
    shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
    return shares, [f"{len(empty)} case(s) have no annotated voxel (all {ignore_label}): {shown}"]


def _label_set_problems(
    dataset: Dataset, infos: list[CaseInfo], ignore_label: int | None = None
) -> list[Problem]:
    """A declared foreground label in no label map (``absent_label``), or no foreground at all."""
    read = [i.label_voxels for i in infos if i.label_voxels is not None]
    if not read:
        return []
    seen = {v for voxels in read for v, n in voxels.items() if n and v != ignore_label}
    where = str(dataset.root)
    if seen <= {0}:
        return [
            Problem(
                None,
                where,
                "no_foreground",
                f"every label map ({len(read)} read) is background only (value 0): nothing to segment",
            )
        ]
    names = {v: k for k, v in dataset.labels.items()}
    return [
        Problem(
            None,
            where,
            "absent_label",
            f"declared label {names[v]} = {v} occurs in none of the {len(read)} label maps read",
        )
        for v in sorted(names)
        if v != 0 and v != ignore_label and v not in seen
    ]


def check_dataset(
    dataset: Dataset, *, require_labels: bool = True, workers: int = 1, ignore_label: int | None = None
) -> CheckReport:
    """Check every case of ``dataset``; return a report (never raises for a bad case).
    ``ignore_label``: the value of unannotated voxels, when the dataset does not declare it."""
    start = time.perf_counter()
    root = Path(dataset.root)
    mask_problems, notes = _mask_encoding_problems(dataset)  # before the threads: decided once
    results: list[tuple[list[Problem], CaseInfo]]
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda c: _check_case(c, dataset, require_labels), dataset.cases))
    else:
        results = [_check_case(c, dataset, require_labels) for c in dataset.cases]
    problems: list[Problem] = list(dataset.problems)
    already = {(p.case_id, p.kind) for p in problems}
    infos = [info for _, info in results]
    for case_problems, _ in results:
        # discovery already named a missing channel file more precisely than a channel count can
        problems.extend(p for p in case_problems if (p.case_id, p.kind) not in already)

    # consensus across cases
    dims = Counter(i.spatial_dims for i in infos if i.spatial_dims)
    if len(dims) > 1:
        usual = dims.most_common(1)[0][0]
        for i in infos:
            if i.spatial_dims and i.spatial_dims != usual:
                problems.append(
                    Problem(i.case_id, None, "spatial_dims", f"is {i.spatial_dims}D; most cases are {usual}D")
                )
    if not dataset.channel_names and dataset.info.get("channel_indices") is None:
        counts = Counter(i.channels for i in infos if i.channels is not None)
        if len(counts) > 1:
            usual = counts.most_common(1)[0][0]
            for i in infos:
                if i.channels is not None and i.channels != usual:
                    problems.append(
                        Problem(
                            i.case_id,
                            None,
                            "channel_count",
                            f"has {i.channels} channel(s); most cases have {usual}",
                        )
                    )

    ignore, ignore_problems = _ignore_label(dataset, ignore_label)
    problems.extend(ignore_problems)
    declared = sorted(set(dataset.labels.values())) if dataset.labels else None
    inferred = None if declared is not None else _inferred_values(infos)
    allowed = declared if declared is not None else inferred
    if allowed is not None and ignore is not None:
        allowed = sorted({*allowed, ignore})
    if allowed is not None:
        for i in infos:
            if i.label_voxels is None:
                continue
            extra = sorted(set(i.label_voxels) - set(allowed))
            if not extra:
                continue
            voxels = ", ".join(f"{v}: {i.label_voxels[v]} voxels" for v in extra)
            where = _rel(i.label_path, root)
            if declared is not None:
                msg = f"{where} has value(s) {extra} ({voxels}); the dataset declares {declared}"
            else:
                msg = (
                    f"{where} has value(s) {extra} ({voxels}) that fewer than "
                    f"{max(2, math.ceil(RARE_FRACTION * len(infos)))} cases use; the other cases use {allowed} "
                    "(no labels are declared: pass --labels to declare them)"
                )
            problems.append(Problem(i.case_id, i.label_path, "undeclared_labels", msg))

    problems.extend(mask_problems)
    problems.extend(_label_set_problems(dataset, infos, ignore))
    ignored_share: dict[str, float] = {}
    if ignore is not None:
        ignored_share, ignore_notes = _ignored_shares(infos, ignore)
        notes = [*notes, *ignore_notes]
    if not dataset.cases:
        problems.append(Problem(None, str(root), "no_cases", "no cases found"))
    problems.sort(key=lambda p: (p.case_id is not None, p.case_id or "", p.kind))
    shapes = [i.shape for i in infos if i.shape is not None]
    shape_range = None
    if shapes and len({len(s) for s in shapes}) == 1:
        arr = np.array(shapes)
        shape_range = (tuple(int(v) for v in arr.min(0)), tuple(int(v) for v in arr.max(0)))
    spacings = sorted({tuple(round(s, 4) for s in i.spacing_mm) for i in infos if i.spacing_mm})
    case_counts = Counter(v for i in infos if i.label_voxels for v in i.label_voxels)
    return CheckReport(
        root=str(root),
        layout=dataset.layout,
        n_cases=len(dataset.cases),
        channel_names=list(dataset.channel_names),
        declared_labels=declared,
        inferred_labels=inferred,
        problems=problems,
        seconds=time.perf_counter() - start,
        label_case_counts=dict(case_counts),
        shape_range=shape_range,
        spacings_mm=spacings,
        notes=notes,
        ignore_label=ignore,
        ignored_share=ignored_share,
    )


def check(
    root: str | os.PathLike,
    layout: str = "auto",
    *,
    require_labels: bool = True,
    workers: int = 1,
    ignore_label: int | None = None,
    **options,
) -> CheckReport:
    """Discover ``root`` and check it. Structural errors (no such folder, bad dataset.json) raise DataError."""
    dataset = discover(root, layout, **options)
    return check_dataset(dataset, require_labels=require_labels, workers=workers, ignore_label=ignore_label)
