"""Metrics of synthetic-ECG quality: feature distances, precision/recall, spectra, lead statistics, physiology, copies.

Every function here is small, pure (numpy, scipy, scikit-learn; neurokit2 for the
physiology) and works on arrays, so :mod:`train_test.evaluate_quality` only has to
feed it ECGs and classifier features:

- :func:`frechet_distance`: Frechet distance between Gaussians fitted to two feature
  sets (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to
  a local Nash equilibrium": the FID recipe applied to an ECG classifier's penultimate layer);
- :func:`kernel_distance`: the unbiased squared MMD with the cubic polynomial kernel
  ``(x.y / d + 1)^3`` (KID, Binkowski et al. 2018, "Demystifying MMD GANs"; the
  unbiased statistic of Gretton et al. 2012, JMLR 13:723), so it is centred on 0 for
  equal distributions and can be slightly negative;
- :func:`prdc`: precision, recall, density and coverage with k-nearest-neighbour balls
  (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models";
  precision and recall as in Kynkaanniemi et al. 2019);
- :func:`welch_psd` / :func:`psd_js_distance`: per-lead Welch spectra, each ECG's
  spectrum normalised to unit mass in the band (spectral *shape*, not power), averaged
  over ECGs, compared with the Jensen-Shannon distance (base 2, in [0, 1]);
- :func:`lead_correlations` / :func:`correlation_distance`: inter-lead Pearson matrices
  and the mean absolute difference of the averaged matrices' off-diagonal entries;
- :func:`limb_errors`: the violation of Einthoven/Goldberger per ECG
  (:func:`nvae_ecg.leads.limb_identity_error`);
- :func:`ecg_physiology` / :func:`physiology_batch`: heart rate, RR irregularity, PR,
  QRS, QT, QTc (Bazett), frontal QRS axis and Sokolow-Lyon voltage of one ECG; with
  the ``neurokit2`` backend R peaks come from ``neurokit2.ecg_peaks`` and the waves
  from ``neurokit2.ecg_delineate(method="peak")`` on lead II (Makowski et al. 2021,
  Behavior Research Methods 53:1689): PR = P onset to Q peak, QRS = Q peak to S peak, QT = Q peak
  to T offset (the R peak stands in for a missing Q), each the median over beats;
  they are a few tens of ms shorter than the clinical onset-based intervals, equally
  for real and generated ECGs (neurokit2's wavelet delineator placed the QRS onset on
  the P wave of the demo and sample records, so its peak method is used); the axis
  and Sokolow-Lyon voltage come from baseline-corrected QRS windows around the R
  peaks. The ``ecg_stats`` backend (the project's adaptive Pan-Tompkins
  detector, :mod:`nvae_ecg.ecg_stats`) is the fallback when neurokit2 is missing and
  gives no PR/QRS/QT. :data:`CHECKS` turns them into per-class pass rates;
- :func:`pooled_signals` / :func:`nearest_distances` / :func:`memorisation`: the
  distance of every generated ECG to its nearest real training ECG against the same
  distance for real test ECGs (a copying generator shifts it towards 0).

Example::

    python -c "import numpy as np; from train_test.quality import frechet_distance; a = np.random.default_rng(0).normal(size=(500, 8)); print(frechet_distance(a, a), frechet_distance(a, a + 1))"
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import linalg
from scipy import signal as sps
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import pairwise_distances
from sklearn.metrics.pairwise import polynomial_kernel
from sklearn.neighbors import NearestNeighbors

from nvae_ecg.leads import LEADS12, limb_identity_error

FS = 500.0
#: Band (Hz) of the spectral comparison: the diagnostic band of the 500 Hz recordings.
PSD_BAND = (0.5, 150.0)
#: Welch segment length (s): 0.5 Hz resolution, five overlapping segments in 10 s.
PSD_SEGMENT_S = 2.0
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
#: Pooling of the memorisation distance: mean of every 10 samples (500 -> 50 Hz) forgives a few ms of jitter.
NN_POOL = 10
#: Expected fraction of generated ECGs below the 1st percentile of test-to-train distances for a novel generator.
MEMORISATION_PERCENTILE = 1.0
#: A generator is flagged when more than this fraction of its ECGs lies below that percentile (5x the expected 1 %).
MEMORISATION_ALARM = 0.05


# ------------------------------------------------------------------------------------------- feature-space metrics


def _features(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a (n, d) feature array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: features contain NaN or inf")
    return a


def _pair(feat_a, feat_b, min_n: int) -> tuple[np.ndarray, np.ndarray] | None:
    a, b = _features(feat_a, "feat_a"), _features(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets of different widths: {a.shape[1]} and {b.shape[1]}")
    if len(a) < min_n or len(b) < min_n:
        return None
    return a, b


def frechet_distance(feat_a, feat_b) -> float:
    """Squared Frechet distance between Gaussian fits of two (n, d) feature sets; NaN with fewer than 2 rows."""
    pair = _pair(feat_a, feat_b, 2)
    if pair is None:
        return math.nan
    a, b = pair
    mu = a.mean(axis=0) - b.mean(axis=0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr sqrt(Ca Cb) = sum of sqrt(eigenvalues of sqrt(Ca) Cb sqrt(Ca)), a symmetric PSD matrix with the
    # eigenvalues of Ca Cb: two symmetric eigendecompositions instead of a general matrix square root, stable
    # when the covariances are singular (fewer ECGs of a class than feature dimensions).
    w, v = linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    lam = linalg.eigvalsh(root_a @ cb @ root_a)
    fd = float(mu @ mu + np.trace(ca) + np.trace(cb) - 2.0 * np.sqrt(np.clip(lam, 0.0, None)).sum())
    # A squared distance: what remains below zero is round-off.
    return max(fd, 0.0)


def kernel_distance(feat_a, feat_b, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased squared MMD with the polynomial kernel (x.y/d + coef0)^degree (KID); NaN with fewer than 2 rows."""
    pair = _pair(feat_a, feat_b, 2)
    if pair is None:
        return math.nan
    a, b = pair
    gamma = 1.0 / a.shape[1]
    kaa = polynomial_kernel(a, a, degree=degree, gamma=gamma, coef0=coef0)
    kbb = polynomial_kernel(b, b, degree=degree, gamma=gamma, coef0=coef0)
    kab = polynomial_kernel(a, b, degree=degree, gamma=gamma, coef0=coef0)
    m, n = len(a), len(b)
    # Unbiased MMD^2 (Gretton et al. 2012): within-set sums leave out the diagonal, the cross term keeps every pair.
    saa = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    sbb = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(saa + sbb - 2.0 * kab.mean())


@dataclass
class PRDC:
    """Precision, recall, density and coverage of a generated feature set against a real one."""

    precision: float
    recall: float
    density: float
    coverage: float

    def to_dict(self) -> dict:
        """Plain dictionary."""
        return {"precision": self.precision, "recall": self.recall, "density": self.density,
                "coverage": self.coverage}


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    # k + 1 neighbours because every point is its own nearest neighbour at distance 0.
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, k]


#: Relative shrink of the k-NN radii: the official strict "inside" rule, robust to round-off (see :func:`prdc`).
_RADIUS_SHRINK = 1.0 - 1e-9


def prdc(real_feats, fake_feats, k: int = 5) -> PRDC:
    """Precision, recall, density, coverage (Naeem et al. 2020) with k-NN balls; NaN when a set has <= k rows.

    A point is inside a ball when its distance is strictly below the radius (the k-th neighbour's distance,
    the point itself excluded), as in the official implementation (clovaai/generative-evaluation-prdc), so
    identical sets give density 1 (each ball holds its centre and the k - 1 nearer neighbours).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pair = _pair(real_feats, fake_feats, k + 1)
    if pair is None:
        return PRDC(math.nan, math.nan, math.nan, math.nan)
    real, fake = pair
    # The k-th neighbour lies on its ball's boundary and must stay outside; the radius routine and the cross
    # distances differ by round-off (1e-16 relative), which must not pull it inside, so the radii shrink by a
    # relative margin far below any real gap between neighbours.
    r_real = _kth_neighbour_radius(real, k) * _RADIUS_SHRINK
    r_fake = _kth_neighbour_radius(fake, k) * _RADIUS_SHRINK
    d = pairwise_distances(real, fake)  # (n_real, n_fake)
    inside_real = d < r_real[:, None]
    precision = inside_real.any(axis=0).mean()
    recall = (d < r_fake[None, :]).any(axis=1).mean()
    density = inside_real.sum() / (k * fake.shape[0])
    coverage = (d.min(axis=1) < r_real).mean()
    return PRDC(float(precision), float(recall), float(density), float(coverage))


# ------------------------------------------------------------------------------------------- signal statistics


def _ecgs(signals, name: str = "signals") -> np.ndarray:
    x = np.asarray(signals)
    if x.ndim != 3 or x.shape[1] != len(LEADS12):
        raise ValueError(f"{name}: expected (n, 12, samples) ECGs in mV, got shape {x.shape}")
    return x


def welch_psd(signals, fs: float = FS, segment_s: float = PSD_SEGMENT_S) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density of every lead: frequencies (F,) and (n, 12, F) float32 (mV^2/Hz)."""
    x = _ecgs(signals)
    nperseg = int(min(round(segment_s * fs), x.shape[-1]))
    freqs, p = sps.welch(np.asarray(x, dtype=np.float64), fs=fs, nperseg=nperseg, axis=-1)
    return freqs, p.astype(np.float32)


def normalised_spectra(freqs, psd, band: tuple[float, float] = PSD_BAND) -> tuple[np.ndarray, np.ndarray]:
    """Band-limited spectra scaled to unit mass per ECG and lead (NaN where a lead is flat)."""
    freqs = np.asarray(freqs)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    p = np.asarray(psd, dtype=np.float64)[..., keep]
    mass = p.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return freqs[keep], np.where(mass > 0, p / mass, np.nan)


def psd_js_distance(spectrum_a, spectrum_b) -> np.ndarray:
    """Jensen-Shannon distance (base 2, 0..1) per lead between two (leads, F) mean spectra; NaN for empty ones."""
    a, b = np.atleast_2d(spectrum_a), np.atleast_2d(spectrum_b)
    if a.shape != b.shape:
        raise ValueError(f"spectra of different shapes {a.shape} and {b.shape}")
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if np.isfinite(a[i]).all() and np.isfinite(b[i]).all() and a[i].sum() > 0 and b[i].sum() > 0:
            out[i] = float(jensenshannon(a[i], b[i], base=2))
    return out


def lead_correlations(signals) -> np.ndarray:
    """Pearson correlation between leads of every ECG: (n, 12, 12), NaN rows/columns for flat leads."""
    x = np.asarray(_ecgs(signals), dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=-1))
    cov = np.einsum("nit,njt->nij", x, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / (norm[:, :, None] * norm[:, None, :])


def correlation_distance(corr_a, corr_b) -> float:
    """Mean absolute difference of the off-diagonal entries of two (12, 12) mean correlation matrices."""
    a, b = np.asarray(corr_a, dtype=np.float64), np.asarray(corr_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected two square matrices of one shape, got {a.shape} and {b.shape}")
    off = ~np.eye(a.shape[0], dtype=bool)
    diff = np.abs(a - b)[off]
    diff = diff[np.isfinite(diff)]
    return float(diff.mean()) if len(diff) else math.nan


def limb_errors(signals) -> np.ndarray:
    """Largest violation (mV) of the four limb-lead identities, per ECG."""
    x = _ecgs(signals)
    return np.array([limb_identity_error(np.asarray(e, dtype=np.float64)) for e in x], dtype=np.float64)


# ------------------------------------------------------------------------------------------- physiology


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
    x = _ecgs(signals)
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


# ------------------------------------------------------------------------------------------- memorisation


def pooled_signals(signals, pool: int = NN_POOL) -> np.ndarray:
    """(n, 12 * T // pool) float32: each lead minus its median (baseline offsets), averaged over ``pool`` samples."""
    x = np.asarray(_ecgs(signals), dtype=np.float32)
    x = x - np.median(x, axis=-1, keepdims=True)
    t = x.shape[-1] // pool * pool
    return x[..., :t].reshape(x.shape[0], x.shape[1], -1, pool).mean(axis=-1).reshape(x.shape[0], -1)


def nearest_distances(queries, refs, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each pooled query row: the RMS distance (mV) to its nearest reference row and that row's index."""
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim != 2:
        raise ValueError(f"expected (n, d) queries, got {q.shape}")
    best = np.full(len(q), np.inf)
    arg = np.full(len(q), -1, dtype=np.int64)
    qq = (q * q).sum(axis=1)
    n_ref = len(refs)
    if n_ref == 0:
        return np.full(len(q), np.nan), arg
    for lo in range(0, n_ref, chunk):
        r = np.asarray(refs[lo: lo + chunk], dtype=np.float64)
        if r.shape[1] != q.shape[1]:
            raise ValueError(f"queries of width {q.shape[1]} and references of width {r.shape[1]}")
        d2 = qq[:, None] + (r * r).sum(axis=1)[None, :] - 2.0 * q @ r.T
        j = d2.argmin(axis=1)
        v = d2[np.arange(len(q)), j]
        better = v < best
        best[better], arg[better] = v[better], lo + j[better]
    return np.sqrt(np.maximum(best, 0.0) / q.shape[1]), arg


def relative_nearest_distances(queries, refs, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-reference RMS distance divided by the query's own RMS amplitude, and the reference index.

    The relative error of explaining each query by its nearest training ECG: about 0 for a near copy, about 1 or
    more for a flat, weak or noise-like query. Absolute distances would call a near-flat generator a copier,
    because it sits next to the lowest-amplitude training ECGs.
    """
    d, arg = nearest_distances(queries, refs, chunk)
    q = np.asarray(queries, dtype=np.float64)
    amp = np.sqrt(np.mean(q * q, axis=1)) if q.size else np.zeros(len(d))
    return d / np.maximum(amp, 1e-12), arg


def memorisation(gen_to_train, test_to_train, percentile: float = MEMORISATION_PERCENTILE,
                 alarm: float = MEMORISATION_ALARM) -> dict:
    """Fraction of generated ECGs closer to a training ECG than the given percentile of test-to-train distances."""
    g = np.asarray(gen_to_train, dtype=np.float64)
    t = np.asarray(test_to_train, dtype=np.float64)
    g, t = g[np.isfinite(g)], t[np.isfinite(t)]
    if not len(g) or not len(t):
        return {"threshold": None, "fraction_below": None, "flagged": None, "median_distance": None,
                "n": int(len(g)), "n_reference": int(len(t))}
    thr = float(np.percentile(t, percentile))
    frac = float((g < thr).mean())
    return {"threshold": thr, "fraction_below": frac, "flagged": bool(frac > alarm),
            "median_distance": float(np.median(g)), "n": int(len(g)), "n_reference": int(len(t))}
