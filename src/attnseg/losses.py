"""Segmentation losses: soft Dice, focal, cross-entropy, their weighted sums, and deep supervision.

Conventions (shared by every loss here):

- ``logits``: ``(N, K, *spatial)``, raw network outputs (any float dtype; losses compute in float32,
  so they are safe under bf16/fp16 autocast).
- ``activation="softmax"`` (mutually exclusive classes): ``target`` is an integer label map
  ``(N, *spatial)`` with values in ``[0, K)``, or ``(N, 1, *spatial)``. Channel 0 is background.
- ``activation="sigmoid"`` (multi-label / BraTS-style overlapping regions): ``target`` is binary
  ``(N, K, *spatial)`` (bool, uint8 or float), one channel per region.
- ``include_background=False`` drops channel 0 from Dice and focal terms (MONAI's meaning);
  cross-entropy always sees every class (it needs them to normalise).
- ``class_weights``: one weight per channel (``K``, or ``K - 1`` when background is excluded from
  Dice). Dice takes the weighted mean over classes ``sum(w_c * L_c) / sum(w_c)``; softmax
  cross-entropy is torch's weighted mean; sigmoid cross-entropy/focal weight each channel's
  voxels by ``w_c``.

Soft Dice per class ``c``: ``1 - (2 * sum(p * t) + smooth_nr) / (sum(p) + sum(t) + smooth_dr)``,
the sums over space (per sample, then the mean over samples) or over batch and space together
(``batch_dice=True``: fewer empty-class 0/0 cases in small patches).

``ignore_index`` (every loss; ``LabelScheme.ignore_index``): target voxels with this value take no
part, as if they were not in the patch. Softmax: a label value (nnU-Net keeps its ignore label as
the class index ``K``); sigmoid: the value in every channel of an ignored voxel (255). Dice sums run
over the other voxels only (nnU-Net's masking: probabilities and targets multiplied by the mask);
cross-entropy and focal average over the other voxels only (torch's ``ignore_index``); a patch with
no annotated voxel gives 0 with a zero gradient. The logits at an ignored voxel get no gradient.

Focal loss (Lin et al., 2017): ``-alpha_t * (1 - p_t) ** gamma * log(p_t)``. Multi-class: summed over
classes per voxel, averaged over voxels, so ``gamma=0`` and no alpha is exactly cross-entropy
(MONAI averages over voxels *and* classes, so its value is ours / K). Sigmoid: averaged over every
voxel of every channel, as binary cross-entropy is. Scalar ``alpha``: sigmoid -> ``alpha`` for
positives, ``1 - alpha`` for negatives; softmax -> ``1 - alpha`` for background, ``alpha`` for the
other classes. A sequence ``alpha`` gives one factor per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("softmax", "sigmoid")


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: pass 'softmax' (classes) or 'sigmoid' (regions)")


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Integer labels ``(N, *spatial)`` from ``(N, *spatial)`` or ``(N, 1, *spatial)``."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"softmax target has shape {tuple(target.shape)}; expected integer labels "
            f"{tuple(logits.shape[:1] + logits.shape[2:])} for logits {tuple(logits.shape)}"
        )
    if target.is_floating_point():
        target = target.round()
    return target.long()


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, *spatial)`` integer labels -> float ``(N, K, *spatial)`` one-hot."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels range [{int(labels.min())}, {int(labels.max())}] does not fit {num_classes} classes "
            f"(expected values 0..{num_classes - 1})"
        )
    out = torch.zeros(
        (labels.shape[0], num_classes, *labels.shape[1:]), dtype=torch.float32, device=labels.device
    )
    return out.scatter_(1, labels.unsqueeze(1), 1.0)


def _binary_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if target.shape != logits.shape:
        raise ValueError(
            f"sigmoid target has shape {tuple(target.shape)}; expected one binary channel per "
            f"output channel, {tuple(logits.shape)}"
        )
    return target.to(torch.float32)


def annotated_mask(target: torch.Tensor, logits: torch.Tensor, activation: str, ignore_index: int | None):
    """The target with ignored voxels set to 0 and the float mask ``(N, 1, *spatial)`` of the voxels
    that count (None when ``ignore_index`` is None: every voxel counts). Softmax targets come back as
    integer labels ``(N, *spatial)``, sigmoid ones as ``(N, K, *spatial)``."""
    if activation == "softmax":
        target = _labels(target, logits)
        if ignore_index is None:
            return target, None
        ignored = target == int(ignore_index)
        return target.masked_fill(ignored, 0), (~ignored).unsqueeze(1).to(torch.float32)
    if ignore_index is None:
        return target, None
    if target.shape != logits.shape:
        _binary_target(target, logits)  # raises the shape error
    ignored = (target == ignore_index).any(1, keepdim=True)
    return target.masked_fill(ignored, 0), (~ignored).to(torch.float32)


def probabilities_and_targets(
    logits: torch.Tensor, target: torch.Tensor, activation: str, ignore_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 probabilities and float one-hot / binary targets, both ``(N, K, *spatial)``; with
    ``ignore_index``, both are 0 at the ignored voxels (so they drop out of every Dice sum)."""
    _check_activation(activation)
    logits = logits.float()
    target, mask = annotated_mask(target, logits, activation, ignore_index)
    if activation == "softmax":
        probs, onehot = torch.softmax(logits, 1), one_hot(target, logits.shape[1])
    else:
        probs, onehot = torch.sigmoid(logits), _binary_target(target, logits)
    if mask is not None:
        probs, onehot = probs * mask, onehot * mask
    return probs, onehot


def _weights(class_weights: Sequence[float] | torch.Tensor | None, channels: int, like: torch.Tensor):
    if class_weights is None:
        return None
    w = torch.as_tensor(class_weights, dtype=torch.float32, device=like.device).flatten()
    if w.numel() != channels:
        raise ValueError(f"class_weights has {w.numel()} value(s); this loss term has {channels} channel(s)")
    if (w < 0).any() or float(w.sum()) <= 0:
        raise ValueError(f"class_weights={w.tolist()}: weights must be >= 0 and not all zero")
    return w


def soft_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    *,
    batch_dice: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Dice loss of probabilities and float targets, both ``(N, K, *spatial)``; a scalar.

    Per sample and class (or per class over the batch with ``batch_dice``), then the (weighted)
    mean over classes and the mean over samples.
    """
    if probs.shape != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} differ in shape")
    axes = list(range(2, probs.ndim))
    if batch_dice:
        axes = [0, *axes]
    inter = (probs * target).sum(axes)
    denom = probs.sum(axes) + target.sum(axes)
    loss = 1.0 - (2.0 * inter + smooth_nr) / (denom + smooth_dr)  # (N, K) or (K,)
    w = _weights(class_weights, probs.shape[1], probs)
    if w is None:
        return loss.mean()
    return ((loss * w).sum(-1) / w.sum()).mean()


class DiceLoss(nn.Module):
    """Soft Dice loss on logits (see the module docstring for target and weight conventions)."""

    def __init__(
        self,
        activation: str = "softmax",
        *,
        include_background: bool = True,
        batch_dice: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ):
        super().__init__()
        _check_activation(activation)
        self.activation = activation
        self.include_background = include_background
        self.ignore_index = ignore_index
        self.batch_dice = batch_dice
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot = probabilities_and_targets(logits, target, self.activation, self.ignore_index)
        if not self.include_background and probs.shape[1] > 1:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        return soft_dice_loss(
            probs,
            onehot,
            batch_dice=self.batch_dice,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
            class_weights=self.class_weights,
        )


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    activation: str = "softmax",
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    include_background: bool = True,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Focal loss (scalar); conventions in the module docstring."""
    _check_activation(activation)
    logits = logits.float()
    k = logits.shape[1]
    shape = [1, -1] + [1] * (logits.ndim - 2)
    target, mask = annotated_mask(target, logits, activation, ignore_index)
    if activation == "softmax":
        onehot = one_hot(target, k)
        log_p = torch.log_softmax(logits, 1)
        per = -((1.0 - log_p.exp()).pow(gamma)) * log_p * onehot  # (N, K, *spatial), zero off-target
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=torch.float32, device=logits.device)
            if a.ndim == 0:
                a = torch.cat([1.0 - a.reshape(1), a.reshape(1).expand(k - 1)])
            if a.numel() != k:
                raise ValueError(f"alpha has {a.numel()} values; the logits have {k} classes")
            per = per * a.view(shape)
    else:
        t = _binary_target(target, logits)
        bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        # (1 - p_t) computed in log space: log(1 - p_t) = logsigmoid(-x) for t=1, logsigmoid(x) for t=0
        modulating = torch.exp(gamma * F.logsigmoid(-logits * (2.0 * t - 1.0)))
        per = modulating * bce
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=torch.float32, device=logits.device)
            if a.ndim == 0:
                per = per * (t * a + (1.0 - t) * (1.0 - a))
            else:
                if a.numel() != k:
                    raise ValueError(f"alpha has {a.numel()} values; the logits have {k} channels")
                per = per * torch.where(t > 0, a.view(shape), torch.ones_like(t))
    if not include_background and k > 1:
        per = per[:, 1:]
    w = _weights(class_weights, per.shape[1], per)
    if w is not None:
        per = per * w.view(shape)
    if mask is not None:  # the mean over the annotated voxels
        voxels = mask.sum() * (1 if activation == "softmax" else per.shape[1])
        return (per * mask).sum() / voxels.clamp_min(1.0)
    if activation == "softmax":
        return per.sum(1).mean()
    return per.mean()


class FocalLoss(nn.Module):
    def __init__(
        self,
        activation: str = "softmax",
        *,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        include_background: bool = True,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ):
        super().__init__()
        _check_activation(activation)
        if gamma < 0:
            raise ValueError(f"gamma={gamma}: must be >= 0")
        self.activation = activation
        self.gamma = gamma
        self.alpha = alpha
        self.include_background = include_background
        self.class_weights = class_weights
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(
            logits,
            target,
            activation=self.activation,
            gamma=self.gamma,
            alpha=self.alpha,
            include_background=self.include_background,
            class_weights=self.class_weights,
            ignore_index=self.ignore_index,
        )


class CrossEntropyLoss(nn.Module):
    """Softmax: torch's cross-entropy (weighted mean with ``class_weights``).
    Sigmoid: binary cross-entropy with logits, mean over every voxel of every channel; ``class_weights``
    act as ``pos_weight`` (up-weight each region's positive voxels), as in MONAI's DiceCELoss.
    ``ignore_index``: those voxels are left out of the mean (0 when every voxel is ignored)."""

    def __init__(
        self,
        activation: str = "softmax",
        *,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ):
        super().__init__()
        _check_activation(activation)
        self.activation = activation
        self.class_weights = class_weights
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        w = _weights(self.class_weights, logits.shape[1], logits)
        target, mask = annotated_mask(target, logits, self.activation, self.ignore_index)
        if self.activation == "softmax":
            if mask is None:
                return F.cross_entropy(logits, target, weight=w)
            per = F.cross_entropy(logits, target, weight=w, reduction="none")  # w[y] * -log p_y
            total = mask[:, 0] if w is None else mask[:, 0] * w[target]  # torch's weighted mean
            return (per * mask[:, 0]).sum() / total.sum().clamp_min(1e-12)
        t = _binary_target(target, logits)
        pos_weight = None if w is None else w.view([-1] + [1] * (logits.ndim - 2))
        if mask is None:
            return F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight)
        per = F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight, reduction="none")
        return (per * mask).sum() / (mask.sum() * per.shape[1]).clamp_min(1.0)


class CombinedLoss(nn.Module):
    """``sum(lambda_i * loss_i)``; ``.last`` holds the float value of each term after a call."""

    def __init__(self, terms: dict[str, tuple[float, nn.Module]]):
        super().__init__()
        for name, (lam, _) in terms.items():
            if lam < 0:
                raise ValueError(f"weight of loss term {name!r} is {lam}; must be >= 0")
        self.lambdas = {name: float(lam) for name, (lam, _) in terms.items()}
        self.terms = nn.ModuleDict({name: module for name, (_, module) in terms.items()})
        self.last: dict[str, float] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        last = {}
        for name, module in self.terms.items():
            value = module(logits, target)
            last[name] = float(value.detach())
            total = self.lambdas[name] * value if total is None else total + self.lambdas[name] * value
        self.last = last
        return total


def _dice_options(include_background: bool, batch_dice: bool, smooth_nr: float, smooth_dr: float) -> dict:
    """The Dice term's options shared by the combined losses."""
    return {
        "include_background": include_background,
        "batch_dice": batch_dice,
        "smooth_nr": smooth_nr,
        "smooth_dr": smooth_dr,
    }


def dice_ce_loss(
    activation: str = "softmax",
    *,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    include_background: bool = True,
    batch_dice: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weights: Sequence[float] | None = None,
    ignore_index: int | None = None,
) -> CombinedLoss:
    """Dice + cross-entropy. ``class_weights`` has one value per output channel; Dice uses
    ``class_weights[1:]`` when background is excluded."""
    dice_w = None
    if class_weights is not None:
        dice_w = list(class_weights)[1:] if not include_background else list(class_weights)
    dice_options = _dice_options(include_background, batch_dice, smooth_nr, smooth_dr)
    ce = CrossEntropyLoss(activation, class_weights=class_weights, ignore_index=ignore_index)
    return CombinedLoss(
        {
            "dice": (
                lambda_dice,
                DiceLoss(activation, class_weights=dice_w, ignore_index=ignore_index, **dice_options),
            ),
            "ce": (lambda_ce, ce),
        }
    )


def dice_focal_loss(
    activation: str = "softmax",
    *,
    lambda_dice: float = 1.0,
    lambda_focal: float = 1.0,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    include_background: bool = True,
    batch_dice: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weights: Sequence[float] | None = None,
    ignore_index: int | None = None,
) -> CombinedLoss:
    """Dice + focal. ``class_weights`` apply to the channels both terms see (``K - 1`` when
    background is excluded)."""
    dice_options = _dice_options(include_background, batch_dice, smooth_nr, smooth_dr)
    dice = DiceLoss(activation, class_weights=class_weights, ignore_index=ignore_index, **dice_options)
    return CombinedLoss(
        {
            "dice": (lambda_dice, dice),
            "focal": (
                lambda_focal,
                FocalLoss(
                    activation,
                    gamma=gamma,
                    alpha=alpha,
                    include_background=include_background,
                    class_weights=class_weights,
                    ignore_index=ignore_index,
                ),
            ),
        }
    )


LOSSES = ("dice", "ce", "focal", "dice_ce", "dice_focal")


def build_loss(
    name: str,
    activation: str = "softmax",
    **options,
) -> nn.Module:
    """A loss by name: ``dice``, ``ce``, ``focal``, ``dice_ce`` or ``dice_focal`` (options as above)."""
    if name == "dice":
        return DiceLoss(activation, **options)
    if name == "ce":
        return CrossEntropyLoss(activation, **options)
    if name == "focal":
        return FocalLoss(activation, **options)
    if name == "dice_ce":
        return dice_ce_loss(activation, **options)
    if name == "dice_focal":
        return dice_focal_loss(activation, **options)
    raise ValueError(f"loss={name!r} is unknown; pass one of {', '.join(LOSSES)}")


# --- deep supervision ---------------------------------------------------------------------------------
def deep_supervision_weights(n: int, include_lowest: bool = True) -> list[float]:
    """``1 / 2**i`` for outputs ``i = 0..n-1`` (finest first), normalised to sum 1.

    ``include_lowest=False`` gives the coarsest output weight 0 (as nnU-Net does) when ``n > 1``.
    """
    if n < 1:
        raise ValueError(f"need at least one output, got {n}")
    w = [1.0 / 2**i for i in range(n)]
    if not include_lowest and n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


def downsample_target(
    target: torch.Tensor, out_spatial: Sequence[int], factor: int, mode: str = "auto"
) -> torch.Tensor:
    """The target on a grid ``factor`` times coarser, cropped to ``out_spatial``.

    ``mode="nearest"`` (integer label maps): the voxel at the start of each ``factor``-block, the
    grid a strided network sees. ``mode="max"`` (binary region maps ``(N, R, *spatial)``): max-pool
    per region, so a region present anywhere in a block stays present (small structures survive at
    coarse scales). ``"auto"``: nearest for ``(N, *spatial)`` labels, max for ``(N, C, *spatial)``.
    """
    out_spatial = tuple(int(s) for s in out_spatial)
    dims = len(out_spatial)
    if mode == "auto":
        mode = "nearest" if target.ndim == dims + 1 else "max"
    if mode not in ("nearest", "max"):
        raise ValueError(f"mode={mode!r}: pass 'nearest', 'max' or 'auto'")
    if factor == 1:
        down = target
    elif mode == "nearest":
        lead = target.ndim - dims
        down = target[(slice(None),) * lead + tuple(slice(0, o * factor, factor) for o in out_spatial)]
    else:
        if target.ndim != dims + 2:
            raise ValueError(
                f"max-pool down-sampling needs (N, C, *spatial) targets, got {tuple(target.shape)}"
            )
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
        down = pool(target.float(), factor, factor, ceil_mode=True).to(target.dtype)
    if tuple(down.shape[-dims:]) != out_spatial:
        raise ValueError(
            f"target {tuple(target.shape)} down-sampled by {factor} gives {tuple(down.shape)}, "
            f"expected spatial size {out_spatial}"
        )
    return down


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to each output scale (finest first, scale ``i`` is ``2**i`` coarser) against
    the down-sampled target; weights ``1/2**i`` normalised (see ``deep_supervision_weights``).

    A single tensor input is passed straight to ``loss``, so the same wrapper serves eval mode.
    Targets are down-sampled by nearest for softmax losses and by max-pool for sigmoid ones (read
    from ``loss.activation``; ``target_mode`` overrides).
    """

    def __init__(
        self,
        loss: nn.Module,
        *,
        include_lowest: bool = True,
        weights: Sequence[float] | None = None,
        target_mode: str | None = None,
    ):
        super().__init__()
        self.loss = loss
        if target_mode is None:
            activation = getattr(loss, "activation", None)
            if activation is None and isinstance(loss, CombinedLoss):
                activation = next(iter(loss.terms.values())).activation
            target_mode = {"softmax": "nearest", "sigmoid": "max"}.get(activation, "auto")
        self.target_mode = target_mode
        self.include_lowest = include_lowest
        self.weights = None if weights is None else [float(w) for w in weights]
        self.last: dict[str, float] = {}

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            value = self.loss(outputs, target)
            self.last = dict(getattr(self.loss, "last", {}))
            return value
        outputs = list(outputs)
        weights = self.weights or deep_supervision_weights(len(outputs), self.include_lowest)
        if len(weights) != len(outputs):
            raise ValueError(f"{len(weights)} weights for {len(outputs)} outputs")
        total = None
        for i, (out, w) in enumerate(zip(outputs, weights)):
            if w == 0:
                continue
            t = downsample_target(target, out.shape[2:], 2**i, self.target_mode)
            value = w * self.loss(out, t)
            total = value if total is None else total + value
            if i == 0:
                self.last = dict(getattr(self.loss, "last", {}))
        return total


__all__ = [
    "LOSSES",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "FocalLoss",
    "annotated_mask",
    "build_loss",
    "deep_supervision_weights",
    "dice_ce_loss",
    "dice_focal_loss",
    "downsample_target",
    "focal_loss",
    "one_hot",
    "probabilities_and_targets",
    "soft_dice_loss",
]
