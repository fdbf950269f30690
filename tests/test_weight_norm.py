"""Tests of the fused weight normalisation (``nvae_ecg.weight_norm``) against NVAE's autograd expression.

Example::

    pytest tests/test_weight_norm.py -q
"""

from __future__ import annotations

import pytest
import torch

from nvae_ecg.weight_norm import weight_norm, weight_norm_reference


@pytest.mark.parametrize("shape", [(6, 4, 3), (5, 3, 3, 3), (7, 2, 1)])
def test_gradcheck(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    lw = torch.randn(shape[0], *([1] * (len(shape) - 1)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(weight_norm, (w, lw))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_matches_autograd_expression(dtype, tol):
    torch.manual_seed(1)
    w0 = torch.randn(3 * 16, 8, 3, dtype=dtype)
    w0[5] = 0.0  # a zero row: no direction, gradient through the norm must be 0, not NaN
    lw0 = torch.randn(3 * 16, 1, 1, dtype=dtype)
    g = torch.randn_like(w0)
    outs = []
    for fn in (weight_norm, weight_norm_reference):
        w, lw = w0.clone().requires_grad_(), lw0.clone().requires_grad_()
        y = fn(w, lw)
        y.backward(g)
        outs.append((y.detach(), w.grad, lw.grad))
    for a, b in zip(*outs):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # the normalised rows have the learned norm (up to the eps in the denominator)
    norms = outs[0][0].flatten(1).norm(dim=1)
    nonzero = torch.arange(48) != 5
    torch.testing.assert_close(norms[nonzero], lw0.flatten().exp()[nonzero], rtol=1e-4, atol=0)


def test_only_log_norm_needs_grad_and_bad_shape():
    w = torch.randn(4, 3, 2, dtype=torch.float64)
    lw = torch.zeros(4, 1, 1, dtype=torch.float64, requires_grad=True)
    weight_norm(w, lw).sum().backward()
    ref = torch.zeros_like(lw, requires_grad=True)
    weight_norm_reference(w, ref).sum().backward()
    torch.testing.assert_close(lw.grad, ref.grad)
    with pytest.raises(ValueError, match="one log-norm per output channel"):
        weight_norm(w, torch.zeros(3))
