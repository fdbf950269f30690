"""Distributions of cNVAE-ECG: latent Normals, the 8-lead discretised logistic mixture, the 2-D variant's Gaussian.

``Normal`` follows NVAE's ``distributions.py`` (soft-clamped means and log-sigmas,
sigma = exp(log_sigma) + 1e-2, temperature multiplies sigma, analytic KL) but its
``log_p`` keeps the ``-log(sigma)`` term, which the authors' port had commented
out (that made their importance-weighted NLL wrong). ``DiscMixLogistic8`` is the
decoder likelihood of paper Sec. III-A, eq. 3: a mixture of discretised
logistics over the 8 independent leads (I, III, V1..V6) in which the mean of a
lead is shifted linearly by the leads before it (PixelCNN++'s RGB coupling
generalised: III depends on I, V1 on nothing, V2..V6 on the precordial leads
before them). The 16 coupling coefficients form a strictly lower-triangular
8x8 matrix C per component and position, applied as ``mean + C @ x`` in one
gather-multiply-scatter (no per-lead code); sampling walks the leads in order.
Its ``log_prob`` runs the fused likelihood with a hand-derived backward,
:func:`nvae_ecg.kernels.mixture_log_prob`; with the kernels switched off it
runs the plain-autograd ``_log_prob_autograd``, which stays here as the
reference that tests/test_mixture_fused.py compares the fused one with.

``DiagonalGaussian`` is the decoder likelihood of the 2-D STFT variant
(2D-cNVAE-ECG): one Normal per spectrogram entry with a predicted mean and
log-scale, over the normalised real and imaginary channels. The choice: the
normalised STFT coefficients are real-valued, unbounded and heavy-tailed (QRS
complexes), so a discretised logistic mixture would need an arbitrary clipping
range and bin width that the exact inverse STFT cannot undo, whereas a Gaussian
with a learned scale models any real value, has an exact log-density and samples
in one step. Entries that are identically zero (imaginary DC/Nyquist bins) are
excluded by a mask and sampled as their mean.

Example::

    python -c "import torch; from nvae_ecg.distributions import DiscMixLogistic8; d = DiscMixLogistic8(torch.randn(2, 33 * 3, 50), 3); print(d.log_prob(torch.rand(2, 8, 50)).shape, d.sample().shape)"
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

from nvae_ecg import kernels

NUM_LEADS = 8

#: (row, column) of the 16 coupling coefficients inside the 8x8 coupling matrix, in parameter order
#: (paper eq. 3): III <- I; V2 <- V1; V3 <- V1, V2; V4 <- V1..V3; V5 <- V1..V4; V6 <- V1..V5.
COUPLING_PAIRS: tuple[tuple[int, int], ...] = ((1, 0),) + tuple(
    (row, col) for row in range(3, NUM_LEADS) for col in range(2, row)
)
NUM_COEFFS = len(COUPLING_PAIRS)  # 16
#: Channels of the decoder output per mixture component: 1 logit + 8 means + 8 log-scales + 16 coefficients.
PARAMS_PER_MIXTURE = 1 + 2 * NUM_LEADS + NUM_COEFFS  # 33


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Promote bf16/fp16 tensors to float32 and leave float32/float64 alone."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def soft_clamp5(x: torch.Tensor) -> torch.Tensor:
    """Differentiable clamp to [-5, 5]: 5 * tanh(x / 5) (NVAE distributions.py soft_clamp5)."""
    return 5.0 * torch.tanh(x / 5.0)


class Normal:
    """Diagonal Normal of a latent group (NVAE distributions.Normal, with the -log(sigma) term in log_p)."""

    def __init__(self, mu: torch.Tensor, log_sigma: torch.Tensor, temp: float = 1.0) -> None:
        # KL and log-densities are sums over many elements: keep them in at least float32 under autocast.
        self.mu = soft_clamp5(_at_least_float32(mu))
        self.sigma = torch.exp(soft_clamp5(_at_least_float32(log_sigma))) + 1e-2
        if temp != 1.0:
            self.sigma = self.sigma * temp

    @classmethod
    def standard(cls, like: torch.Tensor, temp: float = 1.0) -> "Normal":
        """Exact N(0, temp^2) with the shape, dtype and device of ``like`` (top-of-hierarchy prior)."""
        # NVAE builds this as Normal(0, 0), whose sigma is 1.01 because of the +1e-2 floor; the prior of the top
        # group is meant to be a standard Normal, so it is set directly here.
        self = cls.__new__(cls)
        ref = _at_least_float32(like)
        self.mu = torch.zeros_like(ref)
        self.sigma = torch.full_like(ref, float(temp))
        return self

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Reparameterised sample mu + sigma * eps."""
        eps = torch.randn(self.mu.shape, generator=generator, dtype=self.mu.dtype, device=self.mu.device)
        return self.mu + self.sigma * eps

    def log_p(self, z: torch.Tensor) -> torch.Tensor:
        """Element-wise log-density, including -log(sigma)."""
        u = (z - self.mu) / self.sigma
        return -0.5 * u * u - 0.5 * math.log(2 * math.pi) - torch.log(self.sigma)

    def kl(self, other: "Normal") -> torch.Tensor:
        """Element-wise analytic KL(self || other) (NVAE distributions.Normal.kl)."""
        term1 = (self.mu - other.mu) / other.sigma
        term2 = self.sigma / other.sigma
        return 0.5 * (term1 * term1 + term2 * term2) - 0.5 - torch.log(term2)


@functools.lru_cache(maxsize=None)
def _coupling_index(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Column index (16,) and 0/1 row-scatter matrix (8, 16) such that C @ x == scatter @ (coeffs * x[cols])."""
    cols = torch.tensor([c for _, c in COUPLING_PAIRS], device=device)
    scatter = torch.zeros(NUM_LEADS, NUM_COEFFS, dtype=dtype)
    scatter[[r for r, _ in COUPLING_PAIRS], torch.arange(NUM_COEFFS)] = 1.0
    return cols, scatter.to(device)


#: Log-scales are clamped at this value from below (NVAE DiscMixLogistic): the logistic is at least e^-7 wide.
LOG_SCALE_MIN = -7.0
#: w = 2h / s is clamped at this value from below, so that log(1 - exp(-w)) stays finite for absurdly wide logistics.
_W_MIN = 1e-30
#: The layout the fused likelihood (nvae_ecg.kernels.mixture_log_prob) reads the decoder output with.
MIXTURE_SPEC = kernels.MixtureSpec(NUM_LEADS, COUPLING_PAIRS, LOG_SCALE_MIN, _W_MIN)


def _split_params(param: torch.Tensor, num_mix: int) -> tuple[torch.Tensor, ...]:
    """Views of the logits (B, M, L), raw means and log-scales (B, 8, M, L) and coefficients (B, 16, M, L)."""
    b, _, length = param.shape
    # split (not slicing) so that an autograd backward through the views is one concatenation, not one zero-filled
    # copy per slice.
    logits, rest = param.split([num_mix, (PARAMS_PER_MIXTURE - 1) * num_mix], dim=1)
    rest = rest.reshape(b, PARAMS_PER_MIXTURE - 1, num_mix, length)
    return (logits,) + tuple(rest.split([NUM_LEADS, NUM_LEADS, NUM_COEFFS], dim=1))


class DiscMixLogistic8:
    """Discretised mixture of logistics over the 8 independent ECG leads with linear lead coupling (eq. 3).

    ``param`` is the decoder output (B, 33 * M, L): channels [0, M) are the mixture logits, the remaining
    32 * M channels viewed as (32, M) hold rows 0-7 means, 8-15 log-scales (clamped at -7 from below) and
    16-31 the tanh-squashed coupling coefficients in ``COUPLING_PAIRS`` order. Leads are I, III, V1..V6.
    Data live in [0, 1] and are mapped to [-1, 1]; bins have width 2 / (2^num_bits - 1) and the first and
    last bin are open-ended with symmetric thresholds -1 + 1/max_val and 1 - 1/max_val.
    """

    def __init__(self, param: torch.Tensor, num_mix: int, num_bits: int = 8) -> None:
        if param.dim() != 3 or param.shape[1] != PARAMS_PER_MIXTURE * num_mix:
            raise ValueError(
                f"DiscMixLogistic8 expects decoder parameters of shape (B, {PARAMS_PER_MIXTURE} * {num_mix}, L), "
                f"got {tuple(param.shape)}"
            )
        param = _at_least_float32(param)
        self._param = param
        self.num_mix = num_mix
        self.max_val = float(2 ** num_bits - 1)
        self._cols, self._scatter = _coupling_index(param.device, param.dtype)

    # The split parameters are built on first use: the training step's log_prob reads the raw parameters directly,
    # and the clamp/tanh of (B, 24, M, L) elements (with their autograd graph) would be wasted work there.
    @functools.cached_property
    def _split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (B, M, L), means (B, 8, M, L), raw log-scales (B, 8, M, L), raw coefficients (B, 16, M, L))."""
        return _split_params(self._param, self.num_mix)

    @property
    def logit_probs(self) -> torch.Tensor:
        """Mixture logits (B, M, L)."""
        return self._split[0]

    @property
    def means(self) -> torch.Tensor:
        """Uncoupled means (B, 8, M, L) in the [-1, 1] data scale."""
        return self._split[1]

    @functools.cached_property
    def log_scales(self) -> torch.Tensor:
        """Log-scales (B, 8, M, L), clamped at LOG_SCALE_MIN from below."""
        return torch.clamp(self._split[2], min=LOG_SCALE_MIN)

    @functools.cached_property
    def coeffs(self) -> torch.Tensor:
        """tanh-squashed coupling coefficients (B, 16, M, L) in COUPLING_PAIRS order."""
        return torch.tanh(self._split[3])

    # -- coupling ------------------------------------------------------------------------------------------------
    def _couple(self, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """C @ x for the sparse strictly lower-triangular coupling matrices.

        ``coeffs`` is (B, 16, M, L) or (B, 16, L) and ``x`` (B, 8, L) (shared by all components) or (B, 8, M, L);
        returns (B, 8, ...). Same as the dense ``coupling_matrix() @ x`` without its 4x memory.
        """
        xg = x.index_select(1, self._cols)                                       # B, 16, [M,] L
        if xg.dim() < coeffs.dim():
            xg = xg.unsqueeze(2)                                                 # B, 16, 1, L
        prod = coeffs * xg
        out = torch.matmul(self._scatter, prod.flatten(2))                       # B, 8, (M*)L
        return out.view(prod.shape[0], NUM_LEADS, *prod.shape[2:])

    def coupling_matrix(self) -> torch.Tensor:
        """Dense coupling matrices (B, M, L, 8, 8), strictly lower-triangular (for inspection and tests)."""
        b, _, m, length = self.coeffs.shape
        dense = self.coeffs.new_zeros(b, m, length, NUM_LEADS * NUM_LEADS)
        flat = torch.tensor([r * NUM_LEADS + c for r, c in COUPLING_PAIRS], device=self.coeffs.device)
        dense[..., flat] = self.coeffs.permute(0, 2, 3, 1)
        return dense.view(b, m, length, NUM_LEADS, NUM_LEADS)

    # -- likelihood ----------------------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Joint log-likelihood of the 8 leads per sample point, (B, L), for x (B, 8, L) in [0, 1].

        ``validate=False`` skips the range check, which reads a flag back to the host (a device synchronisation);
        the training step passes it because its data are clipped to [0, 1] when loaded.
        """
        if (x.requires_grad and torch.is_grad_enabled()) or not kernels.enabled():
            # The fused likelihood treats x as data (no gradient); differentiating through x takes the autograd path.
            return self._log_prob_autograd(x, validate)
        xs = self._scaled_input(x, validate)
        return kernels.mixture_log_prob(self._param, xs, self.num_mix, 1.0 / self.max_val, MIXTURE_SPEC)

    def _scaled_input(self, x: torch.Tensor, validate: bool) -> torch.Tensor:
        """Check x (B, 8, L) in [0, 1] and map it to [-1, 1] in the parameters' dtype."""
        b, _, length = self._param.shape
        if x.dim() != 3 or tuple(x.shape) != (b, NUM_LEADS, length):
            raise ValueError(f"log_prob expects x of shape {(b, NUM_LEADS, length)}, got {tuple(x.shape)}")
        if validate and bool(((x < 0) | (x > 1)).any()):
            raise ValueError("log_prob expects ECGs scaled to [0, 1]; found values outside that range")
        return 2.0 * x.to(self._param.dtype) - 1.0                             # B, 8, L in [-1, 1]

    def _log_prob_autograd(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """log_prob from plain autograd operations: the reference of the fused likelihood (kernels off, x with grad)."""
        xs = self._scaled_input(x, validate)
        mean = self.means + self._couple(self.coeffs, xs)                        # B, 8, M, L
        xs = xs.unsqueeze(2)                                                     # B, 8, 1, L
        inv_s = torch.exp(-self.log_scales)
        half_bin = 1.0 / self.max_val
        plus_in = inv_s * (xs - mean + half_bin)
        min_in = inv_s * (xs - mean - half_bin)
        # The mass of bin [x - h, x + h] is sigmoid(plus_in) - sigmoid(min_in). PixelCNN++ / NVAE subtract the
        # two sigmoids and fall back to the mid-point density when the difference underflows. Here the exact
        # factorisation
        #     sigmoid(p) - sigmoid(m) = sigmoid(p) * sigmoid(-m) * (1 - exp(-(p - m))),   p - m = 2h / s,
        # is used in log space: every factor is computed stably (log-sigmoids and log(-expm1)), so nothing
        # underflows and no fallback is needed, even many scales into the tails. The open-ended edge bins are
        # the single factors: lower edge log sigmoid(p), upper edge log sigmoid(-m) = log(1 - sigmoid(m)).
        log_cdf_plus = -F.softplus(-plus_in)                                     # log sigmoid(p)
        log_one_minus_cdf_min = -F.softplus(min_in)                              # log sigmoid(-m)
        # Clamp: a logistic thousands of bins wide would make w underflow to 0 and its log -inf.
        w = torch.clamp(inv_s * (2.0 * half_bin), min=_W_MIN)
        log_width_term = torch.log(-torch.expm1(-w))                             # log(1 - exp(-(p - m)))
        # Edge bins with symmetric thresholds half a bin inside [-1, 1] (the authors' port used -0.999 and 0.99,
        # which made the top edge bin 2.5 bins wide and broke normalisation). Masks broadcast over components.
        lo, hi = -1.0 + half_bin, 1.0 - half_bin
        not_upper = (xs <= hi).to(xs.dtype)                                      # B, 8, 1, L
        not_lower = (xs >= lo).to(xs.dtype)
        interior = not_upper * not_lower
        log_probs = log_cdf_plus * not_upper + log_one_minus_cdf_min * not_lower + log_width_term * interior
        log_probs = log_probs.sum(dim=1) + F.log_softmax(self.logit_probs, dim=1)  # B, M, L
        return torch.logsumexp(log_probs, dim=1)                                  # B, L

    # -- sampling ------------------------------------------------------------------------------------------------
    def _uniform(self, shape, generator: Optional[torch.Generator]) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, dtype=self.means.dtype, device=self.means.device)
        return u * (1.0 - 2e-5) + 1e-5                                           # in (1e-5, 1 - 1e-5)

    def sample(self, t: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw ECGs (B, 8, L) in [0, 1]: Gumbel-max component, logistic noise scaled by t, leads in order."""
        if not t > 0:
            raise ValueError(f"sampling temperature must be > 0, got {t}")
        b, _, m, length = self.means.shape
        # NVAE DiscMixLogistic.sample: Gumbel-max over logits / t (t -> 0 picks the most probable component).
        gumbel = -torch.log(-torch.log(self._uniform(self.logit_probs.shape, generator)))
        sel = torch.argmax(self.logit_probs / t + gumbel, dim=1)                 # B, L
        idx = sel.view(b, 1, 1, length)
        means = self.means.gather(2, idx.expand(b, NUM_LEADS, 1, length)).squeeze(2)        # B, 8, L
        log_scales = self.log_scales.gather(2, idx.expand(b, NUM_LEADS, 1, length)).squeeze(2)
        coeffs = self.coeffs.gather(2, idx.expand(b, NUM_COEFFS, 1, length)).squeeze(2)     # B, 16, L
        u = self._uniform(means.shape, generator)
        # Inverse logistic CDF; the temperature MULTIPLIES the scale (the authors' port divided by t).
        base = means + torch.exp(log_scales) * t * (torch.log(u) - torch.log1p(-u))
        # Sequential over leads: lead i's mean depends on the values already drawn (and clipped) for leads < i;
        # C is strictly lower-triangular, so undrawn leads (still zero) do not contribute to row i.
        x = torch.zeros_like(base)
        for i in range(NUM_LEADS):
            xi = torch.clamp(base[:, i] + self._couple(coeffs, x)[:, i], -1.0, 1.0)
            x = x.clone()
            x[:, i] = xi
        return x / 2.0 + 0.5

    def mean(self) -> torch.Tensor:
        """Mixture mean (B, 8, L) in [0, 1] of the continuous, unclipped model, then clipped to the range."""
        # Per component the coupled mean solves x = mu + C x; forward substitution over the 8 leads.
        x = torch.zeros_like(self.means)                                          # B, 8, M, L
        for i in range(NUM_LEADS):
            xi = self.means[:, i] + self._couple(self.coeffs, x)[:, i]
            x = x.clone()
            x[:, i] = xi
        w = torch.softmax(self.logit_probs, dim=1).unsqueeze(1)                  # B, 1, M, L
        return torch.clamp((x * w).sum(dim=2), -1.0, 1.0) / 2.0 + 0.5


class DiagonalGaussian:
    """Per-entry Normal over a (B, C, *spatial) tensor: the decoder of the 2-D STFT variant (module docstring).

    ``param`` is the decoder output (B, 2C, *spatial): channels [0, C) are means, [C, 2C) log-scales, clamped to
    [MIN_LOG_SCALE, MAX_LOG_SCALE] (the lower bound keeps the density finite, as DiscMixLogistic8's -7). ``mask``
    (broadcastable to (C, *spatial), 1 = modelled) removes entries that carry no information from the likelihood.
    """

    MIN_LOG_SCALE = -7.0
    MAX_LOG_SCALE = 5.0

    def __init__(self, param: torch.Tensor, channels: int, mask: Optional[torch.Tensor] = None) -> None:
        if param.dim() < 3 or param.shape[1] != 2 * channels:
            raise ValueError(f"DiagonalGaussian expects decoder parameters of shape (B, 2 * {channels}, ...), "
                             f"got {tuple(param.shape)}")
        param = _at_least_float32(param)
        self.channels = channels
        self.mu, log_scale = param.split([channels, channels], dim=1)
        self.log_scale = torch.clamp(log_scale, self.MIN_LOG_SCALE, self.MAX_LOG_SCALE)
        self.mask = None if mask is None else mask.to(param.dtype)

    def log_prob(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Log-density summed over channels (masked) per spatial position, flattened: (B, prod(spatial)).

        ``validate`` exists for interface parity with DiscMixLogistic8; shapes are always checked (no host sync).
        """
        if tuple(x.shape) != tuple(self.mu.shape):
            raise ValueError(f"log_prob expects x of shape {tuple(self.mu.shape)}, got {tuple(x.shape)}")
        u = (x.to(self.mu.dtype) - self.mu) * torch.exp(-self.log_scale)
        lp = -0.5 * u * u - self.log_scale - 0.5 * math.log(2 * math.pi)
        if self.mask is not None:
            lp = lp * self.mask
        return lp.sum(dim=1).flatten(1)

    def sample(self, t: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw mu + t * sigma * eps (the temperature multiplies the scale); masked entries are their mean."""
        if not t > 0:
            raise ValueError(f"sampling temperature must be > 0, got {t}")
        eps = torch.randn(self.mu.shape, generator=generator, dtype=self.mu.dtype, device=self.mu.device)
        noise = torch.exp(self.log_scale) * (t * eps)
        if self.mask is not None:
            noise = noise * self.mask
        return self.mu + noise

    def mean(self) -> torch.Tensor:
        """The means (B, C, *spatial)."""
        return self.mu
