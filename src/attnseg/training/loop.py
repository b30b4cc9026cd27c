"""The training loop: optimiser steps on patches, validation on whole volumes, checkpoints.

``fit`` works on preprocessed cases (``attnseg.transforms.PreparedCase``); ``attnseg.training.run.train``
goes from a data folder to a run folder and calls it. One iteration = one optimiser step
(``optim.grad_accum`` micro-batches). The learning rate is ``schedule(iteration)``, set before
every step (``LrSchedule``; with ``train.schedule_by_time``, at the share of the time budget spent
when that is larger). Checkpoints are written at the end of every epoch (``checkpoints/last.pt``) and when
the mean validation Dice improves (``checkpoints/best.pt``).

The shape is nnU-Net's ``run_training``: ``fit`` is a short list of named steps, each a small
function over three objects,

- ``Setup``: what ``fit`` builds once (model, optimiser, loss, schedule, data) and the loop only reads;
- ``TrainState``: what the loop changes and a checkpoint saves (epoch, iteration, history, best
  Dice, counters), so a resumed run starts from ``TrainState.from_checkpoint``;
- ``Session``: this call's clock, progress bar, TensorBoard writer and DDP wrapper.

Per epoch: ``freeze_parts`` (``train.freeze_gates_epochs``, ``train.freeze_encoder_epochs``; re-wraps
DDP when it changes),
``run_epoch`` (``train_step`` of ``attnseg.training.step`` per iteration: accumulation, the NaN
policy, clipping, the fp16 scaler; weight averages; the time limit), ``epoch_record``,
``validate_and_track_best``, ``save_checkpoints``, ``report_epoch`` (metrics, curves, TensorBoard,
the epoch line) and ``should_stop``. At the end ``write_outputs`` writes ``model.pt``, the weight
averages and ``summary.json``. Only rank 0 validates and writes; the decision to stop is its.
"""

from __future__ import annotations

import importlib.util
import itertools
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

from attnseg.config import LossConfig, OptimConfig, RunConfig, TrainConfig, to_dict
from attnseg.datasets.label_scheme import LabelScheme
from attnseg.errors import ConfigError
from attnseg.io.atomic import atomic_write, atomic_write_text
from attnseg.losses import DeepSupervisionLoss, build_loss
from attnseg.models.card import training_card
from attnseg.models.model_file import read_model_file, save_model
from attnseg.progress import progress
from attnseg.training import distributed as D
from attnseg.training.amp import Precision, make_precision, resolve_device
from attnseg.training.averaging import WeightAverages
from attnseg.training.checkpointing import load_checkpoint, restore, save_checkpoint
from attnseg.training.report import format_summary, plot_training_curves, write_metrics
from attnseg.training.schedules import make_schedule
from attnseg.training.step import StepParts, StepResult, TrainingDiverged, nan_hints, train_step
from attnseg.training.validation import validate
from attnseg.transforms.batch_plan import BatchPlan
from attnseg.transforms.loader import PatchDataset, PreparedCase, make_loader

PLOT_EVERY_S = 60.0


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
    if target.ignore_index is not None:
        options["ignore_index"] = target.ignore_index
    try:
        loss = build_loss(name, target.activation, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss: {exc}") from None
    if deep_supervision:
        loss = DeepSupervisionLoss(loss, include_lowest=config.ds_include_lowest)
    return loss


FREEZABLE = ("gates", "encoder")  # model.gates, model.encoder: train.freeze_<part>_epochs


def set_frozen(model: nn.Module, part: str, frozen: bool) -> bool:
    """Freeze or unfreeze ``model.<part>`` (``gates`` or ``encoder``); returns True when something
    changed. Frozen weights get no gradient (no weight decay either); batch-norm statistics of a
    frozen part still follow the data in training mode."""
    modules = getattr(model, part, None)
    if modules is None or len(modules) == 0:
        return False
    changed = False
    for p in modules.parameters():
        if p.requires_grad == frozen:
            p.requires_grad_(not frozen)
            changed = True
    return changed


def iterations_per_epoch(config: RunConfig, n_train: int, world_size: int) -> int:
    if config.train.iters_per_epoch > 0:
        return config.train.iters_per_epoch
    per_step = (config.data.batch_size or 2) * world_size * config.optim.grad_accum
    return max(1, math.ceil(n_train / per_step))


# --- what the loop reads and what it changes -------------------------------------------------------------
@dataclass
class TrainState:
    """What the loop changes; a checkpoint saves all of it, so a resumed run continues exactly."""

    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimiser steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch (metrics.jsonl)
    best_dice: float | None = None  # best mean validation Dice so far
    best_epoch: int | None = None
    best_per_channel: dict[str, float] | None = None
    bad_validations: int = 0  # validations in a row without a new best (train.early_stop_patience)
    skipped_batches: int = 0  # steps dropped by train.nan_policy=skip, over all sessions

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> TrainState:
        best = dict(payload.get("best") or {})
        return cls(
            epoch=int(payload["epoch"]),
            iteration=int(payload["iteration"]),
            history=list(payload.get("history") or []),
            best_dice=best.get("dice"),
            best_epoch=best.get("epoch"),
            best_per_channel=best.get("per_channel"),
            bad_validations=int(best.get("bad_validations", 0)),
            skipped_batches=int(best.get("skipped_batches", 0)),
        )

    def best(self) -> dict[str, Any]:
        """The checkpoint's ``best`` entry."""
        return {
            "dice": self.best_dice,
            "epoch": self.best_epoch,
            "per_channel": self.best_per_channel,
            "bad_validations": self.bad_validations,
            "skipped_batches": self.skipped_batches,
        }

    def add_epoch(self, record: dict[str, Any], skipped: int) -> None:
        """An epoch is done: its record joins the history."""
        self.history.append(record)
        self.epoch = int(record["epoch"])
        self.skipped_batches += skipped

    @property
    def elapsed_seconds(self) -> float:
        """Training seconds of the sessions so far (as of the last epoch record)."""
        return float(self.history[-1].get("elapsed_seconds", 0.0)) if self.history else 0.0


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate at an iteration: ``schedule(iteration)``, or with ``time_limit_s``
    (``train.schedule_by_time``) at the larger share spent, of the iterations or of the time budget.

    Example: ``total_iters=100``, ``time_limit_s=60``: at iteration 10 after 30 s the rate is
    ``schedule(50)`` and ``progress(10, 30.0)`` is 0.5.
    """

    schedule: Callable[[int], float]
    total_iters: int
    time_limit_s: float | None = None

    @property
    def by_time(self) -> bool:
        return self.time_limit_s is not None

    def lr(self, iteration: int, elapsed_s: float) -> float:
        if self.time_limit_s is not None:
            by_time = min(self.total_iters - 1, int(self.total_iters * elapsed_s / self.time_limit_s))
            iteration = max(iteration, by_time)
        return self.schedule(iteration)

    def progress(self, iteration: int, elapsed_s: float) -> float:
        """Share of the schedule done after ``iteration`` steps (of the time budget, when it rules)."""
        done = iteration / max(1, self.total_iters)
        return max(done, elapsed_s / self.time_limit_s) if self.time_limit_s is not None else done


@dataclass
class Setup:
    """What ``fit`` builds once; the loop only reads it."""

    config: RunConfig
    model: nn.Module
    train_cases: list[PreparedCase]
    val_cases: list[PreparedCase]
    target: LabelScheme
    run_dir: Path
    dist: D.DistInfo
    device: torch.device
    parts: StepParts  # optimiser, scaler, loss, precision: what train_step uses
    dataset: PatchDataset
    schedule: LrSchedule
    iters: int  # optimiser steps per epoch
    stride: int  # the network's total downsampling (multi-scale patch sizes are multiples of it)
    averages: WeightAverages
    run_config: dict[str, Any]
    extra: dict[str, Any]  # the model card and model_extra, in every checkpoint and model file
    say: Callable[[str], None]  # log on rank 0, nothing elsewhere

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


@dataclass
class Session:
    """This call of ``fit`` (a resumed run is a new session): clock, display and the DDP wrapper."""

    start_epoch: int
    start_iteration: int
    elapsed_before: float  # training seconds of the earlier sessions
    stop_after_epochs: int | None
    started: float  # time.perf_counter() when this session's training began
    bar: Any = None  # progress bar (rank 0, train.progress)
    writer: Any = None  # TensorBoard SummaryWriter (rank 0, when tensorboard is installed)
    last_plot: float = 0.0
    epochs: int = 0  # epochs done in this session
    stopped: str = "completed"
    net: nn.Module | None = None  # the model, or its DDP wrapper over the parameters that train
    frozen: dict[str, bool] | None = None  # part (FREEZABLE) -> frozen in the current epoch

    @property
    def over(self) -> bool:
        """This session's share (``stop_after_epochs``) is done."""
        return self.stop_after_epochs is not None and self.epochs >= self.stop_after_epochs

    def elapsed(self) -> float:
        """Training seconds over all sessions of this run."""
        return self.elapsed_before + time.perf_counter() - self.started

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


# --- before the first epoch ---------------------------------------------------------------------------
def check_settings(config: RunConfig, train_cases: list[PreparedCase]) -> None:
    tc, oc = config.train, config.optim
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


def build_setup(
    model: nn.Module,
    train_cases: list[PreparedCase],
    val_cases: list[PreparedCase],
    target: LabelScheme,
    config: RunConfig,
    run_dir: Path,
    log: Callable[[str], None],
    dist_info: D.DistInfo | None,
    model_extra: dict[str, Any] | None,
) -> Setup:
    """Processes, device, optimiser, loss, schedule and patch dataset; the model moves to the device."""
    tc, oc = config.train, config.optim
    device_type = "cuda" if (tc.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    dist = dist_info or D.init_from_env(device_type)
    device = resolve_device(tc.device, dist.local_rank)
    precision = make_precision(tc.precision, device)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    parts = build_step_parts(model, config, target, train_cases, precision, dist, run_dir)
    iters = iterations_per_epoch(config, len(train_cases), dist.world_size)
    total = tc.epochs * iters
    schedule = make_schedule(oc.schedule, total, oc.lr, oc.warmup_iters, oc.min_lr, oc.poly_power)
    dataset = PatchDataset(
        train_cases,
        config.augment,
        seed=tc.seed,
        classes=target.file_values,
        encode=target.encode,
        ignore_label=target.ignore_label,
    )
    try:
        averages = WeightAverages(tc.weight_averages)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if tc.model_weights != "last" and tc.model_weights not in tc.weight_averages:
        raise ConfigError(
            f"train.model_weights={tc.model_weights!r}: pass 'last' or one of train.weight_averages "
            f"({', '.join(tc.weight_averages) or 'none set'})"
        )
    run_config = to_dict(config)
    return Setup(
        config=config,
        model=model,
        train_cases=train_cases,
        val_cases=val_cases,
        target=target,
        run_dir=run_dir,
        dist=dist,
        device=device,
        parts=parts,
        dataset=dataset,
        schedule=LrSchedule(schedule, total, tc.time_limit_s if tc.schedule_by_time else None),
        iters=iters,
        stride=int(getattr(model, "stride", 1)),
        averages=averages,
        run_config=run_config,
        extra=model_card(model, target, run_config, model_extra),
        say=log if dist.is_main else (lambda _msg: None),
    )


def build_step_parts(
    model: nn.Module,
    config: RunConfig,
    target: LabelScheme,
    train_cases: list[PreparedCase],
    precision: Precision,
    dist: D.DistInfo,
    run_dir: Path,
) -> StepParts:
    """Optimiser, scaler and loss for ``train_step``; the model moves to the device (and layout)."""
    tc, oc = config.train, config.optim
    model.to(precision.device)
    optimizer = build_optimizer(model, oc)
    scaler = precision.scaler()
    loss_fn = build_training_loss(config.loss, target, bool(getattr(model, "deep_supervision", False)))
    memory_format = None
    if tc.channels_last:
        memory_format = torch.channels_last_3d if config.model.spatial_dims == 3 else torch.channels_last
        model.to(memory_format=memory_format)
    return StepParts(
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        loss_fn=loss_fn,
        precision=precision,
        dist=dist,
        case_ids=[c.case_id for c in train_cases],
        last_checkpoint=run_dir / "checkpoints" / "last.pt",
        hint=nan_hints(config, precision),
        grad_accum=oc.grad_accum,
        grad_clip_norm=oc.grad_clip_norm,
        nan_policy=tc.nan_policy,
        memory_format=memory_format,
    )


def model_card(
    model: nn.Module, target: LabelScheme, run_config: dict[str, Any], model_extra: dict[str, Any] | None
) -> dict[str, Any]:
    """What inference needs besides the weights, so that model.pt works away from its run folder
    (patch, preprocessing, label scheme, channel names, training flips, version)."""
    return {
        **training_card(
            run_config,
            target.to_dict(),
            (model_extra or {}).get("channel_names"),
            model_config=to_dict(model.config) if hasattr(model, "config") else None,
        ),
        **(model_extra or {}),
    }


def resume(s: Setup, path: str | Path) -> TrainState:
    """Weights, optimiser, scaler and RNG states from the checkpoint at ``path``; its TrainState."""
    payload = load_checkpoint(path)
    restore(payload, s.model, s.parts.optimizer, s.parts.scaler)
    state = TrainState.from_checkpoint(payload)
    s.averages.load_payload(payload.get("weight_averages"))
    s.say(f"resumed from {path}: epoch {state.epoch}, iteration {state.iteration}")
    return state


def start_session(s: Setup, state: TrainState, stop_after_epochs: int | None) -> Session:
    """Say what will train, then start the clock, the progress bar and the TensorBoard writer."""
    tc, oc, dc, world = s.config.train, s.config.optim, s.config.data, s.dist.world_size
    s.say(
        f"training on {s.device} ({s.parts.precision.name}), {world} process(es), {len(s.train_cases)} training / "
        f"{len(s.val_cases)} validation cases, {tc.epochs} epochs x {s.iters} iterations, patch "
        f"{list(dc.patch_size)}, batch {dc.batch_size} x {world} x {oc.grad_accum}"
        + (f"; stops after {tc.time_limit_s / 60:.1f} min of training" if tc.time_limit_s is not None else "")
    )
    writer = _tensorboard(s.run_dir) if s.dist.is_main else None
    started = time.perf_counter()
    before = state.elapsed_seconds
    show = s.dist.is_main and tc.progress
    # a time-budgeted run counts seconds of its budget (total and ETA in budget terms), others iterations
    if s.schedule.by_time:
        bar = _progress(int(round(tc.time_limit_s)), int(before), enabled=show, unit="s")
    else:
        bar = _progress(s.schedule.total_iters, state.iteration, enabled=show)
    return Session(
        start_epoch=state.epoch,
        start_iteration=state.iteration,
        elapsed_before=before,
        stop_after_epochs=stop_after_epochs,
        started=started,
        bar=bar,
        writer=writer,
        last_plot=started,
    )


# --- one epoch ------------------------------------------------------------------------------------------
def freeze_parts(s: Setup, session: Session, epoch: int) -> None:
    """Attention gates frozen for the first ``train.freeze_gates_epochs``, the encoder for the first
    ``train.freeze_encoder_epochs``; DDP re-wraps on a change (it reduces only the parameters that
    require grad when it is built)."""
    tc = s.config.train
    epochs = {part: getattr(tc, f"freeze_{part}_epochs") for part in FREEZABLE}
    frozen = {part: epoch < n for part, n in epochs.items()}
    if session.frozen is not None and frozen == session.frozen:
        return
    for part, value in frozen.items():
        set_frozen(s.model, part, value)
    session.net = D.wrap_model(s.model, s.dist, s.device)
    for part, n in epochs.items():
        label = "attention gates" if part == "gates" else part
        if frozen[part] and (session.frozen is None or not session.frozen[part]):
            s.say(f"{label} frozen for epochs 1-{n}")
        elif not frozen[part] and epoch > 0 and epoch == n:
            s.say(f"{label} unfrozen at epoch {epoch + 1}")
    session.frozen = frozen


@dataclass
class EpochSteps:
    """What the optimiser steps of one epoch did."""

    started: float  # time.perf_counter() before the first step
    lr: float = float("nan")  # of the last step
    losses: list[float] = field(default_factory=list)  # of the steps taken
    terms: dict[str, list[float]] = field(default_factory=dict)  # loss terms per finite micro-batch
    skipped: int = 0
    skipped_in_a_row: int = 0
    time_up: bool = False

    def add(self, step: StepResult) -> None:
        self.lr = step.lr
        for terms in step.terms:
            for name, value in terms.items():
                self.terms.setdefault(name, []).append(value)
        if step.ok:
            self.losses.append(step.loss)
            self.skipped_in_a_row = 0
        else:
            self.skipped += 1
            self.skipped_in_a_row += 1


def run_epoch(s: Setup, state: TrainState, session: Session, epoch: int) -> EpochSteps:
    """``s.iters`` optimiser steps (fewer when the time limit is reached), on this rank's patches."""
    tc, dc, accum = s.config.train, s.config.data, s.parts.grad_accum
    session.net.train()
    plan = BatchPlan(n_cases=len(s.train_cases), epoch=epoch, micro_batches=s.iters * accum, batch_size=dc.batch_size, seed=tc.seed, base_patch=dc.patch_size, stride=s.stride, multiscale=tc.multiscale, rank=s.dist.rank, world_size=s.dist.world_size)  # fmt: skip
    loader = make_loader(s.dataset, plan, dc.num_workers)
    steps = EpochSteps(started=time.perf_counter())
    micro_batches = iter(loader)
    for _ in range(s.iters):
        step = train_step(
            s.parts,
            session.net,
            itertools.islice(micro_batches, accum),
            lr_at=lambda i: s.schedule.lr(i, session.elapsed()),
            iteration=state.iteration,
            epoch=epoch,
        )
        steps.add(step)
        if step.ok and s.averages:
            s.averages.update(s.model, s.schedule.progress(state.iteration + 1, session.elapsed()))
        if steps.skipped_in_a_row > tc.max_skipped_batches:
            raise TrainingDiverged(
                f"{steps.skipped_in_a_row} batches in a row had a non-finite loss (last at iteration "
                f"{state.iteration + 1}, epoch {epoch + 1}). Hints: {s.parts.hint}"
            )
        state.iteration += 1
        show_step(s, session, steps, epoch, state.iteration)
        if tc.time_limit_s is not None:
            time_left = session.elapsed() < tc.time_limit_s
            if not D.all_true(time_left, s.dist, s.device):  # every rank stops after the same step
                steps.time_up = True
                break
    return steps


def show_step(s: Setup, session: Session, steps: EpochSteps, epoch: int, iteration: int) -> None:
    bar = session.bar
    if bar is None:
        return
    if s.schedule.by_time:
        bar.update(max(0, min(bar.total, int(session.elapsed())) - bar.n))
        bar.set_description(f"epoch {epoch + 1}, iteration {iteration}")
    else:
        bar.update(1)
        bar.set_description(f"epoch {epoch + 1}/{s.config.train.epochs}")
    if steps.losses:
        bar.set_postfix(loss=f"{steps.losses[-1]:.4f}", lr=f"{steps.lr:.2e}", refresh=False)


# --- the end of an epoch --------------------------------------------------------------------------------
def epoch_record(s: Setup, state: TrainState, steps: EpochSteps, epoch: int, frozen: dict[str, bool]) -> dict:
    """The epoch's line of metrics.jsonl, before validation (the mean loss over all ranks)."""
    losses = steps.losses
    train_loss = D.mean_over_ranks(sum(losses) / len(losses), s.dist, s.device) if losses else float("nan")
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "iteration": state.iteration,
        "lr": steps.lr,
        "train_loss": train_loss,
    }
    for name, values in steps.terms.items():
        record[f"train_{name}"] = sum(values) / len(values)
    if steps.skipped:
        record["skipped_batches"] = steps.skipped
    record["gates_frozen"] = bool(frozen["gates"])
    if s.config.train.freeze_encoder_epochs > 0:
        record["encoder_frozen"] = bool(frozen["encoder"])
    return record


def validation_due(epoch: int, tc: TrainConfig, *, has_cases: bool, last: bool) -> bool:
    """Validate after epoch ``epoch`` (1-based): every ``train.val_every`` epochs and after the
    last epoch of a session (``val_every=0``: never)."""
    return has_cases and tc.val_every > 0 and (epoch % tc.val_every == 0 or last)


def validate_and_track_best(s: Setup, state: TrainState, record: dict[str, Any]) -> bool:
    """Whole-volume validation Dice into ``record``; True when the mean is a new best."""
    started = time.perf_counter()
    dc, tc = s.config.data, s.config.train
    cases = s.val_cases[: dc.max_val_cases] if dc.max_val_cases > 0 else s.val_cases
    result = validate(
        s.model,
        cases,
        s.target,
        dc.patch_size,
        s.parts.precision,
        overlap=tc.val_overlap,
        batch_size=tc.val_batch_size,
    )
    record["val_dice_mean"] = result["dice_mean"]
    record["val_dice"] = result["dice"]
    record["val_seconds"] = time.perf_counter() - started
    if state.best_dice is not None and not result["dice_mean"] > state.best_dice:
        state.bad_validations += 1
        return False
    state.best_dice, state.best_epoch = result["dice_mean"], record["epoch"]
    state.best_per_channel = result["dice"]
    state.bad_validations = 0
    return True


def save_checkpoints(s: Setup, state: TrainState, improved: bool) -> None:
    """``checkpoints/last.pt`` every epoch, ``checkpoints/best.pt`` on a new best (atomic writes)."""
    ckpt = dict(
        run_config=s.run_config,
        optimizer=s.parts.optimizer,
        scaler=s.parts.scaler,
        epoch=state.epoch,
        iteration=state.iteration,
        history=state.history,
        best=state.best(),
        extra={**s.extra, "weight_averages": s.averages.to_payload()} if s.averages else s.extra,
    )
    save_checkpoint(s.ckpt_dir / "last.pt", s.model, **ckpt)
    if improved:
        save_checkpoint(s.ckpt_dir / "best.pt", s.model, **ckpt)


def report_epoch(s: Setup, session: Session, state: TrainState, record: dict, improved: bool) -> None:
    """metrics.jsonl/csv, the curves (at most every ``PLOT_EVERY_S``), TensorBoard, the epoch line."""
    write_metrics(s.run_dir, state.history)
    if time.perf_counter() - session.last_plot > PLOT_EVERY_S:  # a plot costs ~1 s; the end always plots
        plot_training_curves(state.history, s.run_dir / "training_curve.png")
        session.last_plot = time.perf_counter()
    epoch = record["epoch"]
    if session.writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)):
                session.writer.add_scalar(key, value, epoch)
        for key, value in record.get("val_dice", {}).items():
            session.writer.add_scalar(f"val_dice/{key}", value, epoch)
        session.writer.flush()
    msg = f"epoch {epoch}/{s.config.train.epochs}: loss {record['train_loss']:.4f}, lr {record['lr']:.2e}"
    if "val_dice_mean" in record:
        msg += f", val Dice {record['val_dice_mean']:.4f}" + (" (best)" if improved else "")
    msg += f", {record['epoch_seconds']:.1f} s"
    if session.bar is not None:
        session.bar.write(msg)
    else:
        s.say(msg)


def should_stop(
    epoch: int, tc: TrainConfig, time_up: bool, validated: bool, bad_validations: int, session_over: bool
) -> str | None:
    """Why the run ends after epoch ``epoch`` (1-based), or None: ``time_limit``, ``early_stopping``
    (after a validation, ``train.early_stop_patience`` of them in a row without a new best) or
    ``stop_after_epochs`` (``session_over``: this session's share is done before ``train.epochs``;
    resume to continue). After the last epoch the run ends ``completed`` without asking."""
    if time_up:
        return "time_limit"
    if tc.early_stop_patience is not None and validated and bad_validations >= tc.early_stop_patience:
        return "early_stopping"
    if session_over and epoch < tc.epochs:
        return "stop_after_epochs"
    return None


# --- the loop -------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    train_cases: list[PreparedCase],
    val_cases: list[PreparedCase],
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
    tc = config.train
    check_settings(config, train_cases)
    s = build_setup(model, train_cases, val_cases, target, config, Path(run_dir), log, dist_info, model_extra)
    state = resume(s, resume_from) if resume_from is not None else TrainState()
    session = start_session(s, state, stop_after_epochs)
    try:
        for epoch in range(state.epoch, tc.epochs):
            freeze_parts(s, session, epoch)
            steps = run_epoch(s, state, session, epoch)
            session.epochs += 1
            record = epoch_record(s, state, steps, epoch, session.frozen)
            last = epoch + 1 == tc.epochs or steps.time_up or session.over
            validated = validation_due(epoch + 1, tc, has_cases=bool(val_cases), last=last)
            improved = validated and s.dist.is_main and validate_and_track_best(s, state, record)
            record.update(
                epoch_seconds=time.perf_counter() - steps.started, elapsed_seconds=session.elapsed()
            )
            state.add_epoch(record, skipped=steps.skipped)
            if s.dist.is_main:
                save_checkpoints(s, state, improved)
                report_epoch(s, session, state, record, improved)
            stop = should_stop(epoch + 1, tc, steps.time_up, validated, state.bad_validations, session.over)
            if stop := D.broadcast_object(stop, s.dist):
                session.stopped = stop
                break
    finally:
        session.close()
    return write_outputs(s, state, session)


# --- after the last epoch -------------------------------------------------------------------------------
def write_outputs(s: Setup, state: TrainState, session: Session) -> TrainResult:
    """``model.pt`` (best weights, else the last), the weight averages, the curves and
    ``summary.json`` (rank 0); every rank waits for them and returns the same result."""
    seconds = time.perf_counter() - session.started
    history, model_file = state.history, s.run_dir / "model.pt"
    summary = {
        "run_dir": str(s.run_dir),
        "stopped": session.stopped,
        "epochs": history[-1]["epoch"] if history else session.start_epoch,
        "iterations": state.iteration,
        "seconds": seconds,
        "seconds_per_iter": seconds / max(1, state.iteration - session.start_iteration),
        "device": str(s.device),
        "precision": s.parts.precision.name,
        "world_size": s.dist.world_size,
        "first_loss": history[0]["train_loss"] if history else float("nan"),
        "last_loss": history[-1]["train_loss"] if history else float("nan"),
        "best_dice": state.best_dice,
        "best_epoch": state.best_epoch,
        "best_dice_per_channel": state.best_per_channel,
        "skipped_batches": state.skipped_batches,
        "model_file": str(model_file),
    }
    if s.config.train.init:  # fine-tuned: what from is in RUN/init.json
        summary["init"] = s.config.train.init
    if s.dist.is_main:
        plot_training_curves(history, s.run_dir / "training_curve.png")
        _write_model_file(s.model, s.ckpt_dir, model_file, s.extra)
        _write_averages(s.model, s.averages, s.run_dir / "averages", s.extra, s.say)
        _use_average(s.config.train.model_weights, s.run_dir, model_file, s.say)
        atomic_write_text(s.run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        s.say(format_summary(summary))
    D.barrier(s.dist)
    return TrainResult(
        run_dir=s.run_dir,
        epochs=summary["epochs"],
        iterations=state.iteration,
        seconds=seconds,
        stopped=session.stopped,
        best_dice=state.best_dice,
        best_epoch=state.best_epoch,
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


def _use_average(spec: str, run_dir: Path, model_file: Path, say) -> None:
    """``train.model_weights=<spec>``: ``model.pt`` becomes that weight average (the last or best
    weights stay in ``checkpoints/``)."""
    if spec == "last":
        return
    average = run_dir / "averages" / f"model_{spec}.pt"
    if not average.is_file():  # the run stopped before the average began: model.pt keeps the last weights
        say(f"train.model_weights={spec}: no average was kept; {model_file.name} holds the last weights")
        return
    with atomic_write(model_file, "wb") as handle:
        handle.write(average.read_bytes())
    say(f"{model_file.name} holds the weight average {spec}")


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
    # off a terminal: one line per epoch (the description names the epoch), not one per redraw
    return progress(total=total, initial=initial, unit=unit, dynamic_ncols=True, file=sys.stderr, leave=False)


def _tensorboard(run_dir: Path):
    """A SummaryWriter under ``run_dir/tensorboard`` when ``tensorboard`` is installed, else None."""
    if importlib.util.find_spec("tensorboard") is None:
        return None
    # imported here, not at the module head: tensorboard is optional and importing it takes ~0.6 s
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
