"""Tests of the 2-D STFT variant (2D-cNVAE-ECG): dimension-generic blocks, the 2-D model, training and sampling.

Unit tests build the ``tiny2d`` preset on CPU; the end-to-end tests train it for a
few steps on the demo data through ``nvae_ecg.train`` (as tests/test_train_generate.py
does for the 1-D model), resume it bit for bit, and generate 12-lead, 5000-sample
ECGs through ``nvae_ecg.generate`` and ``scripts/generate_samples.sh`` whose limb
leads satisfy Einthoven's and Goldberger's identities.

Example::

    python -m pytest tests/test_model2d.py -q
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nvae_ecg import generate, objectives as O, train
from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.config import get_config
from nvae_ecg.distributions import DiagonalGaussian
from nvae_ecg.leads import limb_identity_error
from nvae_ecg.model import AutoEncoder, count_parameters
from nvae_ecg.neural_operations import SE, Cell, Conv2D, FactorizedReduce, WeightNormConv
from nvae_ecg.samples import read_samples
from nvae_ecg.stft import SpectrogramLikelihood, fit_normalization

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread for the whole module (module scope: set before the trained-run fixture, so a straight
    and a resumed run use the same thread count and hence the same float reductions); tensors are small and
    OpenMP barriers on a busy 2-core machine cost more than they gain."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ecg_batch(b: int, length: int = 5000, seed: int = 0) -> torch.Tensor:
    """Sine-like 8-lead stand-ins in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / 500.0
    phase = torch.rand(b, 8, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    rate = 1.0 + torch.rand(b, 1, 1, generator=g, dtype=torch.float64)
    x = 0.5 + 0.3 * torch.sin(2 * math.pi * rate * t + phase) + 0.1 * torch.sin(6 * math.pi * rate * t + phase)
    return x.clamp(0, 1).float()


def tiny2d(**kw) -> AutoEncoder:
    torch.manual_seed(0)
    model = AutoEncoder(get_config("tiny2d", **kw))
    fit_normalization(model.spectrogram, [ecg_batch(6, model.cfg.length, seed=9)])
    return model


# ---- blocks ------------------------------------------------------------------------------------------------------
def test_factorized_reduce_2d_uses_nvae_four_shifts():
    fr = FactorizedReduce(1, 4, ndim=2)
    with torch.no_grad():
        for k in range(1, 5):
            conv = getattr(fr, f"conv_{k}")
            conv.weight.fill_(1.0)
            conv.log_weight_norm.fill_(0.0)
            conv.bias.zero_()
    x = torch.randn(2, 1, 6, 8)
    s = torch.nn.functional.silu(x)[:, 0]
    out = fr(x)
    assert out.shape == (2, 4, 3, 4)
    scale = 1.0 / (1.0 + 1e-5)                           # NVAE's normalisation of a unit 1x1 weight
    for ch, (di, dj) in enumerate([(0, 0), (1, 1), (0, 1), (1, 0)]):
        torch.testing.assert_close(out[:, ch], scale * s[:, di::2, dj::2])
    assert [getattr(FactorizedReduce(4, 10, ndim=2), f"conv_{k}").out_channels for k in range(1, 5)] == [2, 2, 2, 4]
    assert not hasattr(FactorizedReduce(4, 10, ndim=1), "conv_3")


def test_cells_and_se_in_2d():
    x = torch.randn(2, 8, 16, 32)
    assert Cell(8, 8, "normal", "res_bnelu", True, ndim=2)(x).shape == (2, 8, 16, 32)
    assert Cell(8, 16, "down", "res_bnswish", True, ndim=2)(x).shape == (2, 16, 8, 16)
    up = Cell(8, 4, "up", "res_bnelu", False, ndim=2)
    assert up(x).shape == (2, 4, 32, 64) and up.skip.mode == "bilinear"
    assert isinstance(up.ops[0].bn, torch.nn.BatchNorm2d) and isinstance(up.ops[0].conv, Conv2D)
    se = SE(8, 8, ndim=2)
    gate = se.se(x.mean(dim=(2, 3)))
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])
    with pytest.raises(ValueError, match="ndim"):
        Cell(8, 8, "normal", "res_bnelu", True, ndim=3)


def test_diagonal_gaussian_matches_torch_normal_with_mask():
    g = torch.Generator().manual_seed(1)
    param = torch.randn(2, 6, 4, 5, generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 4, 1, dtype=torch.float64)
    mask[1, 0] = 0.0
    d = DiagonalGaussian(param, 3, mask)
    ref = torch.distributions.Normal(param[:, :3], torch.exp(param[:, 3:])).log_prob(x) * mask
    torch.testing.assert_close(d.log_prob(x), ref.sum(dim=1).flatten(1))
    torch.manual_seed(2)
    s = d.sample(t=0.5)
    torch.testing.assert_close(s[:, 1, 0], param[:, 1, 0])           # masked entries are their mean
    assert float((s - param[:, :3]).abs().max()) > 0
    with pytest.raises(ValueError, match="temperature"):
        d.sample(t=0.0)


# ---- model -------------------------------------------------------------------------------------------------------
def test_forward_sample_shapes_and_likelihood_on_signals():
    model = tiny2d()
    assert model.ndim == 2 and model.top_shape == (16, 32) and model.padded_shape == (64, 128)
    assert all(isinstance(m, Conv2D) for m in model.modules() if isinstance(m, WeightNormConv))
    x, y = ecg_batch(3), torch.eye(9)[[0, 2, 5]]
    out = model(x, y)
    assert out.logits.shape == (3, 32, 64, 126)
    assert len(out.kl_all) == sum(model.groups_per_scale) and all(k.shape == (3,) for k in out.kl_all)
    assert all(k.shape == (model.cfg.num_latent_per_group,) for k in out.kl_diag)
    dist = model.decoder_output(out.logits)
    assert isinstance(dist, SpectrogramLikelihood)
    lp = dist.log_prob(x)
    assert lp.shape == (3, 64 * 126) and torch.isfinite(lp).all()
    # log_prob is the Gaussian density of the normalised spectrogram, masked entries left out.
    z = model.spectrogram(x)
    mu, log_s = out.logits[:, :16], out.logits[:, 16:].clamp(-7, 5)
    ref = (torch.distributions.Normal(mu, log_s.exp()).log_prob(z) * model.spectrogram.mask[:, :, None]).sum(1)
    torch.testing.assert_close(lp, ref.flatten(1), rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        s = model.sample(y, t=0.7)
        m = model.decoder_output(model.sample_logits(y)).mean()
    assert s.shape == (3, 8, 5000) and m.shape == (3, 8, 5000)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0 and torch.isfinite(s).all()
    with pytest.raises(ValueError, match=r"\(B, 8, 5000\)"):
        model(torch.rand(2, 16, 64, 126), y[:2])


def test_padding_replicates_the_last_frame_and_output_is_cropped():
    model = tiny2d()
    x, y = ecg_batch(2), torch.eye(9)[:2]
    padded = model._pad(x)
    z = model.spectrogram(x)
    assert padded.shape == (2, 16, 64, 128)
    torch.testing.assert_close(padded[..., :126], z)
    torch.testing.assert_close(padded[..., 126:], z[..., -1:].expand(2, 16, 64, 2))
    captured = {}
    handle = model.output_layer.register_forward_hook(lambda mod, inp, out: captured.update(full=out))
    try:
        out = model(x, y)
    finally:
        handle.remove()
    assert captured["full"].shape[-2:] == (64, 128)
    torch.testing.assert_close(out.logits, captured["full"][..., :126])


def test_gradient_reaches_every_parameter_and_regularisers_cover_2d_layers():
    model = tiny2d()
    x, y = ecg_batch(3, seed=1), torch.ones(3, 9)
    out = model(x, y)
    recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
    kl, _, _ = O.kl_balancer(out.kl_all)
    loss = (recon + kl).mean() + 1e-2 * model.spectral_norm_parallel() + 1e-2 * model.batchnorm_loss()
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert bool((model.class_features_table.grad.abs().sum(dim=(1, 2, 3)) > 0).all())
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    with torch.no_grad():
        for m in bns:
            m.weight.normal_()
    torch.testing.assert_close(model.batchnorm_loss(), sum(m.weight.abs().max() for m in bns))
    with torch.no_grad():
        true = sum(torch.linalg.matrix_norm(m.normalized_weight().flatten(1), ord=2)
                   for m in model.modules() if isinstance(m, Conv2D))
    for _ in range(4):
        est = model.spectral_norm_parallel()
    assert float(est.detach()) == pytest.approx(float(true), rel=1e-3)


def test_class_features_are_2d_maps_summed_over_active_classes():
    model = tiny2d()
    y = torch.tensor([[1.0, 0, 1, 0, 0, 0, 0, 0, 1]])
    per_class = model.class_features(torch.eye(9))
    assert per_class.shape == (9, model.cfg.num_channels_dec * 4, 16, 32)
    torch.testing.assert_close(model.class_features(y)[0], per_class[0] + per_class[2] + per_class[8])


def test_tiny2d_overfits_a_few_ecgs():
    """Forty Adamax steps on four ECGs cut the NELBO (normalised-spectrogram nats) substantially."""
    model = tiny2d()
    x, y = ecg_batch(4, seed=3), torch.eye(9)[:4]
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2)
    history = []
    for _ in range(40):
        out = model(x, y)
        loss = (O.reconstruction_loss(model.decoder_output(out.logits), x) + sum(out.kl_all)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.5 * history[0], history


def test_presets_and_train_flags_select_the_2d_model():
    assert get_config("tiny", representation="stft") == get_config("tiny2d")
    paper2d = get_config("paper2d")
    assert (paper2d.num_preprocess_blocks, paper2d.num_latent_scales, paper2d.num_groups_per_scale) == (2, 3, 20)
    args = train.parse_args(["--data_dir", "x", "--config", "tiny", "--representation", "stft",
                             "--stft_hop_length", "50"])
    cfg = train.build_config(args, num_classes=9, length=5000)
    assert cfg.representation == "stft" and cfg.model_shape == (64, 101) and cfg.padded_shape == (64, 104)
    with pytest.raises(SystemExit):
        train.parse_args(["--data_dir", "x", "--representation", "wavelet"])
    assert count_parameters(AutoEncoder(cfg)) > 0


# ---- end to end: train, resume, generate -----------------------------------------------------------------------
def _train_args(prepared, root, save, *extra):
    return train.parse_args([
        "--data_dir", str(prepared), "--root", str(root), "--save", save, "--config", "tiny2d",
        "--batch_size", "8", "--epochs", "2", "--num_workers", "0", "--seed", "5", "--log_every", "2",
        "--iw_samples", "2", "--max_val_batches", "1", "--sample_every", "0", "--save_every", "1",
        "--percent_epochs", "50", *extra])


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained2d(prepared_ptbxl, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs2d")
    assert train.main(_train_args(prepared_ptbxl, root, "straight")) == 0
    return root


def test_training_writes_a_2d_checkpoint_with_the_stft_normalisation(prepared_ptbxl, trained2d):
    from nvae_ecg.data.datasets import GeneratorDataset

    ckpt = _ckpt(trained2d / "straight" / "checkpoints" / "latest.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["representation"] == "stft"
    assert ckpt["classes"] == list(CLASS_ABBREVS)
    state = ckpt["model"]
    n_train = len(GeneratorDataset(prepared_ptbxl, "ptb-xl", split="train", classes="all"))
    assert int(state["spectrogram.num_fitted"]) == n_train
    assert float(state["spectrogram.std"].min()) > 0 and float(state["spectrogram.mean"].abs().sum()) > 0
    assert state["class_features_table"].shape[-2:] == (16, 32)
    assert "STFT normalisation" in (trained2d / "straight" / "log.txt").read_text()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_2d_resume_is_bit_for_bit(prepared_ptbxl, trained2d):
    steps_per_epoch = _ckpt(trained2d / "straight" / "checkpoints" / "epoch_0001.pt")["step"]
    assert train.main(_train_args(prepared_ptbxl, trained2d, "killed", "--max_steps", str(steps_per_epoch))) == 0
    half = _ckpt(trained2d / "killed" / "checkpoints" / "latest.pt")["model"]
    assert train.main(_train_args(prepared_ptbxl, trained2d, "killed", "--resume")) == 0
    a = _ckpt(trained2d / "straight" / "checkpoints" / "latest.pt")["model"]
    b = _ckpt(trained2d / "killed" / "checkpoints" / "latest.pt")["model"]
    assert any(not torch.equal(half[k], b[k]) for k in b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_generate_12_lead_ecgs_marked_nvae2d(prepared_ptbxl, trained2d, tmp_path):
    ckpt = trained2d / "straight" / "checkpoints" / "latest.pt"
    out = tmp_path / "gen"
    rc = generate.main(generate.parse_args([
        "--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "SR,LAD", "--count", "3",
        "--labels", "AF", "--count", "2", "--out_dir", str(out), "--batch_size", "4", "--device", "cpu",
        "--temperature", "0.8"]))
    assert rc == 0
    s = read_samples(out)
    assert s.signals.shape == (5, 12, 5000) and np.isfinite(s.signals).all()
    assert limb_identity_error(np.asarray(s.signals)) < 1e-5           # float32 rounding of mV values only
    assert s.meta["generator"] == "nvae2d" and s.meta["representation"] == "stft"
    assert float(np.asarray(s.signals).std(axis=-1).min()) > 0          # not a constant (clipped-out) signal
    with pytest.raises(SystemExit, match="nvae2d"):
        generate.main(generate.parse_args(["--checkpoint", str(ckpt), "--task_type", "custom", "--labels", "AF",
                                           "--count", "1", "--out_dir", str(tmp_path / "g2"), "--device", "cpu",
                                           "--generator_name", "cnvae"]))
    assert generate.checkpoint_generator_name(ckpt) == "nvae2d"


def test_generate_samples_script_names_the_2d_sets(prepared_ptbxl, trained2d, tmp_path):
    # The script's default sampling protocol is the authors' (BN_ITERS=2 keeps the BatchNorm passes short on a CPU).
    env = dict(os.environ, PYTHON=sys.executable, TASKS="imbalance", BATCH_SIZE="16", BN_ITERS="2",
               EXTRA_ARGS="--factor 0.05 --device cpu")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "generate_samples.sh"),
                           str(trained2d / "straight" / "checkpoints" / "latest.pt"), str(prepared_ptbxl),
                           str(tmp_path / "generated")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = read_samples(tmp_path / "generated" / "nvae2d_imbalance")
    assert s.meta["generator"] == "nvae2d" and s.meta["task_type"] == "imbalance"
    assert s.meta["protocol"] == "authors" and s.meta["bn_iters"] == 2 and s.meta["bn_batch_size"] == 32
    assert s.signals.shape[1:] == (12, 5000) and len(s) > 0
    assert limb_identity_error(np.asarray(s.signals)) < 1e-5


# ---- paper-like configuration -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_paper2d_builds_trains_one_step_and_samples():
    torch.manual_seed(0)
    model = AutoEncoder(get_config("paper2d"))
    assert model.groups_per_scale == [20, 10, 5] and model.top_shape == (4, 8)
    x, y = ecg_batch(2), torch.eye(9)[:2]
    out = model(x, y)
    assert out.logits.shape == (2, 32, 64, 126) and len(out.kl_all) == 35
    recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
    loss = (recon + sum(out.kl_all)).mean() + 1e-2 * (model.spectral_norm_parallel() + model.batchnorm_loss())
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert model.sample(y, t=0.7).shape == (2, 8, 5000)
