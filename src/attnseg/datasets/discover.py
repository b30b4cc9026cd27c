"""Find a dataset's layout and cases, and load one case as arrays.

``discover(root, layout="auto", **options)`` recognises, in this order:

1. ``dataset.json`` with ``channel_names``/``file_ending`` -> ``nnunet`` (v2 raw);
   ``dataset.json`` with a ``training`` list -> ``msd`` (also nnU-Net v1);
2. an image folder (``images``/``imagesTr``) next to ``labels``/``masks`` -> ``paired``;
3. case folders with BraTS names (``_flair``/``_seg`` or ``-t2f``/``-seg``) -> ``brats``;
   DeepMedic's BraTS 2015 files -> ``folder`` with ``preset="brats2015-deepmedic"``;
   patient folders of ``<id>_<n>`` + ``<id>_<n>_mask`` images -> ``slices2d``;
4. DICOM files anywhere below -> ``dicom`` (one case per series, labels from DICOM SEG objects:
   ``attnseg.datasets.dicom``).

Options common to every layout:

- ``channels``: BraTS modality names (``["flair", "t1"]``) for ``brats``; file patterns for
  ``folder`` (giving patterns or ``label=`` selects ``folder``); channel numbers or names for the
  others (``[1]`` keeps FLAIR of the 3-channel LGG slices).
- ``labels``: declared label values, ``{"background": 0, "tumour": 1}`` or ``[0, 1, 2]``.
- ``regions``: overlapping targets. BraTS layouts default to WT/TC/ET of their scheme; pass a
  list of names (``["WT"]``), a dict (``{"WT": [1, 2, 4]}``), a scheme (``"brats2015"``,
  ``"msd"``) or ``None`` for plain multi-class labels.
- ``channel_names``: names for the channels, in order.

Layout-specific options: ``year`` (brats, folder), ``label``/``preset`` (folder), ``split`` (msd),
``image_dir``/``label_dir`` (paired), ``mask_suffix`` (slices2d).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.datasets.base import Case, Dataset, Problem, data_files, spatial_dims_of, split_suffix
from attnseg.datasets.brats import PRESETS, case_folders, discover_brats, discover_folder, naming_of
from attnseg.datasets.dicom import discover_dicom, is_dicom_case, load_dicom_arrays
from attnseg.datasets.masks2d import mask_encoding_for
from attnseg.datasets.msd import discover_msd, msd_labels, read_dataset_json
from attnseg.datasets.nnunet import discover_nnunet, nnunet_labels
from attnseg.datasets.paired import discover_paired, find_pair_dirs
from attnseg.datasets.regions import BRATS_REGIONS, brats_regions, brats_scheme
from attnseg.datasets.slices2d import discover_slices2d, looks_like_slices
from attnseg.errors import ConfigError, DataError
from attnseg.io.dicom_series import has_dicom
from attnseg.io.images2d import load_image2d, load_mask2d
from attnseg.io.nifti import AFFINE_ATOL, ImageMeta, load_image, load_label

LAYOUTS = {
    "msd": discover_msd,
    "nnunet": discover_nnunet,
    "brats": discover_brats,
    "folder": discover_folder,
    "paired": discover_paired,
    "slices2d": discover_slices2d,
    "dicom": discover_dicom,
}
_DEFAULT = object()


def detect_layout(root: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """(layout name, implied options) for the folder ``root``; DataError when nothing fits."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if (root / "dataset.json").is_file():
        data = read_dataset_json(root)
        if "channel_names" in data or "file_ending" in data:
            return "nnunet", {}
        if "training" in data:
            return "msd", {}
        raise DataError(
            f"{root / 'dataset.json'}: neither nnU-Net v2 (channel_names) nor MSD (training list)"
        )
    images, _labels = find_pair_dirs(root)
    if images is not None:
        return "paired", {}
    folders = case_folders(root)
    for folder, _grade in folders[:5]:
        if naming_of(folder):
            return "brats", {}
        names = {p.name.lower() for p in data_files(folder)}
        deepmedic = PRESETS["brats2015-deepmedic"]
        if {n.lower() for n in (*deepmedic["channels"], deepmedic["label"])} <= names:
            return "folder", {"preset": "brats2015-deepmedic"}
        if looks_like_slices(folder):
            return "slices2d", {}
    if has_dicom(root):
        return "dicom", {}
    raise DataError(
        f"{root}: cannot tell the dataset layout; looked for dataset.json (MSD, nnU-Net), images/ + "
        "labels/ (paired), BraTS case folders, <id>_<n>_mask slice folders and DICOM files. For other "
        "folder-per-case data pass file patterns, e.g. channels=['*flair*'], label='*seg*'"
    )


def declared_labels(root: str | os.PathLike) -> dict[str, int]:
    """Name -> value of the labels ``root/dataset.json`` declares (nnU-Net v2 or MSD), without
    listing the cases; ``{}`` when there is no dataset.json (e.g. a folder of label maps)."""
    root = Path(root)
    if not (root / "dataset.json").is_file():
        return {}
    data = read_dataset_json(root)
    where = str(root / "dataset.json")
    if "channel_names" in data or "file_ending" in data:
        return nnunet_labels(data.get("labels"), where)[0]
    return msd_labels(data.get("labels", {}), where)


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[{") or split_suffix(text)[1] != ""


def _regions_option(dataset: Dataset, regions: Any) -> dict[str, list[int]] | None:
    scheme = dataset.info.get("label_scheme")
    if regions is _DEFAULT:
        if dataset.regions is not None:
            return dataset.regions
        return brats_regions(scheme) if scheme else None
    if regions is None or regions is False or (isinstance(regions, str) and regions.lower() == "none"):
        return None
    if isinstance(regions, str):
        key = regions.lower()
        if key == "brats":
            if not scheme:
                raise ConfigError(
                    "regions='brats' needs a BraTS dataset or year=; name a scheme, e.g. 'brats2017'"
                )
            return brats_regions(scheme)
        return brats_regions(brats_scheme(key))
    if isinstance(regions, dict):
        return {
            str(k): [int(v) for v in (vals if isinstance(vals, list | tuple) else [vals])]
            for k, vals in regions.items()
        }
    if isinstance(regions, list | tuple):
        if dataset.regions:
            missing = [r for r in regions if r not in dataset.regions]
            if missing:
                raise ConfigError(f"unknown region(s) {missing}; this dataset has {list(dataset.regions)}")
            return {r: list(dataset.regions[r]) for r in regions}
        if not scheme:
            raise ConfigError(
                f"regions={list(regions)} needs a BraTS dataset or year=; or pass a dict of label values"
            )
        return brats_regions(scheme, [str(r) for r in regions])
    raise ConfigError(f"regions: expected None, a scheme name, a list of names or a dict, got {regions!r}")


def _labels_option(labels: Any) -> dict[str, int]:
    if isinstance(labels, dict):
        try:
            return {str(k): int(v) for k, v in labels.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"labels: values must be integers, got {labels!r}") from exc
    if isinstance(labels, list | tuple):
        values = sorted({int(v) for v in labels} | {0})
        return {("background" if v == 0 else f"label_{v}"): v for v in values}
    raise ConfigError(f"labels: expected a dict name -> value or a list of values, got {labels!r}")


def _select_channels(dataset: Dataset, channels: Sequence[int | str]) -> None:
    names = dataset.channel_names
    indices = []
    for ch in channels:
        if isinstance(ch, int | np.integer) or (isinstance(ch, str) and ch.isdigit()):
            i = int(ch)
        elif ch in names:
            i = names.index(ch)
        else:
            raise ConfigError(f"unknown channel {ch!r}; this dataset has {names}")
        if not 0 <= i < len(names):
            raise ConfigError(f"channel {i} out of range; this dataset has {len(names)} channels {names}")
        indices.append(i)
    one_file_per_channel = all(len(c.images) == len(names) for c in dataset.cases) and len(names) > 1
    if one_file_per_channel:
        for case in dataset.cases:
            case.images = [case.images[i] for i in indices]
    else:
        dataset.info["channel_indices"] = indices
    dataset.channel_names = [names[i] for i in indices]


def _report_repeated_ids(dataset: Dataset) -> None:
    """Record a ``duplicate_case`` problem for every case id that more than one case uses.

    Training refuses such a dataset (splits need unique ids) and prediction refuses those cases
    (their outputs would share a file name); ``attnseg check`` lists them with their files.
    """
    by_id: dict[str, list[Case]] = {}
    for case in dataset.cases:
        by_id.setdefault(case.case_id, []).append(case)
    for case_id, cases in by_id.items():
        if len(cases) > 1:
            files = "; ".join(", ".join(str(p) for p in c.images) or "(no image)" for c in cases)
            dataset.problems.append(
                Problem(case_id, None, "duplicate_case", f"{len(cases)} cases share this id: {files}")
            )


def _report_shared_files(dataset: Dataset) -> None:
    """Record a ``duplicate_file`` problem for every file that a case uses under its own name while
    an earlier case (with another id) uses the very same file: two symlinks or hard links to one
    scan. Both cases stay, each named as listed; ``attnseg check`` fails, since the same data under
    two names can sit in training and validation at once.
    """
    owners: dict[tuple[int, int], tuple[Case, Path]] = {}
    for case in dataset.cases:
        for path in (*case.images, *([case.label] if case.label is not None else [])):
            try:
                st = path.stat()  # follows links; (device, inode) also matches hard links
            except OSError:
                continue  # missing: check reports it
            owner, owner_path = owners.setdefault((st.st_dev, st.st_ino), (case, path))
            if owner.case_id != case.case_id:  # the same id twice is reported as duplicate_case
                dataset.problems.append(
                    Problem(
                        case.case_id,
                        str(path),
                        "duplicate_file",
                        f"{_shown(path, dataset.root)} is the same file as {_shown(owner_path, dataset.root)} "
                        f"of case {owner.case_id} (links to one file): the same data under two case names",
                    )
                )


def _shown(path: Path, root: Path) -> str:
    try:
        return str(Path(path).absolute().relative_to(Path(root).absolute()))
    except ValueError:
        return str(path)


def discover(root: str | os.PathLike, layout: str = "auto", **options: Any) -> Dataset:
    """Discover the cases under ``root`` (see the module docstring for layouts and options)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    labels = options.pop("labels", None)
    regions = options.pop("regions", _DEFAULT)
    channel_names = options.get("channel_names")
    if layout == "auto":
        channels = options.get("channels")
        wants_folder = (
            "label" in options
            or "preset" in options
            or (channels is not None and any(isinstance(c, str) and _is_pattern(c) for c in channels))
        )
        if wants_folder:
            layout = "folder"
        else:
            layout, implied = detect_layout(root)
            for key, value in implied.items():
                options.setdefault(key, value)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; expected auto or one of {sorted(LAYOUTS)}")
    function = LAYOUTS[layout]
    accepted = set(inspect.signature(function).parameters) - {"root"}
    select = None
    if "channels" in options and "channels" not in accepted:
        select = options.pop("channels")
    if "channel_names" in options and "channel_names" not in accepted:
        options.pop("channel_names")
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"option(s) {unknown} do not apply to the {layout} layout; it accepts {sorted(accepted) or 'none'} "
            "plus channels, labels, regions, channel_names"
        )
    dataset = function(root, **options)
    _report_repeated_ids(dataset)
    _report_shared_files(dataset)
    if channel_names is not None and "channel_names" not in accepted:
        if len(channel_names) != len(dataset.channel_names):
            raise ConfigError(
                f"channel_names has {len(channel_names)} names; the data have {len(dataset.channel_names)} channels"
            )
        dataset.channel_names = [str(n) for n in channel_names]
    if select is not None:
        _select_channels(dataset, select)
    if labels is not None:
        dataset.labels = _labels_option(labels)
        dataset.info["labels_declared"] = True
    dataset.regions = _regions_option(dataset, regions)
    if dataset.regions and dataset.labels:
        outside = sorted(
            {v for vals in dataset.regions.values() for v in vals} - set(dataset.labels.values())
        )
        if outside:
            raise ConfigError(
                f"regions use label values {outside} that the dataset does not declare ({dataset.labels})"
            )
    if not dataset.cases:
        raise DataError(f"{root}: no cases found in the {layout} layout")
    return dataset


def load_case(case: Case, dataset: Dataset) -> tuple[np.ndarray, np.ndarray | None, ImageMeta]:
    """Read one case: image ``(C, *spatial)`` float32, label ``(*spatial)`` integers or None, meta.

    The label must share the image's spatial shape and (for NIfTI) its affine; otherwise the
    pair would be misaligned and a DataError names the case and both files.
    """
    if not case.images:
        raise DataError(f"case {case.case_id}: no image files")
    if is_dicom_case(case):
        return load_dicom_arrays(case)
    if spatial_dims_of(case.images[0]) == 3:
        image, meta = load_image(case.images)
    else:
        parts = [load_image2d(p) for p in case.images]
        meta = parts[0][1]
        for path, (part, _) in zip(case.images, parts):
            if part.shape[1:] != parts[0][0].shape[1:]:
                raise DataError(
                    f"case {case.case_id}: {path} is {part.shape[1:]}, {case.images[0]} is {meta.shape}"
                )
        image = parts[0][0] if len(parts) == 1 else np.concatenate([p for p, _ in parts], axis=0)
    indices = dataset.info.get("channel_indices")
    if indices is not None:
        if max(indices) >= image.shape[0]:
            raise DataError(
                f"case {case.case_id}: has {image.shape[0]} channels, channel {max(indices)} was selected"
            )
        image = np.ascontiguousarray(image[indices])
    if dataset.channel_names and image.shape[0] != len(dataset.channel_names):
        raise DataError(
            f"case {case.case_id}: image has {image.shape[0]} channels; the dataset has "
            f"{len(dataset.channel_names)} ({', '.join(dataset.channel_names)})"
        )
    if case.label is None:
        return image, None, meta
    if spatial_dims_of(case.label) == 3:
        label, label_meta = load_label(case.label)
        if label.shape != meta.shape:
            raise DataError(
                f"case {case.case_id}: label {case.label} has shape {label.shape}, image has {meta.shape}"
            )
        if not np.allclose(label_meta.affine, meta.affine, atol=AFFINE_ATOL, rtol=0):
            raise DataError(
                f"case {case.case_id}: label {case.label} and image {meta.path} have different affines"
            )
    else:
        label, _ = load_mask2d(case.label, mask_encoding_for(dataset, case.label))
        if label.shape != meta.shape:
            raise DataError(
                f"case {case.case_id}: mask {case.label} has shape {label.shape}, image has {meta.shape}"
            )
    return image, label, meta


__all__ = ["BRATS_REGIONS", "LAYOUTS", "detect_layout", "discover", "load_case"]
