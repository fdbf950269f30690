"""Tests of nvae_ecg.stft: the spectrogram representation of the 2-D variant and its exact inverse.

Round trips (signal -> normalised (16, F, T) spectrogram -> signal) are checked at
float precision on synthetic signals and on the real Challenge 2021 sample records
(skipped when that folder is absent, see conftest.py); the layout of the channels
is checked against a DFT of one frame written here with numpy; the normalisation
fitted on a set of signals whitens that set; non-invertible STFT settings are rejected.

Example::

    python -m pytest tests/test_stft.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nvae_ecg.config import get_config
from nvae_ecg.leads import limb_identity_error, twelve_to_eight
from nvae_ecg.stft import (NUM_CHANNELS, SpectrogramTransform, fit_normalization, stft_shape, to_twelve,
                           zero_imaginary_bins)


def ecg_like(b: int, length: int = 5000, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Spiky periodic 8-lead stand-ins in [0, 1] (narrow Gaussian 'QRS' pulses on a slow wave plus noise)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / 500.0
    rate = 0.8 + 0.8 * torch.rand(b, 1, 1, generator=g, dtype=torch.float64)
    phase = torch.rand(b, 8, 1, generator=g, dtype=torch.float64)
    beat = torch.remainder(t * rate + phase, 1.0)
    amp = 0.2 + 0.3 * torch.rand(b, 8, 1, generator=g, dtype=torch.float64)
    x = 0.4 + amp * torch.exp(-(((beat - 0.3) / 0.015) ** 2)) + 0.05 * torch.sin(2 * math.pi * 0.3 * t)
    x = x + 0.01 * torch.randn(b, 8, length, generator=g, dtype=torch.float64)
    return x.clamp(0, 1).to(dtype)


@pytest.mark.parametrize("n_fft,hop,win", [(126, 40, 126), (127, 31, 100), (64, 16, 64)])
def test_round_trip_synthetic_float32_and_float64(n_fft, hop, win):
    x = ecg_like(3, seed=1, dtype=torch.float64)
    tr = SpectrogramTransform(5000, n_fft, hop, win)
    fit_normalization(tr, [ecg_like(4, seed=2)])                    # non-trivial mean/std in the round trip
    assert tr.num_fitted.item() == 4
    z64 = tr.double()(x)
    assert z64.shape == (3, NUM_CHANNELS, n_fft // 2 + 1, 1 + (5000 - n_fft % 2) // hop)
    cfg = get_config("tiny2d", stft_n_fft=n_fft, stft_hop_length=hop, stft_win_length=win)
    assert (cfg.model_channels, *cfg.model_shape) == tr.shape
    err64 = float((tr.inverse(z64) - x).abs().max())
    assert err64 < 1e-12, err64
    tr = tr.float()
    x32 = x.float()
    err32 = float((tr.inverse(tr(x32)) - x32).abs().max())
    assert err32 < 2e-6, err32


def test_default_geometry_fits_the_config_and_downsampling():
    tr = SpectrogramTransform(5000)
    assert tr.shape == (16, 64, 126) and stft_shape(5000, 126, 40) == (64, 126)
    for name in ("tiny2d", "small2d", "paper2d"):
        cfg = get_config(name)
        assert cfg.model_shape == (64, 126) and cfg.model_channels == 16 and cfg.ndim == 2
        assert all(p % cfg.total_downsampling == 0 and p >= n for p, n in zip(cfg.padded_shape, cfg.model_shape))
    assert get_config("paper2d").padded_shape == (64, 128)            # padding: 2 frames, no frequency bins


def test_channel_layout_matches_a_numpy_dft_of_one_frame():
    """Channel 2l / 2l+1 = real / imaginary STFT of lead l; a middle frame equals the windowed DFT."""
    n_fft, hop, win, length = 126, 40, 100, 5000
    x = ecg_like(2, length, seed=3, dtype=torch.float64)
    spec = SpectrogramTransform(length, n_fft, hop, win).double().spectrogram(x).numpy()
    frame, lead, b = 60, 5, 1
    window = np.zeros(n_fft)
    n = np.arange(win)
    window[(n_fft - win) // 2:(n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    start = frame * hop - n_fft // 2                                   # centred frames
    seg = x[b, lead, start:start + n_fft].numpy() * window
    k = np.arange(n_fft // 2 + 1)[:, None]
    dft = (seg[None, :] * np.exp(-2j * np.pi * k * np.arange(n_fft)[None, :] / n_fft)).sum(axis=1)
    np.testing.assert_allclose(spec[b, 2 * lead, :, frame], dft.real, atol=1e-10)
    np.testing.assert_allclose(spec[b, 2 * lead + 1, :, frame], dft.imag, atol=1e-10)


@pytest.mark.parametrize("n_fft", [126, 127])
def test_mask_covers_exactly_the_always_zero_imaginary_bins(n_fft):
    tr = SpectrogramTransform(5000, n_fft, 40, n_fft)
    spec = tr.spectrogram(ecg_like(2, seed=4))
    zero = zero_imaginary_bins(n_fft)
    assert zero == ((0, 63) if n_fft == 126 else (0,))
    imag = spec[:, 1::2]
    assert float(imag[:, :, list(zero)].abs().max()) == 0.0
    others = [f for f in range(tr.freq_bins) if f not in zero]
    assert bool((imag[:, :, others].abs().amax(dim=(0, 1, 3)) > 0).all())
    assert tr.mask.sum().item() == NUM_CHANNELS * tr.freq_bins - 8 * len(zero)
    assert float(tr.mask[1::2][:, list(zero)].abs().sum()) == 0.0


def test_fitted_normalisation_whitens_the_fitting_set_and_is_saved():
    tr = SpectrogramTransform(5000)
    data = [ecg_like(5, seed=s) for s in (10, 11, 12)]
    assert fit_normalization(tr, [(x, None) for x in data]) == 15       # (signals, labels) batches as datasets yield
    z = torch.cat([tr(x) for x in data]).double()
    mask = tr.mask.bool()
    mean = z.mean(dim=(0, 3))
    std = z.std(dim=(0, 3), unbiased=False)
    assert float(mean[mask].abs().max()) < 1e-4
    assert float((std[mask] - 1).abs().max()) < 1e-3
    assert float(tr.mean[~mask].abs().max()) == 0.0 and float((tr.std[~mask] - 1).abs().max()) == 0.0
    state = tr.state_dict()
    assert set(state) == {"mean", "std", "num_fitted"}
    fresh = SpectrogramTransform(5000)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(data[0]), tr(data[0]))


def test_rejects_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="not invertible"):
        SpectrogramTransform(5000, 64, 64, 64)                         # Hann windows without overlap leave gaps
    with pytest.raises(ValueError, match="win_length"):
        SpectrogramTransform(5000, 64, 16, 65)
    with pytest.raises(ValueError, match="hop_length"):
        SpectrogramTransform(5000, 64, 0, 64)
    tr = SpectrogramTransform(5000)
    with pytest.raises(ValueError, match=r"\(B, 8, 5000\)"):
        tr(torch.rand(2, 12, 5000))
    with pytest.raises(ValueError, match="inverse STFT"):
        tr.inverse(torch.rand(2, 16, 64, 125))
    with pytest.raises(ValueError, match="no signals"):
        fit_normalization(tr, [])
    with pytest.raises(ValueError, match="stft_hop_length"):
        get_config("tiny2d", stft_hop_length=200)


def _real_records(sample_dir):
    from nvae_ecg.data.challenge import fit_length, read_record, resample_to

    out = []
    for hea in sorted(sample_dir.rglob("*.hea")):
        rec = read_record(hea)
        sig = fit_length(resample_to(rec.signal, rec.fs, 500.0), 5000)
        out.append((hea.name, twelve_to_eight(sig)))
    return out


def test_round_trip_on_real_sample_records(sample_dir):
    """Every real record: 8 leads (mV) -> normalised spectrogram -> 8 leads, at float64 and float32 precision."""
    records = _real_records(sample_dir)
    assert len(records) >= 30
    x = torch.as_tensor(np.stack([r for _, r in records]))              # N, 8, 5000 float64, mV
    tr = SpectrogramTransform(5000).double()
    fit_normalization(tr, [x])
    err64 = (tr.inverse(tr(x)) - x).abs().amax(dim=(1, 2))
    worst = int(err64.argmax())
    assert float(err64[worst]) < 1e-11, f"{records[worst][0]}: round-trip error {float(err64[worst])} mV"
    tr32 = tr.float()
    x32 = x.float()
    rel32 = (tr32.inverse(tr32(x32)) - x32).abs().amax(dim=(1, 2)) / x32.abs().amax(dim=(1, 2))
    worst = int(rel32.argmax())
    assert float(rel32[worst]) < 1e-5, f"{records[worst][0]}: float32 relative round-trip error {float(rel32[worst])}"
    x12 = to_twelve(tr.inverse(tr(x)).numpy())
    assert x12.shape == (len(records), 12, 5000) and limb_identity_error(x12) < 1e-12
