"""nnU-Net v2 raw layout: ``imagesTr/<case>_<XXXX><ending>`` one file per channel, ``labelsTr/<case><ending>``.

``dataset.json``: ``channel_names`` (``{"0": "T2", "1": "ADC"}``), ``labels`` (name -> value,
background included; a list of values makes a region, nnU-Net's region-based training; a label
named ``"ignore"`` marks unannotated voxels, see ``attnseg.datasets.label_scheme``),
``numTraining``, ``file_ending``; optionally ``dataset`` listing the cases explicitly.
"""

from __future__ import annotations

import re
from pathlib import Path

from attnseg.datasets.base import Case, Dataset, Problem, natural_key, on_disk
from attnseg.datasets.label_scheme import IGNORE_NAME
from attnseg.datasets.msd import _indexed_names, read_dataset_json
from attnseg.datasets.regions import class_order_paint
from attnseg.errors import DataError


def nnunet_labels(table, where: str) -> tuple[dict[str, int], dict[str, list[int]] | None]:
    """nnU-Net v2 ``labels`` -> (label values, regions or None)."""
    if not isinstance(table, dict) or not table:
        raise DataError(f"{where}: 'labels' must map names to values, background included")
    labels: dict[str, int] = {}
    regions: dict[str, list[int]] = {}
    for name, value in table.items():
        if isinstance(value, list | tuple):
            vals = [int(v) for v in value]
            if len(vals) == 1:
                labels.setdefault(str(name), vals[0])
            regions[str(name)] = vals
        else:
            try:
                labels[str(name)] = int(value)
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"{where}: label {name!r} has value {value!r}; expected an integer or a list"
                ) from exc
    if regions:
        for name, value in labels.items():  # plain labels are one-value regions in a region-based dataset
            if value != 0 and name not in regions and name != IGNORE_NAME:
                regions[name] = [value]
        known = set(labels.values())
        for vals in regions.values():
            for v in vals:
                if v not in known:
                    labels[f"label_{v}"] = v
                    known.add(v)
    if 0 not in labels.values():
        raise DataError(f"{where}: 'labels' must declare the background (value 0)")
    return labels, (regions or None)


def _files_with_ending(folder: Path, ending: str) -> dict[str, Path]:
    """Case id -> file ``<case id><ending>`` in ``folder`` (the ending in any letter case)."""
    if not folder.is_dir():
        return {}
    n = len(ending)
    return {
        p.name[:-n]: p
        for p in sorted(folder.iterdir())
        if len(p.name) > n and p.name.lower().endswith(ending.lower()) and not p.name.startswith(".")
    }


def discover_nnunet(root: Path) -> Dataset:
    data = read_dataset_json(root)
    where = str(root / "dataset.json")
    channel_names = _indexed_names(data.get("channel_names"), f"{where}: 'channel_names'")
    labels, regions = nnunet_labels(data.get("labels"), where)
    paint = None
    if regions and data.get("regions_class_order") is not None:
        paint = class_order_paint(regions, list(data["labels"]), data["regions_class_order"], where)
    ending = str(data.get("file_ending", ".nii.gz"))
    n_ch = len(channel_names)
    cases: list[Case] = []
    problems: list[Problem] = []
    explicit = data.get("dataset")
    if isinstance(explicit, dict):
        for case_id, entry in sorted(explicit.items(), key=lambda kv: natural_key(kv[0])):
            # listed paths as listed (absolute, links not followed): names come from the listing
            images = [on_disk((root / p).absolute()) for p in entry.get("images", [])]
            label = on_disk((root / entry["label"]).absolute()) if entry.get("label") else None
            cases.append(Case(str(case_id), images, label, {}))
    else:
        images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
        if not images_dir.is_dir():
            raise DataError(f"{root}: nnU-Net layout needs an imagesTr folder")
        # the file ending matches in any letter case (case_0000.NII.GZ), the case id as written
        pattern = re.compile(rf"^(?P<case>.+)_(?P<ch>[0-9]{{4}})(?i:{re.escape(ending)})$")
        label_files = _files_with_ending(labels_dir, ending)
        by_case: dict[str, dict[int, Path]] = {}
        for path in images_dir.iterdir():
            if path.name.startswith("."):
                continue
            m = pattern.match(path.name)
            if not m:
                if path.is_file() and path.name.lower().endswith(ending.lower()):
                    problems.append(
                        Problem(
                            None,
                            str(path),
                            "bad_name",
                            f"expected <case>_XXXX{ending} (4-digit channel number)",
                        )
                    )
                continue
            by_case.setdefault(m["case"], {})[int(m["ch"])] = path
        for case_id in sorted(by_case, key=natural_key):
            channels = by_case[case_id]
            missing = [c for c in range(n_ch) if c not in channels]
            extra = [c for c in channels if c >= n_ch]
            if missing or extra:
                problems.append(
                    Problem(
                        case_id,
                        str(images_dir),
                        "channel_count",
                        f"has channel files {sorted(channels)}; dataset.json declares {n_ch} "
                        f"({', '.join(channel_names)})"
                        + (f", missing {[f'{c:04d}' for c in missing]}" if missing else ""),
                    )
                )
            images = [channels[c] for c in sorted(channels)]
            label = label_files.get(case_id)
            meta = {} if label is not None else {"expected_label": str(labels_dir / f"{case_id}{ending}")}
            cases.append(Case(case_id, images, label, meta))
        for cid, path in sorted(label_files.items()):
            if cid not in by_case:
                problems.append(
                    Problem(cid, str(path), "missing_image", "label has no image files in imagesTr")
                )
    declared = data.get("numTraining")
    if isinstance(declared, int) and declared != len(cases):
        problems.append(
            Problem(
                None, where, "count_mismatch", f"numTraining is {declared} but {len(cases)} cases were found"
            )
        )
    spatial_dims = 3 if ending.lower() in (".nii.gz", ".nii", ".nrrd", ".mha") else 2
    return Dataset(
        root=root,
        layout="nnunet",
        cases=cases,
        channel_names=channel_names,
        labels=labels,
        regions=regions,
        spatial_dims=spatial_dims,
        info={
            "labels_declared": True,
            "file_ending": ending,
            "name": data.get("name"),
            # nnU-Net's regions_class_order as (region, value) pairs in painting order
            **({"region_paint_order": [list(p) for p in paint]} if paint else {}),
        },
        problems=problems,
    )
