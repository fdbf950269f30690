"""SSSD-ECG diffusion against diffusers' DDPMScheduler, the 100 Hz / amplitude / 8 -> 12 lead adaptations, and a
tiny model that overfits 4 ECGs."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from nvae_ecg.data.bounds import Bounds
from nvae_ecg.leads import eight_to_twelve, limb_identity_error
from sssd_ecg.config import get_config
from sssd_ecg.data import from_model, resample, to_model
from sssd_ecg.diffusion import Diffusion
from sssd_ecg.model import build_model


def _oracle(dtype=torch.float64) -> DDPMScheduler:
    s = DDPMScheduler(num_train_timesteps=200, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                      variance_type="fixed_small", prediction_type="epsilon", clip_sample=False)
    # diffusers holds its schedule in float32; recompute it the same way in float64 for a 1e-12 comparison.
    s.betas = torch.linspace(1e-4, 0.02, 200, dtype=dtype)
    s.alphas = 1 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, 0)
    s.one = torch.tensor(1.0, dtype=dtype)
    s.set_timesteps(200)
    return s


def test_schedule_values_and_diffusers_float32_schedule():
    d = Diffusion()
    assert round(float(d.alpha_bar[199]), 5) == 0.13218
    assert d.betas[0] == 1e-4 and abs(float(d.betas[-1]) - 0.02) < 1e-15
    plain = DDPMScheduler(num_train_timesteps=200, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    torch.testing.assert_close(d.alpha_bar.float(), plain.alphas_cumprod, rtol=1e-6, atol=0)


def test_forward_noising_and_reverse_step_equal_ddpm_scheduler():
    d, s = Diffusion(), _oracle()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 8, 40, dtype=torch.float64, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    t = torch.tensor([0, 1, 57, 198, 199])
    torch.testing.assert_close(d.q_sample(x0, t, noise), s.add_noise(x0, noise, t), rtol=0, atol=1e-12)
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    for step in (199, 100, 1, 0):
        z = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        ours = d.p_step(x0, eps, step, z)
        ref = s.step(eps, step, x0, generator=torch.Generator().manual_seed(step)).prev_sample
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_resampling_round_trip_amplitude_and_twelve_leads():
    x = np.random.default_rng(0).random((2, 8, 5000)).astype(np.float32)
    assert resample(x, 5000) is x  # the native length is the identity, exactly
    fs, tt = 500.0, np.arange(5000) / 500.0
    slow = np.broadcast_to(0.5 + 0.3 * np.sin(2 * np.pi * 7.0 * tt) + 0.1 * np.cos(2 * np.pi * 31.0 * tt),
                           (8, 5000)).astype(np.float64)
    down = resample(slow, 1000)
    assert down.shape == (8, 1000)
    back = resample(down, 5000)
    # Band-limited content below 50 Hz survives 5000 -> 1000 -> 5000 (edges excluded: the FIR's zero padding).
    np.testing.assert_allclose(back[:, 250:-250], slow[:, 250:-250], atol=2e-3)
    assert np.abs(resample(torch.from_numpy(slow), 1000).numpy() - down).max() == 0
    b = Bounds(np.full(8, -1.5), np.linspace(1.0, 2.0, 8))
    u = torch.rand(3, 8, 100, dtype=torch.float64)
    for amp in ("pm1", "unit", "mv"):
        torch.testing.assert_close(from_model(to_model(u, amp, b), amp, b), u, rtol=0, atol=1e-12)
    assert to_model(u, "pm1").min() >= -1 and to_model(u, "pm1").max() <= 1
    x12 = eight_to_twelve(b.from_unit(from_model(2 * u - 1, "pm1")).numpy())
    assert x12.shape == (3, 12, 100) and limb_identity_error(x12) < 1e-12


@pytest.mark.slow
def test_small_model_overfits_four_ecgs():
    torch.manual_seed(0)
    cfg = get_config("tiny", length=64, res_channels=48, skip_channels=48, num_res_layers=3, s4_d_state=16)
    m, d = build_model(cfg), Diffusion.from_config(cfg)
    tt = torch.linspace(0, 1, 64)
    x0 = torch.stack([torch.sin(2 * np.pi * (k + 1) * tt).expand(8, 64) for k in range(4)]) * 0.8
    y = torch.eye(9)[[0, 1, 2, 3]]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)

    def eval_loss():
        with torch.no_grad():
            gg = torch.Generator().manual_seed(123)
            return float(sum(d.loss(m, x0, y, generator=gg) for _ in range(8)) / 8)

    start = eval_loss()
    assert abs(start - 1.0) < 0.1  # zero initial prediction: the MSE of the noise itself
    for _ in range(250):
        opt.zero_grad()
        d.loss(m, x0.repeat(4, 1, 1), y.repeat(4, 1), generator=g).backward()
        opt.step()
    assert eval_loss() < 0.12 * start
    # Each label's sample is nearest to that label's training ECG.
    x = d.sample(m, y, 64, generator=torch.Generator().manual_seed(5))
    dist = (x.unsqueeze(1) - x0.unsqueeze(0)).abs().mean(dim=(2, 3))  # (sample, training ECG)
    assert dist.argmin(dim=1).tolist() == [0, 1, 2, 3]
