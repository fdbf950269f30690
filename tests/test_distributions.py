"""Tests of nvae_ecg.distributions: latent Normals and the 8-lead discretised logistic mixture (paper eq. 3).

The mixture is checked against an independent float64 computation written here with
explicit loops over leads and components (coupling pairs spelled out by hand), for
normalisation over the bins of a lead, for symmetric open-ended edge bins, and for
the sampler's temperature handling.

Example::

    python -m pytest tests/test_distributions.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from nvae_ecg.distributions import DiscMixLogistic8, Normal

NBITS = 8
MAXV = 2 ** NBITS - 1
# Coupling of paper eq. 3 written out independently of the module: lead -> [(coefficient index, parent lead)].
PARENTS = {
    0: [],
    1: [(0, 0)],
    2: [],
    3: [(1, 2)],
    4: [(2, 2), (3, 3)],
    5: [(4, 2), (5, 3), (6, 4)],
    6: [(7, 2), (8, 3), (9, 4), (10, 5)],
    7: [(11, 2), (12, 3), (13, 4), (14, 5), (15, 6)],
}


def make_params(b, m, length, seed, dtype=torch.float64, scale_range=(-4.0, -1.0)):
    """Random decoder parameters laid out as [logits (M) | (32, M) rows: means, log-scales, coefficients]."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, m, length, generator=g, dtype=dtype)
    means = 0.5 * torch.randn(b, 8, m, length, generator=g, dtype=dtype)
    lo, hi = scale_range
    log_scales = lo + (hi - lo) * torch.rand(b, 8, m, length, generator=g, dtype=dtype)
    coeffs = torch.randn(b, 16, m, length, generator=g, dtype=dtype)
    rest = torch.cat([means, log_scales, coeffs], dim=1).reshape(b, 32 * m, length)
    return torch.cat([logits, rest], dim=1)


def set_rows(param, m, row, value):
    """Overwrite row `row` (of the 32) for every component, in place on a clone."""
    p = param.clone()
    p[:, m + row * m: m + (row + 1) * m] = value
    return p


def _sigmoid(t):
    return 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))


def _log_bin_mass(xv, mean, log_scale):
    """log P(bin of xv) for one logistic, float64 scalars; picks the non-cancelling CDF/survival difference."""
    s = math.exp(max(log_scale, -7.0))
    h = 1.0 / MAXV
    if xv < -1.0 + h:       # lowest bin: open to -inf
        return math.log(_sigmoid((xv + h - mean) / s))
    if xv > 1.0 - h:        # highest bin: open to +inf
        return math.log(_sigmoid(-(xv - h - mean) / s))
    a, b = (xv - h - mean) / s, (xv + h - mean) / s
    if a > 0:               # right of the mean: survival difference does not cancel
        return math.log(_sigmoid(-a) - _sigmoid(-b))
    return math.log(_sigmoid(b) - _sigmoid(a))


def reference_log_prob(param, x, m):
    """Direct float64 mixture log-likelihood (B, L) with loops over batch, position, component and lead."""
    param = param.double()
    b, _, length = param.shape
    out = torch.empty(b, length, dtype=torch.float64)
    for bi in range(b):
        for li in range(length):
            xs = [2.0 * float(x[bi, i, li]) - 1.0 for i in range(8)]
            logits = [float(param[bi, k, li]) for k in range(m)]
            lse_w = max(logits) + math.log(sum(math.exp(v - max(logits)) for v in logits))
            terms = []
            for k in range(m):
                total = logits[k] - lse_w
                for lead in range(8):
                    mean = float(param[bi, m + lead * m + k, li])
                    log_scale = float(param[bi, m + (8 + lead) * m + k, li])
                    for ci, parent in PARENTS[lead]:
                        coef = math.tanh(float(param[bi, m + (16 + ci) * m + k, li]))
                        mean += coef * xs[parent]
                    total += _log_bin_mass(xs[lead], mean, log_scale)
                terms.append(total)
            top = max(terms)
            out[bi, li] = top + math.log(sum(math.exp(t - top) for t in terms))
    return out


def grid_values(b, length, seed, dtype=torch.float64):
    """Random 8-bit grid ECG values in [0, 1], edges included."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, MAXV + 1, (b, 8, length), generator=g).to(dtype) / MAXV


@pytest.mark.parametrize("dtype, atol, rtol", [(torch.float64, 1e-9, 1e-9), (torch.float32, 1e-3, 1e-5)])
def test_log_prob_matches_independent_float64_reference(dtype, atol, rtol):
    m = 3
    param = make_params(2, m, 7, seed=1)
    x = grid_values(2, 7, seed=2)
    x[0, :, 0] = 0.0   # lowest edge bin in every lead
    x[1, :, 1] = 1.0   # highest edge bin in every lead
    ref = reference_log_prob(param, x, m)
    got = DiscMixLogistic8(param.to(dtype), m).log_prob(x.to(dtype))
    assert got.shape == (2, 7)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), ref, atol=atol, rtol=rtol)


def test_log_prob_exact_in_far_tails():
    """No mid-point approximation is needed: bins 30 to 300 scales from the mean still match the exact mass."""
    m = 1
    param = make_params(1, m, 6, seed=3, scale_range=(-5.0, -5.0))
    x = torch.full((1, 8, 6), 0.5, dtype=torch.float64)
    # Means far left / right of the observed values (coefficients zero so the shifts are exact).
    param = set_rows(param, m, 0, torch.tensor([-0.4, 0.4, -1.5, 1.5, -0.9, 0.9], dtype=torch.float64))
    for r in range(16, 32):
        param = set_rows(param, m, r, 0.0)
    ref = reference_log_prob(param, x, m)
    got = DiscMixLogistic8(param, m).log_prob(x)
    assert torch.isfinite(got).all()
    assert float(ref.min()) < -200.0  # the test does reach far tails
    torch.testing.assert_close(got, ref, atol=1e-8, rtol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_bins_of_v6_marginalise_with_coupling(dtype, tol):
    """Summing p(x) over the 256 bins of V6 gives the marginal of the other leads, for M = 3 with coupling.

    V6 (lead 7) is the last lead of the coupling order: no other lead's mean depends on it, so
    sum_{V6 bins} p(x) = sum_k w_k prod_{i<7} p_k(x_i | x_<i) = p(x_<7). That marginal is computed by a second
    instance whose V6 means sit at -1000 with unit scale: its whole V6 mass (bounded coupling shift <= 5 included)
    falls in the lowest, open-ended bin, so p2(x_<7, V6 = lowest) = p(x_<7) to floating-point precision.
    """
    m, length = 3, 5
    param = make_params(2, m, length, seed=4).to(dtype)
    x = grid_values(2, length, seed=5, dtype=dtype)
    bins = torch.arange(MAXV + 1, dtype=dtype) / MAXV
    dist = DiscMixLogistic8(param, m)
    xs = x.unsqueeze(0).repeat(MAXV + 1, 1, 1, 1)        # bins, B, 8, L
    xs[:, :, 7, :] = bins.view(-1, 1, 1)
    lp = torch.stack([dist.log_prob(xi) for xi in xs])   # bins, B, L
    summed = torch.logsumexp(lp.double(), dim=0)
    pinned = set_rows(set_rows(param, m, 7, -1000.0), m, 15, 0.0)   # V6 mean -1000, log-scale 0
    x_low = x.clone()
    x_low[:, 7] = 0.0
    marginal = DiscMixLogistic8(pinned, m).log_prob(x_low).double()
    torch.testing.assert_close(summed.exp(), marginal.exp(), atol=0, rtol=tol)
    # And the V6 conditional of a single component sums to 1 (ratio of the two).
    assert float((summed - marginal).abs().max()) < tol * 10


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_bins_of_first_lead_sum_to_one(dtype, tol):
    """With M = 1, the probabilities of the 256 bins of lead I sum to 1 when the other leads are pinned.

    With one component the joint is the product of per-lead conditionals. Leads III..V6 are pinned to their
    lowest bin by means of -1000 and unit scale, so each of their factors is 1 whatever lead I is (III's mean moves
    by at most 1 through its coupling to I). The sum over I's bins is then sum_{I} p(I) = 1.
    """
    m, length = 1, 6
    param = make_params(2, m, length, seed=6).to(dtype)
    for lead in range(1, 8):
        param = set_rows(set_rows(param, m, lead, -1000.0), m, 8 + lead, 0.0)
    bins = torch.arange(MAXV + 1, dtype=dtype) / MAXV
    dist = DiscMixLogistic8(param, m)
    total = torch.zeros(2, length, dtype=torch.float64)
    for v in bins:
        x = torch.zeros(2, 8, length, dtype=dtype)
        x[:, 0] = v
        total += dist.log_prob(x).double().exp()
    torch.testing.assert_close(total, torch.ones_like(total), atol=tol, rtol=0)


def test_edge_bins_open_ended_and_symmetric():
    """Mirror symmetry: negating all means (coefficients kept) and mirroring x leaves log p unchanged.

    Under x -> -x, mu -> -mu the coupled means flip sign too, so the likelihood is invariant exactly when the
    edge thresholds are symmetric. The authors' thresholds (-0.999, 0.99) break it at the grid value 254/255.
    """
    m, length = 2, MAXV + 1
    param = make_params(1, m, length, seed=7)
    x = grid_values(1, length, seed=8)
    x[0, :, :] = torch.arange(MAXV + 1, dtype=torch.float64) / MAXV   # every grid value in every lead
    mirrored = param.clone()
    mirrored[:, m: m + 8 * m] *= -1.0
    a = DiscMixLogistic8(param, m).log_prob(x)
    b = DiscMixLogistic8(mirrored, m).log_prob(1.0 - x)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # Open-ended: the lowest bin of a logistic centred far above it still has the CDF mass, not a width-2/255 bin.
    p1 = make_params(1, 1, 1, seed=9)
    for r in range(16, 32):
        p1 = set_rows(p1, 1, r, 0.0)
    p1 = set_rows(p1, 1, 8, 0.0)   # lead I: log-scale 0 (s = 1), mean row 0
    p1 = set_rows(p1, 1, 0, 0.0)
    x1 = torch.full((1, 8, 1), 0.5, dtype=torch.float64)
    x1[0, 0, 0] = 0.0
    lp_edge = DiscMixLogistic8(p1, 1).log_prob(x1)
    x1[0, 0, 0] = 1.0 / MAXV
    lp_next = DiscMixLogistic8(p1, 1).log_prob(x1)
    # Lowest bin: sigmoid(-1 + 1/255) ~ 0.27; next bin (width 2/255 around -1 + 2/255) ~ 0.0016.
    diff = float(lp_edge - lp_next)
    expected = math.log(_sigmoid(-1 + 1 / MAXV)) - math.log(_sigmoid(-1 + 3 / MAXV) - _sigmoid(-1 + 1 / MAXV))
    assert diff == pytest.approx(expected, abs=1e-9)


def test_log_prob_rejects_bad_input():
    d = DiscMixLogistic8(make_params(1, 2, 4, seed=0), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        d.log_prob(torch.full((1, 8, 4), 1.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        d.log_prob(torch.rand(1, 7, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="33"):
        DiscMixLogistic8(torch.randn(1, 30, 4), 2)


def coupled_mean_reference(param, m, k_sel, clip=True):
    """Per-position coupled mean of the chosen component, by forward substitution with explicit parents."""
    b, _, length = param.shape
    out = torch.zeros(b, 8, length, dtype=torch.float64)
    for bi in range(b):
        for li in range(length):
            k = int(k_sel[bi, li])
            vals = []
            for lead in range(8):
                mean = float(param[bi, m + lead * m + k, li])
                for ci, parent in PARENTS[lead]:
                    mean += math.tanh(float(param[bi, m + (16 + ci) * m + k, li])) * vals[parent]
                vals.append(min(max(mean, -1.0), 1.0) if clip else mean)
            out[bi, :, li] = torch.tensor(vals, dtype=torch.float64)
    return out / 2.0 + 0.5


def test_sample_shape_range_and_low_temperature_concentrates():
    m, length = 3, 40
    param = make_params(2, m, length, seed=10, scale_range=(-3.0, -2.0))
    d = DiscMixLogistic8(param, m)
    s = d.sample(1.0, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 8, length)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    # t -> 0: logits / t make the most probable component win and the logistic noise vanishes.
    s0 = d.sample(1e-4, generator=torch.Generator().manual_seed(1))
    k_sel = param[:, :m].argmax(dim=1)
    ref = coupled_mean_reference(param, m, k_sel)
    torch.testing.assert_close(s0, ref, atol=2e-3, rtol=0)
    far = (d.sample(1.0, generator=torch.Generator().manual_seed(1)) - ref).abs().mean()
    assert float(far) > 10 * float((s0 - ref).abs().mean())


def test_temperature_multiplies_logistic_noise():
    """Same uniforms, t = 0.5 vs 1: the deviation from the coupled mean halves (the authors' code doubled it)."""
    m, length = 1, 200
    param = make_params(1, m, length, seed=11, scale_range=(-5.0, -5.0))
    param[:, m:m + 8 * m] *= 0.2                               # means well inside (-1, 1): no clipping
    param[:, m + 16 * m:] = 0.3 * torch.tanh(param[:, m + 16 * m:])
    d = DiscMixLogistic8(param, m)
    ref = coupled_mean_reference(param, m, torch.zeros(1, length, dtype=torch.long), clip=False)
    dev1 = d.sample(1.0, generator=torch.Generator().manual_seed(5)) - ref
    dev05 = d.sample(0.5, generator=torch.Generator().manual_seed(5)) - ref
    assert float(dev1.abs().max()) < 0.4                       # nothing was clipped
    torch.testing.assert_close(dev05, 0.5 * dev1, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="temperature"):
        d.sample(0.0)


def test_sample_noise_has_logistic_scale():
    """Without coupling and with one component, the sample std of a lead is s * pi / sqrt(3) * t."""
    m, length = 1, 20000
    param = torch.zeros(1, 33, length, dtype=torch.float64)
    param[:, m + 8 * m: m + 16 * m] = math.log(0.05)            # s = 0.05, means 0, coefficients 0
    d = DiscMixLogistic8(param, m)
    for t in (1.0, 0.5):
        x = 2.0 * d.sample(t, generator=torch.Generator().manual_seed(3)) - 1.0
        std = x.std(dim=2)
        assert torch.allclose(std, torch.full_like(std, 0.05 * math.pi / math.sqrt(3) * t), rtol=0.04)


def test_mean_matches_forward_substitution_for_one_component():
    m, length = 1, 9
    param = make_params(2, m, length, seed=12)
    param[:, m:m + 8 * m] *= 0.3
    ref = coupled_mean_reference(param, m, torch.zeros(2, length, dtype=torch.long), clip=False).clamp(0, 1)
    torch.testing.assert_close(DiscMixLogistic8(param, m).mean(), ref, atol=1e-10, rtol=0)


def test_coupling_matrix_is_strictly_lower_triangular_and_matches():
    m, length = 2, 3
    param = make_params(1, m, length, seed=13)
    d = DiscMixLogistic8(param, m)
    c = d.coupling_matrix()
    assert c.shape == (1, m, length, 8, 8)
    assert float(torch.triu(c).abs().max()) == 0.0
    assert int((c != 0).sum(dim=(-1, -2)).min()) == 16
    # Lead V1 (row 2) has no parents; the limb leads never feed the precordial ones.
    assert float(c[..., 2, :].abs().max()) == 0.0
    assert float(c[..., 2:, :2].abs().max()) == 0.0


def test_normal_log_p_and_kl_match_torch():
    g = torch.Generator().manual_seed(0)
    mu, ls = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    mu2, ls2 = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    q, p = Normal(mu, ls), Normal(mu2, ls2)
    tq = torch.distributions.Normal(q.mu, q.sigma)
    tp = torch.distributions.Normal(p.mu, p.sigma)
    z = q.sample(generator=g)
    torch.testing.assert_close(q.log_p(z), tq.log_prob(z))          # includes -log(sigma)
    torch.testing.assert_close(q.kl(p), torch.distributions.kl_divergence(tq, tp))
    # Soft clamp to [-5, 5], sigma floor 1e-2, temperature multiplies sigma.
    big = Normal(torch.full((2,), 100.0), torch.full((2,), -100.0), temp=0.5)
    assert float(big.mu.max()) <= 5.0
    torch.testing.assert_close(big.sigma, 0.5 * (torch.exp(torch.tensor(-5.0) * torch.tanh(torch.tensor(20.0)))
                                                 + 1e-2).expand(2))
    std = Normal.standard(torch.zeros(2, 3), temp=0.7)
    torch.testing.assert_close(std.sigma, torch.full((2, 3), 0.7))
    assert float(std.mu.abs().max()) == 0.0
