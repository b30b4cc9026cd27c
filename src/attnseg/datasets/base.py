"""What a discovered dataset is: cases (files per case), channel names, declared labels, regions.

Discovery only looks at names and ``dataset.json``; it never decodes voxels. Per-case findings that
do not stop discovery (a label without an image, a pattern matching two files) are recorded in
``Dataset.problems`` and reported by ``attnseg check``; structural errors (no such folder, an
unreadable ``dataset.json``, an unknown layout) raise ``DataError`` at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnseg.io.images2d import IMAGE2D_SUFFIXES
from attnseg.io.nifti import NIFTI_SUFFIXES

SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + IMAGE2D_SUFFIXES


@dataclass
class Case:
    """One training/validation example: its channel files in channel order and its label file.

    ``images`` holds one file per channel, or a single file holding all channels (MSD 4D NIfTI,
    an RGB image). ``meta`` carries layout details: ``group`` (patient, for grouped splits),
    ``slice`` (2D slice number), ``grade`` (BraTS HGG/LGG folder).
    """

    case_id: str
    images: list[Path]
    label: Path | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return str(self.meta.get("group", self.case_id))


@dataclass
class Problem:
    """One finding about one case (or the dataset when ``case_id`` is None)."""

    case_id: str | None
    path: str | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = self.case_id if self.case_id is not None else "dataset"
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class Dataset:
    """A discovered dataset.

    ``labels``: name -> label value, background included; empty when the layout declares none
    (then ``info["labels_declared"]`` is False and ``attnseg check`` infers the usual values).
    ``regions``: name -> label values, for overlapping (sigmoid) targets such as BraTS WT/TC/ET,
    or None for mutually exclusive classes. ``spatial_dims``: 2 or 3. ``info``: layout details
    (``year`` and ``label_scheme`` for BraTS, ``file_ending`` for nnU-Net, ``channel_indices`` when
    a subset of the channels stored in one file is used).
    """

    root: Path
    layout: str
    cases: list[Case]
    channel_names: list[str]
    labels: dict[str, int]
    regions: dict[str, list[int]] | None
    spatial_dims: int
    info: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    @property
    def groups(self) -> list[str]:
        """Patient (or case) id of every case, in case order: pass to ``make_splits(groups=...)``."""
        return [c.group for c in self.cases]

    @property
    def label_values(self) -> list[int]:
        """Declared label values, sorted (background first)."""
        return sorted(set(self.labels.values()))

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)


# --- helpers shared by the layouts ------------------------------------------------------------------
def split_suffix(name: str) -> tuple[str, str]:
    """``"a.nii.gz"`` -> ``("a", ".nii.gz")``; unsupported suffixes give ``(name, "")``."""
    lower = name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[len(name) - len(suffix) :]
    return name, ""


def is_data_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and split_suffix(path.name)[1] != ""


def data_files(folder: Path) -> list[Path]:
    """Supported image files directly in ``folder`` (hidden files such as macOS ``._x`` skipped)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_data_file(p)), key=lambda p: natural_key(p.name))


def channel_files(folder: Path, case_id: str, suffix: str) -> list[Path]:
    """nnU-Net channel files of a case, ``<case_id>_XXXX<suffix>`` in ``folder``, in channel order.

    The case id matches exactly, the suffix in any letter case (``x_0000.NII.GZ`` for ``.nii.gz``).
    """
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(case_id)}_[0-9]{{4}}(?i:{re.escape(suffix)})")
    found = [p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=lambda p: natural_key(p.name))


def on_disk(path: Path) -> Path:
    """``path``, or when it does not exist the one file beside it that differs only in the letter
    case of its suffix (``x.nii.gz`` listed, ``x.NII.GZ`` on disk, as a case-insensitive file
    system would find it). The name keeps the listed stem, so the case id does not change."""
    stem, suffix = split_suffix(path.name)
    if not suffix or path.exists() or not path.parent.is_dir():
        return path
    found = [
        p
        for p in path.parent.iterdir()
        if p.name != path.name and p.name.lower() == path.name.lower() and p.name.startswith(stem)
    ]
    return found[0] if len(found) == 1 else path


def subfolders(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
        key=lambda p: natural_key(p.name),
    )


_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list:
    """Sort key where ``slice_2`` < ``slice_10`` (numbers compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(text)]


def spatial_dims_of(path: Path) -> int:
    return 3 if split_suffix(path.name)[1].lower() in NIFTI_SUFFIXES else 2
