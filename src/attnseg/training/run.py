"""``attnseg train DATA --out RUN``: data folder -> run folder.

Discovers the cases, splits them (seeded k-fold, or a splits file), loads and normalises them,
derives what the user left unset (patch size from the median shape within a voxel budget, batch
size, channels, classes), prints and saves the configuration, builds the model and calls ``fit``.

Run folder::

    RUN/config.yaml          the full configuration, derived values filled in
    RUN/split.json           training and validation case ids
    RUN/checkpoints/last.pt  end of the last epoch (resume from here)
    RUN/checkpoints/best.pt  best mean validation Dice
    RUN/model.pt             best weights as a plain model file (attnseg.load_model)
    RUN/init.json            with train.init: what was loaded, replaced, adapted and frozen
    RUN/metrics.jsonl, RUN/metrics.csv, RUN/training_curve.png, RUN/summary.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnseg.config import RunConfig, apply_overrides, from_dict, load_yaml, save_yaml, to_dict
from attnseg.datasets import discover
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.datasets.masks2d import mask_set_encoding
from attnseg.datasets.splits import load_splits, make_dataset_splits
from attnseg.errors import ConfigError, DataError
from attnseg.io.atomic import atomic_write_text, check_writable
from attnseg.models.model_file import read_model_file
from attnseg.models.registry import build_model
from attnseg.models.transfer import transfer_weights
from attnseg.training import distributed as D
from attnseg.training.budget import budget_defaults, explicit_keys, plan_for_budget
from attnseg.training.loop import TrainResult, fit
from attnseg.training.plan import default_budget_vox, derive_batch_size, derive_patch_size, median_shape
from attnseg.transforms.cache import VolumeCache
from attnseg.transforms.loader import CaseStore, PreparedCase


def load_run_config(
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults <- ``base`` (e.g. a run's saved config) <- YAML file <- ``key=value`` overrides."""
    data = to_dict(RunConfig()) if base is None else dict(base)
    if config_file is not None:
        data = _merge(data, load_yaml(config_file))
    data = apply_overrides(data, list(overrides))
    return from_dict(RunConfig, data)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def select_split(dataset, config: RunConfig) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` for ``data.fold`` of the seeded k-fold split or of a file."""
    dc = config.data
    if dc.split == "none":
        _check_case_ids(dataset)
        labelled = [c.case_id for c in dataset.cases if c.label is not None]
        if not labelled:
            raise DataError(f"{dataset.root}: no case has a label; training needs labelled cases")
        return {"train": sorted(labelled), "val": []}
    folds = dataset_folds(dataset, config)
    if not 0 <= dc.fold < len(folds):
        raise ConfigError(f"data.fold={dc.fold}; the split has folds 0..{len(folds) - 1}")
    return folds[dc.fold]


def _check_case_ids(dataset) -> None:
    counts = Counter(dataset.case_ids)
    repeated = sorted(c for c, n in counts.items() if n > 1)
    if repeated:
        raise DataError(
            f"{dataset.root}: case id(s) {repeated[:5]} belong to more than one case (attnseg check lists "
            "their files); training needs unique case ids"
        )


def dataset_folds(dataset, config: RunConfig) -> list[dict[str, list[str]]]:
    """Every fold ``{"train": [...], "val": [...]}`` of ``data.split`` (the seeded, patient-grouped
    k-fold split, or a splits file), labelled cases only."""
    dc = config.data
    _check_case_ids(dataset)
    labelled = [c.case_id for c in dataset.cases if c.label is not None]
    if not labelled:
        raise DataError(f"{dataset.root}: no case has a label; training needs labelled cases")
    if dc.split == "kfold":
        folds = make_dataset_splits(dataset, dc.folds, dc.split_seed)
    elif dc.split == "none":
        raise ConfigError("data.split=none has no folds; pass data.split=kfold or a splits file")
    else:
        folds = load_splits(dc.split)
    known = set(dataset.case_ids)
    keep = set(labelled)
    out = []
    for k, fold in enumerate(folds):
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            raise DataError(f"split fold {k} names case(s) not in {dataset.root}: {unknown[:5]}")
        out.append(
            {"train": [c for c in fold["train"] if c in keep], "val": [c for c in fold["val"] if c in keep]}
        )
    return out


def load_cases(
    dataset,
    case_ids: Sequence[str],
    config: RunConfig,
    classes: Sequence[int] | None,
    ignore_label: int | None = None,
) -> list[PreparedCase]:
    """Decode and preprocess the cases once (``attnseg.transforms.CaseStore``) and keep them in memory."""
    # the list holds every case for the whole run, so the store's cache would only hold a second copy
    store = CaseStore(
        dataset,
        config.preprocess,
        VolumeCache(memory_bytes=0, mode="memory"),
        classes=classes,
        case_ids=case_ids,
        ignore_label=ignore_label,
    )
    return [store.get(case_id) for case_id in case_ids]


def derive_settings(
    config: RunConfig, dataset, target: LabelScheme, train_cases: Sequence[PreparedCase], device_type: str
) -> tuple[RunConfig, dict[str, Any]]:
    """Fill channels, classes, spatial dims, patch and batch size from the data; return what was derived."""
    model_cfg = dataclasses.replace(
        config.model,
        spatial_dims=dataset.spatial_dims,
        in_channels=train_cases[0].image.shape[0],
        out_channels=target.out_channels,
    )
    stride = 2 ** (len(model_cfg.features) - 1)  # AttentionUNet/UNet.stride
    shapes = [c.shape for c in train_cases]
    median = median_shape(shapes)
    budget = config.data.patch_budget_vox or default_budget_vox(device_type, dataset.spatial_dims)
    derived: dict[str, Any] = {
        "spatial_dims": model_cfg.spatial_dims,
        "in_channels": model_cfg.in_channels,
        "out_channels": model_cfg.out_channels,
        "target": f"{target.kind} ({', '.join(target.channel_names)})",
        **({"ignore_label": target.ignore_label} if target.ignore_label is not None else {}),
        "median_shape": list(median),
        "network_stride": stride,
        "patch_budget_vox": budget,
    }
    data_cfg = config.data
    if data_cfg.patch_size is None:
        patch = derive_patch_size(median, stride, budget)
        data_cfg = dataclasses.replace(data_cfg, patch_size=patch)
        derived["patch_size"] = list(patch)
    elif len(data_cfg.patch_size) != dataset.spatial_dims:
        raise ConfigError(
            f"data.patch_size={list(data_cfg.patch_size)} has {len(data_cfg.patch_size)} values; "
            f"the data are {dataset.spatial_dims}D"
        )
    if data_cfg.batch_size is None:
        batch = derive_batch_size(data_cfg.patch_size, budget, len(train_cases))
        data_cfg = dataclasses.replace(data_cfg, batch_size=batch)
        derived["batch_size"] = batch
    data_cfg = dataclasses.replace(data_cfg, patch_budget_vox=budget)
    return dataclasses.replace(config, model=model_cfg, data=data_cfg), derived


def check_masks_trainable(dataset, cases: Sequence[PreparedCase]) -> str | None:
    """Refuse (DataError, one line naming the dataset) masks that decode to background only or whose
    values look like an encoding accident; return the 2D masks' decoding note to say once, if any."""
    masks = mask_set_encoding(dataset) if dataset.spatial_dims == 2 else None
    if masks is not None and masks.accident:
        raise DataError(
            f"{dataset.root}: the masks hold {masks.encoding.describe()}; attnseg check lists the files"
        )
    labelled = [c for c in cases if c.label is not None]
    if labelled and not any(np.any(c.label != 0) for c in labelled):
        how = f" (masks: {masks.encoding.describe()})" if masks is not None else ""
        raise DataError(
            f"{dataset.root}: every training label map decodes to background only{how}; there is "
            "nothing to learn (attnseg check shows the label values)"
        )
    return masks.note() if masks is not None else None


def _infer_labels(cases: Sequence[PreparedCase]) -> dict[str, int]:
    values = sorted({int(v) for c in cases if c.label is not None for v in np.unique(c.label)} | {0})
    return {("background" if v == 0 else f"label_{v}"): v for v in values}


FREEZE_EPOCHS = 5  # `--freeze encoder` without a number of epochs


def freeze_overrides(specs: Sequence[str]) -> list[str]:
    """``--freeze PART[:EPOCHS]`` (PART ``encoder`` or ``gates``; EPOCHS default ``FREEZE_EPOCHS``) as
    ``train.freeze_<part>_epochs=N`` overrides, e.g. ``["encoder:3"] -> ["train.freeze_encoder_epochs=3"]``."""
    out = []
    for spec in specs:
        part, _, epochs = str(spec).partition(":")
        if part not in ("encoder", "gates") or not (epochs == "" or epochs.isdigit()):
            raise ConfigError(
                f"--freeze {spec}: pass encoder or gates, optionally with :EPOCHS (e.g. encoder:3)"
            )
        out.append(f"train.freeze_{part}_epochs={int(epochs) if epochs else FREEZE_EPOCHS}")
    return out


def init_weights(
    model: torch.nn.Module,
    payload: dict[str, Any],
    config: RunConfig,
    out: Path,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """``train.init``: the file's weights into ``model`` (``attnseg.models.transfer``); print what was
    loaded, replaced, adapted and frozen and write it to ``RUN/init.json`` (``log``: rank 0 only)."""
    source = str(config.train.init)
    report = transfer_weights(model, payload["state_dict"], payload["model_config"], source=source)
    tc = config.train
    frozen = {"encoder_epochs": tc.freeze_encoder_epochs, "gates_epochs": tc.freeze_gates_epochs}
    record = {
        **report.to_dict(),
        "source_resolved": str(Path(source).resolve()),
        "source_state_dict_sha256": payload.get("state_dict_sha256"),
        "source_model_config": payload["model_config"],
        "frozen": frozen,
    }
    if log is not None:
        log(report.describe())
        held = [f"{part} for epochs 1-{n}" for part, n in (("encoder", tc.freeze_encoder_epochs),
                ("attention gates", tc.freeze_gates_epochs)) if n > 0]  # fmt: skip
        if held:
            log("frozen: " + ", ".join(held))
        atomic_write_text(out / "init.json", json.dumps(record, indent=1) + "\n")
    return record


def _load_config(
    out: Path, config_file: str | Path | None, overrides: Sequence[str], resume: bool, minutes: float | None
) -> RunConfig:
    """The run's settings: a resumed run's saved ``config.yaml`` (its budget kept), or a fresh run's
    defaults (``budget_defaults`` with ``--minutes``) with the user's file and ``--set`` on top."""
    last = out / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise ConfigError(
                f"{out}: nothing to resume (no checkpoints/last.pt); drop --resume to start a run"
            )
        saved = load_yaml(out / "config.yaml")
        config = load_run_config(config_file, overrides, base=_merge(to_dict(RunConfig()), saved))
        kept = config.train.budget_minutes
        if minutes is not None and (kept is None or abs(float(kept) - float(minutes)) > 1e-9):
            raise ConfigError(
                f"{out}: --minutes {minutes:g} with --resume, but the run was started with "
                + (f"--minutes {kept:g}" if kept is not None else "no budget")
                + "; --resume continues a run with its own budget (drop --minutes)"
            )
    else:
        if last.is_file():
            raise ConfigError(f"{out}: already holds a run; pass --resume to continue it, or another --out")
        try:
            base = None if minutes is None else _merge(to_dict(RunConfig()), budget_defaults(minutes))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        config = load_run_config(config_file, overrides, base=base)
    return config


def _write_run_files(
    out: Path, data_root, dataset, split: dict, config: RunConfig, derived: dict, mask_note, log
) -> None:
    """Say what the data gave, then write ``config.yaml``, ``split.json`` and ``derived.json``."""
    log(
        f"data: {dataset.root} ({dataset.layout}, {len(dataset)} cases: {len(split['train'])} train, "
        f"{len(split['val'])} val); channels {', '.join(dataset.channel_names) or derived['in_channels']}"
    )
    log("derived from the data: " + ", ".join(f"{k}={v}" for k, v in derived.items()))
    if mask_note:
        log(f"note: {mask_note}")
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(out / "config.yaml", config)
    payload = {"data": str(Path(data_root).resolve()), "fold": config.data.fold, **split}
    atomic_write_text(out / "split.json", json.dumps(payload, indent=1) + "\n")
    atomic_write_text(out / "derived.json", json.dumps(derived, indent=1) + "\n")


def train(
    data_root: str | Path,
    out: str | Path,
    *,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    init: str | Path | None = None,
    freeze: Sequence[str] = (),
    minutes: float | None = None,
    started: float | None = None,
    stop_after_epochs: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train on the dataset at ``data_root``; write the run folder ``out`` (see the module docstring).

    ``minutes``: a wall-clock budget for the whole command; what the user did not set is chosen for
    it (``attnseg.training.budget``). A resumed run keeps the budget it was started with.
    ``started``: ``time.perf_counter()`` when the command began (default: now).
    ``init``: a model file whose weights a fresh run starts from (``train.init``; ``init_weights``).
    ``freeze``: ``--freeze PART[:EPOCHS]`` specs (``freeze_overrides``).
    """
    started = time.perf_counter() if started is None else started
    if init is not None and resume:
        raise ConfigError(
            f"--init {init} with --resume: a resumed run continues from its checkpoint; drop --init"
        )
    overrides = [*overrides, *freeze_overrides(freeze)]
    out = Path(out)
    check_writable(out)  # a read-only --out fails now, not after loading the data
    last = out / "checkpoints" / "last.pt"
    config = _load_config(out, config_file, overrides, resume, minutes)

    if init is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, init=str(init)))
    # a fresh run reads its --init file before the data (a wrong path fails at once); a resumed run
    # has the weights in its checkpoint
    init = read_model_file(config.train.init) if config.train.init and not resume else None
    device_type = "cuda" if (config.train.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    dist = D.init_from_env(device_type)
    dataset = discover(data_root, config.data.layout)
    if resume and (out / "split.json").is_file():
        split = json.loads((out / "split.json").read_text())
    else:
        split = select_split(dataset, config)
    if not split["train"]:
        raise DataError(f"{data_root}: the split leaves no training case")

    labels = dict(dataset.labels)
    ignore = LabelScheme.declared_ignore_label(labels, config.data.ignore_label)
    classes = sorted(set(labels.values()) | ({ignore} if ignore is not None else set())) if labels else None
    train_cases = load_cases(dataset, split["train"], config, classes, ignore)
    val_cases = load_cases(dataset, split["val"], config, classes, ignore)
    mask_note = check_masks_trainable(dataset, train_cases)
    if not labels:
        labels = _infer_labels(train_cases + val_cases)
    target = LabelScheme.from_labels(
        labels,
        dataset.regions,
        kind=config.data.target,
        paint_order=dataset.info.get("region_paint_order"),
        ignore_label=ignore,
    )
    config, derived = derive_settings(config, dataset, target, train_cases, device_type)
    if minutes is not None and not resume:
        explicit = explicit_keys(load_yaml(config_file) if config_file else None, overrides)
        say = log if dist.is_main else (lambda _msg: None)
        try:
            config, plan = plan_for_budget(
                config, target, explicit, started, say, measure=dist.world_size == 1
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        derived["budget"] = dataclasses.asdict(plan)

    if dist.is_main:
        _write_run_files(out, data_root, dataset, split, config, derived, mask_note, log)
    D.barrier(dist)

    torch.manual_seed(config.train.seed)
    model = build_model(config.model)
    if init is not None:
        init_weights(model, init, config, out, log if dist.is_main else None)
    try:
        return fit(
            model,
            train_cases,
            val_cases,
            target,
            config,
            out,
            resume_from=last if resume else None,
            stop_after_epochs=stop_after_epochs,
            log=log,
            dist_info=dist,
            model_extra={"channel_names": list(dataset.channel_names)},
        )
    finally:
        if os.environ.get("WORLD_SIZE", "1") != "1":
            D.shutdown(dist)
