"""The ``attnseg`` command: parse arguments, call the Python API, print. No logic of its own.

Each sub-command is a pair ``(add_arguments, run)`` registered in ``COMMANDS``; ``run`` returns the
exit code. Errors derived from ``AttnsegError`` (and ``OSError``: unreadable input, full disk)
print one line and exit 2; ``--debug`` re-raises.

Each ``run`` imports what its command needs inside the function: ``attnseg --help`` and a mistyped
command answer without importing torch (start-up time is the reason; nowhere else in the package).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from attnseg.errors import AttnsegError

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


# --- smoke: a tiny end-to-end model run (train a few steps on a synthetic sphere) -------------------
def _smoke_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")
    p.add_argument("--size", type=int, default=32, help="cube edge in voxels (default 32)")
    p.add_argument("--seed", type=int, default=0)


def _smoke_run(args: argparse.Namespace) -> int:
    """Train a tiny Attention U-Net for a few steps on synthetic spheres (install check)."""
    from attnseg.models.smoke import smoke_run

    result = smoke_run(steps=args.steps, size=args.size, seed=args.seed)
    print(
        f"smoke run: {result['steps']} steps, loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}, "
        f"foreground Dice {result['dice']:.3f}, {result['seconds']:.1f} s"
    )
    return 0


# --- evaluate: metrics of predicted label maps against the truth ----------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pred",
        help="folder of predicted label maps (NIfTI or 2D PNG/JPEG/TIFF, one per case) or DICOM SEG files",
    )
    p.add_argument(
        "truth",
        help="truth label maps: NIfTI or 2D mask files, a labelsTr/ or masks/ folder, one folder per case, "
        "or DICOM: series with their SEG objects",
    )
    p.add_argument(
        "--series",
        help="DICOM SEG: the folder of the series they reference (default: the truth folder, else the prediction's)",
    )
    p.add_argument("--out", help="write metrics_per_case.csv and summary.json into this folder")
    targets = p.add_mutually_exclusive_group()
    targets.add_argument("--regions", help="preset (brats, brats2015, brats2023) or WT=1+2+4,TC=1+4,ET=4")
    targets.add_argument("--labels", help="classes: 1,2,4 or ncr=1,ed=2 (default: all non-zero labels)")
    p.add_argument("--percentile", type=float, default=95.0, help="Hausdorff percentile (default 95)")
    p.add_argument(
        "--hd-convention",
        choices=["max", "pooled"],
        default="max",
        help="max: larger of the two directed percentiles (MONAI); pooled: percentile of both sets (medpy)",
    )
    p.add_argument(
        "--nsd-tolerance-mm",
        default="1,2",
        help="normalized surface Dice tolerances in mm, one column each (nsd_1mm, ...): default 1,2; none: no NSD",
    )
    p.add_argument("--small-lesion-mm", type=float, default=5.0, help="small-lesion diameter (default 5 mm)")
    p.add_argument("--no-lesions", action="store_true", help="skip the lesion detection counts and rates")
    p.add_argument(
        "--size-bins-mm",
        default="3,5,10",
        help="lesion size bin edges by equivalent diameter in mm (default 3,5,10: <3, 3-5, 5-10, >=10); none: no bins",
    )
    p.add_argument(
        "--convention",
        choices=["brats2023"],
        help="brats2023: add the BraTS 2023 lesion-wise Dice/HD95 and lesion counts (3D; default regions "
        "brats2023; penalty 374 mm)",
    )
    p.add_argument(
        "--brats-challenge",
        choices=["GLI", "SSA", "PED", "MEN", "MET"],
        default="GLI",
        help="BraTS 2023 sub-challenge: lesion dilation and volume threshold (default GLI: 3, 50 mm^3)",
    )
    p.add_argument(
        "--empty-distance-mm",
        type=float,
        help="HD/HD95/ASSD when one mask is empty (default: the volume's diagonal; 374 with --convention brats2023)",
    )
    p.add_argument("--truth-pattern", help="file-name glob of the label map inside per-case truth folders")
    p.add_argument(
        "--ignore-label",
        default="auto",
        metavar="K",
        help="truth voxels with label K are not annotated and left out of every metric; default: the "
        "'ignore' label of the truth's dataset.json (TRUTH or its parent), if any; none: every voxel counts",
    )
    p.add_argument("--report", action="store_true", help="also write OUT/report.html (self-contained HTML)")


def _evaluate_run(args: argparse.Namespace) -> int:
    """Compare predicted label maps with the truth: Dice, HD95, NSD, ASSD, rates, lesion detection."""
    from attnseg.errors import ConfigError
    from attnseg.metrics.evaluate import (
        evaluate_folders,
        format_summary,
        parse_classes,
        parse_ignore_label,
        parse_regions,
        parse_size_bins,
        parse_tolerances,
    )
    from attnseg.metrics.evaluate_dicom import evaluate_dicom_folders, is_dicom_input

    if args.report and not args.out:
        raise ConfigError("--report needs --out (the report is written next to the CSV it shows)")
    if is_dicom_input(args.pred) or is_dicom_input(args.truth) or args.series:
        if args.regions or args.labels or args.convention:
            raise ConfigError(
                "with DICOM SEG the targets are the SEG's segments: drop --regions/--labels/--convention"
            )
        result = evaluate_dicom_folders(
            args.pred,
            args.truth,
            series_dir=args.series,
            out_dir=args.out,
            truth_pattern=args.truth_pattern,
            percentile=args.percentile,
            hd_convention=args.hd_convention,
            lesions=not args.no_lesions,
            small_lesion_diameter_mm=args.small_lesion_mm,
            empty_distance_mm=args.empty_distance_mm,
            nsd_tolerances_mm=parse_tolerances(args.nsd_tolerance_mm),
            size_bins_mm=parse_size_bins(args.size_bins_mm),
        )
    else:
        result = evaluate_folders(
            args.pred,
            args.truth,
            out_dir=args.out,
            regions=parse_regions(args.regions) if args.regions else None,
            classes=parse_classes(args.labels) if args.labels else None,
            truth_pattern=args.truth_pattern,
            percentile=args.percentile,
            hd_convention=args.hd_convention,
            lesions=not args.no_lesions,
            small_lesion_diameter_mm=args.small_lesion_mm,
            empty_distance_mm=args.empty_distance_mm,
            convention=args.convention,
            brats_challenge=args.brats_challenge,
            progress=sys.stderr.isatty(),
            nsd_tolerances_mm=parse_tolerances(args.nsd_tolerance_mm),
            size_bins_mm=parse_size_bins(args.size_bins_mm),
            ignore_label=parse_ignore_label(args.ignore_label),
        )
    print(format_summary(result.summary))
    for note in result.notes:
        print(f"note: {note}")
    missing = result.missing_predictions
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        print(f"note: {len(missing)} truth case(s) have no prediction and were not evaluated: {shown}")
    if result.csv_path:
        print(f"wrote {result.csv_path} and {result.json_path}")
    if args.report:
        from pathlib import Path

        from attnseg.viz.report import make_report

        print(f"wrote {make_report(args.out, Path(args.out) / 'report.html')}")
    return 0


# --- check: dataset integrity report ----------------------------------------------------------------
def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder")
    p.add_argument(
        "--layout", default="auto", help="auto, msd, nnunet, brats, folder, paired, slices2d or dicom"
    )
    p.add_argument(
        "--channels", nargs="+", help="BraTS names (flair t1), file patterns ('*flair*') or channel numbers"
    )
    p.add_argument("--label", help="label file pattern for folder-per-case data, e.g. '*seg*'")
    p.add_argument(
        "--seg-pattern", help="DICOM: file-name glob of the SEG to use where several reference a series"
    )
    p.add_argument("--preset", help="a named folder form, e.g. brats2015-deepmedic")
    p.add_argument("--year", help="BraTS edition, for its label values (2015, 2018, 2023, ...)")
    p.add_argument("--labels", help="declared label values, comma-separated, e.g. 0,1,2")
    p.add_argument(
        "--ignore-label",
        type=int,
        metavar="K",
        help="label value of unannotated voxels (default: dataset.json's 'ignore' label); the report gives "
        "the share of ignored voxels per case",
    )
    p.add_argument("--no-labels", action="store_true", help="cases without a label are fine (test images)")
    p.add_argument("--workers", type=int, default=1, help="reader threads (default 1)")
    p.add_argument("--json", help="also write the report as JSON to this file")


def _check_run(args: argparse.Namespace) -> int:
    """Check a dataset's integrity (missing/unreadable files, shape/affine/channel/label problems)."""
    from attnseg.datasets.check import check
    from attnseg.errors import ConfigError

    options: dict = {}
    for key in ("channels", "label", "preset", "year", "seg_pattern"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.labels:
        try:
            options["labels"] = [int(v) for v in args.labels.split(",") if v.strip()]
        except ValueError as exc:
            raise ConfigError(f"--labels: expected comma-separated integers, got {args.labels!r}") from exc
    report = check(
        args.data,
        args.layout,
        require_labels=not args.no_labels,
        workers=args.workers,
        ignore_label=args.ignore_label,
        **options,
    )
    print(report.format())
    if args.json:
        import json

        from attnseg.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=1) + "\n")
    return 0 if report.ok else 1


# --- demo-data: synthetic BraTS-like cases (the embedded default data) ------------------------------
def _demo_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder (created; existing phantom files are replaced)")
    p.add_argument("--cases", type=int, default=20, help="number of cases (default 20)")
    p.add_argument("--seed", type=int, default=0, help="case i depends only on (seed, i) (default 0)")
    p.add_argument(
        "--layout", choices=["brats", "msd"], default="brats", help="folder layout (default brats)"
    )
    p.add_argument(
        "--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"), help="voxels (default 64 64 48)"
    )
    p.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="isotropic voxel size in mm (default 2.5; 1 with --small-lesions)",
    )
    small = p.add_argument_group(
        "small-lesion mode (1 mm voxels, a 64^3 field of view inside an adult-sized brain)"
    )
    small.add_argument(
        "--small-lesions", action="store_true", help="lesions of 2-10 mm only (default shape 64 64 64, 1 mm)"
    )
    small.add_argument(
        "--lesions",
        type=int,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="lesions per case (default 4 8)",
    )
    small.add_argument(
        "--diameter-mm", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
        help="lesion diameters, drawn log-uniformly (default 2 10)",
    )  # fmt: skip
    small.add_argument(
        "--contrast", type=float, default=None, help="lesion contrast, 1 = full lesion tissue (default 1)"
    )
    small.add_argument(
        "--nodule-fraction", type=float, default=None,
        help="share of enhancing nodules (label 4); the rest are FLAIR foci (label 2) (default 0.5)",
    )  # fmt: skip


def _demo_data_run(args: argparse.Namespace) -> int:
    """Write synthetic BraTS-like demo cases (4 MRI channels, labels 0/1/2/4, small lesions)."""
    import time

    from attnseg import phantom

    start = time.perf_counter()
    small = _small_lesion_settings(args)
    default_shape = phantom.DEFAULT_SHAPE if small is None else phantom.SMALL_LESION_SHAPE
    default_spacing = phantom.DEFAULT_SPACING_MM if small is None else phantom.SMALL_LESION_SPACING_MM
    shape = tuple(args.shape) if args.shape else default_shape
    spacing = args.spacing if args.spacing is not None else default_spacing
    out = phantom.write_phantom_dataset(
        args.out,
        args.cases,
        args.seed,
        layout=args.layout,
        shape=shape,
        spacing_mm=spacing,
        small_lesions=small,
    )
    mode = "" if small is None else " small-lesion"
    print(
        f"wrote {args.cases}{mode} phantom case(s) in the {args.layout} layout to {out} "
        f"({shape[0]}x{shape[1]}x{shape[2]} voxels at {spacing:g} mm, seed {args.seed}, "
        f"{time.perf_counter() - start:.1f} s); lesions listed in {out / 'phantom.json'}"
    )
    return 0


def _small_lesion_settings(args: argparse.Namespace):
    """The small-lesion mode's settings from ``--small-lesions`` and its options (None without it)."""
    from attnseg import phantom
    from attnseg.errors import ConfigError

    given = {
        "lesions": args.lesions,
        "diameter_mm": args.diameter_mm,
        "contrast": args.contrast,
        "nodule_fraction": args.nodule_fraction,
    }
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items() if v is not None}
    if not args.small_lesions:
        if given:
            names = ", ".join("--" + k.replace("_mm", "-mm").replace("_", "-") for k in given)
            raise ConfigError(f"{names}: small-lesion options; add --small-lesions")
        return None
    return phantom.SmallLesionSettings(**given)


# --- predict: a model file over a dataset, a case folder or a file -> one label map per case --------
def _add_set_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="+",
        help="model file: RUN/model.pt, a training checkpoint, or an exported .onnx; a cross-validation "
        "folder (RUN of train --fold all) or several .pt files: their ensemble",
    )
    p.add_argument(
        "input",
        help="a dataset folder, a case folder, one image file, or DICOM: a folder of series or one file",
    )
    p.add_argument("out", help="output folder (never inside the input folder)")
    p.add_argument(
        "--format",
        dest="output_format",
        choices=["nifti", "dicom-seg", "both"],
        default=None,
        help="NIfTI label maps, DICOM SEG on the source series (DICOM input), or both "
        "(default: what the input was)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="mirror test-time augmentation over the axes the model was flipped on in training "
        "(recorded in its model file; all 2^D flips when it records none)",
    )
    p.add_argument("--tta-axes", type=int, nargs="+", default=None, help="mirror only these spatial axes")
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write OUT/probabilities/<case>.nii.gz (a FRACTIONAL <case>.seg.dcm for DICOM SEG output)",
    )
    p.add_argument("--overwrite", action="store_true", help="predict cases whose output exists already")
    p.add_argument("--batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap fraction (default 0.5)")
    p.add_argument("--patch-size", type=int, nargs="+", default=None, help="window (default: the model's)")
    p.add_argument("--bf16", action="store_true", help="run the network under bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory layout (CPU speed)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="memory budget of one case; the sliding window's accumulators are split to fit "
        "(default: the memory the machine has available); the plan is printed per case",
    )
    p.add_argument("--slice-axis", type=int, default=None, help="2D model on 3D data: slice axis (default 2)")
    p.add_argument("--threshold", type=float, default=0.5, help="region probability threshold (default 0.5)")
    p.add_argument("--keep-largest", action="store_true", help="keep the largest component per class/region")
    p.add_argument(
        "--min-component-vox", type=int, default=0, help="drop components smaller than this many voxels"
    )
    p.add_argument(
        "--no-postprocessing",
        action="store_true",
        help="ignore the component rules recorded in the model card (chosen by train --fold all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _predict_run(args: argparse.Namespace) -> int:
    """Predict label maps with a trained model (sliding window, optional TTA), one NIfTI per case."""
    import torch

    from attnseg.inference.predict import PredictOptions, predict_folder

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    options = PredictOptions(
        overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta_axes if args.tta_axes is not None else args.tta,
        autocast=args.bf16,
        channels_last=args.channels_last,
        slice_axis=args.slice_axis,
        threshold=args.threshold,
        keep_largest=args.keep_largest,
        min_component_vox=args.min_component_vox,
        patch_size=args.patch_size,
        card_postprocessing=not args.no_postprocessing,
        max_memory_gb=args.max_memory_gb,
    )
    report = predict_folder(
        args.model if len(args.model) > 1 else args.model[0],
        args.input,
        args.out,
        options,
        save_probabilities=args.save_probabilities,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.quiet,
        log=lambda message: print(message, file=sys.stderr),
        output_format=args.output_format,
    )
    print(f"model: {report.settings.describe()}")
    print(
        f"predicted {len(report.predicted)} case(s) into {args.out}, skipped {len(report.skipped)} "
        f"already predicted, {len(report.failed)} failed, "
        f"{report.seconds:.1f} s"
    )
    if report.failed:  # each reason was logged when it happened ("failed: CASE: why"); here the list
        print(f"failed cases: {', '.join(case_id for case_id, _ in report.failed)}", file=sys.stderr)
    return 1 if report.failed else 0


# --- export: a model file -> ONNX (fp32 or INT8) with the metadata predict needs -------------------
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="+",
        help="model file (RUN/model.pt or a file written by save_model); a cross-validation folder "
        "(RUN of train --fold all) or several .pt files: one ONNX file of their ensemble",
    )
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--int8", action="store_true", help="static INT8 quantization (needs --calibration)")
    p.add_argument("--calibration", default=None, help="dataset folder the model was trained on")
    p.add_argument("--calibration-windows", type=int, default=16, help="windows for calibration (16)")
    p.add_argument("--calibration-cases", type=int, default=8, help="cases they come from (8)")
    p.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17, default 18)")
    p.add_argument("--quant-format", default="qoperator", choices=["qoperator", "qdq"])
    p.add_argument("--tolerance", type=float, default=1e-3, help="fp32 parity: max |diff| / max(1, |logit|)")


def _export_run(args: argparse.Namespace) -> int:
    """Export a model to ONNX (dynamic axes, metadata, parity check); --int8 quantizes it."""
    from attnseg.export import export_model_file

    s = export_model_file(
        args.model if len(args.model) > 1 else args.model[0],
        args.out,
        int8=args.int8,
        calibration=args.calibration,
        calibration_windows=args.calibration_windows,
        calibration_cases=args.calibration_cases,
        exporter=args.exporter,
        opset=args.opset,
        quant_format=args.quant_format,
        tolerance=args.tolerance,
    )
    print(f"wrote {s['out']} ({s['precision']}, {s['exporter']} exporter, patch {s['patch_size']})")
    if s["precision"] == "int8":
        print(
            f"size {s['size_bytes'] / 1e6:.2f} MB (fp32 {s['float_size_bytes'] / 1e6:.2f} MB); "
            f"{s['integer_ops']} integer convolutions, {s['float_convs']} float; "
            f"vs PyTorch fp32 on 2 held-out windows: max |logit diff| {s['max_abs_diff']:.3f}, "
            f"argmax agreement {100 * s['argmax_agreement']:.2f} %"
        )
    else:
        print(f"size {s['size_bytes'] / 1e6:.2f} MB")
        print(f"parity, random input: {s['parity_random']}")
        if "parity_real" in s:
            print(f"parity, real windows: {s['parity_real']}")
    return 0


# --- train: a data folder -> a run folder (checkpoints, metrics, curves, model.pt) ------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder (MSD, nnU-Net, BraTS, folder-per-case, paired, 2D slices)")
    p.add_argument(
        "--out", required=True, help="run folder (created); holds config.yaml, checkpoints, metrics"
    )
    p.add_argument(
        "--config", default=None, help="YAML file with settings (sections model, data, train, ...)"
    )
    _add_set_option(p, "override one setting, e.g. --set optim.lr=3e-4 --set train.epochs=100 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    p.add_argument(
        "--init",
        metavar="MODEL.pt",
        default=None,
        help="start from this model file's weights where names and shapes match (fine-tuning): a new head "
        "for other classes, an adapted first convolution for other channels; written to RUN/init.json",
    )
    p.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PART[:EPOCHS]",
        help="freeze encoder or gates for the first EPOCHS epochs (default 5), e.g. --freeze encoder:3 (repeatable)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget for the whole command: width measured for this machine, every labelled "
        "case trained, learning rate annealed over the budget (see attnseg.training.budget); with "
        "--fold all, each fold's budget",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="k of the seeded k-fold split (data.folds, default 5)",
    )
    p.add_argument(
        "--fold",
        default=None,
        metavar="F|all",
        help="which fold validates (data.fold, default 0); 'all': cross-validation, every fold in "
        "RUN/fold_<k>, out-of-fold Dice/HD95 in RUN/cv_summary.json, postprocessing chosen from them",
    )


def _train_run(args: argparse.Namespace) -> int:
    """Train an Attention U-Net on a dataset folder (torchrun-ready; --resume continues exactly)."""
    from attnseg.errors import ConfigError
    from attnseg.training.run import train

    overrides = list(args.overrides)
    common = dict(  # overrides: the list below, appended to before either call
        config_file=args.config,
        overrides=overrides,
        resume=args.resume,
        init=args.init,
        freeze=args.freeze,
        minutes=args.minutes,
    )
    if args.folds is not None:
        overrides.append(f"data.folds={args.folds}")
    if args.fold == "all":
        from attnseg.training.cross_validation import cross_validate

        cross_validate(args.data, args.out, **common)
        return 0
    if args.fold is not None:
        if not args.fold.isdigit():
            raise ConfigError(f"--fold {args.fold}: pass a fold number (0..K-1) or all")
        overrides.append(f"data.fold={args.fold}")
        if args.minutes is not None:  # the --minutes defaults train on every case; a fold needs the split
            overrides.append("data.split=kfold")
    train(args.data, args.out, started=args.started, **common)
    return 0


# --- visualize: attention maps, Grad-CAM and prediction of one case; or a run's training curves -----
def _visualize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.pt) or run folder; a run folder alone: its training curves")
    p.add_argument("case", nargs="?", help="image file, dataset folder or case folder")
    p.add_argument("--out", help="PNG to write (default <case id>_<axis>.png, or RUN/training_curve.png)")
    p.add_argument("--slice", type=int, help="slice index (default: the slice with the most foreground)")
    p.add_argument("--axis", choices=["ax", "co", "sa"], default="ax", help="axial, coronal or sagittal")
    p.add_argument("--gate", type=int, action="append", help="show this gate only (repeatable; 0 = deepest)")
    p.add_argument("--channel", action="append", help="show this input channel, number or name (repeatable)")
    p.add_argument("--case-id", help="which case of a dataset folder (default: the first)")
    p.add_argument("--label", help="label file for a CASE given as an image file")
    p.add_argument(
        "--gradcam", nargs="?", const="auto", help="add Grad-CAM for this class/region name or value"
    )
    p.add_argument("--gradcam-layer", help="module name, e.g. decoder.2 (default: the last decoder block)")
    p.add_argument("--patch-size", type=int, nargs="+", help="sliding-window size (default: the run's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")


def _visualize_run(args: argparse.Namespace) -> int:
    """Draw a case's input, truth, attention-gate maps, prediction (and Grad-CAM), or a run's curves."""
    from attnseg.viz.visualize import visualize

    result = visualize(
        args.model,
        args.case,
        args.out,
        view=args.axis,
        index=args.slice,
        gates=args.gate,
        channels=args.channel,
        case_id=args.case_id,
        label=args.label,
        gradcam=args.gradcam,
        gradcam_layer=args.gradcam_layer,
        patch_size=args.patch_size,
        device=args.device,
        dpi=args.dpi,
    )
    print(result.describe())
    return 0


# --- quickstart: phantom data -> train -> evaluate held-out cases -> table ------------------------
def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous quickstart in --out")
    p.add_argument("--train-cases", type=int, default=20, help="phantom training cases (default 20)")
    p.add_argument("--test-cases", type=int, default=6, help="held-out phantom cases (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2; 0 = torch's choice)")
    p.add_argument("--no-figures", action="store_true", help="skip the per-case figures")
    _add_set_option(p, "override a training setting, e.g. --set train.time_limit_s=900")


def _quickstart_run(args: argparse.Namespace) -> int:
    """Phantom data -> train an Attention U-Net -> evaluate held-out cases (about 10 min on a CPU)."""
    from attnseg.experiments.quickstart import QuickstartSettings, quickstart

    settings = QuickstartSettings(
        n_train=args.train_cases,
        n_test=args.test_cases,
        seed=args.seed,
        threads=args.threads,
        overrides=tuple(args.overrides),
    )
    quickstart(args.out, settings, overwrite=args.overwrite, figures=not args.no_figures)
    return 0


# --- report: one self-contained HTML file of an evaluation (or of two models compared) -------------
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("evaluation", help="folder written by 'attnseg evaluate --out', or its CSV")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--compare", help="a second evaluation of the same cases: side by side with paired tests")
    p.add_argument("--names", nargs=2, metavar=("A", "B"), help="the two models' names (default: folders)")
    p.add_argument("--data", help="dataset folder for the example cases (default: found from the truth)")
    p.add_argument("--model", help="model file: example cases show its attention maps")
    p.add_argument("--model-b", help="the second model's file (with --compare)")
    p.add_argument("--pred", help="prediction folder (default: the one the evaluation used)")
    p.add_argument("--pred-b", help="the second model's prediction folder (with --compare)")
    p.add_argument("--title", help="report title")
    p.add_argument("--device", default="cpu", help="device for --model (default cpu)")


def _report_run(args: argparse.Namespace) -> int:
    """Write one self-contained HTML report: tables, box plots, best/median/worst cases (offline)."""
    from attnseg.viz.report import make_report

    path = make_report(
        args.evaluation,
        args.out,
        compare=args.compare,
        names=args.names,
        data=args.data,
        model=args.model,
        model_b=args.model_b,
        pred=args.pred,
        pred_b=args.pred_b,
        title=args.title,
        device=args.device,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")
    return 0


# --- compare: UNet vs AttentionUNet, same settings, same held-out cases, paired tests ------------
def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="dataset folder (omit for phantom data written under --out)")
    p.add_argument("--out", required=True, help="output folder (runs, predictions, compare.csv/json, report)")
    p.add_argument("--demo", action="store_true", help="use phantom data (the default when DATA is omitted)")
    p.add_argument("--config", default=None, help="YAML settings both models train with")
    _add_set_option(
        p, "override a setting for both models, e.g. --set model.features=[16,32,64,128] (repeatable)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    p.add_argument("--iterations", type=int, help="training budget in iterations (optimiser steps)")
    p.add_argument("--minutes", type=float, help="training budget in wall-clock minutes per model and seed")
    p.add_argument("--test", help="separate held-out dataset (default: fold --fold of DATA)")
    p.add_argument("--folds", type=int, default=5, help="held-out = one fold of this many (default 5)")
    p.add_argument("--fold", type=int, default=0, help="which fold is held out (default 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2; 0 = torch's choice)")
    p.add_argument("--small-lesion-mm", type=float, default=5.0, help="small-lesion diameter (default 5 mm)")
    p.add_argument("--demo-train", type=int, default=16, help="phantom training cases (default 16)")
    p.add_argument("--demo-test", type=int, default=8, help="phantom held-out cases (default 8)")
    p.add_argument(
        "--demo-shape",
        type=int,
        nargs=3,
        default=None,
        help="phantom size in voxels (default 48 48 40; 64 64 64 with --small-lesions)",
    )
    p.add_argument(
        "--demo-spacing",
        type=float,
        default=None,
        help="phantom voxel size in mm (default 2.5; 1 with --small-lesions)",
    )
    p.add_argument(
        "--small-lesions",
        action="store_true",
        help="demo data from the phantom's small-lesion mode (lesions of 2-10 mm, 4-8 per case; attnseg demo-data --small-lesions)",
    )
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--no-figures", action="store_true", help="report without example-case figures")
    p.add_argument("--overwrite", action="store_true", help="replace a previous comparison in --out")


def _compare_run(args: argparse.Namespace) -> int:
    """Train UNet and AttentionUNet identically, evaluate both on the same held-out cases, paired tests."""
    from attnseg import phantom
    from attnseg.experiments.compare import CompareSettings, compare

    if args.small_lesions and args.data:
        from attnseg.errors import ConfigError

        raise ConfigError("--small-lesions makes phantom data; give it without DATA")
    if args.demo and args.data:
        from attnseg.errors import ConfigError

        raise ConfigError("give DATA or --demo, not both")
    settings = CompareSettings(
        seeds=tuple(args.seeds),
        test_data=args.test,
        folds=args.folds,
        fold=args.fold,
        split_seed=args.split_seed,
        iterations=args.iterations,
        minutes=args.minutes,
        threads=args.threads,
        small_lesion_diameter_mm=args.small_lesion_mm,
        report=not args.no_report,
        figures=not args.no_figures,
        demo_train=args.demo_train,
        demo_test=args.demo_test,
        demo_shape=tuple(
            args.demo_shape or (phantom.SMALL_LESION_SHAPE if args.small_lesions else (48, 48, 40))
        ),
        demo_spacing_mm=args.demo_spacing or (phantom.SMALL_LESION_SPACING_MM if args.small_lesions else 2.5),
        demo_small_lesions=phantom.SmallLesionSettings() if args.small_lesions else None,
    )
    compare(
        args.data,
        args.out,
        config_file=args.config,
        overrides=args.overrides,
        settings=settings,
        overwrite=args.overwrite,
    )
    return 0


# --- convert: DICOM series + SEG -> an nnU-Net v2 dataset; a NIfTI label map -> a SEG on its series ------
def _convert_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    d = sub.add_parser(
        "dicom", help="a folder of DICOM series and their SEG objects -> an nnU-Net v2 dataset"
    )
    d.add_argument("src", help="folder of DICOM series (searched recursively), with SEG objects as labels")
    d.add_argument("dst", help="dataset folder to write (imagesTr/, labelsTr/, imagesTs/, dataset.json)")
    d.add_argument("--seg-pattern", help="file-name glob choosing the SEG where several reference one series")
    d.add_argument("--overwrite", action="store_true", help="replace a dataset already in DST")
    s = sub.add_parser("seg", help="a NIfTI label map -> a DICOM SEG on the series it was predicted from")
    s.add_argument("label", help="label map (.nii.gz), e.g. a prediction")
    s.add_argument("series", help="folder of the source series")
    s.add_argument("out", help="the SEG file to write (.dcm)")
    s.add_argument("--model", help="model file: segment names from its label scheme (default label_<value>)")
    s.add_argument("--case-id", help="which series of the folder (default: its only one)")


def _convert_run(args: argparse.Namespace) -> int:
    """Convert DICOM: series + SEG -> nnU-Net v2 dataset (dicom), or a label map -> SEG (seg)."""
    from attnseg.datasets.convert_dicom import convert_dicom, nifti_to_seg

    if args.what == "seg":
        scheme = None
        if args.model:
            from attnseg.models.card import read_model_card

            scheme = read_model_card(args.model).label_scheme
        print(f"wrote {nifti_to_seg(args.label, args.series, args.out, scheme=scheme, case_id=args.case_id)}")
        return 0
    report = convert_dicom(
        args.src,
        args.dst,
        seg_pattern=args.seg_pattern,
        overwrite=args.overwrite,
        log=lambda message: print(message, file=sys.stderr),
    )
    print(
        f"wrote {report.out}: {len(report.training)} training case(s), {len(report.test)} without a SEG "
        f"(imagesTs), {len(report.refused)} refused; labels {report.labels}"
    )
    for case_id, why in report.refused:
        print(f"refused: {case_id}: {why}", file=sys.stderr)
    return 1 if report.refused else 0


COMMANDS: list[Command] = [
    ("smoke", _smoke_args, _smoke_run),
    ("evaluate", _evaluate_args, _evaluate_run),
    ("check", _check_args, _check_run),
    ("demo-data", _demo_data_args, _demo_data_run),
    ("predict", _predict_args, _predict_run),
    ("train", _train_args, _train_run),
    ("quickstart", _quickstart_args, _quickstart_run),
    ("export", _export_args, _export_run),
    ("visualize", _visualize_args, _visualize_run),
    ("report", _report_args, _report_run),
    ("compare", _compare_args, _compare_run),
    ("convert", _convert_args, _convert_run),
]


def build_parser() -> argparse.ArgumentParser:
    from attnseg import __version__

    parser = argparse.ArgumentParser(
        prog="attnseg", description="Attention U-Net for medical image segmentation"
    )
    parser.add_argument("--version", action="version", version=f"attnseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add_arguments, run in COMMANDS:
        doc = (run.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # `attnseg train --minutes` counts its budget from here
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except (AttnsegError, OSError) as exc:  # OSError: a file the user named cannot be read or written
        if getattr(args, "debug", False):
            raise
        print(f"attnseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
