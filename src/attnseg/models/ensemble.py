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

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from attnseg.datasets.base import natural_key
from attnseg.errors import ConfigError, DataError
from attnseg.models.card import ModelCard, read_model_card
from attnseg.models.model_file import model_from_payload, read_model_file

__all__ = ["ENSEMBLE_KEYS", "EnsembleModel", "ensemble_from_files", "ensemble_members"]

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
        # what the exporter and the sliding window read of a network (padding multiple, channels)
        self.spatial_dims = getattr(members[0], "spatial_dims", 3)
        self.stride = max(int(getattr(m, "stride", 1)) for m in members)
        self.in_channels = getattr(members[0], "in_channels", 1)

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


def ensemble_members(model) -> list[Path] | None:
    """The model files of an ensemble, or None for one model: several files given (a list), or a
    cross-validation folder (``RUN/fold_<k>/model.pt`` of ``attnseg train --fold all``, in fold
    order); a run folder holding ``model.pt`` is that one model."""
    if isinstance(model, (list, tuple)):
        paths = [Path(m) for m in model]
        if not paths:
            raise ConfigError("no model file given")
        return paths if len(paths) > 1 else None
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = Path(model)
    if not path.is_dir():
        return None
    folds = sorted(path.glob("fold_*/model.pt"), key=lambda p: natural_key(p.parent.name))
    splits = path / "splits.json"
    if folds and splits.is_file():  # a CV run: every fold it split must be there
        try:
            k = int(json.loads(splits.read_text())["k"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{splits}: not a splits file written by attnseg train --fold all ({exc})"
            ) from None
        missing = [f for f in range(k) if not (path / f"fold_{f}" / "model.pt").is_file()]
        if missing:
            raise DataError(
                f"{path}: fold(s) {missing} of the {k} in splits.json have no model.pt; finish them "
                "(attnseg train DATA --out RUN --fold all --resume) or pass the model files to use"
            )
    if folds:
        return folds
    if (path / "model.pt").is_file():
        return None
    raise DataError(
        f"{path}: a folder given as the model, but it holds neither model.pt nor fold_<k>/model.pt "
        "(a cross-validation run of attnseg train --fold all)"
    )


# what inference reads of a card: members must agree on all of it
ENSEMBLE_KEYS = ("spatial_dims", "in_channels", "out_channels", "patch_size", "preprocess",
                 "label_scheme", "mirror_axes", "postprocessing")  # fmt: skip


def ensemble_from_files(
    paths: Sequence[str | os.PathLike], map_location: str | torch.device = "cpu"
) -> tuple[EnsembleModel, ModelCard]:
    """Several ``.pt`` model files as one :class:`EnsembleModel` (eval mode) and the card they share
    (the first file's; every card must agree on ``ENSEMBLE_KEYS``, else ConfigError naming both)."""
    paths = [Path(p) for p in paths]
    modules, cards = [], []
    for path in paths:
        if path.suffix.lower() == ".onnx":
            raise ConfigError(
                f"{path}: an ensemble is made of .pt model files; export the whole ensemble into one "
                "ONNX file instead (attnseg export RUN ensemble.onnx)"
            )
        payload = read_model_file(path)
        cards.append(read_model_card(payload, path=path))
        modules.append(model_from_payload(payload, path, map_location=map_location))
    for path, card in zip(paths[1:], cards[1:]):
        differ = [k for k in ENSEMBLE_KEYS if getattr(card, k) != getattr(cards[0], k)]
        if differ:
            raise ConfigError(
                f"{path}: its {', '.join(differ)} differ from {paths[0]}'s; an ensemble needs models "
                "trained the same way on the same labels"
            )
    return EnsembleModel(modules, cards[0].label_scheme.activation).to(map_location).eval(), cards[0]
