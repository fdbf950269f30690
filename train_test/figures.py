"""Figures of real vs. generated ECGs for the report: clinical plots, nearest neighbours, heartbeats, heart rates.

Reads the real training split of a prepared dataset (``nvae_ecg.data.prepare``;
the split the generators were trained on) and every generated-sample folder given
(grouped by the ``generator`` field of their ``meta.json``; a generator's
``imbalance`` and ``addition`` sets are pooled) and writes into OUT_DIR:

- ``ecg_<class>_real.png`` / ``ecg_<class>_<generator>.png``: one ECG per class and
  source in the clinical layout of :func:`nvae_ecg.plot.plot_ecg12` (real in black,
  generated in blue). An ECG whose only label is the class is preferred, else one
  that carries it among others;
- ``nearest_<generator>.png`` (paper Fig. 4/5): per class, the generated ECG of the
  clinical plot next to its nearest real training ECG of the same class. Distance:
  Euclidean over all 12 leads in mV after averaging every 10 samples (500 -> 50 Hz,
  which keeps the waveform but forgives a few ms of misalignment), among at most
  ``nn_candidates`` random training ECGs of the class; it is reported as the RMS
  difference in mV;
- ``heartbeat_lead_I.png`` (paper Fig. 6): per class, the median heartbeat of lead I
  (median over ECGs of each ECG's median beat aligned at its R peaks, see
  :mod:`nvae_ecg.ecg_stats`), real (black, with the interquartile band over ECGs)
  overlaid with every generator;
- ``heart_rate.png``: per class, the heart-rate distribution of real and generated
  ECGs (box plots with the individual ECGs), with 60 and 100 bpm marked, so that
  slow SB and fast STach are visible at a glance.

Heart rates and beats use up to ``max_per_class`` random ECGs carrying the class
per source. :func:`render_figures` returns the Markdown section that
``train_test.report`` puts into ``report.md``.

Example::

    python -m train_test.figures --data_dir data/prepared --generated_root results/generated --out_dir results/report
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS, NUM_CLASSES  # noqa: E402
from nvae_ecg.data.datasets import load_prepared, select_indices  # noqa: E402
from nvae_ecg.ecg_stats import BEAT_WINDOW, detect_r_peaks, median_beat, rate_from_peaks  # noqa: E402
from nvae_ecg.io import atomic_write_text  # noqa: E402
from nvae_ecg.leads import LEADS12  # noqa: E402
from nvae_ecg.plot import plot_ecg12, save_figure  # noqa: E402
from nvae_ecg.samples import read_samples  # noqa: E402
from train_test.data import add_generated_flags, discover_generated  # noqa: E402

REAL = "real"
REAL_COLOR = "black"
GENERATED_ECG_COLOR = "#1f4e9c"  # blue ink for generated ECGs on the red grid, black for real ones
GEN_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
NN_LEADS = ("I", "II", "V1", "V5")
NN_POOL = 10  # samples averaged per point of the nearest-neighbour distance (500 Hz -> 50 Hz)


@dataclass
class Pool:
    """ECGs of one source (real split or one generator's sets): (part, row) pairs over memory-mapped files."""

    name: str
    parts: list = field(default_factory=list)      # memory-mapped (N, 12, T) arrays
    part_names: list = field(default_factory=list)  # per part: record names (real) or None
    index: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_CLASSES), dtype=np.uint8))
    surrogate: bool = False
    length: int = 0

    def add(self, signals: np.ndarray, rows: np.ndarray, labels: np.ndarray, names=None) -> None:
        """Append rows of one (N, 12, T) array with their (len(rows), 9) labels."""
        if self.length and signals.shape[2] != self.length:
            raise ValueError(f"{self.name}: ECGs of {signals.shape[2]} and {self.length} samples cannot be compared")
        self.length = int(signals.shape[2])
        k = len(self.parts)
        self.parts.append(signals)
        self.part_names.append(names)
        rows = np.asarray(rows, dtype=np.int64)
        self.index = np.concatenate([self.index, np.stack([np.full(len(rows), k), rows], axis=1)])
        self.labels = np.concatenate([self.labels, np.asarray(labels, dtype=np.uint8).reshape(-1, NUM_CLASSES)])

    def __len__(self) -> int:
        return len(self.index)

    def get(self, i: int) -> np.ndarray:
        """ECG i of the pool as a (12, T) float64 array in mV."""
        part, row = self.index[i]
        return np.asarray(self.parts[part][row], dtype=np.float64)

    def get_many(self, idx: Sequence[int]) -> np.ndarray:
        """ECGs (len(idx), 12, T) float32, read with one sorted fancy index per part."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), 12, self.length), dtype=np.float32)
        for part in np.unique(self.index[idx, 0]):
            sel = np.flatnonzero(self.index[idx, 0] == part)
            rows = self.index[idx[sel], 1]
            order = np.argsort(rows)
            out[sel[order]] = self.parts[part][rows[order]]
        return out

    def describe(self, i: int) -> str:
        """'SR+MI' plus the record name for real ECGs."""
        labs = "+".join(a for a, v in zip(CLASS_ABBREVS, self.labels[i]) if v) or "no label"
        part, row = self.index[i]
        names = self.part_names[part]
        return f"{names[row]} ({labs})" if names is not None else labs

    def with_class(self, c: int) -> np.ndarray:
        """Indices of the pool's ECGs that carry class column c."""
        return np.flatnonzero(self.labels[:, c] == 1)

    def example(self, c: int, rng: np.random.Generator) -> int | None:
        """A random ECG whose only label is class c, else one carrying it; None when there is none."""
        only = np.flatnonzero((self.labels[:, c] == 1) & (self.labels.sum(axis=1) == 1))
        cand = only if len(only) else self.with_class(c)
        return int(rng.choice(cand)) if len(cand) else None


def real_pool(prepared_dir, dataset: str = "ptb-xl", split: str = "train") -> Pool:
    """The real ECGs of one split of a prepared dataset."""
    prep = load_prepared(prepared_dir, dataset)
    rows = select_indices(prep, split)
    pool = Pool(REAL)
    pool.add(prep.signals, rows, prep.labels[rows], names=prep.records["record"].tolist())
    return pool


def generated_pools(specs: Sequence[str] = (), root=None) -> dict[str, Pool]:
    """One pool per generator, pooling its task types (from ``--generated``/``--generated_root``)."""
    pools: dict[str, Pool] = {}
    for (gen, _task), gs in sorted(discover_generated(specs, root).items()):
        s = read_samples(gs.path)
        pool = pools.setdefault(gen, Pool(gen))
        pool.add(s.signals, np.arange(len(s)), s.labels)
        pool.surrogate = pool.surrogate or bool(s.meta.get("surrogate"))
    return pools


def _label(pool: Pool) -> str:
    return f"{pool.name} (surrogate)" if pool.surrogate else pool.name


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# ------------------------------------------------------------------------------------------- per-ECG statistics


@dataclass
class ClassStats:
    """Heart rates and lead-I median beats of up to max_per_class ECGs of one class and source."""

    n: int
    rates: np.ndarray
    beats: np.ndarray  # (n_with_beat, samples)


def class_stats(pool: Pool, c: int, max_n: int, fs: float, rng: np.random.Generator) -> ClassStats:
    """Heart rate and median lead-I beat of a random subset of the pool's ECGs carrying class c."""
    idx = pool.with_class(c)
    if len(idx) > max_n:
        idx = np.sort(rng.choice(idx, max_n, replace=False))
    rates, beats = [], []
    for x in pool.get_many(idx) if len(idx) else []:
        peaks = detect_r_peaks(x, fs, "II")
        rates.append(rate_from_peaks(peaks, fs))
        b = median_beat(x, fs, lead="I", peaks=peaks)
        if b is not None:
            beats.append(b)
    n_beat = int(round((BEAT_WINDOW[0] + BEAT_WINDOW[1]) * fs))
    return ClassStats(len(idx), np.asarray(rates, dtype=np.float64),
                      np.stack(beats) if beats else np.zeros((0, n_beat)))


# ------------------------------------------------------------------------------------------- nearest neighbours


def _pooled(x: np.ndarray) -> np.ndarray:
    """(B, 12, T) -> (B, 12 * T // NN_POOL): mean over consecutive NN_POOL samples, flattened."""
    t = x.shape[-1] // NN_POOL * NN_POOL
    return x[..., :t].reshape(x.shape[0], x.shape[1], -1, NN_POOL).mean(axis=-1).reshape(x.shape[0], -1)


def nearest_real(real: Pool, c: int, queries: np.ndarray, max_candidates: int, rng: np.random.Generator,
                 chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each (12, T) query: the index of the nearest real ECG carrying class c and the RMS distance (mV)."""
    cand = real.with_class(c)
    if len(cand) > max_candidates:
        cand = np.sort(rng.choice(cand, max_candidates, replace=False))
    if not len(cand):
        return np.full(len(queries), -1), np.full(len(queries), np.nan)
    if queries.shape[-1] != real.length:
        raise ValueError(f"generated ECGs have {queries.shape[-1]} samples, the real ones {real.length}: "
                         "nearest neighbours need equal lengths")
    q = _pooled(np.asarray(queries, dtype=np.float64))
    best = np.full(len(q), np.inf)
    arg = np.full(len(q), -1)
    for lo in range(0, len(cand), chunk):
        r = _pooled(real.get_many(cand[lo: lo + chunk]).astype(np.float64))
        d2 = (q ** 2).sum(1)[:, None] + (r ** 2).sum(1)[None] - 2 * q @ r.T
        j = d2.argmin(axis=1)
        better = d2[np.arange(len(q)), j] < best
        best[better] = d2[np.arange(len(q)), j][better]
        arg[better] = cand[lo + j[better]]
    return arg, np.sqrt(np.maximum(best, 0.0) / q.shape[1])


# ------------------------------------------------------------------------------------------- figures


def _ecg_grid(ax, width_s: float, lo: float, hi: float) -> None:
    # Major lines of ECG paper only (0.2 s x 0.5 mV), so the time and voltage scales stay readable.
    for t in np.arange(0, width_s + 1e-9, 0.2):
        ax.axvline(t, color="#f2b8b8", lw=0.4, zorder=0)
    for v in np.arange(np.ceil(lo / 0.5) * 0.5, hi + 1e-9, 0.5):
        ax.axhline(v, color="#f2b8b8", lw=0.4, zorder=0)


def _strips(ax, x12: np.ndarray, fs: float, color: str, leads: Sequence[str] = NN_LEADS, gap: float = 2.5) -> None:
    """Leads stacked top to bottom, gap mV apart, clipped to +-gap/2 around their baseline."""
    t = np.arange(x12.shape[1]) / fs
    hi = gap * (len(leads) - 0.5)
    _ecg_grid(ax, t[-1], -gap / 2, hi)
    for k, name in enumerate(leads):
        base = gap * (len(leads) - 1 - k)
        trace = x12[LEADS12.index(name)]
        ax.plot(t, base + np.clip(trace - np.median(trace), -gap / 2, gap / 2), color=color, lw=0.6)
        ax.text(0.02, base + 0.35 * gap, name, fontsize=7, fontweight="bold", va="center")
    ax.set_xlim(0, t[-1])
    ax.set_ylim(-gap / 2, hi)
    ax.set_yticks([])
    ax.tick_params(labelsize=7)


def plot_nearest(pool: Pool, rows: list, fs: float = 500.0) -> plt.Figure:
    """Rows (class, generated (12, T), real (12, T), real description, RMS mV): generated | nearest real."""
    fig, axes = plt.subplots(len(rows), 2, figsize=(16, 2.6 * len(rows)), squeeze=False, sharex=True)
    for r, (cls, gen, real, desc, dist) in enumerate(rows):
        _strips(axes[r, 0], gen, fs, GENERATED_ECG_COLOR)
        axes[r, 0].set_title(f"{cls}: generated by {_label(pool)}", fontsize=9, loc="left", color=GENERATED_ECG_COLOR)
        if real is None:
            axes[r, 1].text(0.5, 0.5, f"no real training ECG of class {cls}", ha="center", va="center",
                            transform=axes[r, 1].transAxes)
            axes[r, 1].set_axis_off()
        else:
            _strips(axes[r, 1], real, fs, REAL_COLOR)
            axes[r, 1].set_title(f"{cls}: nearest real training ECG {desc}, RMS distance {dist:.3f} mV",
                                 fontsize=9, loc="left")
    for ax in axes[-1]:
        ax.set_xlabel("time (s); grid 0.2 s x 0.5 mV", fontsize=8)
    fig.suptitle(f"Generated ECGs ({_label(pool)}, blue) next to their nearest real training ECG (black); "
                 f"leads {', '.join(NN_LEADS)}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.6 * len(rows))))
    return fig


def _class_axes(n: int, width: float = 15.0, height: float = 3.6):
    cols = 3
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes.flat


def plot_heartbeats(stats: dict, classes: Sequence[int], sources: Sequence[str], fs: float = 500.0) -> plt.Figure:
    """Per class: the median lead-I beat of real ECGs (IQR band) and of every generator, aligned at the R peak."""
    fig, axes = _class_axes(len(classes), height=3.2)
    n_beat = int(round((BEAT_WINDOW[0] + BEAT_WINDOW[1]) * fs))
    t = np.arange(n_beat) / fs - BEAT_WINDOW[0]
    for ax, c in zip(axes, classes):
        for k, src in enumerate(sources):
            st = stats[src][c]
            if not len(st.beats):
                if st.n:  # say so in the legend rather than silently leaving the generator out
                    ax.plot([], [], color=GEN_COLORS[(k - 1) % len(GEN_COLORS)] if k else REAL_COLOR, lw=1.3,
                            ls=":", label=f"{src} (no beat found in {st.n})")
                continue
            med = np.median(st.beats, axis=0)
            if src == REAL:
                q1, q3 = np.percentile(st.beats, [25, 75], axis=0)
                ax.fill_between(t, q1, q3, color="grey", alpha=0.3, lw=0)
                ax.plot(t, med, color=REAL_COLOR, lw=2.0, label=f"real (n={len(st.beats)})", zorder=5)
            else:
                ax.plot(t, med, color=GEN_COLORS[(k - 1) % len(GEN_COLORS)], lw=1.3,
                        label=f"{src} (n={len(st.beats)})", zorder=6)
        ax.axvline(0, color="grey", lw=0.6, ls=":")
        ax.set_title(CLASS_ABBREVS[c], fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("time from R peak (s)", fontsize=8)
        ax.set_ylabel("lead I (mV)", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
        if not any(len(stats[src][c].beats) for src in sources):
            ax.text(0.5, 0.5, "no ECG with a detected beat", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Median heartbeat of lead I per class: real (black, interquartile band over ECGs) vs. generated",
                 fontsize=11)
    fig.tight_layout()
    return fig


def plot_heart_rates(stats: dict, classes: Sequence[int], sources: Sequence[str]) -> plt.Figure:
    """Per class: box plots (with the individual ECGs) of the heart rate of every source; 60 and 100 bpm marked."""
    fig, axes = _class_axes(len(classes), height=3.4)
    rng = np.random.default_rng(0)
    for ax, c in zip(axes, classes):
        for k, src in enumerate(sources):
            r = stats[src][c].rates
            r = r[np.isfinite(r)]
            color = REAL_COLOR if src == REAL else GEN_COLORS[(k - 1) % len(GEN_COLORS)]
            if len(r):
                ax.boxplot([r], positions=[k], widths=0.6, showfliers=False, medianprops=dict(color=color, lw=2),
                           boxprops=dict(color=color), whiskerprops=dict(color=color), capprops=dict(color=color))
                ax.scatter(k + rng.uniform(-0.22, 0.22, len(r)), r, s=6, color=color, alpha=0.5, lw=0)
            else:
                ax.text(k, 0.5, "no rate\ndetected" if stats[src][c].n else "no ECG", ha="center", va="center",
                        transform=ax.get_xaxis_transform(), fontsize=7, color=color)
        ax.axhline(60, color="grey", lw=0.8, ls="--")
        ax.axhline(100, color="grey", lw=0.8, ls="-.")
        ax.set_xticks(range(len(sources)))
        ax.set_xticklabels([f"{s}\n(n={stats[s][c].n})" for s in sources], fontsize=7)
        ax.set_xlim(-0.6, len(sources) - 0.4)
        ax.set_ylim(0, 250)
        ax.set_ylabel("heart rate (bpm)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(CLASS_ABBREVS[c], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Heart rate per class (R peaks on lead II); grey lines: 60 bpm (SB below, dashed) and 100 bpm "
                 "(STach above, dash-dot)", fontsize=11)
    fig.tight_layout()
    return fig


def _hr_cell(r: np.ndarray, n: int) -> str:
    ok = r[np.isfinite(r)]
    if not len(ok):
        return f"n/a (0/{n})"
    q1, med, q3 = np.percentile(ok, [25, 50, 75])
    return f"{med:.0f} [{q1:.0f}-{q3:.0f}] ({len(ok)}/{n})"


def render_figures(prepared_dir, out_dir, generated: Sequence[str] = (), generated_root=None,
                   dataset: str = "ptb-xl", classes: Sequence[int] | None = None, max_per_class: int = 200,
                   nn_candidates: int = 2000, fs: float = 500.0, seed: int = 0, dpi: int = 110) -> dict:
    """Write every figure listed in the module docstring; return {"markdown", "written", "heart_rate"}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    real = real_pool(prepared_dir, dataset)
    gens = generated_pools(generated, generated_root) if (generated or generated_root) else {}
    classes = list(range(NUM_CLASSES)) if classes is None else list(classes)
    pools = {REAL: real, **gens}
    sources = list(pools)
    written: list[Path] = []
    md = ["## Real and generated ECGs\n",
          f"Real ECGs: the `{dataset}` training split of `{prepared_dir}` ({len(real)} ECGs). Generators: "
          + (", ".join(f"`{_label(p)}` ({len(p)} ECGs)" for p in gens.values()) or "none given") + ".\n"]

    # One example per class and source, in the clinical layout; the same generated ECG is used for the neighbours.
    examples: dict[str, dict[int, int | None]] = {}
    jobs = [(src, c) for src in sources for c in classes]
    for src, c in tqdm(jobs, desc="report: 12-lead plots", unit="fig", disable=None):
        pool = pools[src]
        i = pool.example(c, np.random.default_rng([seed, c, sources.index(src)]))
        examples.setdefault(src, {})[c] = i
        if i is None:
            continue
        who = f"real {dataset} training ECG {pool.describe(i)}" if src == REAL else \
            f"generated by {_label(pool)}, labels {pool.describe(i)}"
        fig = plot_ecg12(pool.get(i), fs=fs, title=f"{CLASS_ABBREVS[c]}: {who}",
                         color=REAL_COLOR if src == REAL else GENERATED_ECG_COLOR)
        written.append(save_figure(fig, out / f"ecg_{CLASS_ABBREVS[c]}_{_safe(src)}.png", dpi))
    md.append("### 12-lead ECGs per class (clinical layout: 25 mm/s, 10 mm/mV; real in black, generated in blue)\n")
    md.append("| class | " + " | ".join(sources) + " |")
    md.append("|---|" + "---|" * len(sources))
    for c in classes:
        a = CLASS_ABBREVS[c]
        cells = [f"![{a} {s}](ecg_{a}_{_safe(s)}.png)" if examples[s][c] is not None else "none" for s in sources]
        md.append(f"| {a} | " + " | ".join(cells) + " |")
    md.append("")

    # Nearest real training ECG of every generated example (paper Fig. 4/5).
    if gens:
        md.append("### Generated ECGs and their nearest real training ECG (paper Fig. 4/5)\n")
        md.append(f"Distance: Euclidean over the 12 leads in mV averaged over {NN_POOL} samples "
                  f"({fs / NN_POOL:g} Hz), among at most {nn_candidates} training ECGs of the class; "
                  "shown as the RMS difference in mV.\n")
        nn_rows: dict[str, list] = {g: [] for g in gens}
        for c in tqdm(classes, desc="report: nearest neighbours", unit="class", disable=None):
            have = [g for g in gens if examples[g][c] is not None]
            if not have:
                continue
            q = np.stack([gens[g].get(examples[g][c]) for g in have])
            arg, dist = nearest_real(real, c, q, nn_candidates, np.random.default_rng([seed, c, 99]))
            for g, j, d in zip(have, arg, dist):
                nn_rows[g].append((CLASS_ABBREVS[c], gens[g].get(examples[g][c]),
                                   real.get(int(j)) if j >= 0 else None, real.describe(int(j)) if j >= 0 else "", d))
        for g, rows in nn_rows.items():
            if not rows:
                continue
            path = out / f"nearest_{_safe(g)}.png"
            written.append(save_figure(plot_nearest(gens[g], rows, fs), path, dpi))
            md.append(f"![nearest neighbours of {g}]({path.name})\n")

    # Heart rates and median beats of up to max_per_class ECGs per class and source.
    stats = {}
    for src in tqdm(sources, desc="report: heart rates and beats", unit="source", disable=None):
        rng = np.random.default_rng([seed, sources.index(src), 7])
        stats[src] = {c: class_stats(pools[src], c, max_per_class, fs, rng) for c in classes}
    written.append(save_figure(plot_heartbeats(stats, classes, sources, fs), out / "heartbeat_lead_I.png", dpi))
    written.append(save_figure(plot_heart_rates(stats, classes, sources), out / "heart_rate.png", dpi))
    md.append("### One heartbeat of lead I, real vs. generated (paper Fig. 6)\n")
    md.append("Median over ECGs of each ECG's median beat, aligned at the R peaks detected on lead II "
              "(`nvae_ecg.ecg_stats`).\n")
    md.append("![median heartbeat of lead I](heartbeat_lead_I.png)\n")
    md.append("### Heart rate per class\n")
    md.append("Median [interquartile range] in bpm (ECGs with a detected rate / ECGs examined).\n")
    md.append("![heart rate per class](heart_rate.png)\n")
    md.append("| class | " + " | ".join(sources) + " |")
    md.append("|---|" + "---|" * len(sources))
    for c in classes:
        md.append(f"| {CLASS_ABBREVS[c]} | " + " | ".join(_hr_cell(stats[s][c].rates, stats[s][c].n)
                                                          for s in sources) + " |")
    md.append("")
    hr = {s: {CLASS_ABBREVS[c]: {"n": stats[s][c].n,
                                  "median_bpm": (float(np.nanmedian(stats[s][c].rates))
                                                 if np.isfinite(stats[s][c].rates).any() else None)}
              for c in classes} for s in sources}
    return {"markdown": "\n".join(md), "written": [str(p) for p in written], "heart_rate": hr}


def add_figure_flags(p: argparse.ArgumentParser) -> None:
    """--data_dir, --generated, --generated_root and the figure sizes, shared with train_test.report."""
    p.add_argument("--data_dir", "--prepared_dir", dest="data_dir", default=None,
                   help="prepared data folder whose training split is the real reference of the ECG figures")
    p.add_argument("--dataset", default="ptb-xl", choices=DATASETS,
                   help="prepared dataset the generators were trained on")
    add_generated_flags(p)
    p.add_argument("--max_per_class", type=int, default=200,
                   help="ECGs per class and source for the heart-rate and heartbeat figures")
    p.add_argument("--nn_candidates", type=int, default=2000,
                   help="real training ECGs per class searched for the nearest neighbour")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of ECGs shown")


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the figure renderer."""
    p = argparse.ArgumentParser(prog="python -m train_test.figures", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_figure_flags(p)
    p.add_argument("--out_dir", required=True, help="folder that receives the PNGs and figures.md")
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error("--data_dir is required")
    return args


def main(args: argparse.Namespace) -> dict:
    """Render the figures and write figures.md next to them."""
    res = render_figures(args.data_dir, args.out_dir, args.generated, args.generated_root, args.dataset,
                         max_per_class=args.max_per_class, nn_candidates=args.nn_candidates, seed=args.seed)
    path = atomic_write_text(Path(args.out_dir) / "figures.md", res["markdown"])
    print(f"wrote {len(res['written'])} figures and {path}")
    return res


if __name__ == "__main__":
    main(parse_args())
