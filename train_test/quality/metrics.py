"""Metrics of synthetic-ECG quality on arrays: feature distances, precision/recall, spectra, lead statistics, copies.

Small pure functions (numpy, scipy, scikit-learn) that the report (:mod:`train_test.quality.driver`) feeds with ECGs
and classifier features: :func:`frechet_distance` (Frechet distance between Gaussian fits of two feature sets, the FID
recipe of Heusel et al. 2017 on an ECG classifier's penultimate layer); :func:`kernel_distance` (unbiased squared MMD
with the cubic polynomial kernel ``(x.y / d + 1)^3``, KID of Binkowski et al. 2018 with the unbiased statistic of
Gretton et al. 2012, JMLR 13:723: centred on 0 for equal distributions, can be slightly negative); :func:`prdc`
(precision, recall, density and coverage with k-NN balls, Naeem et al. 2020; precision and recall as in Kynkaanniemi
et al. 2019); :func:`welch_psd` / :func:`psd_js_distance` (per-lead Welch spectra, each ECG's spectrum scaled to unit
mass in the band, i.e. spectral *shape*, averaged over ECGs and compared with the Jensen-Shannon distance, base 2, in
[0, 1]); :func:`lead_correlations` / :func:`correlation_distance` (inter-lead Pearson matrices and the mean absolute
difference of the averaged matrices' off-diagonal entries); :func:`limb_errors` (violation of Einthoven/Goldberger,
:func:`nvae_ecg.leads.limb_identity_error`); :func:`pooled_signals` / :func:`nearest_distances` /
:func:`memorisation` (distance of every generated ECG to its nearest real training ECG against the same distance for
real test ECGs: a copying generator shifts it towards 0). The physiology lives in :mod:`train_test.quality.physiology`.

Example::

    python -c "import numpy as np; from train_test.quality import frechet_distance; a = np.random.default_rng(0).normal(size=(500, 8)); print(frechet_distance(a, a), frechet_distance(a, a + 1))"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def ecg_array(signals, name: str = "signals") -> np.ndarray:
    """``signals`` as an array, checked to be (n, 12, samples) ECGs."""
    x = np.asarray(signals)
    if x.ndim != 3 or x.shape[1] != len(LEADS12):
        raise ValueError(f"{name}: expected (n, 12, samples) ECGs in mV, got shape {x.shape}")
    return x


def welch_psd(signals, fs: float = FS, segment_s: float = PSD_SEGMENT_S) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density of every lead: frequencies (F,) and (n, 12, F) float32 (mV^2/Hz)."""
    x = ecg_array(signals)
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
    x = np.asarray(ecg_array(signals), dtype=np.float64)
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
    x = ecg_array(signals)
    return np.array([limb_identity_error(np.asarray(e, dtype=np.float64)) for e in x], dtype=np.float64)


# ------------------------------------------------------------------------------------------- memorisation


def pooled_signals(signals, pool: int = NN_POOL) -> np.ndarray:
    """(n, 12 * T // pool) float32: each lead minus its median (baseline offsets), averaged over ``pool`` samples."""
    x = np.asarray(ecg_array(signals), dtype=np.float32)
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


# ------------------------------------------------------------------------------------------- helpers


def finite_mean(values) -> float | None:
    """Mean of the finite values, None and NaN left out (None when none is left)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def finite_or_none(x) -> float | None:
    """``x`` as a float, or None when it is None, NaN or inf (a JSON-safe number)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)

