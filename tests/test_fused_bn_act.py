"""Tests of the fused BatchNorm + activation of the residual cells and of the CPU ELU (nvae_ecg.kernels).

The fused path (``kernels.bn_act_train``, used by ``BNActConv`` in CPU training) must give the numbers of the plain
``nn.BatchNorm`` + activation path (``BNActConv.fused = False``): outputs, gradients of the input and of every
parameter, running statistics and the batch counter, in float64 to 1e-10 and in float32 to ~1e-5, also for inputs
whose mean is 100x their standard deviation. Eval mode, replaced BatchNorm classes (SyncBatchNorm) and
``fused = False`` must run the module path.

Example::

    python -m pytest tests/test_fused_bn_act.py -q
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nvae_ecg import kernels
from nvae_ecg import neural_operations as no
from nvae_ecg.kernels import _BNActFunction, _CPUELUFunction, bn_act_train
from nvae_ecg.neural_operations import BNActConv

#: (ndim, input shape) of the 1-D signal and 2-D spectrogram cells.
SHAPES = {1: (4, 6, 40), 2: (3, 5, 6, 8)}
ACTS = ("elu", "swish")


@pytest.fixture(autouse=True)
def _kernels_on():
    """These tests check the fast paths themselves: run them with the kernels on whatever CNVAE_KERNELS says."""
    previous = kernels.set_enabled(True)
    yield
    kernels.set_enabled(previous)


def _module(ndim: int, act: str, dtype: torch.dtype, stride: int = 1, seed: int = 0) -> BNActConv:
    """A BNActConv with non-trivial BatchNorm affine parameters (the defaults 1 and 0 hide mistakes)."""
    torch.manual_seed(seed)
    c_in = SHAPES[ndim][1]
    m = BNActConv(c_in, 4, act, stride=stride, ndim=ndim).to(dtype)
    with torch.no_grad():
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.5, 0.5)
    return m


def _inputs(ndim: int, dtype: torch.dtype, steps: int, mean: float = 0.0, std: float = 1.0, seed: int = 1):
    """Per-step inputs (B, C, *spatial) with channel c centred at mean * (c + 1), std ``std``."""
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[ndim]
    offset = mean * (1 + torch.arange(shape[1], dtype=torch.float64)).view((1, -1) + (1,) * ndim)
    xs = [(torch.randn(shape, generator=g, dtype=torch.float64) * std + offset).to(dtype) for _ in range(steps)]
    return xs


def _run(m: BNActConv, xs, fused: bool, dtype: torch.dtype):
    """Train-mode steps of a copy of m (loss sum(out * w), seeded w): last output, input grads, param grads, buffers."""
    m = copy.deepcopy(m).to(dtype)
    m.fused = fused
    m.train()
    out = None
    grads = []
    g = torch.Generator().manual_seed(7)
    for x in xs:
        x = x.to(dtype).clone().requires_grad_()
        out = m(x)
        w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
        (out * w).sum().backward()
        grads.append(x.grad)
    params = {k: p.grad.clone() for k, p in m.named_parameters()}
    buffers = {k: b.clone() for k, b in m.named_buffers()}
    return out.detach(), grads, params, buffers


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Norm-wise relative error max|a - ref| / max|ref| in float64."""
    a, ref = a.double(), ref.double()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _compare(got, ref, tol: float) -> None:
    """Every tensor of two _run results agrees to tol (norm-wise relative); the batch counters exactly."""
    out, grads, params, buffers = got
    r_out, r_grads, r_params, r_buffers = ref
    assert _rel(out, r_out) <= tol
    for g, rg in zip(grads, r_grads):
        assert _rel(g, rg) <= tol
    assert params.keys() == r_params.keys()
    for k in params:
        assert _rel(params[k], r_params[k]) <= tol, k
    assert buffers.keys() == r_buffers.keys()
    for k in buffers:
        if k == "bn.num_batches_tracked":
            assert int(buffers[k]) == int(r_buffers[k]) == len(grads)
        else:
            assert _rel(buffers[k], r_buffers[k]) <= tol, k


def test_cpu_elu_matches_f_elu():
    """The lean ELU gives F.elu's values and gradients, including 0, +-inf and NaN."""
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        edges = torch.tensor([0.0, -0.0, 1e-12, -1e-12, -40.0], dtype=dtype)
        x = torch.cat([torch.randn(1000, dtype=dtype) * 4, edges])
        x1 = x.clone().requires_grad_()
        x2 = x.clone().requires_grad_()
        y1, y2 = _CPUELUFunction.apply(x1), F.elu(x2)
        g = torch.randn_like(x)
        y1.backward(g)
        y2.backward(g)
        torch.testing.assert_close(y1, y2, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=1e-7)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=1e-7)
    special = torch.tensor([float("inf"), float("-inf"), float("nan")])
    out = _CPUELUFunction.apply(special)
    assert out[0] == float("inf") and out[1] == -1.0 and torch.isnan(out[2])


def test_cpu_elu_gradcheck():
    """Gradient of the lean ELU (computed from its output) by finite differences, away from the kink at 0."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, dtype=torch.float64)
    x = (x + 0.1 * torch.sign(x)).requires_grad_()
    assert torch.autograd.gradcheck(_CPUELUFunction.apply, (x,))


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("act", ["elu", "silu"])
def test_bn_act_function_gradcheck(ndim, act):
    """Gradients of x, gamma and beta of the fused function by finite differences (float64, small shapes)."""
    torch.manual_seed(ndim)
    shape = (3, 2, 5) if ndim == 1 else (2, 2, 3, 4)
    x = (torch.randn(shape, dtype=torch.float64) + 0.5).requires_grad_()
    w = (torch.rand(2, dtype=torch.float64) + 0.5).requires_grad_()
    b = (torch.rand(2, dtype=torch.float64) - 0.5).requires_grad_()
    rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)

    def f(x, w, b):
        return _BNActFunction.apply(x, w, b, rm, rv, 0.1, 1e-5, act)

    assert torch.autograd.gradcheck(f, (x, w, b))


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("stride", [1, 2, -1])
def test_fused_matches_module_path_float64(ndim, act, stride):
    """Three training steps: outputs, all gradients and running statistics agree to 1e-10 in float64."""
    m = _module(ndim, act, torch.float64, stride=stride)
    xs = _inputs(ndim, torch.float64, 3, mean=0.3)
    _compare(_run(m, xs, True, torch.float64), _run(m, xs, False, torch.float64), 1e-10)


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("act", ACTS)
def test_fused_matches_module_path_float32(ndim, act):
    """The same in float32 to 1e-5 (both paths round differently)."""
    m = _module(ndim, act, torch.float32)
    xs = _inputs(ndim, torch.float32, 3, mean=0.3)
    _compare(_run(m, xs, True, torch.float32), _run(m, xs, False, torch.float32), 1e-5)


def test_fused_matches_module_path_cumulative_momentum():
    """momentum=None (cumulative running average) is reproduced too."""
    m = _module(1, "elu", torch.float64)
    m.bn.momentum = None
    xs = _inputs(1, torch.float64, 3)
    _compare(_run(m, xs, True, torch.float64), _run(m, xs, False, torch.float64), 1e-10)


@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("act", ACTS)
def test_fused_large_mean_float32(ndim, act):
    """|mean| = 100 std per channel: float32 fused results are as close to float64 as the module path's.

    The inputs themselves carry a relative rounding of ~100 ulp of the std here, so neither path can do better
    than ~1e-5; a one-pass E[x^2] - E[x]^2 variance would be off by ~1e-3 in the running variance.
    """
    m = _module(ndim, act, torch.float64)
    xs = _inputs(ndim, torch.float64, 2, mean=100.0, std=1.0)
    ref = _run(m, xs, False, torch.float64)
    fused = _run(m, xs, True, torch.float32)
    plain = _run(m, xs, False, torch.float32)
    pairs = [(fused[0], plain[0], ref[0])] + list(zip(fused[1], plain[1], ref[1]))
    pairs += [(fused[2][k], plain[2][k], ref[2][k]) for k in ref[2]]
    for got, base, want in pairs:
        assert _rel(got, want) <= 3 * _rel(base, want) + 1e-6
        assert _rel(got, want) <= 1e-4
    for k in ("bn.running_mean", "bn.running_var"):
        assert _rel(fused[3][k], ref[3][k]) <= 1e-5, k


def test_eval_mode_runs_module_path(monkeypatch):
    """In eval mode the module's BatchNorm (running statistics) runs, never the fused function."""
    m = _module(1, "elu", torch.float64)
    _run(m, _inputs(1, torch.float64, 2), False, torch.float64)
    m.eval()
    x = _inputs(1, torch.float64, 1, seed=3)[0]
    expected = m.conv(m.act(m.bn(x)))

    def fail(*args, **kwargs):
        raise AssertionError("fused path used in eval mode")

    monkeypatch.setattr(kernels, "bn_act_train", fail)
    assert m.fused_act(x) is None
    torch.testing.assert_close(m(x), expected, rtol=0, atol=0)


class _SubclassBN(nn.BatchNorm1d):
    """A BatchNorm1d subclass (stands for SyncBatchNorm) that records its calls."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


def test_fallbacks_run_module_path(monkeypatch):
    """Replaced BatchNorm, fused=False, non-affine/untracked BN, replaced act or mixed dtype: module path."""
    used = []
    real = kernels.bn_act_train
    monkeypatch.setattr(kernels, "bn_act_train", lambda *a: used.append(1) or real(*a))
    x = _inputs(1, torch.float32, 1)[0]
    m = _module(1, "elu", torch.float32)
    m.train()
    assert m.fused_act(x) == "elu"
    m(x)
    assert used == [1]
    assert _module(1, "swish", torch.float32).fused_act(x) == "silu"

    sub = copy.deepcopy(m)
    sub.bn = _SubclassBN(x.shape[1], eps=no.BN_EPS, momentum=no.BN_MOMENTUM)
    assert sub.fused_act(x) is None
    sub(x)
    assert _SubclassBN.calls == 1 and used == [1]

    sync = copy.deepcopy(m)
    sync.bn = nn.SyncBatchNorm(x.shape[1])
    assert sync.fused_act(x) is None

    off = copy.deepcopy(m)
    off.fused = False
    off(x)
    assert off.fused_act(x) is None and used == [1]

    for attr in ("affine", "track_running_stats"):
        other = copy.deepcopy(m)
        setattr(other.bn, attr, False)
        assert other.fused_act(x) is None, attr
    replaced = copy.deepcopy(m)
    replaced.act = nn.ELU()
    assert replaced.fused_act(x) is None
    assert m.fused_act(x.double()) is None
    assert m.fused_act(x[:1, :, :1]) is None


@pytest.mark.parametrize("act,fused_count", [("elu", 2), ("swish", 3)])
def test_fused_saves_no_more_activation_memory(act, fused_count):
    """Activation-sized storages kept for backward, counted over the whole BNActConv.

    nn.BatchNorm + F.elu/F.silu keep three (x, the BatchNorm output, the activation output the conv keeps); the
    fused ELU keeps x and its output only, the fused SiLU x, its input and its output.
    """
    m = _module(1, act, torch.float32)
    x = _inputs(1, torch.float32, 1)[0].requires_grad_()

    def saved_storages(module):
        ptrs = set()

        def pack(t):
            if t.numel() == x.numel():
                ptrs.add(t.untyped_storage().data_ptr())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(x)
        return ptrs

    fused = saved_storages(m)
    assert len(fused) == fused_count and x.untyped_storage().data_ptr() in fused
    plain = copy.deepcopy(m)
    plain.fused = False
    if act == "elu":
        plain.act = nn.ELU()
    assert len(saved_storages(plain)) == 3


def test_bn_act_train_rejects_unknown_activation():
    """An activation the fused function does not implement is refused with a clear message."""
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="activations"):
        bn_act_train(bn, torch.randn(2, 3, 4), "relu")
