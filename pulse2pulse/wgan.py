"""WGAN-GP objectives of the GAN baselines: critic loss with gradient penalty and generator loss.

Gulrajani et al. 2017 ("Improved Training of Wasserstein GANs", Algorithm 1), as
used by WaveGAN and by Thambawita et al. 2021 (vlbthambawita/Pulse2Pulse,
``utils/utils.py: calc_gradient_penalty`` and the training loops of
``pulse2pulse_train.py``/``wavegan_star_train.py``):

- critic: ``D(fake) - D(real) + lambda * E[(||grad_x D(x_hat)||_2 - 1)^2]`` with
  ``x_hat = alpha * real + (1 - alpha) * fake``, ``alpha ~ U[0, 1]`` per example,
  lambda = 10; the Wasserstein estimate is ``D(real) - D(fake)``;
- generator: ``-D(G(z, y))``.

Real, fake and interpolated batches go through the critic in one forward pass
(one backward too), which is what DistributedDataParallel needs and is faster on
a GPU; the gradient norm of an exactly zero gradient has a zero sub-gradient, so
a saturated critic gives a finite penalty of lambda and finite weight gradients.

Example::

    python -c "import torch; from pulse2pulse.wgan import gradient_penalty; x = torch.ones(2, 3, requires_grad=True); print(gradient_penalty((3 * x).sum(1), x))"
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

GP_WEIGHT = 10.0


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Random points on the segments between real and fake examples (a leaf tensor that requires grad)."""
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    if alpha is None:
        alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, dtype=real.dtype)
    x_hat = alpha * real.detach() + (1.0 - alpha) * fake.detach()
    return x_hat.requires_grad_(True)


def gradient_penalty(scores: torch.Tensor, inputs: torch.Tensor, weight: float = GP_WEIGHT) -> torch.Tensor:
    """``weight * mean_i (||d scores_i / d inputs_i||_2 - 1)^2``, differentiable w.r.t. the critic's weights."""
    (grads,) = torch.autograd.grad(scores.float().sum(), inputs, create_graph=True, allow_unused=True)
    if grads is None:  # a critic that ignores its input has a zero input gradient
        grads = torch.zeros_like(inputs)
    norms = torch.linalg.vector_norm(grads.float().flatten(1), dim=1)
    return weight * ((norms - 1.0) ** 2).mean()


def critic_loss(critic: Callable, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None,
                weight: float = GP_WEIGHT, autocast=None, alpha: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """WGAN-GP critic loss of one batch; returns tensors 'loss', 'wasserstein', 'gp', 'd_real', 'd_fake'.

    ``y`` (labels of the real batch, also used for the fake one) is passed to the
    critic only when it is not None (projection discriminator).
    """
    b = real.shape[0]
    x_hat = interpolate(real, fake, alpha)
    x = torch.cat((real.detach(), fake.detach(), x_hat), dim=0)
    with autocast if autocast is not None else nullcontext():
        scores = critic(x) if y is None else critic(x, torch.cat((y, y, y), dim=0))
    scores = scores.float()
    d_real, d_fake, d_hat = scores[:b], scores[b:2 * b], scores[2 * b:]
    gp = gradient_penalty(d_hat, x_hat, weight)
    d_real_m, d_fake_m = d_real.mean(), d_fake.mean()
    return {"loss": d_fake_m - d_real_m + gp, "wasserstein": d_real_m - d_fake_m, "gp": gp,
            "d_real": d_real_m, "d_fake": d_fake_m}


def generator_loss(critic: Callable, fake: torch.Tensor, y: torch.Tensor | None, autocast=None) -> torch.Tensor:
    """``-mean D(G(z, y))`` (labels passed to the critic only when not None)."""
    with autocast if autocast is not None else nullcontext():
        scores = critic(fake) if y is None else critic(fake, y)
    return -scores.float().mean()


def train_step(generator, critic, opt_g, opt_d, real: torch.Tensor, y: torch.Tensor, y_critic: torch.Tensor | None,
               gp_weight: float = GP_WEIGHT, autocast=None, generator_update: bool = True,
               generator_call: Callable | None = None, critic_call: Callable | None = None):
    """One WGAN-GP step: a critic update with gradient penalty, then (if ``generator_update``) a generator update.

    Returns the critic's loss parts and the generator loss (None without a generator update). ``generator_call``
    / ``critic_call`` are what runs the forward passes that need gradients (the DDP wrappers under torchrun);
    ``generator`` / ``critic`` are the modules themselves. The fake batch carries the real batch's labels.
    """
    amp = autocast if autocast is not None else nullcontext()
    g_call = generator_call if generator_call is not None else generator
    d_call = critic_call if critic_call is not None else critic
    b = real.shape[0]
    critic.requires_grad_(True)
    with torch.no_grad(), amp:
        fake = generator(generator.noise(b, device=real.device).to(real.dtype), y)
    parts = critic_loss(d_call, real, fake.to(real.dtype), y_critic, gp_weight, autocast)
    opt_d.zero_grad(set_to_none=True)
    parts["loss"].backward()
    opt_d.step()
    g_loss = None
    if generator_update:
        critic.requires_grad_(False)  # the generator's backward needs no critic weight gradients
        opt_g.zero_grad(set_to_none=True)
        with amp:
            fake = g_call(generator.noise(b, device=real.device).to(real.dtype), y)
        g_loss = generator_loss(critic, fake, y_critic, autocast)
        g_loss.backward()
        opt_g.step()
    return parts, g_loss
