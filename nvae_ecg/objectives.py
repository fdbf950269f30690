"""Training objectives of cNVAE-ECG: KL warm-up and balancing, reconstruction loss, importance weights.

Ports of the loss helpers in NVAE's ``utils.py`` (Vahdat & Kautz 2020, Sec. 3.2
and Appendix A: KL warm-up, KL balancing across groups, active units) adapted to
the 1-D ECG model: the reconstruction loss sums the 8-lead mixture
log-likelihood over time, and ``log_iw`` returns the single-draw importance
weight ``log p(x|z) + log p(z) - log q(z|x)``; an importance-weighted NLL draws
K independent forward passes and takes ``logsumexp - log K`` over them (the
authors' port subtracted log K after a single draw).

Example::

    python -c "from nvae_ecg.objectives import kl_balancer_coeff; print(kl_balancer_coeff(3, [20, 10, 5]))"
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from nvae_ecg.distributions import DiscMixLogistic8


def kl_coeff(step: int, total_step: int, constant_step: int, min_kl_coeff: float) -> float:
    """KL warm-up coefficient: linear from min_kl_coeff to 1 over total_step steps after constant_step."""
    # NVAE utils.kl_coeff; total_step == 0 means no warm-up (NVAE would divide by zero).
    if total_step < 0:
        raise ValueError(f"kl_coeff: total_step must be >= 0, got {total_step}")
    if total_step == 0:
        return 1.0
    return max(min((step - constant_step) / total_step, 1.0), min_kl_coeff)


def kl_balancer_coeff(num_scales: int, groups_per_scale: Sequence[int], fun: str = "square") -> torch.Tensor:
    """Per-group KL balancing weights alpha_i in decoder order (NVAE utils.kl_balancer_coeff), min 1."""
    if len(groups_per_scale) != num_scales:
        raise ValueError(f"groups_per_scale has {len(groups_per_scale)} entries, expected num_scales={num_scales}")
    parts = []
    for i in range(num_scales):
        # Decoder order: lowest resolution (scale num_scales - 1) first; i counts scales from the top.
        n = groups_per_scale[num_scales - i - 1]
        if fun == "equal":
            c = 1.0
        elif fun == "linear":
            c = 2.0 ** i
        elif fun == "sqrt":
            c = float(np.sqrt(2.0 ** i))
        elif fun == "square":
            c = (2.0 ** i) ** 2 / n
        else:
            raise ValueError(f"unknown KL balancing function {fun!r}; choose equal, linear, sqrt or square")
        parts.append(torch.full((n,), c))
    coeff = torch.cat(parts)
    return coeff / coeff.min()


def kl_balancer(kl_all: Sequence[torch.Tensor], kl_coeff: float = 1.0, kl_balance: bool = False,
                alpha_i: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted KL (B,), per-group coefficients and mean per-group KL (NVAE utils.kl_balancer).

    During warm-up (kl_coeff < 1) with kl_balance, groups are re-weighted in proportion to their batch-mean KL
    divided by alpha_i, which keeps low-KL groups from collapsing (NVAE Appendix A).
    """
    kl = torch.stack(list(kl_all), dim=1)                      # B, G
    kl_vals = kl.mean(dim=0)
    if kl_balance and kl_coeff < 1.0:
        if alpha_i is None:
            raise ValueError("kl_balancer: kl_balance=True needs alpha_i (see kl_balancer_coeff)")
        alpha = alpha_i.to(kl).unsqueeze(0)
        coeff_i = kl.abs().mean(dim=0, keepdim=True) + 0.01
        coeff_i = coeff_i / alpha * coeff_i.sum()
        coeff_i = coeff_i / coeff_i.mean(dim=1, keepdim=True)
        kl = (kl * coeff_i.detach()).sum(dim=1)
        kl_coeffs = coeff_i.squeeze(0)
    else:
        kl = kl.sum(dim=1)
        kl_coeffs = torch.ones_like(kl_vals)
    return kl_coeff * kl, kl_coeffs, kl_vals


def reconstruction_loss(dist: DiscMixLogistic8, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """Negative log-likelihood per record (B,): -sum over time of the 8-lead joint log-probability."""
    return -dist.log_prob(x, validate=validate).sum(dim=1)


def compute_loss(model, x, y, kl_w: float, alpha_i, wdn_coeff: float, *, kl_balance: bool,
                 spectral_regularization: bool, demographics=None):
    """NELBO-based training loss of one batch (NVAE train.py) and its parts (all tensors).

    ``model`` is the AutoEncoder (or its DistributedDataParallel wrapper), ``kl_w`` the KL warm-up weight,
    ``alpha_i`` the KL balancing coefficients (:func:`kl_balancer_coeff`), ``wdn_coeff`` the weight of the BatchNorm
    scale (and, with ``spectral_regularization``, spectral) penalty. Returns (loss, parts, model output).
    """
    # The loss uses the analytic KL; log q and log p are for the IW estimate.
    out = model(x, y, log_probs=False, demographics=demographics)
    core = model.module if isinstance(model, DistributedDataParallel) else model
    dist_out = core.decoder_output(out.logits)
    # The loaders clip the data to [0, 1], so the likelihood's range check (a host sync) is skipped here.
    recon = reconstruction_loss(dist_out, x, validate=False)
    kl, kl_coeffs, kl_vals = kl_balancer(out.kl_all, kl_w, kl_balance=kl_balance, alpha_i=alpha_i)
    nelbo = recon + kl
    loss = nelbo.mean()
    bn_loss = core.batchnorm_loss()
    loss = loss + wdn_coeff * bn_loss
    if spectral_regularization:
        loss = loss + wdn_coeff * core.spectral_norm_parallel()
    # kl_vals holds the batch-mean KL of each group, unweighted: their sum is the mean KL per record.
    kl_mean, recon_mean = kl_vals.sum(), recon.mean()
    return loss, {"recon": recon_mean, "kl": kl_mean, "nelbo": recon_mean + kl_mean, "bn_loss": bn_loss}, out


def log_iw(dist: DiscMixLogistic8, x: torch.Tensor, log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Log importance weight of one draw (B,): log p(x|z) + log p(z) - log q(z|x)."""
    return -reconstruction_loss(dist, x) - log_q + log_p


def num_active_units(kl_diag: Sequence[torch.Tensor], threshold: float = 0.1) -> int:
    """Number of latent channels whose batch-mean KL exceeds threshold (NVAE's active-unit count)."""
    return int(sum(int((k > threshold).sum()) for k in kl_diag))
