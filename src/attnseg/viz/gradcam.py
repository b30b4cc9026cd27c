"""Grad-CAM (Selvaraju et al., 2017) for segmentation networks, on the input grid.

Convention: the score is the sum of class ``c``'s logits over the voxels the model assigns to
``c`` (argmax for softmax outputs, logit > 0 for sigmoid/region outputs; every voxel when none is
assigned), as in Vinogradova et al.'s segmentation Grad-CAM. With ``A`` the chosen layer's output
``(K, *grid)``, the weights are ``w_k = mean over voxels of dScore/dA_k`` and the map is
``relu(sum_k w_k A_k)``, up-sampled (linear) to the input grid and divided by its maximum (an
all-zero map stays zero). The default layer is the last decoder block, ``model.decoder[-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from attnseg.viz.figures import _first, _stride, to_input_grid

__all__ = ["default_layer", "grad_cam", "resolve_layer"]


def default_layer(model: nn.Module) -> nn.Module:
    """The last decoder block (finest decoder features), else the model's last child module."""
    decoder = getattr(model, "decoder", None)
    if isinstance(decoder, (nn.ModuleList, nn.Sequential)) and len(decoder):
        return decoder[-1]
    children = list(model.children())
    if not children:
        raise ValueError(f"{type(model).__name__} has no sub-module to take Grad-CAM at; pass layer=")
    return children[-1]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    """``None`` -> :func:`default_layer`; a dotted name (``"decoder.2"``, ``"encoder.3"``) -> that module."""
    if layer is None:
        return default_layer(model)
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(str(layer))
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise ValueError(
            f"layer {layer!r} is not a sub-module of {type(model).__name__}; try e.g. "
            f"'decoder.0' or one of {names}"
        ) from None


def _class_mask(logits: torch.Tensor, target_class: int) -> torch.Tensor:
    """Voxels assigned to ``target_class``: argmax (several channels, softmax) or logit > 0 (one channel)."""
    if logits.shape[1] == 1:
        return logits[:, 0] > 0
    return logits.argmax(dim=1) == target_class


def grad_cam(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    target_class: int,
    *,
    layer: str | nn.Module | None = None,
    sigmoid: bool | None = None,
    mask: np.ndarray | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Grad-CAM of output channel ``target_class`` at ``layer`` for ``image`` ``(C, *spatial)``.

    Returns ``(*spatial)`` float32, non-negative, in [0, 1] when ``normalize``.

    Args:
        target_class: output channel index (class index for softmax models, region index for
            sigmoid models).
        layer: module or dotted name; default the last decoder block.
        sigmoid: treat outputs as independent sigmoid channels (voxels with logit > 0 count); default
            True when the model has one output channel.
        mask: ``(*spatial)`` voxels whose logits form the score instead of the model's own
            assignment (e.g. the truth).
        normalize: divide by the maximum.
    """
    x = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image).float()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = x.unsqueeze(0).to(device)
    module = resolve_layer(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(mod, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        store["activation"] = out

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x.requires_grad_(False)
            logits = _first(model(x)).float()
            if not 0 <= target_class < logits.shape[1]:
                raise ValueError(
                    f"target_class={target_class}: the model has {logits.shape[1]} output channel(s)"
                )
            if "activation" not in store:
                raise ValueError(f"layer {layer!r} did not run during the forward pass")
            use_sigmoid = logits.shape[1] == 1 if sigmoid is None else bool(sigmoid)
            if mask is not None:
                region = torch.as_tensor(np.asarray(mask) != 0, device=logits.device).unsqueeze(0)
                if tuple(region.shape[1:]) != tuple(logits.shape[2:]):
                    raise ValueError(
                        f"mask has shape {tuple(region.shape[1:])}; expected {tuple(logits.shape[2:])}"
                    )
            elif use_sigmoid:
                region = logits[:, target_class] > 0
            else:
                region = _class_mask(logits, target_class)
            channel = logits[:, target_class]
            score = channel[region].sum() if bool(region.any()) else channel.sum()
            activation = store["activation"]
            if not activation.requires_grad:
                raise ValueError(f"layer {layer!r} does not carry gradients (its output does not need them)")
            # autograd.grad, not backward: the model's .grad fields stay untouched
            (gradient,) = torch.autograd.grad(score, activation, allow_unused=True)
    finally:
        handle.remove()
        model.train(was_training)
    if gradient is None:
        raise ValueError(f"no gradient reached layer {layer!r}; it does not influence the output")
    activation = activation.detach().float()
    gradient = gradient.detach().float()
    dims = tuple(range(2, activation.ndim))
    weights = gradient.mean(dim=dims, keepdim=True)  # (1, K, 1, ...)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = to_input_grid(cam, x.shape[2:], _stride(model))[0, 0]
    cam = torch.clamp(cam, min=0.0)  # linear up-sampling of non-negative values stays >= 0; be exact
    if normalize:
        peak = float(cam.max())
        if peak > 0:
            cam = cam / peak
    return cam.cpu().numpy().astype(np.float32)


def window_around(shape: Sequence[int], size: Sequence[int], centre: Sequence[int]) -> tuple[slice, ...]:
    """A window of ``size`` (clipped to ``shape``) centred on ``centre``, shifted to stay inside."""
    out = []
    for n, s, c in zip(shape, size, centre):
        s = min(int(s), int(n))
        start = min(max(int(c) - s // 2, 0), int(n) - s)
        out.append(slice(start, start + s))
    return tuple(out)
