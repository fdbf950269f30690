"""Tests of the fused 8-lead mixture log-likelihood (nvae_ecg.kernels.mixture_log_prob, paper eq. 3).

``DiscMixLogistic8.log_prob`` runs one autograd Function with a hand-derived
backward; ``DiscMixLogistic8._log_prob_autograd`` keeps the plain-autograd
implementation as ground truth. Checked here: torch.autograd.gradcheck in float64
(edge bins, clamped and huge log-scales, far tails), values and gradients against
the reference in float64 and float32, float32 against float64 over the whole range
of scales (the float32 series for small bin widths), finiteness at extreme inputs,
bf16 parameters, non-contiguous parameters, x with a gradient, torch.clamp's
gradient convention at the log-scale bound, and that the backward saves no
(B, 8, M, L)-sized tensor.

Example::

    python -m pytest tests/test_mixture_fused.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from nvae_ecg import kernels
from nvae_ecg.distributions import LOG_SCALE_MIN, MIXTURE_SPEC, PARAMS_PER_MIXTURE, DiscMixLogistic8
from nvae_ecg.kernels import mixture_log_prob

NBITS = 8
MAXV = 2 ** NBITS - 1
HALF_BIN = 1.0 / MAXV
#: log1p(exp(-20)): F.softplus returns its input above threshold 20, so the reference's log-sigmoids are off by up to
#: this much per lead (and its derivatives by exp(-20)); the fused path is exact there.
SOFTPLUS_GAP = math.log1p(math.exp(-20.0))


@pytest.fixture(autouse=True)
def _kernels_on():
    """These tests check the fast paths themselves: run them with the kernels on whatever CNVAE_KERNELS says."""
    previous = kernels.set_enabled(True)
    yield
    kernels.set_enabled(previous)


def rows_view(param: torch.Tensor, m: int) -> torch.Tensor:
    """The (B, 32, M, L) view of the per-lead rows: 0-7 means, 8-15 log-scales, 16-31 coefficients."""
    b, _, length = param.shape
    return param[:, m:].view(b, PARAMS_PER_MIXTURE - 1, m, length)


def make_params(b, m, length, seed, scale_range=(-5.0, -2.0), mean_std=0.5, coeff_std=1.0, dtype=torch.float64):
    """Random decoder output (B, 33 M, L): N(0, 1) logits, N(0, mean_std) means, uniform log-scales, N coefficients."""
    g = torch.Generator().manual_seed(seed)
    param = torch.empty(b, PARAMS_PER_MIXTURE * m, length, dtype=torch.float64)
    param[:, :m] = torch.randn(b, m, length, generator=g, dtype=torch.float64)
    rows = rows_view(param, m)
    rows[:, :8] = mean_std * torch.randn(b, 8, m, length, generator=g, dtype=torch.float64)
    lo, hi = scale_range
    rows[:, 8:16] = lo + (hi - lo) * torch.rand(b, 8, m, length, generator=g, dtype=torch.float64)
    rows[:, 16:] = coeff_std * torch.randn(b, 16, m, length, generator=g, dtype=torch.float64)
    return param.to(dtype)


def grid_signal(b, length, seed, dtype=torch.float64):
    """8-bit grid values in [0, 1] with both edge bins present in every lead (columns 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, MAXV + 1, (b, 8, length), generator=g).to(dtype) / MAXV
    x[:, :, 0] = 0.0
    x[:, :, 1] = 1.0
    return x


def value_and_grad(param, x, m, method, weights):
    """log-likelihood (B, L) and d(sum(weights * lp)) / d param for one implementation."""
    p = param.detach().clone().requires_grad_(True)
    lp = getattr(DiscMixLogistic8(p, m), method)(x)
    (lp * weights).sum().backward()
    return lp.detach(), p.grad


@pytest.mark.parametrize("m", [1, 3])
def test_gradcheck_float64(m):
    """Finite differences agree with the hand-derived backward, edges, clamps and tails included."""
    b, length = 2, 7
    param = make_params(b, m, length, seed=10 + m, scale_range=(-4.0, 1.0))
    rows = rows_view(param, m)
    # Clamped log-scales (gradient 0), one far from the bound in both directions, and a huge one whose bin width
    # 2h/s falls below the 1e-30 clamp. Raw values stay away from -7 itself, where the clamp has its kink.
    rows[0, 8, :, 2] = -9.0
    rows[1, 9, :, 3] = -7.5
    rows[0, 10, :, 4] = 3.0
    rows[1, 11, :, 5] = 70.0
    # A mean 50 scales away from its sample (far tail of the logistic) and tiny scales with the edge samples.
    rows[0, 3, :, 6] = 50.0 * math.exp(float(rows[0, 11, 0, 6])) + 0.3
    rows[1, 12, :, :2] = -6.5
    x = grid_signal(b, length, seed=20 + m)
    xs = 2.0 * x - 1.0
    p = param.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: mixture_log_prob(q, xs, m, HALF_BIN, MIXTURE_SPEC), (p,), eps=1e-6,
                                   atol=1e-6)


def test_matches_reference_float64_tight_where_softplus_is_exact():
    """With every sigmoid argument inside (-20, 20) the reference is exact too: values and gradients to ~1e-12."""
    b, m, length = 2, 3, 64
    param = make_params(b, m, length, seed=1, scale_range=(-2.0, 0.0), mean_std=0.3, coeff_std=0.3)
    x = grid_signal(b, length, seed=2)
    weights = torch.randn(b, length, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v_f, g_f = value_and_grad(param, x, m, "log_prob", weights)
    v_r, g_r = value_and_grad(param, x, m, "_log_prob_autograd", weights)
    torch.testing.assert_close(v_f, v_r, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(g_f, g_r, rtol=1e-10, atol=1e-11 * float(g_r.abs().max()))


def test_matches_reference_float64_realistic():
    """Realistic scales: differences are bounded by the reference's softplus threshold (exp(-20) per lead)."""
    b, m, length = 3, 3, 500
    param = make_params(b, m, length, seed=4)
    x = grid_signal(b, length, seed=5)
    weights = torch.randn(b, length, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    v_f, g_f = value_and_grad(param, x, m, "log_prob", weights)
    v_r, g_r = value_and_grad(param, x, m, "_log_prob_autograd", weights)
    assert float((v_f - v_r).abs().max()) <= 8 * SOFTPLUS_GAP + 1e-10
    # Gradients: the derivative gap exp(-20) is scaled by 1/s <= e^5 and by |weights| (< 5) per element.
    bound = 8 * math.exp(-20.0) * math.exp(5.0) * 5.0
    assert float((g_f - g_r).abs().max()) <= bound + 1e-10 * float(g_r.abs().max())
    # And the bound is not vacuous: it is far below the gradients themselves.
    assert bound < 1e-6 * float(g_r.abs().max())


def test_float32_matches_reference_and_float64():
    """float32 (vectorised kernels, series) against the float32 reference and the float64 result of the same inputs."""
    b, m, length = 4, 3, 1000
    param32 = make_params(b, m, length, seed=7, dtype=torch.float32)
    x32 = grid_signal(b, length, seed=8, dtype=torch.float32)
    weights = torch.randn(b, length, generator=torch.Generator().manual_seed(9))
    v_f, g_f = value_and_grad(param32, x32, m, "log_prob", weights)
    v_r, g_r = value_and_grad(param32, x32, m, "_log_prob_autograd", weights)
    v_64, g_64 = value_and_grad(param32.double(), x32.double(), m, "log_prob", weights.double())
    assert v_f.dtype == torch.float32 and g_f.dtype == torch.float32
    torch.testing.assert_close(v_f, v_r, rtol=1e-5, atol=1e-5)
    scale = float(g_64.abs().max())
    torch.testing.assert_close(g_f, g_r, rtol=1e-3, atol=1e-5 * scale)
    # Against float64 of the same inputs, relative to max(|lp|, 1): float32 rounding only, like the reference.
    err_f = float(((v_f.double() - v_64).abs() / v_64.abs().clamp_min(1.0)).max())
    err_r = float(((v_r.double() - v_64).abs() / v_64.abs().clamp_min(1.0)).max())
    assert err_f < 1e-6
    assert err_f < 2.0 * err_r + 1e-7
    assert float((g_f.double() - g_64).abs().max()) < 5e-5 * scale


@pytest.mark.parametrize("x_value", [0.0, 0.5, 1.0])
def test_float32_width_term_over_all_scales(x_value):
    """One lead, one component, log-scales from the -7 clamp to 70 (bin width 2h/s from 8.6 down past the 1e-30 clamp).

    Covers both branches of the float32 log(1 - exp(-w)) (series below w = 1, closed form above) and the w clamp;
    the float64 result (expm1 form) is the reference. Means sit 0 to 50 scales away from the sample.
    """
    log_s = torch.linspace(-7.0, 70.0, 400, dtype=torch.float64)
    offsets = torch.tensor([0.0, 0.7, -3.0, 50.0], dtype=torch.float64)
    ls, off = torch.meshgrid(log_s, offsets, indexing="ij")
    length = ls.numel()
    param = torch.zeros(1, PARAMS_PER_MIXTURE, length, dtype=torch.float64)
    rows = rows_view(param, 1)
    rows[0, 8:16, 0] = -7.0                                  # other leads: narrow, centred on their sample (0.5)
    rows[0, 8, 0] = ls.reshape(-1)
    rows[0, 0, 0] = (2.0 * x_value - 1.0) + off.reshape(-1) * torch.exp(ls.reshape(-1))
    x = torch.full((1, 8, length), 0.5, dtype=torch.float64)
    x[0, 0] = x_value
    param32 = param.float()
    weights = torch.ones(1, length, dtype=torch.float64)
    v32, g32 = value_and_grad(param32, x.float(), 1, "log_prob", weights.float())
    v64, g64 = value_and_grad(param32.double(), x, 1, "log_prob", weights)
    assert torch.isfinite(v32).all() and torch.isfinite(g32).all()
    torch.testing.assert_close(v32.double(), v64, rtol=1e-6, atol=2e-6)
    # Gradients w.r.t. the swept lead's mean and log-scale (the latter carries w / expm1(w), series and closed form).
    for row in (0, 8):
        got, want = rows_view(g32, 1)[0, row, 0].double(), rows_view(g64, 1)[0, row, 0]
        torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-6 * float(want.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_inputs_are_finite(dtype):
    """Huge means, clamped and huge log-scales, saturated coefficients, edge bins: value and gradient finite."""
    b, m, length = 2, 3, 40
    param = make_params(b, m, length, seed=11, scale_range=(-30.0, 80.0), mean_std=1e4, coeff_std=50.0, dtype=dtype)
    param[:, :m] *= 100.0                                    # near one-hot mixture weights
    x = grid_signal(b, length, seed=12, dtype=dtype)
    p = param.clone().requires_grad_(True)
    lp = DiscMixLogistic8(p, m).log_prob(x)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(p.grad).all()
    # Far tails are exact, not floored: the float32 result follows the float64 one relatively.
    ref = DiscMixLogistic8(param.double(), m).log_prob(x.double())
    torch.testing.assert_close(lp.double(), ref, rtol=1e-5, atol=1e-4)


def test_bf16_parameters_are_promoted():
    """bf16 decoder outputs are computed in float32; the gradient flows back to the bf16 tensor."""
    b, m, length = 2, 3, 50
    param = make_params(b, m, length, seed=13, dtype=torch.bfloat16)
    x = grid_signal(b, length, seed=14, dtype=torch.float32)
    p16 = param.clone().requires_grad_(True)
    lp = DiscMixLogistic8(p16, m).log_prob(x)
    assert lp.dtype == torch.float32
    lp.sum().backward()
    assert p16.grad.dtype == torch.bfloat16
    p32 = param.float().requires_grad_(True)
    lp32 = DiscMixLogistic8(p32, m).log_prob(x)
    lp32.sum().backward()
    torch.testing.assert_close(lp, lp32, rtol=0, atol=0)
    torch.testing.assert_close(p16.grad, p32.grad.to(torch.bfloat16), rtol=0, atol=0)


def test_non_contiguous_parameters_and_x_with_gradient():
    """A cropped (strided) decoder output gives the same result; x requiring grad takes the autograd path."""
    b, m, length = 2, 3, 30
    full = make_params(b, m, length + 7, seed=15)
    cropped = full[:, :, 3:3 + length]
    assert not cropped.is_contiguous()
    x = grid_signal(b, length, seed=16)
    p1 = cropped.clone().requires_grad_(True)
    p2 = cropped.contiguous().requires_grad_(True)
    (DiscMixLogistic8(p1[:, :, :], m).log_prob(x) * 1.0).sum().backward()
    DiscMixLogistic8(p2, m).log_prob(x).sum().backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=0, atol=0)
    strided = full.clone().requires_grad_(True)
    lp = DiscMixLogistic8(strided[:, :, 3:3 + length], m).log_prob(x)
    lp.sum().backward()
    torch.testing.assert_close(strided.grad[:, :, 3:3 + length], p2.grad, rtol=0, atol=0)
    assert float(strided.grad[:, :, :3].abs().max()) == 0.0
    xg = x.clone().requires_grad_(True)
    lp_x = DiscMixLogistic8(cropped, m).log_prob(xg)
    (gx,) = torch.autograd.grad(lp_x.sum(), xg)
    assert gx.shape == x.shape and float(gx.abs().max()) > 0.0
    torch.testing.assert_close(lp_x.detach(), DiscMixLogistic8(cropped, m).log_prob(x), rtol=0,
                               atol=8 * SOFTPLUS_GAP + 1e-10)


def test_log_scale_clamp_gradient_convention():
    """Raw log-scales at and below -7 get no gradient (torch.clamp's convention), just above they do."""
    b, m, length = 1, 2, 5
    param = make_params(b, m, length, seed=17)
    rows = rows_view(param, m)
    rows[0, 8, :, 0] = LOG_SCALE_MIN
    rows[0, 8, :, 1] = LOG_SCALE_MIN - 1e-9
    rows[0, 8, :, 2] = LOG_SCALE_MIN + 1e-3
    x = grid_signal(b, length, seed=18)
    weights = torch.ones(b, length, dtype=torch.float64)
    _, g_f = value_and_grad(param, x, m, "log_prob", weights)
    _, g_r = value_and_grad(param, x, m, "_log_prob_autograd", weights)
    g_ls = rows_view(g_f, m)[0, 8]
    assert float(g_ls[:, :2].abs().max()) == 0.0
    assert float(g_ls[:, 2].abs().min()) > 0.0
    torch.testing.assert_close(g_f, g_r, rtol=1e-7, atol=1e-9)


def test_backward_saves_no_full_size_tensor():
    """Only x (B, 8, L), the component totals (B, M, L) and the output are saved besides the parameters."""
    b, m, length = 2, 5, 400
    param = make_params(b, m, length, seed=19).requires_grad_(True)
    x = grid_signal(b, length, seed=20)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp = DiscMixLogistic8(param, m).log_prob(x)
    others = [t for t in saved if t.untyped_storage().data_ptr() != param.untyped_storage().data_ptr()]
    full_size = b * 8 * m * length
    assert others and all(t.numel() < full_size for t in others)
    assert sum(t.numel() for t in others) <= b * length * (8 + m + 1)
    lp.sum().backward()
    assert torch.isfinite(param.grad).all()
