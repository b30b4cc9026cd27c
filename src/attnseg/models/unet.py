"""Attention U-Net and its ablation twin U-Net, 2D and 3D from one implementation.

Layout for ``features=(f0, f1, ..., fL)``: encoder level ``i`` is a ConvBlock to ``f_i`` with a
max-pool between levels; the last level is the bottleneck. Each decoder step up-samples
(transposed conv) to ``f_i``, gates the skip ``i`` (AttentionUNet) or passes it through (UNet),
concatenates ``[gated skip, up-sampled]`` and applies a ConvBlock. A 1x1 convolution is the head.

Modules are reachable by name: ``model.encoder[i]``, ``model.gates[k]``, ``model.ups[k]``,
``model.decoder[k]``, ``model.head``; ``k = 0`` is the first decoder step (deepest skip).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from attnseg.config import ModelConfig
from attnseg.models.blocks import ACTS, NORMS, AttentionGate, ConvBlock, UpSample, conv_type


class AttentionUNet(nn.Module):
    """Attention U-Net (Oktay et al., 2018).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (MRI sequences).
        out_channels: output channels (classes, or regions for sigmoid outputs).
        features: channels per level, finest first; depth is ``len(features)`` (at least 2).
        gating: ``"coarse"`` (default; Oktay's original, measured faster) or ``"decoder"`` (the seed's).
        norm: ``"instance"``, ``"batch"`` or ``"group"``.
        act: ``"leaky_relu"`` or ``"relu"``.
        deep_supervision: add 1x1 heads on the coarser decoder levels; in training mode forward
            returns a list of logits, finest first; in eval mode only the final logits.
        activation_checkpointing: recompute encoder/decoder blocks in backward (less memory, more
            time); not to be confused with training checkpoints or model files.
        channels_last: run 3D convolutions in the channels-last memory layout (``"auto"``: on CPU).
            oneDNN's weight-gradient kernels are many times faster in that layout on CPU (the first
            convolution's, with few input channels, 17x in ``benchmarks/bench_model.py``'s profile);
            the returned logits are contiguous either way.

    Inputs of any spatial size are accepted: they are zero-padded at the far end to a multiple of
    ``2 ** (depth - 1)`` and the logits are cropped back.
    """

    attention = True

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: tuple[int, ...] | list[int] = (32, 64, 128, 256),
        *,
        gating: str = "coarse",
        norm: str = "instance",
        act: str = "leaky_relu",
        deep_supervision: bool = False,
        activation_checkpointing: bool = False,
        channels_last: bool | str = "auto",
    ):
        super().__init__()
        features = tuple(int(f) for f in features)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims={spatial_dims!r}: pass 2 for images or 3 for volumes")
        if len(features) < 2:
            raise ValueError(
                f"features={features!r} has {len(features)} level(s); pass at least 2, e.g. (32, 64, 128, 256)"
            )
        if any(f < 1 for f in features):
            raise ValueError(f"features={features!r}: every level needs at least 1 channel")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels={in_channels}, out_channels={out_channels}: both must be at least 1"
            )
        if gating not in ("coarse", "decoder"):
            raise ValueError(f"gating={gating!r}: pass 'coarse' or 'decoder'")
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}: pass one of {', '.join(NORMS)}")
        if act not in ACTS:
            raise ValueError(f"act={act!r}: pass one of {', '.join(ACTS)}")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.gating = gating
        self.norm = norm
        self.act = act
        self.deep_supervision = deep_supervision
        self.activation_checkpointing = activation_checkpointing
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last={channels_last!r}: pass True, False or 'auto'")
        self.channels_last = channels_last

        depth = len(features)
        self.encoder = nn.ModuleList(
            ConvBlock(spatial_dims, in_channels if i == 0 else features[i - 1], features[i], norm, act)
            for i in range(depth)
        )
        # decoder step k works on level i = depth - 2 - k (deepest skip first)
        levels = list(range(depth - 2, -1, -1))
        self.ups = nn.ModuleList(UpSample(spatial_dims, features[i + 1], features[i]) for i in levels)
        if self.attention:
            self.gates = nn.ModuleList(
                AttentionGate(
                    spatial_dims,
                    skip_channels=features[i],
                    gating_channels=features[i + 1] if gating == "coarse" else features[i],
                    inter_channels=max(features[i] // 2, 1),
                    norm=norm,
                    gating=gating,
                )
                for i in levels
            )
        else:
            self.gates = nn.ModuleList()
        self.decoder = nn.ModuleList(
            ConvBlock(spatial_dims, 2 * features[i], features[i], norm, act) for i in levels
        )
        conv = conv_type(spatial_dims)
        self.head = conv(features[0], out_channels, 1)
        # deep-supervision heads for decoder steps 0 .. depth-3 (all but the finest)
        self.ds_heads = (
            nn.ModuleList(conv(features[i], out_channels, 1) for i in levels[:-1])
            if deep_supervision
            else nn.ModuleList()
        )
        self.pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims](2)

    @property
    def stride(self) -> int:
        """The input size multiple the network works on internally."""
        return 2 ** (len(self.features) - 1)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(
            name="attention_unet" if self.attention else "unet",
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            features=self.features,
            gating=self.gating,
            norm=self.norm,
            act=self.act,
            deep_supervision=self.deep_supervision,
            activation_checkpointing=self.activation_checkpointing,
        )

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"input has shape {tuple(x.shape)}; a {self.spatial_dims}D model expects "
                f"(batch, {self.in_channels}, {', '.join('HWD'[: self.spatial_dims])})"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"input has {x.shape[1]} channel(s) (shape {tuple(x.shape)}); this model was built "
                f"with in_channels={self.in_channels}: pass {self.in_channels} channel(s)"
            )

    def _use_channels_last(self, x: torch.Tensor) -> bool:
        if self.spatial_dims != 3:
            return False
        if self.channels_last == "auto":
            return x.device.type == "cpu"
        return bool(self.channels_last)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        self._check_input(x)
        if self._use_channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last_3d)
        size = x.shape[2:]
        padded = [math.ceil(s / self.stride) * self.stride for s in size]
        if list(size) != padded:
            pad: list[int] = []
            for s, p in zip(reversed(size), reversed(padded)):
                pad += [0, p - s]
            x = F.pad(x, pad)

        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = self._run(block, x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip

        maps: list[torch.Tensor] = []
        ds_outputs: list[torch.Tensor] = []
        for k, (up, block) in enumerate(zip(self.ups, self.decoder)):
            skip = skips.pop()
            coarse = x
            x = up(x)
            if self.attention:
                g = coarse if self.gating == "coarse" else x
                skip, alpha = self.gates[k](skip, g)
                if return_attention:
                    maps.append(alpha)
            x = self._run(block, torch.cat([skip, x], dim=1))
            if self.deep_supervision and self.training and k < len(self.ds_heads):
                ds_outputs.append(self.ds_heads[k](x))

        logits = self.head(x)
        crop = (slice(None), slice(None), *(slice(0, s) for s in size))
        logits = logits[crop].contiguous()
        if self.deep_supervision and self.training:
            # finest first; coarser outputs are cropped to the matching fraction of the input
            outputs = [logits]
            for out in reversed(ds_outputs):
                factor = padded[0] // out.shape[2]
                outputs.append(
                    out[(slice(None), slice(None), *(slice(0, math.ceil(s / factor)) for s in size))]
                )
            logits = outputs
        if return_attention:
            return logits, maps
        return logits


class UNet(AttentionUNet):
    """The same backbone with the attention gates switched off (identity on every skip).

    Its parameters are exactly AttentionUNet's minus the gates', so an ablation compares one thing.
    """

    attention = False
