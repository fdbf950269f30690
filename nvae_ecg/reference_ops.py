"""The authors' operator structure, for the benchmark's ``original`` mode: same model, the original's cost.

:func:`use_authors_structure` switches a cNVAE-ECG to per-layer weight normalisation, plain ``nn.BatchNorm`` +
``F.elu`` and :class:`AuthorsMixture8`, the 8-lead mixture likelihood computed the way the authors' port of NVAE's
``DiscMixLogistic`` computes it; with float64 and a per-parameter Adamax this is how the original code runs, the
reference of the speed targets in BENCHMARKS.md. ``tests/test_throughput_bench.py`` checks that it computes the same
loss and gradients.

Example::

    python -m nvae_ecg.bench --model cnvae --config small --modes original
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from nvae_ecg.distributions import COUPLING_PAIRS, NUM_LEADS, DiscMixLogistic8
from nvae_ecg.neural_operations import ELU, BNActConv


class AuthorsMixture8:
    """The 8-lead mixture likelihood computed the way the authors' ``DiscMixLogistic`` port computes it (for timing).

    Same distribution as ``nvae_ecg.distributions.DiscMixLogistic8`` (our corrected edge thresholds), but with the
    authors' operator structure: a range check that reads two reductions back to the host, the lead coupling
    unrolled as one multiply-add per coefficient followed by a concatenation, and PixelCNN++'s difference of two
    sigmoids with a mid-point-density fallback selected by ``torch.where`` (NVAE distributions.py
    DiscMixLogistic.log_prob). It exists so that the benchmark's ``original`` mode costs what the original costs;
    ``tests/test_throughput_bench.py`` checks that it computes the same log-likelihood.
    """

    def __init__(self, param: torch.Tensor, num_mix: int, num_bits: int = 8) -> None:
        self._ours = DiscMixLogistic8(param, num_mix, num_bits)  # parameter split, clamp and tanh are the same
        self.max_val = self._ours.max_val

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """Sampling is not what this class reproduces: DiscMixLogistic8's sampler."""
        return self._ours.sample(*args, **kwargs)

    def mean(self) -> torch.Tensor:
        """DiscMixLogistic8's mixture mean."""
        return self._ours.mean()

    def log_prob(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Joint log-likelihood (B, L) of x (B, 8, L) in [0, 1]; always range-checked (the authors' assert)."""
        del validate  # the authors' code asserted the range on every call
        if not (float(x.max()) <= 1.0 and float(x.min()) >= 0.0):
            raise ValueError("log_prob expects ECGs scaled to [0, 1]")
        d = self._ours
        xs = (2.0 * x.to(d.means.dtype) - 1.0).unsqueeze(2).expand(-1, -1, d.num_mix, -1)   # B, 8, M, L
        rows = [d.means[:, i] for i in range(NUM_LEADS)]
        for k, (r, c) in enumerate(COUPLING_PAIRS):
            rows[r] = rows[r] + d.coeffs[:, k] * xs[:, c]
        centered = xs - torch.cat([m.unsqueeze(1) for m in rows], dim=1)
        inv_s = torch.exp(-d.log_scales)
        plus_in = inv_s * (centered + 1.0 / self.max_val)
        min_in = inv_s * (centered - 1.0 / self.max_val)
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        log_cdf_plus = plus_in - F.softplus(plus_in)
        log_one_minus_cdf_min = -F.softplus(min_in)
        mid_in = inv_s * centered
        log_pdf_mid = mid_in - d.log_scales - 2.0 * F.softplus(mid_in)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-10)),
                              log_pdf_mid - math.log(self.max_val / 2))
        half_bin = 1.0 / self.max_val
        log_probs = torch.where(xs < -1.0 + half_bin, log_cdf_plus,
                                torch.where(xs > 1.0 - half_bin, log_one_minus_cdf_min, log_mid))
        log_probs = log_probs.sum(dim=1) + F.log_softmax(d.logit_probs, dim=1)
        return torch.logsumexp(log_probs, dim=1)


def use_authors_structure(model) -> list[str]:
    """Switch a cNVAE-ECG to the authors' operator structure (same model, same numbers up to rounding).

    Every convolution normalises its own weight on every call (``batch_weight_norm`` off), every residual cell
    runs plain ``nn.BatchNorm`` followed by ``F.elu``/``F.silu`` (no fused BatchNorm-activation), and the decoder
    likelihood (the model's ``likelihood`` hook) is :class:`AuthorsMixture8`. The per-parameter Adamax is the
    caller's (``foreach=False``). Returns the note the benchmark prints.
    """
    model.batch_weight_norm = False
    for m in model.modules():
        if isinstance(m, BNActConv):
            m.fused = False
            if isinstance(m.act, ELU):
                m.act = torch.nn.ELU()
    cfg = model.cfg
    if cfg.representation == "signal":
        model.likelihood = partial(AuthorsMixture8, num_mix=cfg.num_mixture_dec, num_bits=cfg.num_x_bits)
    return ["original: per-layer weight normalisation, nn.BatchNorm + F.elu, the authors' mixture likelihood "
            "with its range check, per-parameter Adamax"]
