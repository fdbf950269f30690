"""NVAE's weight normalisation as one autograd function with a hand-written backward (the training fast path).

NVAE normalises every convolution weight per output channel and rescales it by a learned
log-norm: ``w_hat = exp(log_norm) * w / (||w|| + 1e-5)`` (NVAE ``neural_operations.py``,
``normalize_weight_jit``). Written as tensor expressions, autograd records a division, a
product, an exponential and a norm, and its backward makes about ten passes over every weight
(the division alone: a negation, two products, a squared denominator and a reduction). In the
``paper`` configuration (257M parameters) those passes, not the convolutions, dominate a
training step at small batch sizes. Here the forward makes two passes (the norms, then one
scaling) and the backward three: one batched dot product per output channel,
``s = sum(g * w)``, gives both gradients, ``dL/dlog_norm = scale * s`` and
``dL/dw = scale * g - exp(log_norm) * s / ((n + 1e-5)^2 n) * w``, the latter as one product and
one in-place multiply-add. ``nvae_ecg.neural_operations`` uses it for the weights it normalises in
batches per shape; ``tests/test_weight_norm.py`` checks it against the autograd expression.

Example::

    python -c "import torch; from nvae_ecg.weight_norm import weight_norm; w = torch.randn(4, 3, 5, requires_grad=True); print(weight_norm(w, torch.zeros(4, 1, 1, requires_grad=True)).norm(dim=(1, 2)))"
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

#: Added to the norm before dividing (NVAE normalize_weight_jit).
NORM_EPS = 1e-5


class _WeightNorm(torch.autograd.Function):
    """exp(log_norm) * w / (||w|| + eps), norm over every axis but the first; see the module docstring."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
        rows = weight.reshape(weight.shape[0], -1)
        norm = torch.linalg.vector_norm(rows, dim=1)                              # (N,)
        scale = torch.exp(log_norm.reshape(-1)) / (norm + NORM_EPS)               # (N,)
        ctx.save_for_backward(weight, norm, scale)
        ctx.log_norm_shape = log_norm.shape
        return weight * scale.view((-1,) + (1,) * (weight.dim() - 1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        weight, norm, scale = ctx.saved_tensors
        n = weight.shape[0]
        rows, grad_rows = weight.reshape(n, 1, -1), grad.reshape(n, -1, 1)
        dot = torch.bmm(rows, grad_rows).view(n)                                   # sum(g * w) per channel
        grad_weight = grad_log_norm = None
        bshape = (-1,) + (1,) * (weight.dim() - 1)
        if ctx.needs_input_grad[0]:
            # d scale / d w = -scale / (norm + eps) * w / norm; a zero row has no direction, hence no gradient
            # through the norm (as torch.linalg.vector_norm's subgradient at 0).
            coef = -dot * scale / ((norm + NORM_EPS) * norm.clamp_min(torch.finfo(norm.dtype).tiny))
            grad_weight = (grad * scale.view(bshape)).addcmul_(weight, coef.view(bshape))
        if ctx.needs_input_grad[1]:
            grad_log_norm = (dot * scale).view(ctx.log_norm_shape)
        return grad_weight, grad_log_norm


def weight_norm(weight: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
    """NVAE weight normalisation of ``weight`` (N, ...) with per-row log-norms ``log_norm`` (N elements)."""
    if log_norm.numel() != weight.shape[0]:
        raise ValueError(f"weight_norm: one log-norm per output channel expected, got {log_norm.numel()} for a "
                         f"weight of shape {tuple(weight.shape)}")
    return _WeightNorm.apply(weight, log_norm)


def weight_norm_reference(weight: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
    """The same map as tensor expressions differentiated by autograd (NVAE's formulation; tests and 'original')."""
    dims = tuple(range(1, weight.dim()))
    wn = torch.linalg.vector_norm(weight, dim=dims, keepdim=True)
    return torch.exp(log_norm.view_as(wn)) * weight / (wn + NORM_EPS)
