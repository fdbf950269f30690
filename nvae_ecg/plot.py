"""12-lead ECG figures in the standard clinical layout, for reports and TensorBoard.

The layout is the paper-chart convention: 25 mm/s, 10 mm/mV, a 1 mm grid with
5 mm major lines (one large square = 0.2 s x 0.5 mV), four columns of 2.5 s
(I/II/III, aVR/aVL/aVF, V1-V3, V4-V6) and a 10 s rhythm strip of lead II below.
Rows are 3 mV apart; waves taller than 1.5 mV are drawn in full and overlap the
neighbouring row (or the margin), as on a paper ECG, never clipped.
The figure size is set from the paper dimensions, so a saved PNG at any dpi keeps
the grid square.

Example::

    python -m nvae_ecg.plot GEN_DIR/signals.npy --index 0 --out ecg.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nvae_ecg.leads import LEADS12  # noqa: E402

MM_PER_S = 25.0
MM_PER_MV = 10.0
_ROW_MV = 3.0  # vertical space per row: +-1.5 mV around the baseline; taller waves overlap the next row, as on paper
_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))


def _grid(ax, width_s: float, height_mv: float) -> None:
    # Two line collections (minor, major) instead of ~400 axvline/axhline artists: the same grid, built ~10x faster
    # (the training-time quality monitor draws one figure per class).
    from matplotlib.collections import LineCollection

    minor_s, minor_mv = 1.0 / MM_PER_S, 1.0 / MM_PER_MV
    segments = {True: [], False: []}  # major?
    for k in range(int(round(width_s / minor_s)) + 1):
        t = k * minor_s
        segments[k % 5 == 0].append([(t, 0.0), (t, height_mv)])
    for k in range(int(round(height_mv / minor_mv)) + 1):
        v = k * minor_mv
        segments[k % 5 == 0].append([(0.0, v), (width_s, v)])
    ax.add_collection(LineCollection(segments[False], colors="#f4b6b6", linewidths=0.3, zorder=0), autolim=False)
    ax.add_collection(LineCollection(segments[True], colors="#e06666", linewidths=0.6, zorder=0), autolim=False)


def plot_ecg12(x12, fs: float = 500.0, title: str | None = None, color: str = "black",
               scale: float = 1.0) -> plt.Figure:
    """Figure of one 12-lead ECG (12, n) in mV in the clinical 3x4 + rhythm-strip layout."""
    x = np.asarray(x12, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != 12:
        raise ValueError(f"plot_ecg12 expects (12, n) in mV, got shape {x.shape}")
    n = x.shape[1]
    dur = n / fs
    col_s = dur / 4.0
    rows = 4
    height = rows * _ROW_MV
    w_mm, h_mm = dur * MM_PER_S, height * MM_PER_MV
    # Waves above the top row or below the rhythm strip get page margin of their own, so nothing is cut off.
    finite = np.where(np.isfinite(x), x, 0.0)
    over_top = max(0.0, max(float(finite[LEADS12.index(nm)].max(initial=0.0)) for nm in _LAYOUT[0]) - _ROW_MV / 2)
    under = max(0.0, -float(finite[LEADS12.index("II")].min(initial=0.0)) - _ROW_MV / 2)
    top_mm, bottom_mm = (12 if title else 6) - 3 + over_top * MM_PER_MV, 3 + under * MM_PER_MV
    page_h = h_mm + top_mm + bottom_mm
    fig = plt.figure(figsize=(scale * (w_mm + 10) / 25.4, scale * page_h / 25.4))
    ax = fig.add_axes((5 / (w_mm + 10), bottom_mm / page_h, w_mm / (w_mm + 10), h_mm / page_h))
    _grid(ax, dur, height)
    t = np.arange(n) / fs
    for r, names in enumerate(_LAYOUT):
        base = height - (r + 0.5) * _ROW_MV
        for c, name in enumerate(names):
            lo, hi = int(round(c * col_s * fs)), int(round((c + 1) * col_s * fs))
            # Full amplitude, never clipped: tall QRS complexes (LVH voltages) must stay measurable on the grid.
            ax.plot(t[lo:hi], base + x[LEADS12.index(name), lo:hi], color=color, lw=0.6, clip_on=False)
            ax.text(c * col_s + 0.04, base + 0.55, name, fontsize=7 * scale, fontweight="bold")
            if c:
                ax.plot([c * col_s] * 2, [base - 0.3, base + 0.3], color=color, lw=0.8)
    base = 0.5 * _ROW_MV
    ax.plot(t, base + x[LEADS12.index("II")], color=color, lw=0.6, clip_on=False)
    ax.text(0.04, base + 0.55, "II", fontsize=7 * scale, fontweight="bold")
    ax.set_xlim(0, dur)
    ax.set_ylim(0, height)
    ax.set_aspect(MM_PER_MV / MM_PER_S)
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    ax.text(dur, height + 0.05, "25 mm/s, 10 mm/mV", ha="right", va="bottom", fontsize=6 * scale)
    if title:
        fig.suptitle(title, fontsize=9 * scale, y=0.995)
    return fig


def plot_compare(real12, generated12, fs: float = 500.0, leads: Sequence[str] = LEADS12,
                 title: str | None = None) -> plt.Figure:
    """Lead-by-lead overlay of a real (black) and a generated (red) 12-lead ECG."""
    a, b = np.asarray(real12), np.asarray(generated12)
    fig, axes = plt.subplots(len(leads), 1, figsize=(10, 1.0 * len(leads)), sharex=True)
    t = np.arange(a.shape[-1]) / fs
    for ax, name in zip(np.atleast_1d(axes), leads):
        i = LEADS12.index(name)
        ax.plot(t, a[i], color="black", lw=0.6, label="real")
        ax.plot(t[: b.shape[-1]], b[i], color="tab:red", lw=0.6, label="generated")
        ax.set_ylabel(name, rotation=0, labelpad=14)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("signals", help="a .npy file of shape (N, 12, n) or (12, n) in mV")
    p.add_argument("--index", type=int, default=0, help="which ECG of the file to plot")
    p.add_argument("--fs", type=float, default=500.0, help="sampling rate in Hz")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--dpi", type=int, default=150, help="PNG resolution")
    p.add_argument("--out", required=True, help="output PNG path")
    return p.parse_args(argv)


def save_figure(fig, path, dpi: int = 150, **savefig_kwargs) -> Path:
    """Save a figure through a temporary file and an atomic rename (no half-written PNG), then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi, **savefig_kwargs)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def main(args: argparse.Namespace) -> None:
    """Plot one ECG of a .npy file to a PNG."""
    x = np.load(args.signals, mmap_mode="r")
    x = x[args.index] if x.ndim == 3 else x
    fig = plot_ecg12(np.asarray(x), fs=args.fs, title=args.title)
    save_figure(fig, args.out, dpi=args.dpi)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(parse_args())
