"""R peaks, heart rate and median heartbeats of 12-lead ECGs, for the report figures.

The R-peak detector is a simplified Pan-Tompkins detector (Pan & Tompkins 1985,
IEEE Trans. Biomed. Eng. 32(3), 230-236) built on ``scipy.signal``: lead II is
band-passed to 5-15 Hz (2nd-order Butterworth, zero phase; this keeps the steep
QRS slopes and drops P/T waves and baseline wander), differentiated, squared and
integrated over a 120 ms moving window. Peaks of that envelope at least 250 ms
apart (at most 240 bpm) and above 30 % of its 99.5th percentile are QRS
complexes; each R peak is placed at the largest absolute band-passed value
within 80 ms of its envelope peak, so beats align on the QRS, whatever its
polarity. The heart rate is 60 / mean RR interval (the definition used by
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
from scipy import signal as sps

from nvae_ecg.leads import LEADS12

#: Pass band (Hz) of the QRS detector (Pan & Tompkins use about 5-15 Hz).
QRS_BAND = (5.0, 15.0)
#: Refractory period (s): no two R peaks closer than this (240 bpm).
REFRACTORY_S = 0.25
#: Moving-window integration length (s) of the squared derivative.
INTEGRATION_S = 0.12
#: A QRS must exceed this fraction of the envelope's 99.5th percentile.
THRESHOLD_FRACTION = 0.3
#: A lead whose band-passed peak-to-peak amplitude is below this (mV) has no detectable QRS (flat or constant
#: signals would otherwise yield "peaks" in their round-off ripple).
MIN_QRS_MV = 0.05
#: Fewer detected beats than this give no heart rate.
MIN_BEATS = 3
#: Default window of a heartbeat around its R peak (s before, s after).
BEAT_WINDOW = (0.25, 0.45)


@lru_cache(maxsize=16)
def _sos(fs: float, band: tuple, btype: str):
    return sps.butter(2, band if btype == "bandpass" else band[0], btype=btype, fs=fs, output="sos")


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


def detect_r_peaks(x12, fs: float = 500.0, lead: str = "II") -> np.ndarray:
    """Sample indices of the R peaks of a (12, n) mV ECG (simplified Pan-Tompkins on one lead, default II)."""
    x = _lead(x12, lead)
    # sosfiltfilt needs a few times the filter order in samples; below 1 s there is no rate to measure anyway.
    if len(x) < fs or not np.isfinite(x).all():
        return np.zeros(0, dtype=np.int64)
    bp = sps.sosfiltfilt(_sos(float(fs), QRS_BAND, "bandpass"), x)
    if np.ptp(bp) < MIN_QRS_MV:
        return np.zeros(0, dtype=np.int64)
    env = np.gradient(bp) ** 2
    win = max(1, int(round(INTEGRATION_S * fs)))
    env = np.convolve(env, np.ones(win) / win, mode="same")
    ref = np.percentile(env, 99.5)
    if not ref > 0:
        return np.zeros(0, dtype=np.int64)
    cand, _ = sps.find_peaks(env, height=THRESHOLD_FRACTION * ref, distance=max(1, int(round(REFRACTORY_S * fs))))
    half = int(round(0.08 * fs))
    peaks = []
    for c in cand:
        lo, hi = max(0, c - half), min(len(bp), c + half + 1)
        peaks.append(lo + int(np.argmax(np.abs(bp[lo:hi]))))
    peaks = np.unique(np.asarray(peaks, dtype=np.int64))
    # Refinement can pull two envelope peaks onto one QRS; keep the first of any pair closer than the refractory.
    keep = [0] if len(peaks) else []
    for i in range(1, len(peaks)):
        if peaks[i] - peaks[keep[-1]] >= REFRACTORY_S * fs:
            keep.append(i)
    return peaks[keep]


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
