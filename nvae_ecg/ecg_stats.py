"""R peaks, heart rate and median heartbeats of 12-lead ECGs, for the report figures.

The R-peak detector follows neurokit2's default QRS detector (``nk.ecg_clean`` +
``nk.ecg_peaks``, method "neurokit", the one the quality report's neurokit2
backend uses; Makowski et al. 2021, Behavior Research Methods 53:1689) with the
decision rules of Pan & Tompkins (1985, IEEE Trans. Biomed. Eng. 32(3), 230-236),
on ``scipy`` only: lead II is cleaned as by neurokit2 (0.5 Hz 5th-order
high-pass, one 50 Hz period of moving average, both zero phase); in its 5-15 Hz
QRS band the squared gradient, averaged over 100 ms, marks a QRS where it
exceeds 1.5 times its own 750 ms moving average, a threshold that follows the
local QRS energy (the earlier single global threshold, set by a few wide PVCs,
missed most beats of tachycardic or noisy records). Each stretch's candidate is
its most prominent interior extremum of either sign in the QRS band (so QS complexes and
negative ectopic beats count; a monotonic slope, a T-wave flank, has none).
Candidates then pass Pan & Tompkins' rules: running signal/noise levels of the
prominences with the threshold at noise + 25 % of (signal - noise), a 200 ms
refractory period (the more prominent of two candidates wins), the T-wave test
(within 360 ms of a beat and under half its steepest slope), and a searchback at
half the thresholds when an RR gap exceeds 1.66 times the recent mean RR.
The heart rate is 60 / mean RR interval (the definition used by
:func:`nvae_ecg.data.synthetic.simulate_ecg`), NaN with fewer than three beats
(two detections, e.g. at the two ends of a flat or noisy trace, are no rhythm).
Trailing samples that are exactly zero in every lead (the zero padding of
records shorter than 10 s) are ignored. Median beats (for overlaying real and
generated heartbeats) are the sample-wise median of the windows around the R
peaks of one lead, after a 0.5 Hz zero-phase high-pass that removes baseline
wander.

Example::

    python -m nvae_ecg.ecg_stats GEN_DIR/signals.npy --max 20
"""

from __future__ import annotations

import argparse
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy import signal as sps

from nvae_ecg.leads import LEADS12

#: Pass band (Hz) of the QRS search (Pan & Tompkins use about 5-15 Hz).
QRS_BAND = (5.0, 15.0)
#: High-pass cut-off (Hz) and order of the cleaning filter (neurokit2's ecg_clean, method "neurokit").
HIGHPASS_HZ = 0.5
HIGHPASS_ORDER = 5
#: Mains frequency (Hz) whose period is averaged out by the cleaning (neurokit2's default).
POWERLINE_HZ = 50.0
#: Smoothing window (s) of the squared QRS-band gradient, and the window (s) of its moving average (the threshold).
SMOOTH_S = 0.1
AVERAGE_S = 0.75
#: A QRS is where the smoothed squared gradient exceeds this multiple of its moving average.
GRADIENT_THRESHOLD = 1.5
#: Stretches shorter than this fraction of the mean stretch length are no QRS.
MIN_LENGTH_FRACTION = 0.4
#: The R peak's prominence must be at least this fraction of its stretch's peak-to-peak swing (a QRS's largest
#: wave is about half of it or more; a ripple on a T-wave slope a few per cent).
MIN_PROMINENCE_FRACTION = 0.3
#: Refractory period (s): no two R peaks closer than this (Pan & Tompkins' 200 ms, 300 bpm).
REFRACTORY_S = 0.2
#: A candidate within this time (s) of the previous beat with at most half its steepest slope is its T wave.
T_WAVE_S = 0.36
#: Pan-Tompkins threshold: noise level + this fraction of (signal level - noise level), on the prominences.
THRESHOLD_WEIGHT = 0.25
#: A gap longer than this multiple of the mean of the last 8 RR intervals is searched back at half the threshold.
SEARCHBACK_RR = 1.66
#: A lead whose cleaned peak-to-peak amplitude is below this (mV) has no detectable QRS (flat or constant
#: signals would otherwise yield "peaks" in their round-off ripple).
MIN_QRS_MV = 0.05
#: Fewer detected beats than this give no heart rate.
MIN_BEATS = 3
#: Default window of a heartbeat around its R peak (s before, s after).
BEAT_WINDOW = (0.25, 0.45)


@lru_cache(maxsize=16)
def _sos(fs: float, band: tuple, btype: str, order: int = 2):
    return sps.butter(order, band if btype == "bandpass" else band[0], btype=btype, fs=fs, output="sos")


def _valid_length(x12: np.ndarray) -> int:
    """Number of samples before the trailing all-zero padding (all samples when there is none)."""
    nz = np.flatnonzero(np.any(x12 != 0, axis=0))
    return int(nz[-1]) + 1 if len(nz) else 0


def _lead(x12, lead: str) -> np.ndarray:
    x = np.asarray(x12, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(LEADS12):
        raise ValueError(f"expected a 12-lead ECG of shape (12, n) in mV, got shape {x.shape}")
    if lead not in LEADS12:
        raise ValueError(f"unknown lead {lead!r}; choose one of {LEADS12}")
    return x[LEADS12.index(lead), : _valid_length(x)]


def clean_lead(x: np.ndarray, fs: float = 500.0) -> np.ndarray:
    """One lead cleaned as neurokit2's ``ecg_clean`` (0.5 Hz 5th-order Butterworth high-pass, 50 Hz moving average)."""
    hp = sps.sosfiltfilt(_sos(float(fs), (HIGHPASS_HZ,), "highpass", HIGHPASS_ORDER), np.asarray(x, dtype=np.float64))
    # One mains period of moving average, forwards and backwards (neurokit2's "powerline" filter).
    width = int(fs / POWERLINE_HZ) if fs >= 100 else 2
    return sps.filtfilt(np.ones(width), [width], hp, method="pad")


def _qrs_candidates(clean: np.ndarray, fs: float, weight: float = GRADIENT_THRESHOLD
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak index, prominence and steepest slope of every stretch of steep QRS-band energy (adaptive threshold)."""
    none = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    # The gradient of the QRS band (Pan & Tompkins' 5-15 Hz): tall, sharp T waves pass a 0.5 Hz high-pass
    # almost as steep as a small QRS and would be taken for beats.
    band = sps.sosfiltfilt(_sos(float(fs), QRS_BAND, "bandpass"), clean)
    grad = np.gradient(band)
    smooth = ndimage.uniform_filter1d(grad ** 2, int(np.rint(SMOOTH_S * fs)), mode="nearest")
    average = ndimage.uniform_filter1d(smooth, int(np.rint(AVERAGE_S * fs)), mode="nearest")
    qrs = smooth > weight * average
    begins = np.flatnonzero(~qrs[:-1] & qrs[1:])
    ends = np.flatnonzero(qrs[:-1] & ~qrs[1:])
    if not len(begins):
        return none
    ends = ends[ends > begins[0]]
    n = min(len(begins), len(ends))
    begins, ends = begins[:n], ends[:n]
    if not n:
        return none
    keep = (ends - begins) >= MIN_LENGTH_FRACTION * np.mean(ends - begins)
    peaks, proms, slopes = [], [], []
    for b, e in zip(begins[keep], ends[keep]):
        seg = band[b:e]
        # The most prominent interior extremum of either sign. A stretch without one (a monotonic slope, e.g.
        # the down-slope of a tall T wave) is no QRS: neurokit2's guard, for both polarities.
        up, up_props = sps.find_peaks(seg, prominence=(None, None))
        down, down_props = sps.find_peaks(-seg, prominence=(None, None))
        ext = np.concatenate([up, down])
        if not len(ext):
            continue
        prom = np.concatenate([up_props["prominences"], down_props["prominences"]])
        h = float(prom.max())
        if h < MIN_PROMINENCE_FRACTION * np.ptp(seg):
            # A ripple on a slope (a notched T wave): the stretch's swing is not a peak of its own.
            continue
        peaks.append(int(b + ext[np.argmax(prom)]))
        proms.append(h)
        slopes.append(float(np.abs(grad[b:e]).max()))
    return np.asarray(peaks, dtype=np.int64), np.asarray(proms), np.asarray(slopes)


def r_peaks_of_lead(x: np.ndarray, fs: float = 500.0) -> np.ndarray:
    """Sample indices of the R peaks of one mV lead (adaptive thresholds, peaks of either polarity)."""
    x = np.asarray(x, dtype=np.float64)
    # The filters need a few times their length in samples; below 1 s there is no rate to measure anyway.
    if x.ndim != 1 or len(x) < fs or not np.isfinite(x).all():
        return np.zeros(0, dtype=np.int64)
    clean = clean_lead(x, fs)
    if np.ptp(clean) < MIN_QRS_MV:
        return np.zeros(0, dtype=np.int64)
    cand, prom, slope = _qrs_candidates(clean, fs)
    # Searchback pool: the stretches above half the threshold (a beat right before a large PVC shares its window).
    back, back_prom, back_slope = _qrs_candidates(clean, fs, 0.5 * GRADIENT_THRESHOLD)
    if not len(cand):
        return np.zeros(0, dtype=np.int64)
    # Pan-Tompkins' running signal and noise levels, on the candidates' prominences, started from the median
    # candidate of the first 2 s (robust to one large ectopic beat there); each accepted beat moves the signal
    # level an eighth of the way, so a few wide PVCs cannot silence the rest of the record.
    first = prom[cand < 2 * fs]
    spk, npk = float(np.median(first if len(first) else prom)), 0.0
    refractory, t_window = REFRACTORY_S * fs, T_WAVE_S * fs
    pos: list[int] = []      # accepted beats: sample index, prominence, steepest slope
    height: list[float] = []
    steep: list[float] = []
    for k in range(len(cand)):
        thr = npk + THRESHOLD_WEIGHT * (spk - npk)
        if len(pos) > 1 and cand[k] - pos[-1] > SEARCHBACK_RR * np.mean(np.diff(pos[-9:])):
            # A long gap: search back at half the threshold for the most prominent beat skipped in it.
            inside = (back - pos[-1] >= refractory) & (cand[k] - back >= refractory) & (back_prom > 0.5 * thr)
            if inside.any():
                j = np.flatnonzero(inside)[np.argmax(back_prom[inside])]
                pos.append(int(back[j]))
                height.append(float(back_prom[j]))
                steep.append(float(back_slope[j]))
                spk = 0.25 * back_prom[j] + 0.75 * spk
        if pos and cand[k] - pos[-1] < refractory:
            # Two candidates inside the refractory period: the more prominent is the QRS (neurokit2 keeps the
            # first, which loses a QRS behind a noise spike).
            if prom[k] > height[-1]:
                pos[-1], height[-1], steep[-1] = int(cand[k]), float(prom[k]), float(slope[k])
            continue
        if pos and cand[k] - pos[-1] < t_window and slope[k] < 0.5 * steep[-1]:
            # Pan-Tompkins' T-wave test: soon after a beat and at most half its steepest slope.
            npk = 0.125 * prom[k] + 0.875 * npk
            continue
        if prom[k] >= thr:
            pos.append(int(cand[k]))
            height.append(float(prom[k]))
            steep.append(float(slope[k]))
            spk = 0.125 * prom[k] + 0.875 * spk
        else:
            npk = 0.125 * prom[k] + 0.875 * npk
    return np.unique(np.asarray(pos, dtype=np.int64))


def detect_r_peaks(x12, fs: float = 500.0, lead: str = "II") -> np.ndarray:
    """Sample indices of the R peaks of a (12, n) mV ECG, detected on one lead (default II)."""
    return r_peaks_of_lead(_lead(x12, lead), fs)


def rate_from_peaks(peaks, fs: float = 500.0) -> float:
    """Heart rate in bpm from R-peak sample indices (60 / mean RR); NaN with fewer than MIN_BEATS peaks."""
    peaks = np.asarray(peaks)
    if len(peaks) < MIN_BEATS:
        return float("nan")
    return float(60.0 * fs / np.mean(np.diff(peaks)))


def heart_rate(x12, fs: float = 500.0, lead: str = "II") -> float:
    """Heart rate in bpm (60 / mean RR of the detected R peaks); NaN when fewer than MIN_BEATS beats are found."""
    return rate_from_peaks(detect_r_peaks(x12, fs, lead), fs)


def heart_rates(signals, fs: float = 500.0, lead: str = "II") -> np.ndarray:
    """Heart rate (bpm, NaN where undetectable) of every ECG of a (N, 12, n) array."""
    return np.array([heart_rate(np.asarray(s), fs, lead) for s in signals], dtype=np.float64)


def median_beat(x12, fs: float = 500.0, lead: str = "I", detect_lead: str = "II",
                window: tuple[float, float] = BEAT_WINDOW, peaks: np.ndarray | None = None) -> np.ndarray | None:
    """Median beat of one lead around the R peaks (given, or found on ``detect_lead``); None without a whole beat."""
    x = _lead(x12, lead)
    peaks = detect_r_peaks(x12, fs, detect_lead) if peaks is None else np.asarray(peaks, dtype=np.int64)
    before, after = int(round(window[0] * fs)), int(round(window[1] * fs))
    peaks = peaks[(peaks - before >= 0) & (peaks + after <= len(x))]
    if len(peaks) == 0 or len(x) < 3 * fs:
        return None
    hp = sps.sosfiltfilt(_sos(float(fs), (0.5,), "highpass"), x)
    beats = np.stack([hp[p - before: p + after] for p in peaks])
    return np.median(beats, axis=0)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="python -m nvae_ecg.ecg_stats", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("signals", help="a .npy file of shape (N, 12, n) or (12, n) in mV")
    p.add_argument("--fs", type=float, default=500.0, help="sampling rate in Hz")
    p.add_argument("--lead", default="II", choices=LEADS12, help="lead the R peaks are detected on")
    p.add_argument("--max", type=int, default=0, help="only the first MAX ECGs (0: all)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    """Print the number of beats and the heart rate of every ECG in a .npy file."""
    x = np.load(args.signals, mmap_mode="r")
    x = x[None] if x.ndim == 2 else x
    n = len(x) if args.max <= 0 else min(args.max, len(x))
    for i in range(n):
        peaks = detect_r_peaks(np.asarray(x[i]), args.fs, args.lead)
        print(f"{i}\t{len(peaks)} beats\t{rate_from_peaks(peaks, args.fs):.1f} bpm")


if __name__ == "__main__":
    main(parse_args())
