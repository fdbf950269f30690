"""Physiology of 12-lead ECGs for the quality report: intervals, rate, axis, voltage, and per-class criteria.

:func:`ecg_physiology` / :func:`physiology_batch` measure heart rate, RR irregularity, PR, QRS, QT, QTc (Bazett),
frontal QRS axis and Sokolow-Lyon voltage of one ECG. With the ``neurokit2`` backend R peaks come from
``neurokit2.ecg_peaks`` and the waves from ``neurokit2.ecg_delineate(method="peak")`` on lead II (Makowski et al.
2021, Behavior Research Methods 53:1689): PR = P onset to Q peak, QRS = Q peak to S peak, QT = Q peak to T offset
(the R peak stands in for a missing Q), each the median over beats; they are a few tens of ms shorter than the
clinical onset-based intervals, equally for real and generated ECGs (neurokit2's wavelet delineator placed the QRS
onset on the P wave of the demo and sample records, so its peak method is used); the axis and Sokolow-Lyon voltage
come from baseline-corrected QRS windows around the R peaks. The ``ecg_stats`` backend (the project's adaptive
Pan-Tompkins detector, :mod:`nvae_ecg.ecg_stats`) is the fallback when neurokit2 is missing and gives no PR/QRS/QT.
:data:`CHECKS` turns the measurements into per-class pass rates; :func:`physiology_of` runs the measurements over a
sampled source in worker processes.

Example::

    python -c "from nvae_ecg.data.synthetic import simulate_ecg; from train_test.quality import ecg_physiology; print(ecg_physiology(simulate_ecg(['STach']).signal, backend='ecg_stats'))"
"""

from __future__ import annotations

import importlib
import math
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np
from scipy import signal as sps
from tqdm import tqdm

from nvae_ecg.leads import LEADS12
from train_test.quality.metrics import FS, ecg_array

if TYPE_CHECKING:
    from train_test.figures import Pool

#: Physiology measured per ECG, in this order (units: bpm, 1, ms, ms, ms, ms, degrees, mV).
PHYS_METRICS = ("hr", "rr_cv", "pr", "qrs", "qt", "qtc", "axis", "sokolow")
PHYS_UNITS = {"hr": "bpm", "rr_cv": "", "pr": "ms", "qrs": "ms", "qt": "ms", "qtc": "ms", "axis": "deg",
              "sokolow": "mV"}
PHYS_NAMES = {"hr": "heart rate", "rr_cv": "RR coefficient of variation", "pr": "PR (P onset to Q peak)",
              "qrs": "QRS (Q to S peak)", "qt": "QT (Q peak to T offset)", "qtc": "QTc (Bazett)",
              "axis": "frontal QRS axis", "sokolow": "Sokolow-Lyon voltage"}
BACKENDS = ("auto", "neurokit2", "ecg_stats")
#: QRS window around an R peak (s before, s after) for the axis and voltages, and the PR-segment baseline window.
QRS_WINDOW = (0.05, 0.06)
BASELINE_WINDOW = (0.10, 0.06)
#: Lead II must span at least this many mV (a small QRS) to be searched for beats.
MIN_QRS_MV = 0.05


@dataclass(frozen=True)
class Check:
    """A per-class physiological check: ``lo < metric < hi`` (either bound may be None)."""

    metric: str
    lo: float | None
    hi: float | None
    text: str

    def passes(self, values) -> np.ndarray:
        """Boolean pass per value; NaN (not measurable) fails."""
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        if self.lo is not None:
            ok &= v > self.lo
        if self.hi is not None:
            ok &= v < self.hi
        return ok


#: The diagnostic criterion each class implies (textbook thresholds); MI and TAb have no one-number criterion.
CHECKS: dict[str, Check] = {
    "SR": Check("hr", 60.0, 100.0, "60 < HR < 100 bpm"),
    "SB": Check("hr", None, 60.0, "HR < 60 bpm"),
    "STach": Check("hr", 100.0, None, "HR > 100 bpm"),
    "AF": Check("rr_cv", 0.10, None, "RR coefficient of variation > 0.10"),
    "IAVB": Check("pr", 200.0, None, "PR > 200 ms"),
    "LAD": Check("axis", None, -30.0, "QRS axis < -30 deg"),
    "LVH": Check("sokolow", 3.5, None, "Sokolow-Lyon SV1 + max(RV5, RV6) > 3.5 mV"),
}


def resolve_backend(backend: str = "auto") -> str:
    """'auto' -> 'neurokit2' when it imports, else 'ecg_stats'; an explicit neurokit2 must import."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown physiology backend {backend!r}; choose one of {BACKENDS}")
    if backend == "ecg_stats":
        return backend
    try:
        importlib.import_module("neurokit2")
    except ImportError:
        if backend == "neurokit2":
            raise ImportError("neurokit2 is not installed: pip install -r requirements.txt "
                              "(or choose --physiology_backend ecg_stats)") from None
        return "ecg_stats"
    return "neurokit2"


def backend_description(backend: str) -> str:
    """Human-readable name and version of a resolved physiology backend."""
    if backend == "neurokit2":
        import neurokit2

        return f"neurokit2 {neurokit2.__version__} (ecg_clean, ecg_peaks, ecg_delineate method='peak'; lead II)"
    return "nvae_ecg.ecg_stats (adaptive Pan-Tompkins R peaks on lead II; no PR/QRS/QT)"


@lru_cache(maxsize=4)
def _highpass(fs: float):
    return sps.butter(2, 0.5, btype="highpass", fs=fs, output="sos")


def _valid_length(x12: np.ndarray) -> int:
    # Records shorter than 10 s are zero-padded by the preparation; the padding is no signal.
    nz = np.flatnonzero(np.any(x12 != 0, axis=0))
    return int(nz[-1]) + 1 if len(nz) else 0


def _nan_metrics() -> dict:
    return {m: math.nan for m in PHYS_METRICS}


def _r_peaks(lead: np.ndarray, fs: float, backend: str) -> tuple[np.ndarray, dict | None]:
    if backend == "neurokit2":
        import neurokit2 as nk

        clean = nk.ecg_clean(lead, sampling_rate=fs)
        _, info = nk.ecg_peaks(clean, sampling_rate=fs)
        peaks = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
        waves = None
        if len(peaks) >= 3:
            _, waves = nk.ecg_delineate(clean, peaks, sampling_rate=fs, method="peak")
        return peaks, waves
    from nvae_ecg.ecg_stats import detect_r_peaks

    x12 = np.zeros((len(LEADS12), len(lead)))
    x12[LEADS12.index("II")] = lead
    return detect_r_peaks(x12, fs, "II"), None


def _interval_ms(waves: dict, start: str, end: str, fs: float) -> float:
    a = np.asarray(waves[start], dtype=np.float64)
    b = np.asarray(waves[end], dtype=np.float64)
    n = min(len(a), len(b))
    d = (b[:n] - a[:n]) * 1000.0 / fs
    # A non-positive interval is a beat whose waves were found out of order: no measurement, not a zero.
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if len(d) else math.nan


def _qrs_amplitudes(x12: np.ndarray, peaks: np.ndarray, fs: float) -> dict:
    """Median over beats of the baseline-corrected net QRS area and extremes of the leads used by the checks."""
    hp = sps.sosfiltfilt(_highpass(float(fs)), x12, axis=-1)
    b0, b1 = int(round(BASELINE_WINDOW[0] * fs)), int(round(BASELINE_WINDOW[1] * fs))
    q0, q1 = int(round(QRS_WINDOW[0] * fs)), int(round(QRS_WINDOW[1] * fs))
    peaks = peaks[(peaks - b0 >= 0) & (peaks + q1 < hp.shape[1])]
    if not len(peaks):
        return {}
    idx = {name: LEADS12.index(name) for name in ("I", "aVF", "V1", "V5", "V6")}
    beats = np.stack([hp[:, p - q0: p + q1 + 1] - hp[:, p - b0: p - b1].mean(axis=1, keepdims=True) for p in peaks])
    area = np.median(beats.sum(axis=-1), axis=0) / fs
    lo, hi = np.median(beats.min(axis=-1), axis=0), np.median(beats.max(axis=-1), axis=0)
    # Frontal axis from the net QRS areas of I (0 deg) and aVF (+90 deg), the hexaxial textbook construction.
    axis = math.degrees(math.atan2(area[idx["aVF"]], area[idx["I"]]))
    sokolow = -lo[idx["V1"]] + max(hi[idx["V5"]], hi[idx["V6"]])
    return {"axis": axis, "sokolow": float(sokolow)}


def ecg_physiology(x12, fs: float = FS, backend: str = "neurokit2") -> dict:
    """HR, RR CV, PR, QRS, QT, QTc, QRS axis and Sokolow-Lyon voltage of one (12, n) mV ECG (NaN: unmeasurable)."""
    x = np.asarray(x12, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(LEADS12):
        raise ValueError(f"expected a 12-lead ECG of shape (12, n) in mV, got {x.shape}")
    x = x[:, : _valid_length(x)]
    out = _nan_metrics()
    if x.shape[1] < 2 * fs or not np.isfinite(x).all():
        return out
    lead = x[LEADS12.index("II")]
    if np.ptp(lead) < MIN_QRS_MV:
        # A (near-)flat lead has no beats; R-peak detectors find round-off ripples in one otherwise.
        return out
    try:
        with warnings.catch_warnings():
            # neurokit2 warns about short or odd signals (and pandas about its chained assignments): NaN says it.
            warnings.simplefilter("ignore")
            peaks, waves = _r_peaks(lead, float(fs), backend)
    except (ValueError, IndexError, ZeroDivisionError, KeyError, TypeError):
        # A generated trace without a detectable rhythm (noise, a flat line) has no physiology to measure.
        return out
    if len(peaks) < 3:
        return out
    rr = np.diff(peaks) / fs
    out["hr"] = float(60.0 / rr.mean())
    out["rr_cv"] = float(rr.std() / rr.mean())
    if waves is not None:
        # The QRS is anchored at the Q peak, or at the R peak in beats without a detectable Q wave (a qR-less
        # lead II is common), so the QRS and QT of such beats are measured rather than dropped.
        q = np.asarray(waves["ECG_Q_Peaks"], dtype=np.float64)[: len(peaks)]
        q = np.where(np.isfinite(q), q, peaks[: len(q)].astype(np.float64))
        waves = {**waves, "qrs_start": q}
        out["pr"] = _interval_ms(waves, "ECG_P_Onsets", "qrs_start", fs)
        out["qrs"] = _interval_ms(waves, "qrs_start", "ECG_S_Peaks", fs)
        out["qt"] = _interval_ms(waves, "qrs_start", "ECG_T_Offsets", fs)
        # Bazett (1920): QT / sqrt(RR in s), with the mean RR of the record.
        out["qtc"] = out["qt"] / math.sqrt(rr.mean()) if math.isfinite(out["qt"]) else math.nan
    out.update(_qrs_amplitudes(x, peaks, float(fs)))
    return out


def physiology_batch(signals, fs: float = FS, backend: str = "neurokit2") -> dict[str, np.ndarray]:
    """:func:`ecg_physiology` of every ECG of an (n, 12, T) array, as one (n,) array per metric (picklable worker)."""
    x = ecg_array(signals)
    rows = [ecg_physiology(e, fs, backend) for e in x]
    return {m: np.array([r[m] for r in rows], dtype=np.float64) for m in PHYS_METRICS}


def check_fractions(phys: dict, labels, class_names: Sequence[str]) -> dict[str, dict]:
    """Per class with a check: the fraction of ECGs carrying it that pass, over all of them (unmeasurable = fail)."""
    y = np.asarray(labels)
    out = {}
    for c, name in enumerate(class_names):
        check = CHECKS.get(name)
        if check is None:
            continue
        rows = np.flatnonzero(y[:, c] == 1)
        values = np.asarray(phys[check.metric], dtype=np.float64)[rows]
        n = len(rows)
        out[name] = {"check": check.text, "n": int(n), "n_measured": int(np.isfinite(values).sum()),
                     "fraction": float(check.passes(values).mean()) if n else None}
    return out


def summarise(values) -> dict:
    """Median, quartiles and counts of the finite values (None when there is none)."""
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if not len(ok):
        return {"median": None, "q1": None, "q3": None, "n": int(len(v)), "n_measured": 0}
    q1, med, q3 = np.percentile(ok, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": int(len(v)), "n_measured": int(len(ok))}


# ------------------------------------------------------------------------------------------- over a source


def _fork_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def physiology_of(pool: Pool, rows: np.ndarray, backend: str, workers: int, desc: str, chunk: int = 16) -> dict:
    """:func:`train_test.quality.physiology_batch` over the sampled ECGs, in ``workers`` processes."""
    chunks = [rows[lo: lo + chunk] for lo in range(0, len(rows), chunk)]
    results = []
    bar = tqdm(total=len(rows), desc=desc, unit="ECG", leave=False)
    if workers <= 1:
        for c in chunks:
            results.append(physiology_batch(pool.get_many(c), FS, backend))
            bar.update(len(c))
    else:
        with ProcessPoolExecutor(workers, mp_context=_fork_context()) as ex:
            # A bounded window of chunks keeps at most a few batches of signals in flight.
            for start in range(0, len(chunks), 4 * workers):
                window = chunks[start: start + 4 * workers]
                futures = [ex.submit(physiology_batch, pool.get_many(c), FS, backend) for c in window]
                for c, fut in zip(window, futures):
                    results.append(fut.result())
                    bar.update(len(c))
    bar.close()
    if not results:
        return {m: np.zeros(0) for m in PHYS_METRICS}
    return {m: np.concatenate([r[m] for r in results]) for m in PHYS_METRICS}
