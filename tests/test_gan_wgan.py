"""WGAN-GP objectives: gradient penalty against hand calculations, zero-gradient safety, one step updates both nets."""

import pytest
import torch

from pulse2pulse.config import get_config
from pulse2pulse.models import build_discriminator, build_generator
from pulse2pulse.wgan import critic_loss, generator_loss, gradient_penalty, interpolate


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere."""

    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1) + self.b


class QuadraticCritic(torch.nn.Module):
    """D(x) = c/2 ||x||^2: its input gradient is c x."""

    def __init__(self, c=0.7):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x):
        return 0.5 * self.c * (x ** 2).flatten(1).sum(1)


def test_interpolates_lie_on_the_segments():
    torch.manual_seed(0)
    real, fake = torch.rand(4, 2, 5), torch.rand(4, 2, 5)
    alpha = torch.tensor([0.0, 1.0, 0.25, 0.5]).view(4, 1, 1)
    x_hat = interpolate(real, fake, alpha)
    assert x_hat.requires_grad and x_hat.is_leaf
    assert torch.allclose(x_hat[0], fake[0]) and torch.allclose(x_hat[1], real[1])
    assert torch.allclose(x_hat[2], 0.25 * real[2] + 0.75 * fake[2])
    rnd = interpolate(real, fake)  # random alpha: every point between its two ends
    lo, hi = torch.minimum(real, fake), torch.maximum(real, fake)
    assert bool(((rnd >= lo - 1e-6) & (rnd <= hi + 1e-6)).all())


def test_gradient_penalty_of_a_linear_critic_equals_the_hand_calculation():
    torch.manual_seed(1)
    critic = LinearCritic((3, 7))
    x = interpolate(torch.rand(5, 3, 7, dtype=torch.float64), torch.rand(5, 3, 7, dtype=torch.float64))
    gp = gradient_penalty(critic(x), x, weight=10.0)
    norm = critic.w.detach().norm()
    assert gp.item() == pytest.approx(10.0 * (norm.item() - 1.0) ** 2, rel=1e-6)
    gp.backward()  # d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    expected = 20.0 * (norm - 1.0) * critic.w.detach() / norm
    assert torch.allclose(critic.w.grad, expected.to(critic.w.grad.dtype), rtol=1e-5, atol=1e-7)


def test_gradient_penalty_of_a_quadratic_critic_uses_the_interpolates():
    torch.manual_seed(2)
    critic = QuadraticCritic(0.7)
    real = torch.rand(4, 2, 3, dtype=torch.float64)
    fake = torch.rand(4, 2, 3, dtype=torch.float64)
    alpha = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=torch.float64).view(4, 1, 1)
    x = interpolate(real, fake, alpha)
    gp = gradient_penalty(critic(x), x, weight=10.0)
    x_hat = alpha * real + (1 - alpha) * fake
    norms = 0.7 * x_hat.flatten(1).norm(dim=1)
    assert gp.item() == pytest.approx(10.0 * ((norms - 1.0) ** 2).mean().item(), rel=1e-6)


def test_gradient_penalty_is_zero_gradient_safe():
    x = torch.rand(3, 2, 4, requires_grad=True)
    critic = LinearCritic((2, 4)).float()
    with torch.no_grad():
        critic.w.zero_()
    gp = gradient_penalty(critic(x), x, weight=10.0)
    assert gp.item() == pytest.approx(10.0)
    gp.backward()
    assert torch.isfinite(critic.w.grad).all()
    # A critic that ignores its input entirely: the input gradient is absent, the penalty is weight * 1.
    const = torch.nn.Parameter(torch.tensor(0.3))
    x2 = torch.rand(3, 2, 4, requires_grad=True)
    gp2 = gradient_penalty(const.expand(3) * 1.0, x2, weight=10.0)
    assert gp2.item() == pytest.approx(10.0)


def test_critic_loss_parts_are_consistent():
    torch.manual_seed(3)
    critic = LinearCritic((2, 6)).float()
    real, fake = torch.rand(4, 2, 6), torch.rand(4, 2, 6)
    parts = critic_loss(critic, real, fake, None, weight=10.0)
    d_real, d_fake = critic(real).mean(), critic(fake).mean()
    assert parts["wasserstein"].item() == pytest.approx((d_real - d_fake).item(), rel=1e-5, abs=1e-6)
    expected_gp = 10.0 * (critic.w.detach().norm().item() - 1.0) ** 2
    assert parts["gp"].item() == pytest.approx(expected_gp, rel=1e-5)
    assert parts["loss"].item() == pytest.approx((d_fake - d_real).item() + expected_gp, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("model,cond", [("wavegan_star", "none"), ("pulse2pulse", "projection")])
def test_one_wgan_gp_step_changes_both_networks(model, cond):
    torch.manual_seed(4)
    cfg = get_config("tiny", model=model, cond_discriminator=cond)
    g, d = build_generator(cfg), build_discriminator(cfg)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.9))
    g0 = {k: v.clone() for k, v in g.state_dict().items()}
    d0 = {k: v.clone() for k, v in d.state_dict().items()}
    real = torch.rand(3, 8, 5000)
    y = torch.zeros(3, 9)
    y[:, 2] = 1
    y_d = y if cond == "projection" else None
    with torch.no_grad():
        fake = g(g.noise(3), y)
    parts = critic_loss(d, real, fake, y_d)
    opt_d.zero_grad()
    parts["loss"].backward()
    opt_d.step()
    assert all(torch.equal(g0[k], v) for k, v in g.state_dict().items())  # the critic step leaves G alone
    d1 = {k: v.clone() for k, v in d.state_dict().items()}
    assert all(not torch.equal(d0[k], d1[k]) for k in d1 if k.endswith("weight"))
    for p in d.parameters():
        p.requires_grad_(False)
    loss = generator_loss(d, g(g.noise(3), y), y_d)
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    assert all(torch.equal(d1[k], v) for k, v in d.state_dict().items())  # the generator step leaves D alone
    changed = [k for k, v in g.state_dict().items() if not torch.equal(g0[k], v)]
    assert "class_embedding" in changed and len(changed) == len(g0)
