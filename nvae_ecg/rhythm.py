"""Beat-phase conditioning: R peaks of 8-lead ECGs, their phase maps, and a per-class model of the heart rhythm.

cNVAE-ECG's decoder reaches ~50-200 samples from one position of its top latent grid, while a beat lasts 224-650
samples at 500 Hz (BENCHMARKS.md, "Why the demo had no rhythm"), so with an i.i.d. top prior it cannot place beats
at a rate. The ``rhythm`` option of :class:`nvae_ecg.config.ModelConfig` (an extension, not in the paper) hands the
network a rhythm map instead: for every sample, the cosine and sine of its phase in the current R-R interval and
the log of that interval in seconds, the time since the last and until the next R peak, and Gaussian bumps
at the R peaks (``MAP_CHANNELS``). A cosine of the phase alone is nearly flat around a QRS (cos 0.3 = 0.96); the
time and bump channels give a waveform's sharp, timed parts a sharp input that a few convolutions can shape. In training the map comes from R peaks detected in the input
ECG (:func:`detect_peaks`, the quality report's detector, ~3 ms per ECG); in generation from
:class:`RhythmModel`, which stores per class the mean and spread of the log mean R-R interval and of the R-R
coefficient of variation, fitted on the training split (sinus tachycardia fast, atrial fibrillation irregular).
The decoder then only has to draw the waveform of a beat at a given phase, which is local.

Example::

    python -c "import torch; from nvae_ecg.rhythm import RhythmModel; m = RhythmModel(9); print(m.sample_maps(torch.eye(9)[:2], 5000).shape)"
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nvae_ecg.ecg_stats import r_peaks_of_lead

#: sampling rate the detector and the maps assume (the Challenge 2021 data are resampled to it by prepare).
FS = 500
#: widths (s) of the Gaussian bumps at the R peaks in a rhythm map: QRS, its surroundings, P/ST reach.
BUMP_WIDTHS = (0.01, 0.03, 0.08)
#: channels of a rhythm map: cos and sin of the phase in the R-R interval, log(R-R / s), time since the last and
#: until the next R peak (s), signed time to the nearest R peak (s, clipped), one Gaussian bump per BUMP_WIDTHS.
MAP_CHANNELS = 6 + len(BUMP_WIDTHS)
_NEAREST_CLIP = 0.3  # s: P waves and ST segments lie within this of their R peak
#: shortest and longest R-R interval drawn or assumed (s): 240 and 24 bpm.
RR_MIN, RR_MAX = 0.25, 2.5
#: R-R interval assumed where fewer than two beats are found (s).
RR_DEFAULT = 1.0
_MIN_RECORDS = 3  # a class needs this many records with a rhythm to get its own statistics


def detect_peaks(x: np.ndarray, fs: int = FS) -> np.ndarray:
    """R-peak sample indices of one ECG (8, L) in leads I, III, V1..V6 (any offset and scale).

    The quality report's detector (:func:`nvae_ecg.ecg_stats.r_peaks_of_lead`, neurokit2's rules on scipy) on
    lead II = I + III, so the rhythm the model learns is the rhythm the report measures.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"detect_peaks expects one ECG (leads I, III, ...; samples), got shape {x.shape}")
    lead_ii = x[0] + x[1]
    if not np.isfinite(lead_ii).all() or np.ptp(lead_ii) <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(r_peaks_of_lead(lead_ii, float(fs)), dtype=np.int64)


def rr_intervals(peaks: np.ndarray, fs: int = FS) -> np.ndarray:
    """R-R intervals in seconds, clipped to the drawable range."""
    return np.clip(np.diff(np.asarray(peaks, dtype=np.float64)) / fs, RR_MIN, RR_MAX)


def phase_map(peaks: Sequence[int], length: int, fs: int = FS) -> np.ndarray:
    """Rhythm map (MAP_CHANNELS, length) float32 of R peaks (sample indices); see MAP_CHANNELS for the channels."""
    p = np.unique(np.asarray(peaks, dtype=np.float64))
    if p.size < 2:
        # One beat or none: a 1 s rhythm through the beat (or through sample 0).
        p = np.array([p[0] if p.size else 0.0, (p[0] if p.size else 0.0) + RR_DEFAULT * fs])
    rr_first, rr_last = max(p[1] - p[0], RR_MIN * fs), max(p[-1] - p[-2], RR_MIN * fs)
    # Extrapolate beats before the first and after the last detected one at their neighbouring interval.
    before = p[0] - rr_first * np.arange(math.ceil(p[0] / rr_first) + 1, 0, -1)
    after = p[-1] + rr_last * np.arange(1, math.ceil((length - p[-1]) / rr_last) + 2)
    ext = np.concatenate([before, p, after])
    t = np.arange(length, dtype=np.float64)
    k = np.searchsorted(ext, t, side="right") - 1
    rr = ext[k + 1] - ext[k]
    since, until = (t - ext[k]) / fs, (ext[k + 1] - t) / fs
    phase = 2.0 * np.pi * since * fs / rr
    log_rr = np.log(np.clip(rr / fs, RR_MIN, RR_MAX))
    nearest = np.where(since <= until, -since, until)  # > 0 before a peak, < 0 after it
    bumps = [np.exp(-0.5 * (nearest / w) ** 2) for w in BUMP_WIDTHS]
    return np.stack([np.cos(phase), np.sin(phase), log_rr, np.minimum(since, RR_MAX), np.minimum(until, RR_MAX),
                     np.clip(nearest, -_NEAREST_CLIP, _NEAREST_CLIP), *bumps]).astype(np.float32)


def maps_from_signals(x: torch.Tensor, fs: int = FS) -> torch.Tensor:
    """Rhythm maps (B, MAP_CHANNELS, L) of ECGs x (B, 8, L), from their detected R peaks (no gradient)."""
    xs = x.detach().float().cpu().numpy()
    maps = np.stack([phase_map(detect_peaks(e, fs), xs.shape[-1], fs) for e in xs])
    return torch.from_numpy(maps).to(device=x.device)


def record_rhythm(peaks: np.ndarray, fs: int = FS) -> Optional[tuple[float, float]]:
    """(log mean R-R in s, R-R coefficient of variation) of one record; None below three beats."""
    if len(peaks) < 3:
        return None
    rr = rr_intervals(peaks, fs)
    return float(np.log(rr.mean())), float(rr.std() / rr.mean())


class RhythmModel(nn.Module):
    """Per-class heart-rhythm statistics (buffers, saved with the model) and a sampler of rhythm maps.

    Row k of ``stats`` holds, over the training records labelled with class k, the mean and standard deviation of
    the log mean R-R interval and of the R-R coefficient of variation; the last row holds them over all records.
    A label combination is drawn with the row of its most distinctive active class (the one farthest from all
    records in standardised rate and irregularity), so SR + STach beats like STach and SR + AF like AF.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        default = torch.tensor([math.log(0.8), 0.1, 0.04, 0.02])  # ~75 bpm, regular, until fitted
        self.register_buffer("stats", default.repeat(num_classes + 1, 1))
        self.register_buffer("counts", torch.zeros(num_classes + 1))

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has seen records (the all-records row has a count)."""
        return bool(self.counts[-1] > 0)

    def fit(self, peaks: Iterable[np.ndarray], labels: np.ndarray, fs: int = FS) -> "RhythmModel":
        """Fit the statistics from per-record R peaks and multi-hot labels (N, K); returns self."""
        labels = np.asarray(labels)
        feats, rows = [], []
        for i, p in enumerate(peaks):
            r = record_rhythm(np.asarray(p), fs)
            if r is not None:
                feats.append(r)
                rows.append(i)
        if len(feats) < _MIN_RECORDS:
            raise ValueError(f"RhythmModel.fit: only {len(feats)} record(s) with at least 3 R peaks; "
                             "are these ECGs (8 leads at 500 Hz)?")
        f = np.asarray(feats)
        lab = labels[rows].astype(bool)
        if lab.ndim != 2 or lab.shape[1] != self.num_classes:
            raise ValueError(f"labels must have shape (N, {self.num_classes}), got {labels.shape}")
        stats = np.zeros((self.num_classes + 1, 4))
        counts = np.zeros(self.num_classes + 1)

        def summary(sub: np.ndarray) -> list[float]:
            return [sub[:, 0].mean(), max(sub[:, 0].std(), 0.02), sub[:, 1].mean(), max(sub[:, 1].std(), 0.005)]

        stats[-1], counts[-1] = summary(f), len(f)
        for k in range(self.num_classes):
            sub = f[lab[:, k]]
            counts[k] = len(sub)
            stats[k] = summary(sub) if len(sub) >= _MIN_RECORDS else stats[-1]
        self.stats.copy_(torch.as_tensor(stats, dtype=self.stats.dtype))
        self.counts.copy_(torch.as_tensor(counts, dtype=self.counts.dtype))
        return self

    def rhythm_row(self, y: torch.Tensor) -> torch.Tensor:
        """Row of ``stats`` used for each label vector of y (B, K): its most distinctive active class, or all."""
        s = self.stats.double()
        ref = s[-1]
        dist = ((s[:-1, 0] - ref[0]).abs() / ref[1] + (s[:-1, 2] - ref[2]).abs() / ref[3])
        dist = torch.where(self.counts[:-1] >= _MIN_RECORDS, dist, torch.full_like(dist, -1.0))
        score = torch.where(y.detach().cpu().bool(), dist.unsqueeze(0), torch.full_like(dist, -2.0).unsqueeze(0))
        best = score.argmax(dim=1)
        none = score.max(dim=1).values < 0  # no active class with statistics of its own
        return torch.where(none, torch.full_like(best, self.num_classes), best)

    def sample_peaks(self, y: torch.Tensor, length: int, fs: int = FS,
                     generator: Optional[torch.Generator] = None) -> list[np.ndarray]:
        """R peaks (sample indices) of one drawn rhythm per label vector of y (B, K)."""
        rows = self.rhythm_row(y)
        s = self.stats.double().cpu()
        out = []
        for r in rows.tolist():
            mu, sd, cv_mu, cv_sd = s[r].tolist()
            z = torch.randn(2, generator=generator, dtype=torch.float64).tolist()
            mean_rr = float(np.clip(math.exp(mu + sd * z[0]), RR_MIN, RR_MAX))
            cv = float(np.clip(cv_mu + cv_sd * z[1], 0.0, 0.5))
            n = int(length / (RR_MIN * fs)) + 2
            rr = mean_rr * torch.exp(cv * torch.randn(n, generator=generator, dtype=torch.float64)).numpy()
            rr = np.clip(rr, RR_MIN, RR_MAX) * fs
            start = float(torch.rand(1, generator=generator, dtype=torch.float64)) * rr[0]
            peaks = start + np.concatenate([[0.0], np.cumsum(rr[1:])])
            out.append(np.round(peaks[peaks < length]).astype(np.int64))
        return out

    def sample_maps(self, y: torch.Tensor, length: int, fs: int = FS,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Rhythm maps (B, MAP_CHANNELS, length) on y's device for one drawn rhythm per label vector of y."""
        peaks = self.sample_peaks(y, length, fs, generator)
        maps = np.stack([phase_map(p, length, fs) for p in peaks])
        return torch.from_numpy(maps).to(device=y.device)

    def summary(self, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per class: records, median heart rate (bpm) and mean R-R CV of the fitted statistics."""
        names = list(class_names) + ["all"]
        s = self.stats.double().cpu()
        return {n: {"records": int(self.counts[i]), "hr_bpm": round(60.0 / math.exp(float(s[i, 0])), 1),
                    "rr_cv": round(float(s[i, 2]), 3)} for i, n in enumerate(names)}


def fit_rhythm(model: RhythmModel, dataset, progress: bool = True) -> RhythmModel:
    """Fit ``model`` on every ECG of a GeneratorDataset (items (x, y, ...)); the peaks come from :func:`detect_peaks`."""
    peaks, labels = [], []
    for i in tqdm(range(len(dataset)), desc="rhythm: R peaks of the training ECGs", disable=not progress,
                  leave=False):
        item = dataset[i]
        peaks.append(detect_peaks(item[0].numpy()))
        labels.append(item[1].numpy())
    return model.fit(peaks, np.stack(labels))
