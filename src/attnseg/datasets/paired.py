"""Paired folders: ``images/`` + ``labels/`` (or ``masks/``), matched by file name.

An image ``X.ext`` goes with the label whose name without suffix is ``X`` (any supported suffix, so
``X.jpg`` may pair with ``X.png``), or ``X_mask`` / ``X_seg`` / ``X_label``. Images named
``X_0000``, ``X_0001``, ... (one file per channel, nnU-Net style) are grouped into case ``X``.
NIfTI files make a 3D dataset, PNG/JPEG/TIFF a 2D one. Labels are undeclared unless ``labels=``
is given (also for JPEG masks, which may hold 0/255 or class indices: how their values decode is
decided from all the masks, ``attnseg.datasets.masks2d``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from attnseg.datasets.base import (
    Case,
    Dataset,
    Problem,
    data_files,
    natural_key,
    spatial_dims_of,
    split_suffix,
)
from attnseg.errors import DataError
from attnseg.io.images2d import read_size2d
from attnseg.io.nifti import channels_in_file, read_header

IMAGE_DIRS = ("images", "imagesTr", "image", "imgs")
LABEL_DIRS = ("labels", "masks", "labelsTr", "label", "mask")
LABEL_SUFFIXES = ("", "_mask", "_seg", "_label", "_gt")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def find_pair_dirs(root: Path) -> tuple[Path | None, Path | None]:
    images = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    labels = next((root / d for d in LABEL_DIRS if (root / d).is_dir()), None)
    return images, labels


# header reads to tell the channel count: the most common among the first few files, so that one
# odd file sorting first does not make every other case look wrong
CHANNEL_SAMPLE = 5


def _channel_count(path: Path) -> int | None:
    try:
        if spatial_dims_of(path) == 3:
            return channels_in_file(read_header(path))
        return read_size2d(path)[1]
    except DataError:
        return None  # unreadable: the integrity check reports it


def _channel_names(files: Sequence[Path]) -> list[str]:
    counts = Counter(n for n in map(_channel_count, files[:CHANNEL_SAMPLE]) if n is not None)
    n = counts.most_common(1)[0][0] if counts else 1
    if spatial_dims_of(files[0]) == 3:
        return ["image"] if n == 1 else [f"channel_{i}" for i in range(n)]
    return {1: ["grey"], 3: ["red", "green", "blue"]}.get(n, [f"channel_{i}" for i in range(n)])


def discover_paired(
    root: Path,
    *,
    image_dir: str | None = None,
    label_dir: str | None = None,
    channel_names: Sequence[str] | None = None,
) -> Dataset:
    images_dir, labels_dir = find_pair_dirs(root)
    if image_dir is not None:
        images_dir = root / image_dir
    if label_dir is not None:
        labels_dir = root / label_dir
    if images_dir is None or not images_dir.is_dir():
        raise DataError(f"{root}: paired layout needs an image folder ({' or '.join(IMAGE_DIRS)})")
    image_files = data_files(images_dir)
    if not image_files:
        raise DataError(f"{images_dir}: no image files (NIfTI, PNG, JPEG or TIFF)")
    stems = [split_suffix(p.name)[0] for p in image_files]
    per_channel = all(_CHANNEL.match(s) for s in stems)
    groups: dict[str, list[Path]] = {}
    repeats: list[tuple[str, Path]] = []  # a.nii next to a.nii.gz: two cases named a, not two channels
    for path, stem in zip(image_files, stems):
        case_id = _CHANNEL.match(stem)["case"] if per_channel else stem
        if not per_channel and case_id in groups:
            repeats.append((case_id, path))
            continue
        groups.setdefault(case_id, []).append(path)
    label_files = data_files(labels_dir) if labels_dir is not None else []
    label_by_stem: dict[str, list[Path]] = {}
    for path in label_files:
        label_by_stem.setdefault(split_suffix(path.name)[0], []).append(path)
    problems: list[Problem] = []
    cases: list[Case] = []
    used: set[Path] = set()
    for case_id in sorted(groups, key=natural_key):
        candidates = [p for suffix in LABEL_SUFFIXES for p in label_by_stem.get(case_id + suffix, [])]
        meta: dict = {}
        if len(candidates) > 1:
            problems.append(
                Problem(
                    case_id,
                    str(labels_dir),
                    "ambiguous_file",
                    f"several labels match: {[p.name for p in candidates]}",
                )
            )
        if not candidates and labels_dir is not None:
            meta["expected_label"] = str(labels_dir / (case_id + split_suffix(groups[case_id][0].name)[1]))
        label = candidates[0] if candidates else None
        used.update(candidates)
        cases.append(Case(case_id, sorted(groups[case_id], key=lambda p: natural_key(p.name)), label, meta))
    for case_id, path in repeats:  # discover() reports the repeated id
        cases.append(Case(case_id, [path], next(c.label for c in cases if c.case_id == case_id), {}))
    for path in label_files:
        if path not in used:
            problems.append(
                Problem(
                    split_suffix(path.name)[0],
                    str(path),
                    "missing_image",
                    f"label has no matching image in {images_dir.name}/",
                )
            )
    first = image_files[0]
    names = list(channel_names) if channel_names is not None else _channel_names(image_files)
    if per_channel:
        n = max(len(v) for v in groups.values())
        names = list(channel_names) if channel_names is not None else [f"channel_{i}" for i in range(n)]
    labels: dict[str, int] = {}
    return Dataset(
        root=root,
        layout="paired",
        cases=cases,
        channel_names=names,
        labels=labels,
        regions=None,
        spatial_dims=spatial_dims_of(first),
        info={
            "labels_declared": bool(labels),
            "image_dir": images_dir.name,
            "label_dir": labels_dir.name if labels_dir else None,
        },
        problems=problems,
    )
