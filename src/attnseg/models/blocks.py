"""Building blocks shared by the 2D and 3D networks: conv block, up-sampling, attention gate.

Every block takes ``spatial_dims`` (2 or 3) and picks the matching torch layers, so one
implementation serves both (as nnU-Net's ``conv_op``/``norm_op`` do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnseg.models.fused import instance_norm_leaky_relu

NORMS = ("instance", "batch", "group")
ACTS = ("leaky_relu", "relu")


def conv_type(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_type(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]


def make_norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """Instance norm (affine), batch norm, or group norm with up to 8 groups."""
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm={kind!r} is not supported; pass one of {', '.join(NORMS)}")


def make_act(kind: str) -> nn.Module:
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"act={kind!r} is not supported; pass one of {', '.join(ACTS)}")


# Instance norm + activation run as one autograd function (attnseg.models.fused) unless a graph is
# being traced for export; set False to compare with the stock modules.
FUSED_NORM_ACT = True


def _tracing() -> bool:
    return (
        torch.onnx.is_in_onnx_export()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
    )


class ConvNormAct(nn.Sequential):
    """3x3(x3) convolution (no bias: the norm that follows has one), norm, activation.

    With instance norm the norm and activation run fused (same maths, less memory); the modules stay
    in place (``block[1]`` is the norm) so weights, export and inspection see the usual layers.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, act: str):
        super().__init__(
            conv_type(spatial_dims)(in_channels, out_channels, 3, padding=1, bias=False),
            make_norm(norm, spatial_dims, out_channels),
            make_act(act),
        )
        self._fusable = norm == "instance"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self[0], self[1], self[2]
        x = conv(x)
        if self._fusable and FUSED_NORM_ACT and not _tracing():
            slope = act.negative_slope if isinstance(act, nn.LeakyReLU) else 0.0
            return instance_norm_leaky_relu(x, norm.weight, norm.bias, norm.eps, slope)
        return act(norm(x))


class ConvBlock(nn.Sequential):
    """Two ConvNormAct layers: the unit of every encoder and decoder level."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, act: str):
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, out_channels, norm, act),
            ConvNormAct(spatial_dims, out_channels, out_channels, norm, act),
        )


class UpSample(nn.Module):
    """Transposed convolution, kernel 2 stride 2: doubles the grid, maps channels coarse -> fine."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = conv_transpose_type(spatial_dims)(in_channels, out_channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., 2018) on one skip connection.

    ``alpha = sigmoid(norm(psi(relu(norm(W_x x) + norm(W_g g)))))``, output ``x * alpha``.

    ``gating="decoder"``: ``g`` is on ``x``'s grid (the up-sampled decoder feature).
    ``gating="coarse"``: ``g`` is the coarser decoder feature (half ``x``'s size); ``x`` is
    subsampled by a strided 1x1 convolution to ``g``'s grid, ``alpha`` is computed there and
    up-sampled (linear) back to ``x``'s grid: about 2^D times less gate compute.

    Args:
        skip_channels: ``F_l``, channels of the skip feature ``x``.
        gating_channels: ``F_g``, channels of the gating signal ``g``.
        inter_channels: ``F_int``, width of the joint space (the seed uses ``F_l // 2``).
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gating_channels: int,
        inter_channels: int,
        norm: str = "instance",
        gating: str = "coarse",
    ):
        super().__init__()
        if gating not in ("coarse", "decoder"):
            raise ValueError(f"gating={gating!r} is not supported; pass 'coarse' or 'decoder'")
        conv = conv_type(spatial_dims)
        stride = 2 if gating == "coarse" else 1
        self.spatial_dims = spatial_dims
        self.gating = gating
        self.skip_channels = skip_channels
        self.gating_channels = gating_channels
        self.inter_channels = inter_channels
        self.W_x = nn.Sequential(
            conv(skip_channels, inter_channels, 1, stride=stride, bias=False),
            make_norm(norm, spatial_dims, inter_channels),
        )
        self.W_g = nn.Sequential(
            conv(gating_channels, inter_channels, 1, bias=False),
            make_norm(norm, spatial_dims, inter_channels),
        )
        self.psi = nn.Sequential(
            conv(inter_channels, 1, 1, bias=True),
            make_norm(norm, spatial_dims, 1),
            nn.Sigmoid(),
        )

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients in [0, 1] on ``x``'s grid, shape ``(N, 1, *x.shape[2:])``."""
        theta = self.W_x(x)
        if theta.shape[2:] != g.shape[2:]:
            raise ValueError(
                f"gating signal grid {tuple(g.shape[2:])} does not match the "
                f"{'subsampled ' if self.gating == 'coarse' else ''}skip grid {tuple(theta.shape[2:])}"
            )
        alpha = self.psi(F.relu(theta + self.W_g(g), inplace=True))
        if alpha.shape[2:] != x.shape[2:]:
            mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
            alpha = F.interpolate(alpha, size=x.shape[2:], mode=mode, align_corners=False)
        return alpha

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.coefficients(x, g)
        return x * alpha, alpha
