"""``attnseg train DATA --out RUN --folds K --fold all``: k-fold cross-validation, out-of-fold
predictions, and the postprocessing they choose (nnU-Net's ``run_training`` for every fold, then its
``find_best_configuration`` step for the component rules).

Run folder::

    RUN/splits.json                     the folds (``attnseg.datasets.splits`` format)
    RUN/fold_<k>/                       one whole training run per fold (``attnseg.training.run``)
    RUN/fold_<k>/validation/            its validation cases predicted by its ``model.pt``
                                        (sliding window as ``attnseg predict``, no TTA, no rules)
    RUN/oof_metrics_per_case.csv        every case scored once, by the fold that did not train on it
    RUN/oof_postprocessed_metrics_per_case.csv   the same after the chosen component rules
    RUN/cv_summary.json                 per-fold means, out-of-fold summaries (``metrics.evaluate``),
                                        every postprocessing candidate's out-of-fold Dice, the choice

The chosen rules (``attnseg.inference.postprocess_choice``) are written into every fold's
``model.pt`` card (``postprocessing``), so ``attnseg predict RUN ...`` (the fold ensemble) and
each fold's model apply them. Folds train one after the other in this process; a fold whose run
is finished (``summary.json`` and ``model.pt``, on the same validation cases) is kept, so folds
trained in parallel (``attnseg train DATA --out RUN/fold_<k> --folds K --fold k``, one process or
machine each) are collected by a later ``--fold all``; an unfinished fold continues with ``--resume``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnseg.config import load_yaml
from attnseg.datasets import discover, load_case
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.datasets.splits import save_splits
from attnseg.errors import ConfigError
from attnseg.inference.postprocess import postprocess_components, rules_from_card
from attnseg.inference.postprocess_choice import ChosenRules, as_card, choose_rules, component_stats
from attnseg.inference.predict import PredictOptions, output_paths, predict_folder, read_settings
from attnseg.io.atomic import atomic_write_text, check_writable
from attnseg.io.images2d import load_mask2d
from attnseg.io.nifti import load_label
from attnseg.metrics.evaluate import evaluate_case, per_case_csv, summarize
from attnseg.models.model_file import read_model_file, write_payload
from attnseg.training.budget import explicit_keys
from attnseg.training.run import dataset_folds, load_run_config, train

__all__ = ["CrossValidationResult", "cross_validate", "cv_table", "fold_dir"]

TABLE_METRICS = ("dice", "hd95_mm")


def fold_dir(run: str | os.PathLike, k: int) -> Path:
    """``RUN/fold_<k>``."""
    return Path(run) / f"fold_{k}"


@dataclass
class CrossValidationResult:
    run_dir: Path
    folds: list[dict[str, list[str]]]
    per_case: dict[str, dict[str, dict[str, float]]]  # out-of-fold, case -> target -> metric
    per_case_postprocessed: dict[str, dict[str, dict[str, float]]]
    chosen: ChosenRules
    summary: dict[str, Any] = field(default_factory=dict)
    table: str = ""


def cross_validate(
    data_root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config_file: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    init: str | os.PathLike | None = None,
    freeze: Sequence[str] = (),
    minutes: float | None = None,
    log: Callable[[str], None] = print,
) -> CrossValidationResult:
    """Train every fold, predict each fold's validation cases, score them together, choose and
    record the postprocessing, write ``cv_summary.json`` and print the table (module docstring).
    ``minutes``: each fold's budget. The split is ``data.split`` (default: the seeded k-fold
    split of ``data.folds`` folds, patient-grouped where the layout records patients)."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ConfigError(
            "--fold all trains the folds one after the other in one process; under torchrun run one "
            "fold per command (attnseg train DATA --out RUN/fold_<k> --folds K --fold k), then "
            "--fold all on RUN collects them"
        )
    out = Path(out)
    check_writable(out)
    overrides = [*overrides, *fold_defaults(config_file, overrides)]
    config = load_run_config(config_file, overrides)
    dataset = discover(data_root, config.data.layout)
    folds = dataset_folds(dataset, config)
    out.mkdir(parents=True, exist_ok=True)
    save_splits(out / "splits.json", folds, k=len(folds), seed=config.data.split_seed,
                grouped=any(g != c for g, c in zip(dataset.groups, dataset.case_ids)))  # fmt: skip
    for k, fold in enumerate(folds):
        train_fold(data_root, out, k, len(folds), fold, config_file=config_file, overrides=overrides,
                   resume=resume, init=init, freeze=freeze, minutes=minutes, log=log)  # fmt: skip
    predict_out_of_fold(data_root, out, folds, device=config.train.device, log=log)
    scheme = read_settings(read_model_file(fold_dir(out, 0) / "model.pt")).label_scheme
    per_case, stats = score_out_of_fold(dataset, out, folds, scheme)
    chosen = choose_rules(stats)
    per_case_pp = score_out_of_fold(dataset, out, folds, scheme, rules=as_card(chosen.rules))[0]
    record_postprocessing(out, len(folds), as_card(chosen.rules))
    result = CrossValidationResult(out, folds, per_case, per_case_pp, chosen)
    result.summary = write_summary(out, data_root, folds, scheme, result)
    result.table = cv_table(result.summary)
    log(result.table)
    return result


def fold_defaults(config_file, overrides: Sequence[str]) -> list[str]:
    """What a fold run sets unless the user did: a k-fold split (the ``--minutes`` defaults train
    on every case), and no validation during training (``train.val_every=0``), so that ``model.pt``
    holds the final weights (nnU-Net's ``checkpoint_final``) and not the ones that scored best on
    the very cases the out-of-fold estimate is taken on."""
    explicit = explicit_keys(load_yaml(config_file) if config_file else None, overrides)
    config = load_run_config(config_file, overrides)
    out = []
    if "data.split" not in explicit or config.data.split == "none":
        out.append("data.split=kfold")
    if "train.val_every" not in explicit:
        out.append("train.val_every=0")
    return out


def train_fold(
    data_root, out: Path, k: int, n_folds: int, fold: dict[str, list[str]], *, config_file, overrides,
    resume: bool, init, freeze, minutes, log,
) -> None:  # fmt: skip
    """Train fold ``k`` into ``RUN/fold_<k>``, unless a finished run on the same cases is there."""
    folder = fold_dir(out, k)
    if (folder / "summary.json").is_file() and (folder / "model.pt").is_file():
        done = json.loads((folder / "split.json").read_text()) if (folder / "split.json").is_file() else {}
        if sorted(done.get("val", [])) != sorted(fold["val"]):
            raise ConfigError(
                f"{folder}: holds a finished run on other validation cases than fold {k} of this split; "
                "choose another --out"
            )
        log(f"fold {k}/{n_folds}: finished run found in {folder}, kept")
        return
    log(f"fold {k}/{n_folds}: {len(fold['train'])} training, {len(fold['val'])} validation cases -> {folder}")
    fold_overrides = [*overrides, f"data.folds={n_folds}", f"data.fold={k}"]
    continuing = resume and (folder / "checkpoints" / "last.pt").is_file()
    train(data_root, folder, config_file=config_file, overrides=fold_overrides, resume=continuing,
          init=None if continuing else init, freeze=freeze, minutes=minutes, log=log)  # fmt: skip


def predict_out_of_fold(
    data_root, out: Path, folds: Sequence[dict[str, list[str]]], *, device: str = "cpu", log=print
) -> None:
    """Each fold's ``model.pt`` predicts its validation cases into ``RUN/fold_<k>/validation``
    (no TTA, none of the card's component rules: the raw predictions the rules are chosen on)."""
    options = PredictOptions(card_postprocessing=False)
    for k, fold in enumerate(folds):
        started = time.perf_counter()
        report = predict_folder(
            fold_dir(out, k) / "model.pt",
            data_root,
            fold_dir(out, k) / "validation",
            options,
            overwrite=True,
            device=device,
            progress=False,
            case_ids=fold["val"],
        )
        if report.failed:
            raise ConfigError(
                f"fold {k}: out-of-fold prediction failed for {report.failed[0][0]}: {report.failed[0][1]}"
            )
        log(
            f"fold {k}: {len(report.predicted)} validation cases predicted ({time.perf_counter() - started:.1f} s)"
        )


def _target_masks(labels: np.ndarray, scheme: LabelScheme) -> dict[int, np.ndarray]:
    """Target number -> mask: label value for classes, 1-based region number for regions (the
    numbering of ``attnseg.inference.postprocess.postprocess_components``)."""
    if scheme.kind == "regions":
        return {r + 1: np.isin(labels, vals) for r, vals in enumerate(scheme.regions)}
    return {int(v): labels == v for v in scheme.values if v != scheme.background}


def apply_rules(labels: np.ndarray, scheme: LabelScheme, card_entry: dict) -> np.ndarray:
    """A label map after the card's component rules: on the label map for classes; for regions on
    each region's mask (taken from the label map), painted back."""
    keep, small = rules_from_card(card_entry)
    if keep is False and not small:
        return labels
    if scheme.kind == "regions":
        masks = np.stack(list(_target_masks(labels, scheme).values())).astype(np.uint8)
        masks = postprocess_components(masks, keep_largest=keep, min_voxels=small, channels_first=True)
        return scheme.paint(masks).astype(labels.dtype)
    return postprocess_components(labels, keep_largest=keep, min_voxels=small)


def _read_prediction(path: Path) -> np.ndarray:
    return (load_label(path) if path.name.endswith((".nii", ".nii.gz")) else load_mask2d(path))[0]


def score_out_of_fold(dataset, out: Path, folds, scheme: LabelScheme, rules: dict | None = None):
    """Every validation case scored with ``metrics.evaluate.evaluate_case`` (the targets of the label
    scheme, no lesion counts), after ``rules`` when given; and, without rules, each target's
    component statistics for ``choose_rules``. Returns ``(per_case, stats)``, case ids sorted."""
    cases = {c.case_id: c for c in dataset.cases}
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    stats: dict[int, list] = {}
    for k, fold in enumerate(folds):
        for cid in fold["val"]:
            _, truth, meta = load_case(cases[cid], dataset)
            path = output_paths(fold_dir(out, k) / "validation", cid, dataset.spatial_dims)[0]
            pred = _read_prediction(path)
            if rules is not None:
                pred = apply_rules(pred, scheme, rules)
            else:
                truths = _target_masks(truth, scheme)
                for t, mask in _target_masks(pred, scheme).items():
                    stats.setdefault(t, []).append(component_stats(mask, truths[t]))
            per_case[cid] = evaluate_case(pred, truth, meta.spacing_mm, regions=scheme.targets, lesions=False)
    return dict(sorted(per_case.items())), stats


def record_postprocessing(out: Path, n_folds: int, entry: dict) -> None:
    """The chosen rules into every fold's ``model.pt`` card (weights and checksum unchanged)."""
    for k in range(n_folds):
        path = fold_dir(out, k) / "model.pt"
        payload = read_model_file(path)
        payload["postprocessing"] = entry
        write_payload(path, payload)


def _means(per_case, ids) -> dict[str, dict[str, float]]:
    rows = [per_case[c] for c in ids if c in per_case]
    targets = list(rows[0]) if rows else []
    return {t: {m: float(np.mean([r[t][m] for r in rows])) for m in TABLE_METRICS} for t in targets}


def write_summary(out: Path, data_root, folds, scheme: LabelScheme, result: CrossValidationResult) -> dict:
    """``cv_summary.json`` and the two per-case CSVs (module docstring)."""
    names = list(scheme.targets)
    number = dict(zip(names, _target_masks(np.zeros(1, dtype=np.int64), scheme)))
    chosen = result.chosen
    selected = [
        k for k in range(len(folds))
        if json.loads((fold_dir(out, k) / "summary.json").read_text()).get("best_epoch") is not None
    ]  # fmt: skip
    summary = {
        "data": str(Path(data_root).resolve()),
        # folds whose model.pt was chosen by its Dice on its validation cases: the estimate is optimistic
        "folds_selected_on_validation": selected,
        "k": len(folds),
        "n_cases": len(result.per_case),
        "folds": [
            {
                "fold": k,
                "run": fold_dir(out, k).name,
                "n_train": len(f["train"]),
                "n_val": len(f["val"]),
                "mean": _means(result.per_case, f["val"]),
            }
            for k, f in enumerate(folds)
        ],  # fmt: skip
        "oof": summarize(result.per_case, settings={"targets": scheme.targets, "lesions": False}),
        "postprocessing": {
            "card": as_card(chosen.rules),
            "rules": {n: chosen.rules.get(number[n], "none") for n in names},
            "mean_dice_by_rule": {n: chosen.mean_dice.get(number[n], {}) for n in names},
            "how": "per target, the rule with the highest mean out-of-fold Dice, kept only if better "
            "than none (attnseg.inference.postprocess_choice)",
        },
        "oof_postprocessed": summarize(result.per_case_postprocessed, settings={"targets": scheme.targets}),
    }
    atomic_write_text(out / "oof_metrics_per_case.csv", per_case_csv(result.per_case))
    atomic_write_text(
        out / "oof_postprocessed_metrics_per_case.csv", per_case_csv(result.per_case_postprocessed)
    )
    atomic_write_text(out / "cv_summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def cv_table(summary: dict) -> str:
    """The printed table: per fold, out-of-fold and out-of-fold after postprocessing, mean Dice and
    HD95 (mm) per target, and the rules chosen."""
    names = list(summary["oof"]["targets"])
    head = f"{'':<22}" + "".join(f"{n[:19]:>20}" for n in names)
    sub = f"{'':<22}" + "".join(f"{'Dice':>10}{'HD95 mm':>10}" for _ in names)
    lines = [
        f"cross-validation, {summary['k']} folds, {summary['n_cases']} cases (out-of-fold: each case "
        "predicted by the fold that did not train on it)",
        head,
        sub,
    ]

    def row(label: str, means: dict) -> str:
        return f"{label:<22}" + "".join(
            f"{means[n]['dice']:>10.4f}{means[n]['hd95_mm']:>10.2f}" for n in names
        )

    for f in summary["folds"]:
        lines.append(row(f"fold {f['fold']} ({f['n_val']} cases)", f["mean"]))
    for label, key in (("out-of-fold", "oof"), ("+ postprocessing", "oof_postprocessed")):
        targets = summary[key]["targets"]
        lines.append(row(label, {n: {m: targets[n][m]["mean"] for m in TABLE_METRICS} for n in names}))
    pp = summary["postprocessing"]
    said = [
        f"{n}: {r}" + (f" (OOF Dice {pp['mean_dice_by_rule'][n]['none']:.4f} -> "
                       f"{pp['mean_dice_by_rule'][n][r]:.4f})" if r != "none" else "")
        for n, r in pp["rules"].items()
    ]  # fmt: skip
    lines.append("postprocessing chosen (recorded in each fold's model.pt): " + "; ".join(said))
    if summary.get("folds_selected_on_validation"):
        lines.append(
            f"note: the model.pt of fold(s) {summary['folds_selected_on_validation']} holds the weights with "
            "the best Dice on its own validation cases, so the out-of-fold figures are optimistic "
            "(train.val_every=0, the --fold all default, keeps the final weights)"
        )
    return "\n".join(lines)
