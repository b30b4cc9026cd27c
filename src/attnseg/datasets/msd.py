"""Medical Segmentation Decathlon layout: ``dataset.json`` with a ``training`` list.

``{"modality": {"0": "FLAIR", ...}, "labels": {"0": "background", ...},
"training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}, ...]}``.
An MSD image is one file per case; a multi-modal one is 4D with channels last. nnU-Net v1 raw
folders use the same ``dataset.json`` with one file per channel (``x_0000.nii.gz``); when the listed
image is absent and such channel files exist, they are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attnseg.datasets.base import Case, Dataset, Problem, channel_files, data_files, on_disk, split_suffix
from attnseg.errors import DataError


def read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    return data


def _indexed_names(table: Any, where: str) -> list[str]:
    """``{"0": "T1", "1": "T2"}`` -> ``["T1", "T2"]`` (keys must be 0..n-1)."""
    if not isinstance(table, dict) or not table:
        raise DataError(f"{where}: expected a mapping like {{'0': 'MRI'}}, got {table!r}")
    try:
        keys = sorted(table, key=int)
    except ValueError as exc:
        raise DataError(f"{where}: keys must be channel numbers, got {list(table)}") from exc
    if [int(k) for k in keys] != list(range(len(keys))):
        raise DataError(f"{where}: channel numbers must be 0..{len(keys) - 1}, got {keys}")
    return [str(table[k]) for k in keys]


def msd_labels(table: Any, where: str) -> dict[str, int]:
    """MSD ``{"0": "background", "1": "Anterior"}`` -> ``{"background": 0, "Anterior": 1}``."""
    if not isinstance(table, dict):
        raise DataError(f"{where}: 'labels' must be a mapping of value -> name")
    out: dict[str, int] = {}
    for key, name in table.items():
        try:
            value = int(key)
        except ValueError as exc:
            raise DataError(f"{where}: label value {key!r} is not an integer") from exc
        name = str(name)
        if name in out:
            name = f"{name}_{value}"
        out[name] = value
    return out


def _listed_path(root: Path, rel: str) -> Path:
    """The path an entry lists, made absolute but not resolved: a symlink keeps its own name (the
    case id), however its target is called. A suffix in another letter case on disk is found."""
    return on_disk(Path(rel) if Path(rel).is_absolute() else (root / rel).absolute())


def _entry_key(path: Path) -> tuple[str, str]:
    """A directory entry: its folder (links followed, so two spellings of a folder agree) and its
    own name (not followed)."""
    return os.path.realpath(path.parent), path.name


def _channel_files(image: Path) -> list[Path]:
    """nnU-Net v1: ``x.nii.gz`` listed, ``x_0000.nii.gz``, ``x_0001.nii.gz`` on disk."""
    stem, suffix = split_suffix(image.name)
    if not suffix:
        return []
    return channel_files(image.parent, stem, suffix)


def _unlisted_files(cases: list[Case], where: str, split: str) -> list[Problem]:
    """Image/label files in the folders the list points to (``imagesTr/``, ``labelsTr/``) that no
    entry names: dataset.json disagrees with the folder. They are reported, never used."""
    listed = [p for c in cases for p in (*c.images, *([c.label] if c.label else []))]
    used = {_entry_key(p) for p in listed}
    folders: dict[str, Path] = {}
    for p in listed:
        if p.parent.is_dir():
            folders.setdefault(os.path.realpath(p.parent), p.parent)
    problems = []
    for folder in sorted(folders.values()):
        for path in data_files(folder):
            if _entry_key(path) not in used:
                problems.append(
                    Problem(
                        None,
                        str(path),
                        "unlisted_file",
                        f"{folder.name}/{path.name} is not in the '{split}' list of {where}; it is ignored",
                    )
                )
    return problems


def discover_msd(root: Path, *, split: str = "training") -> Dataset:
    """Cases of an MSD (or nnU-Net v1) raw folder; ``split="test"`` lists the unlabelled ``test`` images."""
    data = read_dataset_json(root)
    where = str(root / "dataset.json")
    if split not in ("training", "test"):
        raise DataError(f"{where}: split must be 'training' or 'test', got {split!r}")
    entries = data.get(split)
    if not isinstance(entries, list):
        raise DataError(f"{where}: no '{split}' list")
    modality = data.get("modality", data.get("channel_names"))
    channel_names = _indexed_names(modality, f"{where}: 'modality'") if modality is not None else []
    labels = msd_labels(data.get("labels", {}), where)
    cases: list[Case] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{where}: {split}[{i}] must have an 'image' path, got {entry!r}")
        image = _listed_path(root, entry["image"])
        case_id = split_suffix(image.name)[0]  # the listed name, never a link target's
        if os.path.normpath(image) in seen:  # the same entry twice is one case; other repeated
            problems.append(Problem(case_id, str(image), "duplicate_case", f"listed twice in {where}"))
            continue  # ids stay cases, and discover() reports them
        seen.add(os.path.normpath(image))
        images = [image]
        if not image.exists():
            per_channel = _channel_files(image)
            if per_channel:
                images = per_channel
        label = _listed_path(root, entry["label"]) if entry.get("label") else None
        cases.append(Case(case_id, images, label, {}))
    problems.extend(_unlisted_files(cases, where, split))
    declared = data.get("numTraining") if split == "training" else data.get("numTest")
    if isinstance(declared, int) and declared != len(entries):
        problems.append(
            Problem(
                None,
                where,
                "count_mismatch",
                f"num{split.capitalize()} is {declared} but the list has {len(entries)} entries",
            )
        )
    return Dataset(
        root=root,
        layout="msd",
        cases=cases,
        channel_names=channel_names,
        labels=labels,
        regions=None,
        spatial_dims=3,
        info={"labels_declared": bool(labels), "name": data.get("name"), "split": split},
        problems=problems,
    )
