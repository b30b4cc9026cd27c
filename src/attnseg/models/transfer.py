"""Weights from another model file into a freshly built network (fine-tuning, ``train.init``).

The run keeps its own architecture (channels and classes from its data); the file only lends weights:

- a tensor whose name and shape match is copied exactly (``loaded``);
- the output head (``head``, and ``ds_heads`` with deep supervision) whose number of output channels
  differs stays at its fresh initialisation (``replaced``): the classes mean something else now;
- the first convolution (the first ``Conv`` of ``encoder[0]``) whose number of input channels differs
  is adapted (``adapted``): input channel ``c`` below ``min(old, new)`` gets the old kernel of channel
  ``c`` (channels are matched by position, so order the new data's channels like the old ones), and
  every added channel gets the mean of the old channels' kernels. With fewer channels the first
  ``new`` old kernels are kept. (timm's ``adapt_input_conv`` repeats kernels instead; the mean gives an
  added channel no preference for one old modality.)
- a tensor in the file that this network lacks is ``skipped`` (e.g. the gates of an Attention U-Net
  fine-tuned as a plain U-Net); one this network has and the file lacks keeps its initialisation
  (``new``).

Anything else (another depth or width, another gating, 2D against 3D) is refused: a
``ModelFileError`` naming the file and the first tensor or setting that does not fit.

Example::

    payload = read_model_file("old/model.pt")
    report = transfer_weights(model, payload["state_dict"], payload["model_config"], source="old/model.pt")
    print(report.describe())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnseg.errors import ModelFileError

HEAD_PREFIXES = ("head.", "ds_heads.")


@dataclass
class TransferReport:
    """What ``transfer_weights`` did, tensor by tensor (shapes as lists: JSON-ready)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    replaced: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # name -> {file, model}
    adapted: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {file, model, rule}
    skipped: dict[str, list[int]] = field(default_factory=dict)  # in the file only
    new: list[str] = field(default_factory=list)  # in the model only

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loaded": list(self.loaded),
            "replaced": dict(self.replaced),
            "adapted": dict(self.adapted),
            "skipped": dict(self.skipped),
            "new": list(self.new),
        }

    def describe(self) -> str:
        """One line for the log."""
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.replaced:
            first = next(iter(self.replaced.values()))
            parts.append(
                f"new head ({first['file'][0]} -> {first['model'][0]} output channels: "
                f"{', '.join(self.replaced)})"
            )
        for name, info in self.adapted.items():
            parts.append(
                f"first convolution adapted ({info['file'][1]} -> {info['model'][1]} input channels: {name})"
            )
        if self.skipped:
            parts.append(f"{len(self.skipped)} not in this model ({_names(self.skipped)})")
        if self.new:
            parts.append(f"{len(self.new)} kept at initialisation ({_names(self.new)})")
        return f"init from {self.source}: " + "; ".join(parts)


def _names(names) -> str:
    names = list(names)
    return ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")


def first_conv_name(model: nn.Module) -> str | None:
    """The state-dict name of the first convolution's weight (the one that sees the input channels)."""
    for name, module in model.named_modules():
        if name.startswith("encoder.0") and isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return f"{name}.weight"
    return None


def adapt_first_conv(old: torch.Tensor, in_channels: int) -> torch.Tensor:
    """The first convolution's kernel ``(out, old_in, *k)`` for ``in_channels`` inputs: old channels
    copied by position, added ones the mean of the old kernels (module docstring)."""
    if in_channels < 1:
        raise ValueError(f"in_channels={in_channels}: pass at least 1")
    old_in = old.shape[1]
    if in_channels <= old_in:
        return old[:, :in_channels].clone()
    mean = old.mean(dim=1, keepdim=True)
    extra = mean.expand(-1, in_channels - old_in, *old.shape[2:])
    return torch.cat([old, extra], dim=1).contiguous()


def transfer_weights(
    model: nn.Module,
    source_state: Mapping[str, torch.Tensor],
    source_config: Mapping[str, Any] | None = None,
    *,
    source: str = "the model file",
) -> TransferReport:
    """Load ``source_state`` into ``model`` where names and shapes fit (module docstring); return what
    was loaded, replaced, adapted, skipped and left new. ``source_config`` (the file's model config)
    gives clearer refusals; ``source`` names the file in them."""

    own = getattr(model, "config", None)
    if source_config is not None and own is not None:
        dims = source_config.get("spatial_dims")
        if dims is not None and int(dims) != own.spatial_dims:
            raise ModelFileError(
                f"{source}: a {dims}D model; this run trains a {own.spatial_dims}D one (--init needs the same "
                "spatial dims)"
            )
        features = source_config.get("features")
        if features is not None and tuple(int(f) for f in features) != tuple(own.features):
            wanted = ",".join(str(int(f)) for f in features)
            raise ModelFileError(
                f"{source}: model.features={list(features)}, this run's are {list(own.features)}; --init "
                f"needs the same depth and widths (pass --set model.features=[{wanted}])"
            )

    target = model.state_dict()
    first = first_conv_name(model)
    report = TransferReport(source=source)
    state = dict(target)
    for name, tensor in source_state.items():
        if name not in target:
            report.skipped[name] = list(tensor.shape)
            continue
        mine = target[name]
        old, new = tuple(tensor.shape), tuple(mine.shape)
        shapes = {"file": list(old), "model": list(new)}
        if old == new:
            state[name] = tensor.detach().to(dtype=mine.dtype)
            report.loaded.append(name)
        elif name.startswith(HEAD_PREFIXES) and len(old) == len(new) and old[1:] == new[1:]:
            report.replaced[name] = shapes
        elif name == first and len(old) == len(new) and old[0] == new[0] and old[2:] == new[2:]:
            state[name] = adapt_first_conv(tensor.detach(), new[1]).to(dtype=mine.dtype)
            rule = "old channels copied by position" + (
                ", added channels the mean of the old kernels" if new[1] > old[1] else ""
            )
            report.adapted[name] = {**shapes, "rule": rule}
        else:
            raise ModelFileError(
                f"{source}: {name} has shape {list(old)}, this run's model {list(new)}; --init adapts only "
                "the head (output channels) and the first convolution (input channels)"
            )
    report.new = [name for name in target if name not in source_state]
    model.load_state_dict(state)
    return report
