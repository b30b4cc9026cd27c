"""Several networks as one: the mean of their probabilities per window (fold ensembles).

``EnsembleModel(members, activation)`` runs every member on the same window and averages their
softmax (classes) or sigmoid (regions) outputs, like nnU-Net's fold ensembles (nnU-Net averages
the folds' logits; attnseg averages probabilities, as MONAI's ``MeanEnsemble`` and the issue ask).
It returns the mean as something every consumer of logits reads unchanged:

- softmax: ``log(mean p)``; ``softmax(log p) == p`` because the mean of distributions sums to 1, and
  argmax is the argmax of ``p``;
- sigmoid: ``logit(mean p)``; ``sigmoid(logit p) == p``.

So the sliding window, ``LabelScheme.decode``, ``probabilities_from_logits`` and the ONNX export
treat an ensemble like one model. Window blending then averages these log-probabilities; for one
member that gives the same softmax as blending its logits (``log softmax(z)`` differs from ``z``
by a constant per voxel), so an ensemble of identical members predicts exactly what one member does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["EnsembleModel"]

_EPS = 1e-7  # keeps log and logit finite where a probability is 0 or 1 in float32


class EnsembleModel(nn.Module):
    """``forward(x)``: the members' mean probability as log-probabilities (``"softmax"``) or logits
    (``"sigmoid"``); see the module docstring. ``config`` is the first member's (all must agree)."""

    def __init__(self, members: Sequence[nn.Module], activation: str = "softmax") -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member model")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation={activation!r}: pass 'softmax' or 'sigmoid'")
        self.members = nn.ModuleList(members)
        self.activation = activation
        self.config = getattr(members[0], "config", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            y = member(x)
            if isinstance(y, (list, tuple)):  # deep supervision in train mode: the finest output
                y = y[0]
            y = y.float()
            p = torch.softmax(y, dim=1) if self.activation == "softmax" else torch.sigmoid(y)
            total = p if total is None else total + p
        mean = total / len(self.members)
        if self.activation == "softmax":
            return torch.log(mean.clamp_min(_EPS))
        mean = mean.clamp(_EPS, 1 - _EPS)
        return torch.log(mean) - torch.log1p(-mean)
