"""Beat-phase conditioning (nvae_ecg.rhythm and ModelConfig.rhythm): maps, detector, per-class rhythm model, model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.config import get_config
from nvae_ecg.data.synthetic import simulate_ecg
from nvae_ecg.leads import LEADS12
from nvae_ecg.model import AutoEncoder
from nvae_ecg.rhythm import FS, MAP_CHANNELS, RhythmModel, detect_peaks, maps_from_signals, phase_map

EIGHT = [LEADS12.index(n) for n in ("I", "III", "V1", "V2", "V3", "V4", "V5", "V6")]
SR, AF, STACH, SB = (CLASS_ABBREVS.index(n) for n in ("SR", "AF", "STach", "SB"))


def test_phase_map_is_zero_phase_at_every_peak_and_half_way_between():
    peaks = [100, 600, 1000, 1500]
    m = phase_map(peaks, 2000)
    assert m.shape == (MAP_CHANNELS, 2000) and m.dtype == np.float32
    for p in peaks:
        assert m[0, p] == pytest.approx(1.0, abs=1e-6) and m[1, p] == pytest.approx(0.0, abs=1e-6)
    assert m[0, 350] == pytest.approx(-1.0, abs=1e-6)        # middle of the 500-sample interval
    assert m[0, 800] == pytest.approx(-1.0, abs=1e-6)        # middle of the 400-sample interval
    assert m[2, 300] == pytest.approx(math.log(500 / FS), abs=1e-6)
    assert m[2, 700] == pytest.approx(math.log(400 / FS), abs=1e-6)
    # Before the first and after the last beat the neighbouring interval continues the rhythm.
    assert m[0, 1500 + 250] == pytest.approx(-1.0, abs=1e-6) and m[2, 1900] == pytest.approx(math.log(1.0), abs=1e-6)
    assert m[0, 0] == pytest.approx(math.cos(2 * math.pi * (1 - 100 / 500)), abs=1e-5)
    # Time since the last and until the next beat (s), signed time to the nearest, bumps peaking at each beat.
    assert m[3, 700] == pytest.approx(100 / FS) and m[4, 700] == pytest.approx(300 / FS)
    assert m[5, 590] == pytest.approx(10 / FS) and m[5, 610] == pytest.approx(-10 / FS)
    assert m[5, 800] == pytest.approx(-0.3)                   # clipped far from any beat
    assert (m[6:, 600] == 1.0).all() and (m[6:, 610] < 1.0).all() and m[6, 650] < 1e-3 < m[8, 650]
    # No beat: a 1 s rhythm from sample 0, not an error.
    empty = phase_map([], 1000)
    assert empty[0, 0] == pytest.approx(1.0) and empty[0, 125] == pytest.approx(0.0, abs=1e-6)
    assert empty[0, 250] == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("labels", [("SR",), ("SB",), ("STach",), ("AF",)])
def test_detect_peaks_finds_the_simulated_beats_in_normalised_leads(labels):
    ecg = simulate_ecg(labels, rng=np.random.default_rng(3))
    x8 = ecg.signal[EIGHT]
    x8 = (x8 - x8.min(axis=1, keepdims=True)) / np.ptp(x8, axis=1, keepdims=True)  # any scale, as in [0, 1]
    peaks = detect_peaks(x8)
    truth = np.round(ecg.r_peaks_s * FS).astype(int)
    assert abs(len(peaks) - len(truth)) <= 1
    matched = [np.min(np.abs(truth - p)) for p in peaks]
    assert np.median(matched) < 0.05 * FS, (peaks, truth)
    rate = 60.0 * FS / np.mean(np.diff(peaks))
    assert rate == pytest.approx(ecg.heart_rate_bpm, abs=5)


def test_detect_peaks_rejects_a_wrong_shape_and_finds_nothing_in_a_flat_or_nan_ecg():
    with pytest.raises(ValueError, match="one ECG"):
        detect_peaks(np.zeros(5000))
    assert len(detect_peaks(np.zeros((8, 5000)))) == 0
    assert len(detect_peaks(np.full((8, 5000), np.nan))) == 0


def _planted(n: int, rr_s: float, cv: float, rng) -> np.ndarray:
    rr = rr_s * np.exp(cv * rng.standard_normal(20))
    return np.round(np.cumsum(rr) * FS).astype(int)


def test_rhythm_model_fits_rate_and_irregularity_per_class_and_samples_them():
    rng = np.random.default_rng(0)
    peaks, labels = [], []
    for cls, rr, cv in ((SR, 0.75, 0.03), (SB, 1.25, 0.03), (STACH, 0.45, 0.02), (AF, 0.65, 0.2)):
        for _ in range(30):
            peaks.append(_planted(20, rr * math.exp(0.05 * rng.standard_normal()), cv, rng))
            y = np.zeros(len(CLASS_ABBREVS))
            y[cls] = 1
            labels.append(y)
    model = RhythmModel(len(CLASS_ABBREVS)).fit(peaks, np.stack(labels))
    summary = model.summary(CLASS_ABBREVS)
    assert summary["SB"]["hr_bpm"] < summary["SR"]["hr_bpm"] < summary["STach"]["hr_bpm"]
    assert summary["AF"]["rr_cv"] > 4 * summary["SR"]["rr_cv"]
    assert summary["MI"]["records"] == 0  # no records: the all-records row is used
    # SR + STach draws as STach, SR + AF as AF; nothing active: all records.
    y = torch.zeros(4, len(CLASS_ABBREVS))
    y[0, [SR, STACH]] = 1
    y[1, [SR, AF]] = 1
    y[2, SR] = 1
    assert model.rhythm_row(y).tolist() == [STACH, AF, SR, len(CLASS_ABBREVS)]
    g = torch.Generator().manual_seed(1)
    ys = torch.zeros(200, len(CLASS_ABBREVS))
    ys[:100, STACH] = 1
    ys[100:, SB] = 1
    drawn = model.sample_peaks(ys, 5000, generator=g)
    hr = np.array([60.0 * FS / np.mean(np.diff(p)) for p in drawn])
    assert np.median(hr[:100]) == pytest.approx(60 / 0.45, rel=0.08)
    assert np.median(hr[100:]) == pytest.approx(60 / 1.25, rel=0.08)
    again = model.sample_peaks(ys[:3], 5000, generator=torch.Generator().manual_seed(1))
    assert all(np.array_equal(a, b) for a, b in zip(again, drawn[:3]))
    maps = model.sample_maps(ys[:3], 5000, generator=torch.Generator().manual_seed(1))
    assert maps.shape == (3, MAP_CHANNELS, 5000)


def test_rhythm_model_refuses_to_fit_signals_without_beats():
    with pytest.raises(ValueError, match="at least 3 R peaks"):
        RhythmModel(9).fit([np.array([10])] * 5, np.eye(9)[:5])


def _rhythm_model_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    cfg = get_config("tiny", length=1000, rhythm=True)
    model = AutoEncoder(cfg).eval()
    rng = np.random.default_rng(seed)
    x = torch.stack([torch.as_tensor(simulate_ecg(("SR",), duration_s=2.0, rng=rng).signal[EIGHT])
                     for _ in range(2)]).float()
    x = (x - x.amin(dim=2, keepdim=True)) / (x.amax(dim=2, keepdim=True) - x.amin(dim=2, keepdim=True))
    y = torch.zeros(2, 9)
    y[:, SR] = 1
    return model, x, y


def test_the_rhythm_map_reaches_encoder_and_decoder_and_defaults_to_the_detected_beats():
    model, x, y = _rhythm_model_and_batch()
    detected = maps_from_signals(x)
    torch.manual_seed(5)
    out_default = model(x, y).logits
    torch.manual_seed(5)
    out_given = model(x, y, rhythm=detected).logits
    assert torch.equal(out_default, out_given)
    shifted = torch.roll(detected, 100, dims=-1)
    torch.manual_seed(5)
    assert not torch.allclose(model(x, y, rhythm=shifted).logits, out_given)
    # Generation: the drawn map changes the decoder output; a given map is used as is.
    torch.manual_seed(6)
    a = model.sample_logits(y, 1.0, rhythm=detected)
    torch.manual_seed(6)
    b = model.sample_logits(y, 1.0, rhythm=shifted)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="rhythm map must have shape"):
        model(x, y, rhythm=detected[:, :2])


def test_a_model_without_rhythm_refuses_a_map_and_the_2d_variant_refuses_the_option():
    torch.manual_seed(0)
    model = AutoEncoder(get_config("tiny", length=1000))
    with pytest.raises(ValueError, match="cfg.rhythm=False"):
        model(torch.rand(1, 8, 1000), torch.zeros(1, 9), rhythm=torch.zeros(1, 3, 1000))
    with pytest.raises(ValueError, match="representation='signal'"):
        get_config("tiny2d", rhythm=True)


def test_rhythm_statistics_are_buffers_saved_with_the_weights():
    model, _, _ = _rhythm_model_and_batch()
    model.rhythm_model.stats[STACH, 0] = math.log(0.4)
    model.rhythm_model.counts[STACH] = 10
    state = model.state_dict()
    assert "rhythm_model.stats" in state and "rhythm_model.counts" in state
    other = AutoEncoder(model.cfg)
    other.load_state_dict(state)
    assert torch.equal(other.rhythm_model.stats, model.rhythm_model.stats)
