"""Figures of the quality report: spectra, inter-lead correlations, physiology and memorisation distances.

:func:`plot_psd` (mean unit-mass Welch spectrum per lead), :func:`plot_correlations` (mean inter-lead correlation
matrix per source), :func:`plot_physiology` (box plots of every physiological metric) and :func:`plot_memorisation`
(histograms of the relative distance to the nearest real training ECG), the real test ECGs in black first and every
generator in the colours of :mod:`train_test.figures`; :data:`FIGURES` names the files written into the report folder.

Example::

    python -m train_test.evaluate_quality --data_dir data/prepared --generated_root results/generated \\
        --out_dir results/quality --arch tiny --epochs 1 --device cpu
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nvae_ecg.leads import LEADS12  # noqa: E402
from train_test.figures import GEN_COLORS  # noqa: E402
from train_test.quality.physiology import PHYS_METRICS, PHYS_NAMES, PHYS_UNITS  # noqa: E402

FIGURES = ("quality_psd.png", "quality_correlation.png", "quality_physiology.png", "quality_memorisation.png")


def _color(k: int) -> str:
    return "black" if k == 0 else GEN_COLORS[(k - 1) % len(GEN_COLORS)]


def plot_psd(freqs: np.ndarray, spectra: dict[str, np.ndarray]) -> plt.Figure:
    """Mean unit-mass spectrum per lead, real test (black) vs. every generator."""
    fig, axes = plt.subplots(3, 4, figsize=(16, 9), sharex=True)
    for i, (ax, lead) in enumerate(zip(axes.flat, LEADS12)):
        for k, (name, s) in enumerate(spectra.items()):
            if s is not None and np.isfinite(s[i]).any():
                ax.semilogy(freqs, s[i], color=_color(k), lw=1.6 if k == 0 else 1.0, label=name)
        ax.set_title(lead, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlim(freqs[0], 100)
    for ax in axes[-1]:
        ax.set_xlabel("frequency (Hz)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Welch spectrum per lead (each ECG scaled to unit mass in 0.5-150 Hz, mean over ECGs)")
    fig.tight_layout()
    return fig


def plot_correlations(mats: dict[str, np.ndarray], dists: dict[str, float | None]) -> plt.Figure:
    """Mean inter-lead correlation matrix of every source, the real test one first."""
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1, 3.8), squeeze=False)
    im = None
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(12))
        ax.set_xticklabels(LEADS12, rotation=90, fontsize=6)
        ax.set_yticks(range(12))
        ax.set_yticklabels(LEADS12, fontsize=6)
        d = dists.get(name)
        ax.set_title(name if d is None else f"{name}\nmean |diff| {d:.3f}", fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="Pearson r")
    fig.suptitle("Inter-lead correlation (mean over ECGs)", fontsize=10)
    return fig


def plot_physiology(phys: dict[str, dict]) -> plt.Figure:
    """Box plots of every physiological metric per source (all sampled ECGs)."""
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    names = list(phys)
    for ax, m in zip(axes.flat, PHYS_METRICS):
        data = [np.asarray(phys[n][m])[np.isfinite(phys[n][m])] for n in names]
        for k, d in enumerate(data):
            if len(d):
                ax.boxplot([d], positions=[k], widths=0.6, showfliers=False,
                           medianprops=dict(color=_color(k), lw=2), boxprops=dict(color=_color(k)))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([f"{n}\n({len(d)})" for n, d in zip(names, data)], fontsize=7, rotation=20)
        ax.set_xlim(-0.6, len(names) - 0.4)
        unit = PHYS_UNITS[m]
        ax.set_title(f"{PHYS_NAMES[m]}" + (f" ({unit})" if unit else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Physiology of the sampled ECGs (number measured in brackets)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_memorisation(dists: dict[str, np.ndarray], threshold: float | None) -> plt.Figure:
    """Histograms of nearest-training-ECG distances: real test (black) vs. every generator."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    allv = np.concatenate([d[np.isfinite(d)] for d in dists.values() if len(d)] or [np.zeros(1)])
    hi = float(np.percentile(allv, 99.5)) if len(allv) else 1.0
    bins = np.linspace(0, max(hi, 1e-6), 40)
    for k, (name, d) in enumerate(dists.items()):
        d = d[np.isfinite(d)]
        if len(d):
            ax.hist(np.clip(d, 0, bins[-1]), bins=bins, density=True, histtype="step", lw=1.8 if k == 0 else 1.2,
                    color=_color(k), label=f"{name} (n={len(d)})")
    if threshold is not None:
        ax.axvline(threshold, color="grey", ls="--", lw=1, label="1st percentile of real test")
    ax.set_xlabel("RMS distance to the nearest real training ECG / the ECG's own RMS amplitude (50 Hz)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("Memorisation: a copying generator piles up at 0", fontsize=10)
    fig.tight_layout()
    return fig
