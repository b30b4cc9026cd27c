"""The training loop: optimiser steps on patches, validation on whole volumes, checkpoints.

``fit`` works on preprocessed cases in memory (``TrainingCase``); ``attnseg.training.run.train``
goes from a data folder to a run folder and calls it. One iteration = one optimiser step
(``optim.grad_accum`` micro-batches). The learning rate is ``schedule(iteration)``, set before
every step. Checkpoints are written at the end of every epoch (``checkpoints/last.pt``) and when
the mean validation Dice improves (``checkpoints/best.pt``).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnseg.config import LossConfig, OptimConfig, RunConfig, to_dict
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import AttnsegError, ConfigError
from attnseg.io.atomic import atomic_write_text
from attnseg.losses import DeepSupervisionLoss, build_loss
from attnseg.models.card import training_card
from attnseg.models.checkpoint import read_model_file, save_model
from attnseg.training import distributed as D
from attnseg.training.amp import Precision, make_precision, resolve_device
from attnseg.training.averaging import WeightAverages
from attnseg.training.checkpointing import load_checkpoint, restore, save_checkpoint
from attnseg.training.data import BatchPlan, PatchDataset, TrainingCase, make_loader
from attnseg.training.report import format_summary, plot_training_curves, write_metrics
from attnseg.training.schedules import make_schedule
from attnseg.training.validation import validate

PLOT_EVERY_S = 60.0


class TrainingDiverged(AttnsegError, FloatingPointError):
    """The loss or the gradients became NaN/inf; the weights were not updated with them."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    iterations: int
    seconds: float
    stopped: str
    best_dice: float | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


# --- building blocks ----------------------------------------------------------------------------------
def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum, over every parameter (frozen ones get no gradient and
    are skipped by the step, weight decay included)."""
    params = list(model.parameters())
    if config.name == "adamw":
        try:  # the fused kernel: ~30x less optimiser time on CPU than the per-tensor loop (torch >= 2.4)
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
            foreach=True,
        )
    raise ConfigError(f"optim.name={config.name!r}; pass adamw or sgd")


def build_training_loss(config: LossConfig, target: LabelScheme, deep_supervision: bool) -> nn.Module:
    options: dict[str, Any] = {}
    name = config.name
    weights = None if config.class_weights is None else list(config.class_weights)
    # regions (sigmoid) have no background channel: channel 0 is a region (WT) and always counts
    include_background = config.include_background or target.kind == "regions"
    if name in ("dice", "dice_ce", "dice_focal"):
        options.update(
            include_background=include_background,
            batch_dice=config.batch_dice,
            smooth_nr=config.smooth,
            smooth_dr=config.smooth,
        )
    if name in ("focal", "dice_focal"):
        options.update(gamma=config.focal_gamma, alpha=config.focal_alpha)
        if name == "focal":
            options["include_background"] = include_background
    if name == "dice_ce":
        options.update(lambda_dice=config.lambda_dice, lambda_ce=config.lambda_other)
    if name == "dice_focal":
        options.update(lambda_dice=config.lambda_dice, lambda_focal=config.lambda_other)
    if weights is not None:
        options["class_weights"] = weights
    try:
        loss = build_loss(name, target.activation, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss: {exc}") from None
    if deep_supervision:
        loss = DeepSupervisionLoss(loss, include_lowest=config.ds_include_lowest)
    return loss


def set_gates_frozen(model: nn.Module, frozen: bool) -> bool:
    """Freeze or unfreeze ``model.gates``; returns True when something changed."""
    gates = getattr(model, "gates", None)
    if gates is None or len(gates) == 0:
        return False
    changed = False
    for p in gates.parameters():
        if p.requires_grad == frozen:
            p.requires_grad_(not frozen)
            changed = True
    return changed


def iterations_per_epoch(config: RunConfig, n_train: int, world_size: int) -> int:
    if config.train.iters_per_epoch > 0:
        return config.train.iters_per_epoch
    per_step = (config.data.batch_size or 2) * world_size * config.optim.grad_accum
    return max(1, math.ceil(n_train / per_step))


def _hint(config: RunConfig, precision: Precision) -> str:
    tips = [f"lower optim.lr (now {config.optim.lr:g})"]
    if precision.name != "fp32":
        tips.append("train with --set train.precision=fp32")
    if config.optim.grad_clip_norm is None:
        tips.append("clip gradients (--set optim.grad_clip_norm=12)")
    tips.append("check the data with `attnseg check DATA`")
    tips.append("or skip such batches with --set train.nan_policy=skip")
    return "; ".join(tips)


# --- the loop ------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    train_cases: list[TrainingCase],
    val_cases: list[TrainingCase],
    target: LabelScheme,
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    stop_after_epochs: int | None = None,
    log: Callable[[str], None] = print,
    dist_info: D.DistInfo | None = None,
    model_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` (built from ``config.model``) and write the run folder.

    ``resume_from``: a training checkpoint; the run continues exactly where it stopped.
    ``stop_after_epochs``: end this session after that many epochs (the schedule still spans
    ``train.epochs``; resume later to finish).
    ``model_extra``: plain data stored in every checkpoint and ``model.pt`` (e.g. channel names).
    """
    tc, oc = config.train, config.optim
    run_dir = Path(run_dir)
    if tc.nan_policy not in ("stop", "skip"):
        raise ConfigError(f"train.nan_policy={tc.nan_policy!r}; pass stop or skip")
    if oc.grad_accum < 1:
        raise ConfigError(f"optim.grad_accum={oc.grad_accum}; must be >= 1")
    if config.data.patch_size is None or config.data.batch_size is None:
        raise ConfigError(
            "data.patch_size and data.batch_size must be set (attnseg.training.run derives them)"
        )
    if not train_cases:
        raise ConfigError("no training cases")
    device_type = "cuda" if (tc.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    dist = dist_info or D.init_from_env(device_type)
    device = resolve_device(tc.device, dist.local_rank)
    precision = make_precision(tc.precision, device)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    main = dist.is_main
    say = log if main else (lambda _msg: None)

    model.to(device)
    optimizer = build_optimizer(model, oc)
    scaler = precision.scaler()
    loss_fn = build_training_loss(config.loss, target, bool(getattr(model, "deep_supervision", False)))
    iters = iterations_per_epoch(config, len(train_cases), dist.world_size)
    total_iters = tc.epochs * iters
    schedule = make_schedule(oc.schedule, total_iters, oc.lr, oc.warmup_iters, oc.min_lr, oc.poly_power)
    by_time = tc.schedule_by_time and tc.time_limit_s is not None
    memory_format = None
    if tc.channels_last:
        memory_format = torch.channels_last_3d if config.model.spatial_dims == 3 else torch.channels_last
        model.to(memory_format=memory_format)
    stride = int(getattr(model, "stride", 1))
    dataset = PatchDataset(train_cases, target, config.augment, tc.seed)
    try:
        averages = WeightAverages(tc.weight_averages)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    run_config = to_dict(config)
    # the model card: what inference needs besides the weights, so that model.pt works away from its
    # run folder (patch, preprocessing, label scheme, channel names, training flips, version)
    extra = {
        **training_card(
            run_config,
            target.to_dict(),
            (model_extra or {}).get("channel_names"),
            model_config=to_dict(model.config) if hasattr(model, "config") else None,
        ),
        **(model_extra or {}),
    }

    start_epoch, iteration = 0, 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"dice": None, "epoch": None, "per_channel": None}
    bad_validations = 0
    skipped_total = 0
    if resume_from is not None:
        payload = load_checkpoint(resume_from)
        restore(payload, model, optimizer, scaler)
        start_epoch, iteration = int(payload["epoch"]), int(payload["iteration"])
        history = list(payload.get("history") or [])
        best = dict(payload.get("best") or best)
        bad_validations = int(best.get("bad_validations", 0))
        skipped_total = int(best.get("skipped_batches", 0))
        say(f"resumed from {resume_from}: epoch {start_epoch}, iteration {iteration}")

    start_iteration = iteration
    ckpt_dir = run_dir / "checkpoints"
    say(
        f"training on {device} ({precision.name}), {dist.world_size} process(es), {len(train_cases)} training / "
        f"{len(val_cases)} validation cases, {tc.epochs} epochs x {iters} iterations, patch "
        f"{list(config.data.patch_size)}, batch {config.data.batch_size} x {dist.world_size} x {oc.grad_accum}"
        + (f"; stops after {tc.time_limit_s / 60:.1f} min of training" if tc.time_limit_s is not None else "")
    )
    writer = _tensorboard(run_dir) if main else None
    started = time.perf_counter()
    elapsed_before = float(history[-1].get("elapsed_seconds", 0.0)) if history else 0.0
    # a time-budgeted run counts seconds of its budget (total and ETA in budget terms), others iterations
    if by_time:
        bar = _progress(
            int(round(tc.time_limit_s)), int(elapsed_before), enabled=main and tc.progress, unit="s"
        )
    else:
        bar = _progress(total_iters, iteration, enabled=main and tc.progress)

    def elapsed() -> float:
        """Training seconds over all sessions of this run."""
        return elapsed_before + time.perf_counter() - started

    def schedule_at(step: int) -> float:
        if by_time:  # progress = the larger share spent: of the time budget or of the iterations
            step = max(step, min(total_iters - 1, int(total_iters * elapsed() / tc.time_limit_s)))
        return schedule(step)

    def schedule_progress(step: int) -> float:
        """Share of the schedule done after ``step`` iterations (of the time budget, when it rules)."""
        done = step / max(1, total_iters)
        return max(done, elapsed() / tc.time_limit_s) if by_time else done

    session_epochs = 0
    last_plot = started
    stopped = "completed"
    ddp_model: nn.Module | None = None
    frozen_state: bool | None = None

    try:
        for epoch in range(start_epoch, tc.epochs):
            frozen = epoch < tc.freeze_gates_epochs
            if frozen_state is None or frozen != frozen_state:
                set_gates_frozen(model, frozen)
                ddp_model = D.wrap_model(model, dist, device)
                frozen_state = frozen
                if frozen and epoch == start_epoch:
                    say(f"attention gates frozen for epochs 1-{tc.freeze_gates_epochs}")
                elif not frozen and epoch > 0 and epoch == tc.freeze_gates_epochs:
                    say(f"attention gates unfrozen at epoch {epoch + 1}")
            net = ddp_model
            net.train()
            plan = BatchPlan(
                n_cases=len(train_cases),
                epoch=epoch,
                micro_batches=iters * oc.grad_accum,
                batch_size=config.data.batch_size,
                seed=tc.seed,
                base_patch=config.data.patch_size,
                stride=stride,
                multiscale=tc.multiscale,
                rank=dist.rank,
                world_size=dist.world_size,
            )
            loader = make_loader(dataset, plan, config.data.num_workers)
            epoch_start = time.perf_counter()
            losses: list[float] = []
            terms: dict[str, list[float]] = {}
            skipped_epoch = 0
            consecutive_skips = 0
            micro = 0
            step_loss = 0.0
            step_ok = True
            lr = schedule_at(iteration)
            time_up = False
            for x, y, case_idx in loader:
                if micro == 0:
                    lr = schedule_at(iteration)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    step_loss, step_ok = 0.0, True
                x = x.to(device, non_blocking=True)
                if memory_format is not None:
                    x = x.contiguous(memory_format=memory_format)
                y = y.to(device, non_blocking=True)
                last_micro = micro == oc.grad_accum - 1
                sync = (
                    net.no_sync()
                    if (dist.enabled and not last_micro and hasattr(net, "no_sync"))
                    else contextlib.nullcontext()
                )
                with sync:
                    with precision.autocast():
                        out = net(x)
                    loss = loss_fn(out, y)
                    finite = D.all_true(bool(torch.isfinite(loss).item()), dist, device)
                    if not finite:
                        step_ok = False
                        if tc.nan_policy == "stop":
                            ids = [train_cases[int(i)].case_id for i in case_idx]
                            nan_input = not bool(torch.isfinite(x).all())
                            raise TrainingDiverged(
                                f"loss is {float(loss.detach())} at iteration {iteration + 1} (epoch {epoch + 1}, "
                                f"cases {', '.join(ids)}"
                                + ("; the input patch itself contains NaN/inf" if nan_input else "")
                                + "); stopped before the optimiser step, so the weights are not corrupted"
                                + (
                                    f" and {ckpt_dir / 'last.pt'} (epoch {epoch}) is intact"
                                    if epoch > 0
                                    else ""
                                )
                                + f". Hints: {_hint(config, precision)}"
                            )
                    else:
                        scaler.scale(loss / oc.grad_accum).backward()
                        step_loss += float(loss.detach()) / oc.grad_accum
                        for name, value in getattr(loss_fn, "last", {}).items():
                            terms.setdefault(name, []).append(value)
                micro += 1
                if micro < oc.grad_accum:
                    continue
                micro = 0
                if step_ok:
                    scaler.unscale_(optimizer)
                    params = [p for p in model.parameters() if p.grad is not None]
                    if oc.grad_clip_norm is not None:
                        norm = torch.nn.utils.clip_grad_norm_(params, oc.grad_clip_norm)
                    else:
                        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
                    grads_ok = bool(torch.isfinite(norm).item()) or scaler.is_enabled()
                    if not grads_ok:
                        step_ok = False
                        if tc.nan_policy == "stop":
                            raise TrainingDiverged(
                                f"gradient norm is {float(norm)} at iteration {iteration + 1} (epoch {epoch + 1}); "
                                f"stopped before the optimiser step. Hints: {_hint(config, precision)}"
                            )
                if step_ok:
                    scaler.step(optimizer)  # fp16: skips the step itself when gradients overflowed
                    scaler.update()
                    if averages:
                        averages.update(model, schedule_progress(iteration + 1))
                    losses.append(step_loss)
                    consecutive_skips = 0
                else:
                    skipped_epoch += 1
                    consecutive_skips += 1
                    if consecutive_skips > tc.max_skipped_batches:
                        raise TrainingDiverged(
                            f"{consecutive_skips} batches in a row had a non-finite loss (last at iteration "
                            f"{iteration + 1}, epoch {epoch + 1}). Hints: {_hint(config, precision)}"
                        )
                optimizer.zero_grad(set_to_none=True)
                iteration += 1
                if bar is not None:
                    if by_time:
                        bar.update(max(0, min(bar.total, int(elapsed())) - bar.n))
                        bar.set_description(f"epoch {epoch + 1}, iteration {iteration}")
                    else:
                        bar.update(1)
                        bar.set_description(f"epoch {epoch + 1}/{tc.epochs}")
                    if losses:
                        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}", refresh=False)
                if tc.time_limit_s is not None:
                    spent = elapsed()
                    time_up = D.all_true(spent < tc.time_limit_s, dist, device) is False
                    if time_up:
                        break

            # --- end of epoch ---
            skipped_total += skipped_epoch
            session_epochs += 1
            train_loss = (
                D.mean_over_ranks(sum(losses) / len(losses), dist, device) if losses else float("nan")
            )
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "iteration": iteration,
                "lr": lr,
                "train_loss": train_loss,
            }
            for name, values in terms.items():
                record[f"train_{name}"] = sum(values) / len(values)
            if skipped_epoch:
                record["skipped_batches"] = skipped_epoch
            record["gates_frozen"] = bool(frozen)
            last_epoch = (
                epoch + 1 == tc.epochs
                or time_up
                or (stop_after_epochs is not None and session_epochs >= stop_after_epochs)
            )
            do_val = bool(val_cases) and tc.val_every > 0 and ((epoch + 1) % tc.val_every == 0 or last_epoch)
            improved = False
            if do_val and main:
                val_start = time.perf_counter()
                cases = val_cases[: config.data.max_val_cases] if config.data.max_val_cases > 0 else val_cases
                result = validate(
                    model,
                    cases,
                    target,
                    config.data.patch_size,
                    precision,
                    overlap=tc.val_overlap,
                    batch_size=tc.val_batch_size,
                )
                record["val_dice_mean"] = result["dice_mean"]
                record["val_dice"] = result["dice"]
                record["val_seconds"] = time.perf_counter() - val_start
                if best["dice"] is None or result["dice_mean"] > best["dice"]:
                    best.update(dice=result["dice_mean"], epoch=epoch + 1, per_channel=result["dice"])
                    bad_validations = 0
                    improved = True
                else:
                    bad_validations += 1
            record["epoch_seconds"] = time.perf_counter() - epoch_start
            record["elapsed_seconds"] = elapsed()
            history.append(record)
            best["bad_validations"] = bad_validations
            best["skipped_batches"] = skipped_total
            if main:
                ckpt = dict(
                    run_config=run_config,
                    optimizer=optimizer,
                    scaler=scaler,
                    epoch=epoch + 1,
                    iteration=iteration,
                    history=history,
                    best=best,
                    extra=extra,
                )
                save_checkpoint(ckpt_dir / "last.pt", model, **ckpt)
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", model, **ckpt)
                write_metrics(run_dir, history)
                if time.perf_counter() - last_plot > PLOT_EVERY_S:  # a plot costs ~1 s; the end always plots
                    plot_training_curves(history, run_dir / "training_curve.png")
                    last_plot = time.perf_counter()
                if writer is not None:
                    for key, value in record.items():
                        if isinstance(value, (int, float)):
                            writer.add_scalar(key, value, epoch + 1)
                    for key, value in record.get("val_dice", {}).items():
                        writer.add_scalar(f"val_dice/{key}", value, epoch + 1)
                    writer.flush()
                msg = f"epoch {epoch + 1}/{tc.epochs}: loss {train_loss:.4f}, lr {lr:.2e}"
                if "val_dice_mean" in record:
                    msg += f", val Dice {record['val_dice_mean']:.4f}" + (" (best)" if improved else "")
                msg += f", {record['epoch_seconds']:.1f} s"
                if bar is not None:
                    bar.write(msg)
                else:
                    say(msg)
            stop = None
            if time_up:
                stop = "time_limit"
            elif tc.early_stop_patience is not None and do_val and bad_validations >= tc.early_stop_patience:
                stop = "early_stopping"
            elif (
                stop_after_epochs is not None
                and session_epochs >= stop_after_epochs
                and epoch + 1 < tc.epochs
            ):
                stop = "stop_after_epochs"
            stop = D.broadcast_object(stop, dist)
            if stop:
                stopped = stop
                break
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    seconds = time.perf_counter() - started
    model_file = run_dir / "model.pt"
    summary = {
        "run_dir": str(run_dir),
        "stopped": stopped,
        "epochs": history[-1]["epoch"] if history else start_epoch,
        "iterations": iteration,
        "seconds": seconds,
        "seconds_per_iter": seconds / max(1, iteration - start_iteration),
        "device": str(device),
        "precision": precision.name,
        "world_size": dist.world_size,
        "first_loss": history[0]["train_loss"] if history else float("nan"),
        "last_loss": history[-1]["train_loss"] if history else float("nan"),
        "best_dice": best.get("dice"),
        "best_epoch": best.get("epoch"),
        "best_dice_per_channel": best.get("per_channel"),
        "skipped_batches": skipped_total,
        "model_file": str(model_file),
    }
    if main:
        plot_training_curves(history, run_dir / "training_curve.png")
        _write_model_file(model, ckpt_dir, model_file, extra)
        _write_averages(model, averages, run_dir / "averages", extra, say)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        say(format_summary(summary))
    D.barrier(dist)
    return TrainResult(
        run_dir=run_dir,
        epochs=summary["epochs"],
        iterations=iteration,
        seconds=seconds,
        stopped=stopped,
        best_dice=best.get("dice"),
        best_epoch=best.get("epoch"),
        history=history,
        summary=summary,
    )


def _write_model_file(model: nn.Module, ckpt_dir: Path, path: Path, extra: dict) -> None:
    """``model.pt``: the best weights (or the last, without validation) as a plain model file."""
    best = ckpt_dir / "best.pt"
    module = model.module if hasattr(model, "module") else model
    if best.is_file():
        state = read_model_file(best)["state_dict"]
        current = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(state)
        try:
            save_model(path, module, extra)
        finally:
            module.load_state_dict(current)
    else:
        save_model(path, module, extra)


def _write_averages(model: nn.Module, averages: WeightAverages, folder: Path, extra: dict, say) -> None:
    """``averages/model_<spec>.pt``: each weight average as a model file like ``model.pt``."""
    module = model.module if hasattr(model, "module") else model
    for avg in averages.averages:
        if not avg.state:
            say(f"weight average {avg.spec}: nothing averaged (the run stopped before its share began)")
            continue
        current = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(averages.averaged_state(module, avg))
        try:
            save_model(folder / f"model_{avg.spec}.pt", module, {**extra, "weight_average": avg.spec})
        finally:
            module.load_state_dict(current)
        say(f"weight average {avg.spec} ({avg.count} steps) -> {folder / f'model_{avg.spec}.pt'}")


def _progress(total: int, initial: int, enabled: bool, unit: str = "it"):
    if not enabled:
        return None
    from attnseg.progress import progress

    # off a terminal: one line per epoch (the description names the epoch), not one per redraw
    return progress(total=total, initial=initial, unit=unit, dynamic_ncols=True, file=sys.stderr, leave=False)


def _tensorboard(run_dir: Path):
    """A SummaryWriter under ``run_dir/tensorboard`` when ``tensorboard`` is installed, else None."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
