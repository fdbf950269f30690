"""Tests of the conditional 1-D NVAE (nvae_ecg.model), its config registry and the objectives.

Uses the ``tiny`` config on CPU; the ``paper`` config is exercised only by the slow test.

Example::

    python -m pytest tests/test_model.py -q            # fast tests
    python -m pytest tests/test_model.py -q -m slow    # paper-size build, forward/backward and sampling
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from nvae_ecg import objectives as O
from nvae_ecg.config import CONFIGS, ModelConfig, get_config
from nvae_ecg.distributions import DiscMixLogistic8
from nvae_ecg.model import AutoEncoder, VAEOutput, count_parameters, groups_per_scale
from nvae_ecg.neural_operations import SE, Conv1D


@pytest.fixture(autouse=True)
def single_thread(request):
    """Run the small tests on one intra-op thread: their tensors are tiny, and on a busy 2-core machine OpenMP
    barriers made steps 2-10x slower and erratic. Slow (paper-size) tests keep the default; restored after."""
    n = torch.get_num_threads()
    if request.node.get_closest_marker("slow") is None:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sine_batch(b, length, seed=0):
    """Sine-like 8-lead ECG stand-ins on the 8-bit grid in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / 500.0
    phase = torch.rand(b, 8, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    rate = 1.0 + torch.rand(b, 1, 1, generator=g, dtype=torch.float64)
    x = 0.5 + 0.3 * torch.sin(2 * math.pi * rate * t + phase) + 0.1 * torch.sin(6 * math.pi * rate * t + phase)
    return (torch.round(x.clamp(0, 1) * 255) / 255).float()


def multi_hot(b, k=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(b, k, generator=g) < 0.3).float()
    y[:, 0] = 1.0
    return y


def tiny(length=96, **kw):
    torch.manual_seed(0)
    return AutoEncoder(get_config("tiny", length=length, **kw))


# ---- config --------------------------------------------------------------------------------------------------------
def test_config_registry_and_validation():
    assert set(CONFIGS) >= {"paper", "small", "tiny"}
    paper = get_config("paper")
    assert paper == ModelConfig()
    assert (paper.num_channels_enc, paper.num_latent_scales, paper.num_groups_per_scale) == (12, 3, 20)
    assert (paper.num_mixture_dec, paper.arch_instance, paper.length) == (20, "res_bnelu", 5000)
    assert paper.padded_length == 5056 and paper.total_downsampling == 64
    cfg = get_config("tiny", length=123)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert CONFIGS["tiny"].length == 5000  # overrides do not mutate the registry
    with pytest.raises(ValueError, match="available: demo, paper, small, tiny"):
        get_config("huge")
    with pytest.raises(ValueError, match="num_chanels_enc"):
        get_config("tiny", num_chanels_enc=3)
    with pytest.raises(ValueError, match="unknown ModelConfig key"):
        ModelConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})
    with pytest.raises(ValueError, match="arch_instance"):
        get_config("tiny", arch_instance="mbconv")
    with pytest.raises(ValueError, match="int"):
        get_config("tiny", length=5000.0)
    with pytest.raises(ValueError, match="postprocess"):
        get_config("tiny", num_postprocess_blocks=2)


def test_groups_per_scale_halves_with_floor():
    assert groups_per_scale(3, 20, True, 1) == [20, 10, 5]
    assert groups_per_scale(3, 20, False, 1) == [20, 20, 20]
    assert groups_per_scale(4, 4, True, 2) == [4, 2, 2, 2]
    assert AutoEncoder(get_config("tiny", length=32)).groups_per_scale == [2, 1]


# ---- shapes and lengths ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [5000, 4999, 37, 64])
def test_forward_and_sample_shapes_for_odd_and_even_lengths(length):
    model = tiny(length)
    b = 2
    x, y = sine_batch(b, length), multi_hot(b)
    out = model(x, y)
    assert isinstance(out, VAEOutput)
    assert out.logits.shape == (b, 33 * model.cfg.num_mixture_dec, length)
    assert out.log_q.shape == (b,) and out.log_p.shape == (b,)
    n_groups = sum(model.groups_per_scale)
    assert len(out.kl_all) == n_groups and len(out.kl_diag) == n_groups
    assert all(k.shape == (b,) for k in out.kl_all)
    assert all(k.shape == (model.cfg.num_latent_per_group,) for k in out.kl_diag)
    dist = model.decoder_output(out.logits)
    lp = dist.log_prob(x)
    assert lp.shape == (b, length) and torch.isfinite(lp).all()
    with torch.no_grad():
        s = model.sample(y, t=0.8)
    assert s.shape == (b, 8, length)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert model.sample_logits(y).shape == (b, 33 * model.cfg.num_mixture_dec, length)


def test_padding_replicates_last_sample_and_output_is_cropped():
    """The network runs on the right-padded signal; the logits handed to the likelihood are its first L samples."""
    model = tiny(37)
    assert model.padded_length == 40 and model.top_length == 10
    x, y = sine_batch(2, 37), multi_hot(2)
    padded = model._pad(x)
    assert padded.shape == (2, 8, 40)
    torch.testing.assert_close(padded[..., :37], 2 * x - 1)
    torch.testing.assert_close(padded[..., 37:], (2 * x[..., -1:] - 1).expand(2, 8, 3))
    captured = {}
    handle = model.output_layer.register_forward_hook(lambda mod, inp, out: captured.update(full=out))
    try:
        out = model(x, y)
    finally:
        handle.remove()
    assert captured["full"].shape[-1] == 40
    torch.testing.assert_close(out.logits, captured["full"][..., :37])


def test_forward_rejects_bad_shapes():
    model = tiny(64)
    y = multi_hot(2)
    with pytest.raises(ValueError, match=r"\(B, 8, 64\)"):
        model(torch.rand(2, 8, 63), y)
    with pytest.raises(ValueError, match=r"\(B, 8, 64\)"):
        model(torch.rand(2, 12, 64), y)
    with pytest.raises(ValueError, match="class labels"):
        model(torch.rand(2, 8, 64), torch.ones(2, 8))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(y, t=0.0)


@pytest.mark.parametrize("arch", ["res_bnelu", "res_bnswish"])
def test_arch_instances_run_at_length_5000(arch):
    model = tiny(5000, arch_instance=arch)
    x, y = sine_batch(2, 5000), multi_hot(2)
    out = model(x, y)
    assert out.logits.shape[-1] == 5000
    assert torch.isfinite(model.decoder_output(out.logits).log_prob(x)).all()
    with torch.no_grad():
        assert model.sample(y).shape == (2, 8, 5000)


# ---- precision -------------------------------------------------------------------------------------------------------
def test_forward_in_float64():
    model = tiny(50).double()
    x, y = sine_batch(2, 50).double(), multi_hot(2).double()
    out = model(x, y)
    assert out.logits.dtype == torch.float64 and out.kl_all[0].dtype == torch.float64
    recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
    assert recon.dtype == torch.float64 and torch.isfinite(recon).all()
    assert model.sample(y).dtype == torch.float64


def test_bf16_autocast_keeps_likelihood_and_kl_in_float32():
    model = tiny(64)
    x, y = sine_batch(2, 64), multi_hot(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, y)
        recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
    assert out.logits.dtype == torch.bfloat16
    assert recon.dtype == torch.float32 and all(k.dtype == torch.float32 for k in out.kl_all)
    loss = (recon + sum(out.kl_all)).mean()
    assert torch.isfinite(loss)
    loss.backward()


# ---- gradients, conditioning, regularisers ---------------------------------------------------------------------------
def test_gradient_reaches_every_parameter():
    """Every parameter gets a gradient from the NELBO plus the two regularisers.

    No parameter is unused by construction: the top group's q comes from enc0 + enc_sampler[0], every other group
    uses its dec_sampler (prior), its encoder combiner and enc_sampler (posterior), the class table feeds both the
    decoder start and the encoder stem, and SE/BN affine parameters sit on every residual branch. Class rows of H
    that are inactive in the batch get a zero (not missing) gradient, so all classes are made active here.
    """
    model = tiny(48)
    x = sine_batch(3, 48)
    y = torch.ones(3, 9)
    out = model(x, y)
    recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
    kl, _, _ = O.kl_balancer(out.kl_all)
    loss = (recon + kl).mean() + 1e-2 * model.spectral_norm_parallel() + 1e-2 * model.batchnorm_loss()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    # The only exactly-zero gradients allowed are behind an SE block's 4-unit ReLU: when a hidden unit is inactive
    # for every record (common with 4 channels at init) its in/out weights get exactly 0, by the data, not the graph.
    behind_relu = set()
    for m in model.modules():
        if isinstance(m, SE):
            behind_relu |= {id(m.se[0].weight), id(m.se[0].bias), id(m.se[2].weight)}
    zero = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0.0 and id(p) not in behind_relu]
    assert zero == []
    assert bool((model.class_features_table.grad.abs().sum(dim=(1, 2)) > 0).all())  # every class row learns
    assert float(model.class_to_enc.weight.grad.abs().sum()) > 0.0


def test_class_features_sum_over_active_classes():
    model = tiny(64)
    y = torch.tensor([[1.0, 0, 1, 0, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0]])
    h = model.class_features(y)
    eye = torch.eye(9)
    per_class = model.class_features(eye)                          # 9, C_top, L_top
    torch.testing.assert_close(h[0], per_class[0] + per_class[2] + per_class[7])
    torch.testing.assert_close(h[1], per_class[1])
    assert h.shape == (2, model.cfg.num_channels_dec * 4, model.top_length)
    # The encoder sees the class too: with the same noise, a different class changes the posterior.
    model.eval()
    x = sine_batch(1, 64)
    torch.manual_seed(3)
    a = model(x, y[:1]).log_q
    torch.manual_seed(3)
    b = model(x, y[1:]).log_q
    assert not torch.allclose(a, b)


def test_spectral_norm_parallel_converges_to_largest_singular_values():
    model = tiny(32)
    with torch.no_grad():                                           # make the weights less trivial than at init
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    with torch.no_grad():
        true = sum(torch.linalg.matrix_norm(m.normalized_weight().flatten(1), ord=2)
                   for m in model.modules() if isinstance(m, Conv1D))
    first = model.spectral_norm_parallel()
    for _ in range(3):
        est = model.spectral_norm_parallel()
    est_v = float(est.detach())
    assert est.dim() == 0 and est_v > 0
    assert est_v == pytest.approx(float(true), rel=1e-3)
    assert float(first.detach()) <= float(true) * (1 + 1e-5)                  # u^T W v never exceeds sigma_max
    est.backward()
    assert model.stem.log_weight_norm.grad is not None


def test_batchnorm_loss_is_sum_of_max_abs_gamma():
    model = tiny(32)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.normal_()
    expected = sum(m.weight.abs().max() for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    got = model.batchnorm_loss()
    assert got.dim() == 0 and float(got.detach()) > 0
    torch.testing.assert_close(got, expected)


# ---- learning ------------------------------------------------------------------------------------------------
def test_tiny_model_overfits_a_few_ecgs():
    """Sixty Adamax steps on four sine-like ECGs cut the NELBO per sample point substantially."""
    length = 128
    model = tiny(length)
    x, y = sine_batch(4, length, seed=1), multi_hot(4, seed=1)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2)
    history = []
    for _ in range(60):
        out = model(x, y)
        recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
        kl, _, _ = O.kl_balancer(out.kl_all)
        loss = (recon + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()) / (length * 8))
    # Starts near log(256) ~ 5.5 nats per lead-sample (an uninformed 8-bit model); must fall by a quarter.
    assert history[-1] < 0.75 * history[0], history
    assert history[-1] < min(history[:10]), history


# ---- objectives ----------------------------------------------------------------------------------------------
def test_objectives_match_nvae_definitions():
    assert O.kl_coeff(0, 100, 10, 1e-4) == 1e-4
    assert O.kl_coeff(60, 100, 10, 1e-4) == pytest.approx(0.5)
    assert O.kl_coeff(1000, 100, 10, 1e-4) == 1.0
    assert O.kl_coeff(5, 0, 0, 1e-4) == 1.0
    alpha = O.kl_balancer_coeff(3, [20, 10, 5], "square")
    # Decoder order: 5 top groups (coefficient 1/5), 10 (4/10), 20 (16/20), normalised to min 1.
    expected = torch.cat([torch.full((5,), 0.2), torch.full((10,), 0.4), torch.full((20,), 0.8)]) / 0.2
    torch.testing.assert_close(alpha, expected)
    kl_all = [torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])]
    kl, coeffs, vals = O.kl_balancer(kl_all, kl_coeff=0.5)
    torch.testing.assert_close(kl, torch.tensor([0.5, 2.5]))
    torch.testing.assert_close(vals, torch.tensor([2.0, 1.0]))
    kl_b, coeffs_b, _ = O.kl_balancer(kl_all, kl_coeff=0.5, kl_balance=True, alpha_i=torch.tensor([1.0, 1.0]))
    assert coeffs_b.shape == (2,) and float(coeffs_b.mean()) == pytest.approx(1.0)
    assert float(coeffs_b[0]) > float(coeffs_b[1])  # the group with more KL gets the larger weight
    assert O.num_active_units([torch.tensor([0.05, 0.2]), torch.tensor([1.0, 0.0])]) == 2


def test_log_iw_is_single_draw_elbo_integrand():
    model = tiny(40)
    x, y = sine_batch(2, 40), multi_hot(2)
    with torch.no_grad():
        out = model(x, y)
        dist = model.decoder_output(out.logits)
        liw = O.log_iw(dist, x, out.log_q, out.log_p)
        recon = O.reconstruction_loss(dist, x)
    torch.testing.assert_close(liw, -recon - out.log_q + out.log_p)
    # log q - log p summed over groups is a one-sample estimate of the summed analytic KL (same z).
    assert liw.shape == (2,) and torch.isfinite(liw).all()


# ---- paper configuration -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_paper_config_builds_trains_one_step_and_samples():
    torch.manual_seed(0)
    model = AutoEncoder(get_config("paper"))
    n = count_parameters(model)
    print(f"paper config: {n} parameters, groups per scale {model.groups_per_scale}")
    assert model.groups_per_scale == [20, 10, 5]
    assert n > 1_000_000
    x, y = sine_batch(2, 5000), multi_hot(2)
    t0 = time.perf_counter()
    out = model(x, y)
    assert out.logits.shape == (2, 33 * 20, 5000) and len(out.kl_all) == 35
    recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
    kl, _, _ = O.kl_balancer(out.kl_all)
    loss = (recon + kl).mean() + 1e-2 * (model.spectral_norm_parallel() + model.batchnorm_loss())
    loss.backward()
    print(f"paper config: forward+backward on (2, 8, 5000) took {time.perf_counter() - t0:.1f} s")
    assert torch.isfinite(loss)
    with torch.no_grad():
        s = model.sample(y, t=0.7)
    assert s.shape == (2, 8, 5000)
    assert isinstance(model.decoder_output(out.logits), DiscMixLogistic8)


def test_replicate_output_padding_removes_the_edge_artefact_with_the_same_parameters():
    """Zero padding of the output conv shifts the first and last logits of a constant feature map (the spike at
    both ends of every generated lead); replicate padding does not, and the parameter count is the same."""
    import torch

    from nvae_ecg.config import get_config
    from nvae_ecg.model import AutoEncoder

    torch.manual_seed(0)
    zeros = AutoEncoder(get_config("tiny", length=64))
    torch.manual_seed(0)
    replicate = AutoEncoder(get_config("tiny", length=64, output_padding="replicate"))
    assert sum(p.numel() for p in zeros.parameters()) == sum(p.numel() for p in replicate.parameters())
    s = torch.ones(2, zeros.cfg.num_channels_dec, 64)
    with torch.no_grad():
        out_z, out_r = zeros.output_layer(s), replicate.output_layer(s)
    assert (out_z[..., 0] - out_z[..., 32]).abs().max() > 1e-3
    assert torch.allclose(out_r[..., 0], out_r[..., 32], atol=1e-6)
    assert torch.allclose(out_r[..., -1], out_r[..., 32], atol=1e-6)
    assert get_config("demo").output_padding == "replicate" and get_config("paper").output_padding == "zeros"
