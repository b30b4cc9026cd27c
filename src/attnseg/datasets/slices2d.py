"""2D slice folders: one folder per patient holding ``<id>_<n>.<ext>`` and ``<id>_<n>_mask.<ext>``.

This is the form of the LGG FLAIR set (``kaggle_3m``). Every slice is a case (``case_id`` is the
file stem) with ``meta["group"]`` = the patient folder and ``meta["slice"]`` = n, so
``make_splits(..., groups=dataset.groups)`` keeps a patient's slices together. Slices are sorted
numerically (``_2`` before ``_10``). Masks are binary (0/255 on disk -> 0/1), so labels default to
background 0 and foreground 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from attnseg.datasets.base import Case, Dataset, Problem, data_files, natural_key, split_suffix, subfolders
from attnseg.errors import DataError
from attnseg.io.images2d import read_size2d

_SLICE = re.compile(r"^(?P<base>.+?)[_-](?P<n>\d+)$")


def looks_like_slices(folder: Path, mask_suffix: str = "_mask") -> bool:
    stems = [split_suffix(p.name)[0] for p in data_files(folder)]
    return any(s.endswith(mask_suffix) for s in stems) and any(
        _SLICE.match(s) and not s.endswith(mask_suffix) for s in stems
    )


def discover_slices2d(
    root: Path, *, mask_suffix: str = "_mask", channel_names: Sequence[str] | None = None
) -> Dataset:
    patients = [f for f in subfolders(root) if data_files(f)]
    if not patients:
        raise DataError(f"{root}: no patient folders with slice images")
    cases: list[Case] = []
    problems: list[Problem] = []
    for folder in patients:
        by_stem: dict[str, list[Path]] = {}  # x.png next to x.PNG or x.jpg: two files, one stem
        for path in data_files(folder):
            by_stem.setdefault(split_suffix(path.name)[0], []).append(path)
        masks = {s for s in by_stem if s.endswith(mask_suffix)}
        images = [s for s in by_stem if s not in masks]
        for stem in sorted(images, key=natural_key):
            m = _SLICE.match(stem)
            candidates = by_stem.get(stem + mask_suffix, [])
            if len(candidates) > 1:
                problems.append(
                    Problem(
                        stem, str(folder), "ambiguous_file", f"several masks: {[p.name for p in candidates]}"
                    )
                )
            for image in by_stem[stem]:  # one case per image file; discover() reports a repeated id
                meta = {"group": folder.name, "slice": int(m["n"]) if m else None}
                if not candidates:
                    meta["expected_label"] = str(folder / (stem + mask_suffix + split_suffix(image.name)[1]))
                cases.append(Case(stem, [image], candidates[0] if candidates else None, meta))
        for stem in sorted(masks):
            if stem[: -len(mask_suffix)] not in by_stem:
                problems.append(
                    Problem(
                        stem[: -len(mask_suffix)], str(by_stem[stem][0]), "missing_image", "mask has no image"
                    )
                )
    if not cases:
        raise DataError(f"{root}: patient folders hold no slice images")
    try:
        _, n = read_size2d(cases[0].images[0])
    except DataError:
        n = 1
    names = (
        list(channel_names)
        if channel_names is not None
        else ({1: ["grey"]}.get(n) or [f"channel_{i}" for i in range(n)])
    )
    return Dataset(
        root=root,
        layout="slices2d",
        cases=cases,
        channel_names=names,
        labels={"background": 0, "foreground": 1},
        regions=None,
        spatial_dims=2,
        info={"labels_declared": True, "mask_suffix": mask_suffix, "n_patients": len(patients)},
        problems=problems,
    )
