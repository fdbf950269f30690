"""The DDPM of SSSD-ECG: linear beta schedule, forward noising q(x_t | x_0), the epsilon-prediction MSE loss and
ancestral sampling with sigma_t^2 = beta-tilde_t.

After Ho et al. 2020 as SSSD-ECG uses it (AI4HealthUOL/SSSD-ECG ``src/sssd/utils/util.py``:
``calc_diffusion_hyperparams``, ``training_loss_label``, ``sampling``; re-implemented, not copied): T = 200
betas linear from 1e-4 to 0.02, t uniform in {0, .., T-1} (0-based, as their code feeds the integer step to the
embedding), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, loss MSE(eps_theta(x_t, y, t), eps); the reverse step
x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t) + sigma_t z (no noise at t = 0), 200
network evaluations per ECG. The schedule is held in float64 and cast where used; ``diffusers``' DDPMScheduler
(linear, ``fixed_small``, epsilon, no clipping) is the test oracle of both directions (tests/test_sssd_diffusion.py).

Example::

    python -c "from sssd_ecg.diffusion import Diffusion; print(float(Diffusion().alpha_bar[-1]))"
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tqdm import tqdm


class Diffusion:
    """Schedule tensors (float64, CPU; moved and cast on use) and the three operations of a DDPM."""

    def __init__(self, num_steps: int = 200, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_steps = int(num_steps)
        self.betas = torch.linspace(beta_start, beta_end, self.num_steps, dtype=torch.float64)
        self.alphas = 1 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # beta-tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t); at t = 0 it is 0 and unused (no noise is added).
        self.sigmas = (self.betas * (1 - prev) / (1 - self.alpha_bar)).sqrt()

    @classmethod
    def from_config(cls, cfg) -> "Diffusion":
        """The schedule of an :class:`sssd_ecg.config.SSSDConfig`."""
        return cls(cfg.num_steps, cfg.beta_start, cfg.beta_end)

    @staticmethod
    def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, 1) in the dtype and device of ``like``."""
        return values.to(like.device)[t.to(like.device)].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, for integer steps t (B,)."""
        ab = self._at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def loss(self, model, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
             call=None) -> torch.Tensor:
        """MSE between eps and eps_theta(x_t, y, t) with t uniform and eps standard normal (one draw per ECG).

        ``call`` (default ``model``) evaluates the network, e.g. its DistributedDataParallel wrapper.
        """
        t = torch.randint(self.num_steps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        pred = (call or model)(self.q_sample(x0, t, noise), y, t)
        return F.mse_loss(pred.float(), noise.float())

    def p_step(self, x: torch.Tensor, eps: torch.Tensor, t: int, noise: torch.Tensor | None) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} given eps_theta; ``noise`` (standard normal) is used only for t > 0."""
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        alpha, ab, sigma = (self._at(v, tt, x) for v in (self.alphas, self.alpha_bar, self.sigmas))
        x = (x - (1 - alpha) / (1 - ab).sqrt() * eps) / alpha.sqrt()
        if t > 0:
            x = x + sigma * noise
        return x

    @torch.no_grad()
    def sample(self, model, y: torch.Tensor, length: int, generator: torch.Generator | None = None,
               cache_kernels: bool = True, progress: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draw (B, channels, length) signals for labels y (B, K) by the T reverse steps, in the model's space.

        With ``cache_kernels`` the S4 kernels are computed once for the whole batch instead of at each of the
        T network evaluations (same result: they depend on the weights only).
        """
        device = y.device
        channels = model.cfg.num_channels
        x = torch.randn((y.shape[0], channels, length), device=device, dtype=dtype, generator=generator)
        cache = model.cached_kernels() if cache_kernels else nullcontext()
        with cache:
            steps = range(self.num_steps - 1, -1, -1)
            for t in tqdm(steps, desc="denoising", leave=False, disable=not progress):
                tt = torch.full((y.shape[0],), t, device=device, dtype=torch.long)
                eps = model(x, y, tt).to(dtype)
                noise = torch.randn(x.shape, device=device, dtype=dtype, generator=generator) if t > 0 else None
                x = self.p_step(x, eps, t, noise)
        return x

