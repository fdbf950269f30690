"""Quality of the generated ECGs while a generator trains: heart rate per class, R peaks, spectra, a 12-lead figure.

:class:`QualityMonitor` is built once from the training
:class:`~nvae_ecg.data.datasets.GeneratorDataset`. It fixes a list of labels, one
one-hot label per class present in the training split, ``n_per_class`` ECGs each,
and measures the real reference of every class on up to ``max_real`` training ECGs
carrying it (the 8 leads mapped to mV by the dataset's bounds and expanded to 12
with :mod:`nvae_ecg.leads`): their median heart rate and their mean Welch spectrum.
Every call of :meth:`QualityMonitor.evaluate` samples the fixed labels with the
caller's ``sample_fn`` (under ``torch.no_grad`` and a forked, fixed-seed RNG, so the
training RNG stream is never shifted and a resumed run stays bit for bit) and returns
a flat dict of floats:

- ``r_peaks`` (and ``r_peaks/CLASS``): the share of generated ECGs whose R peaks
  are detectable: at least three on lead II, a plausible rate (30-220 bpm) and
  beats that look alike (median correlation of the beats with their median beat
  >= 0.6; the adaptive detector alone finds "beats" at 100-120 bpm in white noise);
- ``beat_corr``: the median of that beat consistency over the ECGs (0 without
  beats), a continuous signal of a generator learning the shape of a heartbeat;
- ``hr/CLASS`` and ``hr_real/CLASS``: the median heart rate (bpm, NaN when no ECG
  has one) of the generated and of the real ECGs of the class; ``hr_error`` the mean
  absolute difference of the two over the classes where both exist;
- ``hr_order``: 1.0 when the medians order SB < SR < STach, else 0.0 (only when the
  three classes are monitored);
- ``psd_js`` (and ``psd_js/CLASS``): the Jensen-Shannon distance (base 2, 0..1) of
  the Welch spectra, with the recipe of the quality report
  (:mod:`train_test.quality`): each lead's spectrum in 0.5-150 Hz scaled to unit
  mass, averaged over the ECGs of a class, compared per lead with the real class
  mean, averaged over the 12 leads and then over the classes;
- ``seconds``: the wall-clock time of the evaluation.

R peaks and heart rates come from :mod:`nvae_ecg.ecg_stats` (an adaptive
Pan-Tompkins detector that follows neurokit2's default QRS detector; on the real
Challenge 2021 sample records its rates agree with neurokit2's within 3 bpm on every
record where neurokit2 and wfdb's XQRS agree, see ``tests/test_r_peaks_real.py``):
no neurokit2 import, ~5 ms per ECG. A real ECG of the class, scored as if generated,
gets R peaks 100 %, its class's heart rate and a PSD-JS of ~0.15 (the floor of 4
ECGs per class against the class mean); uniform noise 0 % and ~0.8. One evaluation
of the ``small`` cNVAE-ECG (9 classes x 4 ECGs) takes ~4 s on 2 CPU cores, ~3.5 s of
it sampling; the 9 figures ~1-2 s more.
:meth:`QualityMonitor.log` writes the scalars to TensorBoard under ``quality/``, one
12-lead figure per class (:func:`nvae_ecg.plot.plot_ecg12`) under ``quality/ecg/``,
and one line to the training log::

    step 500 quality: R-peaks 92% | HR SR 74 (real 78) SB 52 (48) STach 121 (130) | SB<SR<STach yes | PSD-JS 0.08

``nvae_ecg.train`` and ``pulse2pulse.train`` call it every ``--quality_every`` steps
and at the end of training.

Example::

    python -m nvae_ecg.monitor --data_dir prepared --n_per_class 4
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from scipy import signal as sps
from scipy.spatial.distance import jensenshannon

from nvae_ecg.data import DATASETS
from nvae_ecg.ecg_stats import BEAT_WINDOW, MIN_BEATS, clean_lead, detect_r_peaks, rate_from_peaks
from nvae_ecg.leads import LEADS12, eight_to_twelve

FS = 500.0
#: Plausible heart rates (bpm): an ECG counts as having detectable R peaks with >= 3 peaks and a rate in this range.
HR_RANGE = (30.0, 220.0)
#: Least median correlation of the beats with their median beat (lead II) for the R peaks to count as detected.
#: Measured: the 35 real Challenge 2021 sample records (500 Hz) >= 0.70 (Ningbo JS20013, tachycardia with PVCs),
#: synthetic demo ECGs >= 0.91 (AF >= 0.67); uniform or smoothed noise and random walks <= 0.52 (40 each), a flat
#: line with random spikes 0.21-0.65 (median 0.53).
MIN_CONSISTENCY = 0.6
#: Spectral band (Hz) and Welch segment (s), as the quality report (train_test.quality.PSD_BAND, PSD_SEGMENT_S).
PSD_BAND = (0.5, 150.0)
PSD_SEGMENT_S = 2.0
#: Classes whose median heart rates must order SB < SR < STach.
HR_ORDER = ("SB", "SR", "STach")
#: Seed of the sampling noise of every evaluation (the same noise at every step: changes are the model's).
DEFAULT_SEED = 12345


def beat_consistency(x12: np.ndarray, peaks: np.ndarray, fs: float = FS) -> float:
    """Median correlation of every whole beat of lead II (cleaned, BEAT_WINDOW around its R peak) with the median beat.

    NaN with fewer than MIN_BEATS whole beats. Real ECGs score >= 0.7 (AF and PVCs included), noise <= 0.5.
    """
    lead = clean_lead(x12[LEADS12.index("II")], fs)
    before, after = int(round(BEAT_WINDOW[0] * fs)), int(round(BEAT_WINDOW[1] * fs))
    peaks = np.asarray(peaks, dtype=np.int64)
    peaks = peaks[(peaks - before >= 0) & (peaks + after <= len(lead))]
    if len(peaks) < MIN_BEATS:
        return float("nan")
    beats = np.stack([lead[p - before: p + after] for p in peaks])
    beats = beats - beats.mean(axis=1, keepdims=True)
    template = np.median(beats, axis=0)
    template = template - template.mean()
    denom = np.linalg.norm(beats, axis=1) * np.linalg.norm(template)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, beats @ template / denom, 0.0)
    return float(np.median(corr))


def measure(x12: np.ndarray, fs: float = FS) -> tuple[float, float]:
    """(heart rate, beat consistency) of one (12, n) mV ECG; the rate is NaN unless its R peaks are detectable.

    Detectable: at least MIN_BEATS R peaks on lead II, a rate in HR_RANGE and a beat consistency of at least
    MIN_CONSISTENCY (the adaptive detector finds "beats" in white noise too, at 100-120 bpm).
    """
    if not np.isfinite(x12).all():
        return float("nan"), float("nan")
    peaks = detect_r_peaks(x12, fs, "II")
    hr = rate_from_peaks(peaks, fs)
    if not HR_RANGE[0] <= hr <= HR_RANGE[1]:
        return float("nan"), float("nan")
    consistency = beat_consistency(x12, peaks, fs)
    return (hr if consistency >= MIN_CONSISTENCY else float("nan")), consistency


def _median(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else float("nan")


def mean_spectrum(x12: np.ndarray, fs: float = FS) -> np.ndarray:
    """Mean over ECGs of the unit-mass Welch spectra (12, F) in PSD_BAND of (n, 12, T) mV ECGs (NaN for flat leads)."""
    x = np.nan_to_num(np.asarray(x12, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    nperseg = int(min(round(PSD_SEGMENT_S * fs), x.shape[-1]))
    freqs, p = sps.welch(x, fs=fs, nperseg=nperseg, axis=-1)
    p = p[..., (freqs >= PSD_BAND[0]) & (freqs <= PSD_BAND[1])]
    mass = p.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(mass > 0, p / mass, np.nan)
    return p.mean(axis=0)


def spectrum_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) of two (12, F) spectra, averaged over the leads where both are defined."""
    out = []
    for la, lb in zip(a, b):
        if np.isfinite(la).all() and np.isfinite(lb).all() and la.sum() > 0 and lb.sum() > 0:
            out.append(float(jensenshannon(la, lb, base=2)))
    return float(np.mean(out)) if out else float("nan")


SampleFn = Callable[[torch.Tensor], torch.Tensor]


class QualityMonitor:
    """Fixed labels and the real reference of a training set; :meth:`evaluate` measures a generator against them."""

    def __init__(self, dataset, n_per_class: int = 4, max_real: int = 32, seed: int = DEFAULT_SEED,
                 fs: float = FS):
        if n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
        labels = np.asarray(dataset.labels, dtype=np.float32)
        self.bounds = dataset.bounds
        self.fs = float(fs)
        self.seed = int(seed)
        self.n_per_class = int(n_per_class)
        self.max_real = int(max_real)
        names = list(dataset.class_names)
        # Columns of the label vector (and names) of the classes present in the training split, in column order.
        self.columns = [k for k in range(labels.shape[1]) if labels[:, k].sum() > 0]
        self.class_names = [names[k] for k in self.columns]
        if not self.columns:
            raise ValueError("the training set carries none of its classes: nothing to monitor")
        eye = np.eye(labels.shape[1], dtype=np.float32)
        self.labels = torch.from_numpy(np.repeat(eye[self.columns], self.n_per_class, axis=0))
        self.real_hr: dict[str, float] = {}
        self.real_spectrum: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        for k, name in zip(self.columns, self.class_names):
            rows = np.flatnonzero(labels[:, k] > 0)
            # Evenly spread over the split (records are in file order, often grouped by source folder).
            rows = rows[np.unique(np.linspace(0, len(rows) - 1, min(max_real, len(rows))).round().astype(int))]
            x12 = self._to_mv(np.stack([dataset[int(i)][0].numpy() for i in rows]))
            self.real_hr[name] = _median([measure(x, self.fs)[0] for x in x12])
            self.real_spectrum[name] = mean_spectrum(x12, self.fs)
        self.reference_seconds = time.perf_counter() - t0
        self.last_signals: np.ndarray | None = None  # (C * n, 12, T) mV of the last evaluation
        self.last_hr: np.ndarray | None = None

    def describe(self) -> str:
        """What is monitored and the real reference: ECGs per class, classes, real median HR per class."""
        hr = " ".join(f"{c} {v:.0f}" if math.isfinite(v) else f"{c} -" for c, v in self.real_hr.items())
        return (f"{self.n_per_class} ECGs for each of {len(self.class_names)} classes; real median HR (bpm, up to "
                f"{self.max_real} training ECGs per class, {self.reference_seconds:.1f} s): {hr}")

    def _to_mv(self, x01) -> np.ndarray:
        """(B, 8, T) unit-range signals to (B, 12, T) float64 mV."""
        return eight_to_twelve(self.bounds.from_unit(np.asarray(x01, dtype=np.float64)))

    @torch.no_grad()
    def generate(self, sample_fn: SampleFn, device: torch.device | str | None = None) -> np.ndarray:
        """(C * n, 12, T) mV ECGs from ``sample_fn(labels)`` under a forked RNG seeded with ``seed``."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(self.seed)
            if cuda:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(self.seed)
            x01 = sample_fn(self.labels.to(device))
        x = x01.detach().to("cpu", torch.float64).numpy()
        if x.ndim != 3 or x.shape[0] != len(self.labels) or x.shape[1] != 8:
            raise ValueError(f"sample_fn returned shape {tuple(x.shape)}; expected ({len(self.labels)}, 8, T)")
        return self._to_mv(x)

    def evaluate(self, sample_fn: SampleFn, step: int | None = None,
                 device: torch.device | str | None = None) -> dict[str, float]:
        """Quality figures (flat dict of floats, see the module docstring) of ``sample_fn``'s ECGs for the labels."""
        t0 = time.perf_counter()
        x12 = self.generate(sample_fn, device)
        hr, consistency = np.array([measure(x, self.fs) for x in x12]).T
        self.last_signals, self.last_hr = x12, hr
        n = self.n_per_class
        m: dict[str, float] = {}
        if step is not None:
            m["step"] = float(step)
        m["r_peaks"] = float(np.isfinite(hr).mean())
        m["beat_corr"] = float(np.median(np.nan_to_num(consistency, nan=0.0)))
        errors, js = [], []
        for c, name in enumerate(self.class_names):
            sl = slice(c * n, (c + 1) * n)
            m[f"r_peaks/{name}"] = float(np.isfinite(hr[sl]).mean())
            m[f"hr/{name}"] = _median(hr[sl])
            m[f"hr_real/{name}"] = self.real_hr[name]
            if math.isfinite(m[f"hr/{name}"]) and math.isfinite(self.real_hr[name]):
                errors.append(abs(m[f"hr/{name}"] - self.real_hr[name]))
            m[f"psd_js/{name}"] = spectrum_distance(mean_spectrum(x12[sl], self.fs), self.real_spectrum[name])
            js.append(m[f"psd_js/{name}"])
        m["hr_error"] = float(np.mean(errors)) if errors else float("nan")
        if all(c in self.class_names for c in HR_ORDER):
            a, b, c_ = (m[f"hr/{c}"] for c in HR_ORDER)
            m["hr_order"] = float(a < b < c_)  # False when a median is NaN
        js = np.asarray(js, dtype=np.float64)
        m["psd_js"] = float(js[np.isfinite(js)].mean()) if np.isfinite(js).any() else float("nan")
        m["seconds"] = time.perf_counter() - t0
        return m

    def summary(self, metrics: dict[str, float], step: int) -> str:
        """One log line: share with R peaks, HR per class (real), the SB < SR < STach check, PSD distance, time."""
        def bpm(v: float) -> str:
            return f"{v:.0f}" if math.isfinite(v) else "-"

        hr = " ".join(f"{c} {bpm(metrics[f'hr/{c}'])} ({'real ' if i == 0 else ''}{bpm(metrics[f'hr_real/{c}'])})"
                      for i, c in enumerate(self.class_names))
        parts = [f"step {step} quality: R-peaks {100 * metrics['r_peaks']:.0f}%", f"HR {hr}"]
        if "hr_order" in metrics:
            parts.append(f"SB<SR<STach {'yes' if metrics['hr_order'] else 'no'}")
        js = metrics["psd_js"]
        parts.append(f"PSD-JS {js:.3f}" if math.isfinite(js) else "PSD-JS -")
        parts.append(f"{metrics['seconds']:.1f} s")
        return " | ".join(parts)

    def figures(self, title: str = "", scale: float = 0.6) -> dict[str, "object"]:
        """One 12-lead figure per class (the first ECG of its label) from the last evaluation: {class: Figure}."""
        from nvae_ecg.plot import plot_ecg12

        if self.last_signals is None:
            return {}
        out = {}
        for c, name in enumerate(self.class_names):
            i = c * self.n_per_class
            hr = self.last_hr[i]
            rate = f"{hr:.0f} bpm" if math.isfinite(hr) else "no R peaks"
            out[name] = plot_ecg12(np.nan_to_num(self.last_signals[i]), fs=self.fs,
                                   title=f"generated {name} ({rate}){' ' + title if title else ''}", scale=scale)
        return out

    def log(self, writer, logger, metrics: dict[str, float], step: int, figures: bool = True,
            title: str = "") -> str:
        """Write the scalars (``quality/...``), the figures (``quality/ecg/CLASS``) and the log line; returns it."""
        for k, v in metrics.items():
            if k != "step" and math.isfinite(v):
                writer.add_scalar(f"quality/{k}", v, step)
        if figures:
            import matplotlib.pyplot as plt

            for name, fig in self.figures(title=f"step {step}{' ' + title if title else ''}").items():
                writer.add_figure(f"quality/ecg/{name}", fig, step)
                plt.close(fig)
        line = self.summary(metrics, step)
        if logger is not None:
            logger.info("%s", line)
        return line

    def __call__(self, sample_fn: SampleFn, writer, logger, step: int, device=None, figures: bool = True,
                 title: str = "") -> dict[str, float]:
        """Evaluate and log; the returned metrics' ``seconds`` include the figures."""
        t0 = time.perf_counter()
        metrics = self.evaluate(sample_fn, step, device)
        self.log(writer, logger, metrics, step, figures, title)
        if writer is not None:
            writer.add_scalar("quality/seconds_total", time.perf_counter() - t0, step)
        return metrics


def run_monitor(dataset, quality_every: int, n_per_class: int, is_main: bool, logger,
                detail: str = "") -> Optional[QualityMonitor]:
    """The trainers' quality monitor: built and announced on rank 0 when ``quality_every`` > 0, else None."""
    if not (is_main and quality_every > 0):
        return None
    monitor = QualityMonitor(dataset, n_per_class=n_per_class)
    logger.info("quality monitor every %d steps%s: %s", quality_every, detail, monitor.describe())
    return monitor


def add_quality_args(p: argparse.ArgumentParser, temperature: bool = False) -> None:
    """The trainers' flags: ``--quality_every`` and ``--quality_n`` (and ``--quality_temperature`` for the VAE)."""
    g = p.add_argument_group("quality while training (nvae_ecg.monitor)")
    g.add_argument("--quality_every", type=int, default=500,
                   help="every k steps (and at the end), sample --quality_n ECGs per class and log R-peak share, "
                        "heart rate per class against the real class, Welch-PSD distance and a 12-lead figure "
                        "(0: off)")
    g.add_argument("--quality_n", type=int, default=4, help="ECGs per class sampled by the quality monitor")
    if temperature:
        g.add_argument("--quality_temperature", type=float, default=0.8,
                       help="sampling temperature of the quality monitor (as the sample figures)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags of the self-check."""
    p = argparse.ArgumentParser(prog="python -m nvae_ecg.monitor", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", required=True, help="prepared data folder")
    p.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="prepared dataset")
    p.add_argument("--classes", default="all", help="classes ('all' or comma-separated abbreviations)")
    p.add_argument("--n_per_class", type=int, default=4, help="ECGs per class")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Score real training ECGs of the requested class as a generator (a sanity check of the reference)."""
    from nvae_ecg.data.datasets import GeneratorDataset

    ds = GeneratorDataset(args.data_dir, args.dataset, split="train", classes=args.classes)
    mon = QualityMonitor(ds, n_per_class=args.n_per_class)
    rng = np.random.default_rng(0)

    def real(y: torch.Tensor) -> torch.Tensor:
        out = []
        for row in y.numpy():
            rows = np.flatnonzero(ds.labels[:, int(np.argmax(row))] > 0)
            out.append(ds[int(rng.choice(rows))][0])
        return torch.stack(out)

    m = mon.evaluate(real, 0)
    print(f"reference of {len(mon.class_names)} classes in {mon.reference_seconds:.1f} s")
    print(mon.summary(m, 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
