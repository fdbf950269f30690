"""The CVAE port (cvae_ecg.model): published parameter counts, TF "same" padding and the transposed-conv crop, the
loss, Keras initialisation and batch-norm defaults, and the decoder's dependence on the condition."""

import numpy as np
import pytest
import torch

from cvae_ecg import model as M
from cvae_ecg.config import CONFIGS, get_config


def test_published_parameter_counts_and_command_line(capsys):
    m = M.CVAE(get_config("paper"))
    assert M.parameter_counts(m) == {"trainable": 35112, "with_bn_statistics": 37168}
    assert M.main(M.parse_args(["--config", "paper"])) == 0
    assert capsys.readouterr().out.splitlines()[0] == "parameters: 35112"
    ecg = M.CVAE(get_config("ecg"))
    assert ecg.cfg.n_leads == 8 and ecg.cfg.length == 5000 and ecg.cfg.condition_dim == 4
    assert ecg.enc_conv2.kernel_size == (8, 1) and ecg.enc_conv1.kernel_size == (1, 40)


def test_tf_same_padding_of_the_time_convolution():
    assert M.tf_same_padding(40) == (19, 20) and M.tf_same_padding(5) == (2, 2)
    torch.manual_seed(0)
    conv = M.SameConv1xK(1, 2, 40).double()
    x = torch.randn(1, 1, 3, 100, dtype=torch.float64)
    y = conv(x)
    assert y.shape == x.shape[:1] + (2,) + x.shape[2:]
    # Direct correlation with 19 zeros before and 20 after, as TensorFlow pads an even kernel.
    xp = np.pad(x[0, 0].numpy(), ((0, 0), (19, 20)))
    w = conv.weight.detach().numpy()[1, 0, 0]
    ref = np.stack([[np.dot(xp[h, t:t + 40], w) for t in range(100)] for h in range(3)]) + conv.bias[1].item()
    np.testing.assert_allclose(y[0, 1].detach().numpy(), ref, atol=1e-10)


def test_transposed_conv_crop_is_the_adjoint_of_the_same_conv():
    torch.manual_seed(1)
    conv = M.SameConv1xK(3, 2, 40).double()
    tconv = M.SameConvTranspose1xK(2, 3, 40).double()
    with torch.no_grad():  # shared kernel, no biases: the transposed layer must be the exact adjoint
        tconv.weight.copy_(conv.weight)
        conv.bias.zero_()
        tconv.bias.zero_()
    x = torch.randn(2, 3, 4, 120, dtype=torch.float64)
    y = torch.randn(2, 2, 4, 120, dtype=torch.float64)
    ty = tconv(y)
    assert ty.shape == x.shape  # "same": the width is kept
    assert torch.allclose((conv(x) * y).sum(), (x * ty).sum(), atol=1e-9)
    full = torch.nn.functional.conv_transpose2d(y, tconv.weight)
    assert torch.equal(ty, full[..., 19:-20])  # 19 dropped at the start, 20 at the end


def test_loss_is_kl_sum_plus_mse_mean_and_kl_matches_torch():
    torch.manual_seed(2)
    mu, logvar = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    x, recon = torch.rand(6, 8, 50, dtype=torch.float64), torch.rand(6, 8, 50, dtype=torch.float64)
    total, kl, mse = M.cvae_loss(x, recon, mu, logvar)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref_kl = torch.distributions.kl_divergence(q, p).sum(dim=1)
    assert torch.allclose(M.kl_divergence(mu, logvar), ref_kl)
    assert torch.allclose(kl, ref_kl.mean()) and torch.allclose(mse, ((x - recon) ** 2).mean())
    assert torch.allclose(total, ref_kl.mean() + ((x - recon) ** 2).mean())
    assert torch.allclose(M.cvae_loss(x, recon, mu, logvar, kl_weight=0.5)[0], 0.5 * kl + mse)


def test_keras_batch_norm_defaults_and_glorot_init():
    torch.manual_seed(3)
    m = M.CVAE(get_config("paper"))
    bns = [b for b in m.modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 6 and all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    for layer in (m.enc_conv1, m.enc_conv2, m.mu, m.dec_dense, m.dec_deconv1, m.dec_deconv2):
        assert torch.count_nonzero(layer.bias) == 0
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = (6 / (fan_in + fan_out)) ** 0.5
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound  # uniform up to the Glorot bound
    # One training-mode batch moves the running mean by 1 % of the batch mean (Keras momentum 0.99).
    bn = m.enc_bn1
    x = torch.rand(4, 12, 400) + 1.0
    m.train()
    m(x, torch.zeros(4, 1))
    h = torch.nn.functional.elu(m.enc_conv1(x.unsqueeze(1)))
    assert torch.allclose(bn.running_mean, 0.01 * h.mean(dim=(0, 2, 3)), atol=1e-6)


def test_decoder_output_depends_on_the_condition_and_shapes():
    torch.manual_seed(4)
    m = M.CVAE(get_config("ecg"))
    m.train()
    m(torch.rand(8, 8, 5000), torch.randn(8, 4))  # batch statistics away from their initial values
    m.eval()
    z = torch.randn(3, 10)
    c = torch.tensor([[1.0, 0, 1, 0]] * 3)
    c2 = torch.tensor([[-1.0, 0, 0, 1]] * 3)
    with torch.no_grad():
        a, b = m.decode(z, c), m.decode(z, c2)
    assert a.shape == (3, 8, 5000) and not torch.allclose(a, b)
    recon, mu, logvar = m(torch.rand(3, 8, 5000), c)
    assert recon.shape == (3, 8, 5000) and mu.shape == logvar.shape == (3, 10)
    g = torch.Generator().manual_seed(0)
    s1 = m.sample(c, generator=g)
    s2 = m.sample(c, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2)
    with pytest.raises(ValueError, match="condition"):
        m.decode(z, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="expected x"):
        m.encode(torch.zeros(3, 12, 5000), c)


def test_config_registry_validates():
    assert set(CONFIGS) == {"paper", "ecg"}
    assert get_config("ecg", condition_dim=13).condition_dim == 13
    with pytest.raises(ValueError, match="unknown CVAEConfig"):
        get_config("ecg", filters=3)
    with pytest.raises(ValueError, match="divisible"):
        get_config("ecg", length=4999)
    with pytest.raises(ValueError, match="unknown CVAE config"):
        get_config("big")


def test_standard_amplitude_round_trip_and_sampling_back_in_unit_range():
    """to_model z-scores each lead by the stored statistics, from_model inverts it, sample() returns [0, 1] scale."""
    cfg = get_config("ecg", length=200)
    assert cfg.amplitude == "standard"
    m = M.CVAE(cfg).eval()
    mean, std = torch.linspace(0.3, 0.6, 8), torch.linspace(0.02, 0.09, 8)
    m.set_data_stats(mean, std)
    x = mean[None, :, None] + std[None, :, None] * torch.randn(4, 8, 200, generator=torch.Generator().manual_seed(0))
    z = m.to_model(x)
    assert torch.allclose(z.mean((0, 2)), torch.zeros(8), atol=0.15) and torch.allclose(z.std((0, 2)), torch.ones(8), atol=0.15)
    assert torch.allclose(m.from_model(z), x, atol=1e-6)
    assert torch.equal(m.state_dict()["data_std"], std)  # travels in the checkpoint
    c = torch.zeros(3, cfg.condition_dim)
    g = torch.Generator().manual_seed(1)
    s = m.sample(c, generator=g)
    assert torch.allclose(s, m.from_model(m.decode(torch.randn(3, cfg.latent_dim, generator=torch.Generator().manual_seed(1)), c)))
    unit = M.CVAE(get_config("ecg", length=200, amplitude="unit"))
    unit.set_data_stats(mean, std)
    assert torch.equal(unit.to_model(x), x)
    with pytest.raises(ValueError, match="positive"):
        m.set_data_stats(mean, torch.zeros(8))
    with pytest.raises(ValueError, match="amplitude"):
        get_config("ecg", amplitude="mv")
