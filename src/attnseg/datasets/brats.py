"""BraTS case folders and the generic folder-per-case layout with user-named file patterns.

BraTS naming:

- 2017-2021: ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (labels 0, 1, 2, 4);
- 2023 on:   ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (labels 0, 1, 2, 3).

Channels are chosen with ``channels=["flair", "t1"]``; the old and new modality names are aliases
of each other (``flair`` = ``t2f``, ``t1`` = ``t1n``, ``t1ce`` = ``t1c``, ``t2`` = ``t2w``). Case
folders may sit one level down in grade folders (``HGG/``, ``LGG/``); the grade goes to
``case.meta["grade"]``. The label scheme follows the edition: ``year=`` when given, else the case
id prefix (``Brats18_`` -> 2018, ``BraTS2021_`` -> 2021) or the naming (``-seg`` -> 2023).

Generic folders (``layout="folder"``): one folder per case, files named by patterns that are matched
case-insensitively against the file names in each case folder: a glob (``"*flair*"``), an exact
name (``"OTMultiClass.nii.gz"``), or either with ``{case}`` standing for the folder name
(``"{case}_t1.nii.gz"``). Each pattern must match exactly one file. ``preset=`` names a known
form (``PRESETS``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

from attnseg.datasets.base import (
    Case,
    Dataset,
    Problem,
    data_files,
    spatial_dims_of,
    split_suffix,
    subfolders,
)
from attnseg.datasets.regions import brats_labels, brats_scheme
from attnseg.errors import ConfigError, DataError

NAMING = {
    "2017": {"sep": "_", "channels": ("flair", "t1", "t1ce", "t2"), "label": "seg"},
    "2023": {"sep": "-", "channels": ("t2f", "t1n", "t1c", "t2w"), "label": "seg"},
}
TO_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t1c": "t1c", "t2": "t2w"}
TO_2017 = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t1gd": "t1ce"}

PRESETS: dict[str, dict] = {
    # DeepMedic's NIfTI version of BraTS 2015 (../shared/data/brats2015_flair_t1c)
    "brats2015-deepmedic": {
        "channels": ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"],
        "label": "OTMultiClass.nii.gz",
        "channel_names": ["flair", "t1c"],
        "year": 2015,
    },
}


def naming_of(folder: Path) -> str | None:
    """``"2017"`` or ``"2023"`` when the folder holds BraTS-named files, else None."""
    for path in data_files(folder):
        stem = split_suffix(path.name)[0].lower()
        for naming, spec in NAMING.items():
            keys = (*spec["channels"], spec["label"])
            if any(stem.endswith(spec["sep"] + key) for key in keys):
                return naming
    return None


def case_folders(root: Path) -> list[tuple[Path, str | None]]:
    """Case folders under ``root``, descending once into grade folders (those with folders but no files)."""
    out: list[tuple[Path, str | None]] = []
    for folder in subfolders(root):
        if not data_files(folder) and subfolders(folder):
            out.extend((sub, folder.name) for sub in subfolders(folder))
        else:
            out.append((folder, None))
    return out


_YEAR = re.compile(r"^brats[-_]?(\d{2,4})", re.IGNORECASE)


def year_from_case_id(case_id: str) -> int | None:
    """``Brats18_2013_3_1`` -> 2018, ``BraTS2021_00000`` -> 2021, ``BraTS20_Training_001`` -> 2020."""
    m = _YEAR.match(case_id)
    if not m:
        return None
    digits = m.group(1)
    if len(digits) == 4:
        return int(digits)
    if len(digits) >= 2:
        return 2000 + int(digits[:2])
    return None


def _channel_keys(channels: Sequence[str] | None, naming: str) -> list[str]:
    spec = NAMING[naming]
    if channels is None:
        return list(spec["channels"])
    keys = []
    for name in channels:
        key = str(name).lower()
        key = TO_2023.get(key, key) if naming == "2023" else TO_2017.get(key, key)
        if key not in spec["channels"]:
            raise ConfigError(
                f"unknown BraTS channel {name!r}; this dataset's files are named "
                f"{', '.join(spec['sep'] + c for c in spec['channels'])}"
            )
        keys.append(key)
    return keys


def discover_brats(
    root: Path, *, channels: Sequence[str] | None = None, year: int | str | None = None
) -> Dataset:
    folders = case_folders(root)
    namings = {f: naming_of(f) for f, _ in folders}
    found = {n for n in namings.values() if n}
    if not found:
        raise DataError(
            f"{root}: no BraTS case folders (<case>/<case>_flair.nii.gz or <case>/<case>-t2f.nii.gz)"
        )
    if len(found) > 1:
        raise DataError(f"{root}: case folders mix the 2017-2021 (_flair) and 2023 (-t2f) BraTS naming")
    naming = found.pop()
    spec = NAMING[naming]
    keys = _channel_keys(channels, naming)
    cases: list[Case] = []
    problems: list[Problem] = []
    for folder, grade in folders:
        files = data_files(folder)
        if not files:
            continue
        case_id = folder.name
        stems = [(p, split_suffix(p.name)[0].lower()) for p in files]
        images = []
        for key in keys:
            matches = [p for p, s in stems if s.endswith(spec["sep"] + key)]
            if len(matches) != 1:
                kind = "missing_image" if not matches else "ambiguous_file"
                problems.append(
                    Problem(
                        case_id,
                        str(folder),
                        kind,
                        f"expected one *{spec['sep']}{key} file, found {[m.name for m in matches]}",
                    )
                )
            images.append(matches[0] if matches else folder / f"{case_id}{spec['sep']}{key}.nii.gz")
        labels = [p for p, s in stems if s.endswith(spec["sep"] + spec["label"])]
        meta: dict = {} if grade is None else {"grade": grade}
        if len(labels) > 1:
            problems.append(
                Problem(
                    case_id, str(folder), "ambiguous_file", f"several label files {[p.name for p in labels]}"
                )
            )
        if not labels:
            meta["expected_label"] = str(folder / f"{case_id}{spec['sep']}seg.nii.gz")
        cases.append(Case(case_id, images, labels[0] if labels else None, meta))
    if year is None and naming == "2023":
        year = 2023
    if year is None and cases:
        years = {year_from_case_id(c.case_id) for c in cases}
        if len(years) == 1:
            year = years.pop()
    scheme = brats_scheme(year)
    if naming == "2023" and scheme != "2023":
        raise ConfigError(
            f"{root}: files use the 2023 naming (-t2f, -seg) but year={year} selects the {scheme} labels"
        )
    channel_names = [TO_2017.get(k, k) if naming == "2017" else k for k in keys]
    return Dataset(
        root=root,
        layout="brats",
        cases=cases,
        channel_names=channel_names,
        labels=brats_labels(scheme),
        regions=None,  # discover() fills in the default WT/TC/ET for this scheme
        spatial_dims=3,
        info={"labels_declared": True, "year": year, "label_scheme": scheme, "naming": naming},
        problems=problems,
    )


# --- generic folder-per-case ------------------------------------------------------------------------
_GLOB = re.compile(r"[*?\[]")


def match_pattern(pattern: str, names: Sequence[str], case_id: str) -> list[str]:
    """File names (of ``names``) that ``pattern`` matches, case-insensitively; ``{case}`` = folder name."""
    pat = pattern.replace("{case}", case_id).lower()
    if _GLOB.search(pat):
        return [n for n in names if fnmatch.fnmatchcase(n.lower(), pat)]
    return [n for n in names if n.lower() == pat or split_suffix(n)[0].lower() == pat]


def name_from_pattern(pattern: str) -> str:
    """``"*flair*"`` -> ``"flair"``, ``"{case}_t1.nii.gz"`` -> ``"t1"``."""
    text = split_suffix(pattern.replace("{case}", ""))[0]
    text = re.sub(r"[*?\[\]]", "", text).strip("_-. ")
    return text or pattern


def _spatial_dims(cases: list[Case]) -> int:
    for case in cases:
        for path in case.images:
            if path.exists():
                return spatial_dims_of(path)
    return 3


def discover_folder(
    root: Path,
    *,
    channels: Sequence[str] | None = None,
    label: str | None = None,
    channel_names: Sequence[str] | None = None,
    year: int | str | None = None,
    preset: str | None = None,
) -> Dataset:
    info: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        spec = PRESETS[preset]
        channels = channels if channels is not None else spec["channels"]
        label = label if label is not None else spec.get("label")
        channel_names = channel_names if channel_names is not None else spec.get("channel_names")
        year = year if year is not None else spec.get("year")
        info["preset"] = preset
    if not channels:
        raise ConfigError(
            f"{root}: the folder layout needs channel file patterns, e.g. channels=['*flair*', '*t1c*'], "
            f"label='*seg*' (or preset=one of {sorted(PRESETS)})"
        )
    channels = [str(c) for c in channels]
    if channel_names is not None and len(channel_names) != len(channels):
        raise ConfigError(
            f"channel_names has {len(channel_names)} names for {len(channels)} channel patterns"
        )
    cases: list[Case] = []
    problems: list[Problem] = []
    for folder, grade in case_folders(root):
        files = data_files(folder)
        names = [p.name for p in files]
        case_id = folder.name
        images = []
        for pattern in channels:
            matches = match_pattern(pattern, names, case_id)
            if len(matches) != 1:
                kind = "missing_image" if not matches else "ambiguous_file"
                problems.append(
                    Problem(case_id, str(folder), kind, f"pattern {pattern!r} matches {matches or 'no file'}")
                )
            images.append(folder / (matches[0] if matches else pattern.replace("{case}", case_id)))
        meta: dict = {} if grade is None else {"grade": grade}
        label_path = None
        if label is not None:
            matches = match_pattern(label, names, case_id)
            if len(matches) > 1:
                problems.append(
                    Problem(
                        case_id, str(folder), "ambiguous_file", f"label pattern {label!r} matches {matches}"
                    )
                )
            if matches:
                label_path = folder / matches[0]
            else:
                meta["expected_label"] = str(folder / label.replace("{case}", case_id))
        cases.append(Case(case_id, images, label_path, meta))
    if not cases:
        raise DataError(f"{root}: no case folders found")
    labels: dict[str, int] = {}
    if year is not None:
        scheme = brats_scheme(year)
        labels = brats_labels(scheme)
        info.update(year=year, label_scheme=scheme)
    info["labels_declared"] = bool(labels)
    info["patterns"] = {"channels": channels, "label": label}
    return Dataset(
        root=root,
        layout="folder",
        cases=cases,
        channel_names=list(channel_names)
        if channel_names is not None
        else [name_from_pattern(c) for c in channels],
        labels=labels,
        regions=None,
        spatial_dims=_spatial_dims(cases),
        info=info,
        problems=problems,
    )
