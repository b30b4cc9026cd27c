"""Instance norm + leaky ReLU as one autograd function: less memory, fewer copies on CPU.

Stock PyTorch keeps the norm's input and output alive for backward, and under bf16 autocast it
runs the norm in fp32, so a bf16 copy is made for the next convolution as well. This function keeps
only its input (the convolution's output, in that output's dtype) and per-channel statistics, and
recomputes the normalised pre-activation in backward. Its output has the input's dtype, so under
bf16 autocast the next convolution takes it without a cast.

It reuses PyTorch's native batch-norm kernels on the ``(1, N*C, voxels)`` view of the input (the
usual instance-norm trick), so the arithmetic is PyTorch's own:
    xhat = (x - mean) * invstd,  z = w * xhat + b,  y = leaky_relu(z, slope)
"""

from __future__ import annotations

import torch

_bn_forward = torch.ops.aten.native_batch_norm
_bn_backward = torch.ops.aten.native_batch_norm_backward
_leaky_backward = torch.ops.aten.leaky_relu_backward


class InstanceNormLeakyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, slope: float):
        n, c = x.shape[:2]
        x = x.contiguous()
        flat = x.view(1, n * c, -1)
        w, b = weight.float().repeat(n), bias.float().repeat(n)
        out, mean, invstd = _bn_forward(flat, w, b, None, None, True, 0.0, eps)
        torch.nn.functional.leaky_relu_(out, slope)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps, ctx.slope = eps, slope
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        n, c = x.shape[:2]
        flat = x.view(1, n * c, -1)
        w, b = weight.float().repeat(n), bias.float().repeat(n)
        var = invstd.pow(-2).sub_(ctx.eps)  # the same normalisation, replayed in inference mode
        z = _bn_forward(flat, w, b, mean, var, False, 0.0, ctx.eps)[0]
        grad = _leaky_backward(grad_out.contiguous().view(1, n * c, -1).to(z.dtype), z, ctx.slope, False)
        del z
        grad_x, grad_w, grad_b = _bn_backward(
            grad, flat, w, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
        )
        if grad_x is not None:
            grad_x = grad_x.view(x.shape)
        if grad_w is not None:
            grad_w = grad_w.view(n, c).sum(0).to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.view(n, c).sum(0).to(bias.dtype)
        return grad_x, grad_w, grad_b, None, None


def instance_norm_leaky_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5, slope: float = 0.01
) -> torch.Tensor:
    """``leaky_relu(instance_norm(x, weight, bias, eps), slope)``; ``slope=0`` gives ReLU."""
    return InstanceNormLeakyReLU.apply(x, weight, bias, eps, slope)
