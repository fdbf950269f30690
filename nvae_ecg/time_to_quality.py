"""Time to quality: how many wall-clock minutes each training run needed before its ECGs passed the quality marks.

Reads the ``quality/`` scalars that :mod:`nvae_ecg.monitor` writes to a run's
TensorBoard events (``nvae_ecg.train`` and ``pulse2pulse.train`` with
``--quality_every``) and reports, per run, the minutes from the start of the run
(the events file's first record, written when the trainer opens its writer) until
the share of generated ECGs with detectable R peaks first reached ``--r_peaks``
(0.9) and until the median heart rates first ordered SB < SR < STach, with the
values at the last evaluation. This is the figure a user cares about more than a
step time: the runs of one comparison should share the machine and the wall-clock
budget (``scripts/make_demo_checkpoints.sh`` trains its runs side by side). Writes a Markdown table, a JSON file
and a figure of the learning curves (R-peak share, heart-rate error, PSD distance against minutes).

Example::

    python -m nvae_ecg.time_to_quality runs/cnvae runs/wavegan_star runs/pulse2pulse --out results/time_to_quality
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from nvae_ecg.io import atomic_write_json, atomic_write_text


@dataclass
class QualityCurve:
    """One run's quality evaluations: (minutes since start, step, value) per tag."""

    run: str
    generator: str
    start_wall_time: float
    points: dict[str, list[tuple[float, int, float]]]


@dataclass
class TimeToQuality:
    """Minutes until each mark was first met (None: never within the run) and the last values."""

    run: str
    generator: str
    evaluations: int
    minutes_trained: Optional[float]
    minutes_to_r_peaks: Optional[float]
    minutes_to_hr_order: Optional[float]
    last_r_peaks: Optional[float]
    last_hr_order: Optional[float]
    last_psd_js: Optional[float]
    last_hr_error: Optional[float]


def _generator_name(run_dir: Path) -> str:
    """The generator a run trained, from its args.json (cNVAE-ECG runs have no --model flag)."""
    try:
        args = json.loads((run_dir / "args.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    return str(args.get("model") or "cnvae")


def read_curve(run_dir: str | Path) -> QualityCurve:
    """The ``quality/`` scalars of one run folder, with times in minutes since the events file was opened."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no TensorBoard events file; train with --quality_every N > 0 first")
    points: dict[str, list[tuple[float, int, float]]] = {}
    start = math.inf
    for f in files:  # a resumed run appends a new events file; the first one marks the start
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        start = min(start, acc.FirstEventTimestamp())
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith("quality/"):
                points.setdefault(tag[len("quality/"):], []).extend(
                    (e.wall_time, e.step, e.value) for e in acc.Scalars(tag))
    curve = {k: sorted(((w - start) / 60.0, s, v) for w, s, v in pts) for k, pts in points.items()}
    return QualityCurve(str(run_dir), _generator_name(run_dir), start, curve)


def _first_minute(points: Sequence[tuple[float, int, float]], threshold: float) -> Optional[float]:
    for minute, _, value in points:
        if value >= threshold:
            return round(minute, 2)
    return None


def _last(points: Sequence[tuple[float, int, float]]) -> Optional[float]:
    return None if not points or math.isnan(points[-1][2]) else float(points[-1][2])


def time_to_quality(curve: QualityCurve, r_peaks: float = 0.9) -> TimeToQuality:
    """Minutes until R peaks were found in >= ``r_peaks`` of the ECGs and until SB < SR < STach held."""
    rp, order = curve.points.get("r_peaks", []), curve.points.get("hr_order", [])
    last_minute = max((pts[-1][0] for pts in curve.points.values() if pts), default=None)
    return TimeToQuality(
        run=curve.run, generator=curve.generator, evaluations=len(rp),
        minutes_trained=None if last_minute is None else round(last_minute, 2),
        minutes_to_r_peaks=_first_minute(rp, r_peaks), minutes_to_hr_order=_first_minute(order, 1.0),
        last_r_peaks=_last(rp), last_hr_order=_last(order), last_psd_js=_last(curve.points.get("psd_js", [])),
        last_hr_error=_last(curve.points.get("hr_error", [])))


def markdown_table(rows: Sequence[TimeToQuality], r_peaks: float) -> str:
    """The rows as a Markdown table ("never" where a mark was not met within the run)."""
    def fmt(v, pct=False):
        if v is None:
            return "never" if not pct else "-"
        return f"{100 * v:.0f} %" if pct else f"{v:.2f}"

    head = (f"| run | generator | minutes trained | evaluations | minutes to R peaks in >= {100 * r_peaks:.0f} % | "
            "minutes to SB < SR < STach | last R peaks | last PSD-JS | last HR error (bpm) |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {Path(r.run).name} | {r.generator} | {fmt(r.minutes_trained)} | {r.evaluations} | "
                     f"{fmt(r.minutes_to_r_peaks)} | {fmt(r.minutes_to_hr_order)} | {fmt(r.last_r_peaks, True)} | "
                     f"{'-' if r.last_psd_js is None else f'{r.last_psd_js:.3f}'} | "
                     f"{'-' if r.last_hr_error is None else f'{r.last_hr_error:.1f}'} |")
    return "\n".join(lines) + "\n"


#: (tag, axis label) of the curves in the figure, in panel order.
_PLOTTED = (("r_peaks", "ECGs with R peaks"), ("hr_error", "median |HR - real| (bpm)"),
            ("psd_js", "Welch-PSD JS distance"))


def plot_curves(curves: Sequence[QualityCurve], path: str | Path) -> Path:
    """Learning curves of the runs against minutes, one panel per quality figure, written atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nvae_ecg.plot import save_figure

    fig, axes = plt.subplots(1, len(_PLOTTED), figsize=(4.2 * len(_PLOTTED), 3.2), squeeze=False)
    for ax, (tag, label) in zip(axes[0], _PLOTTED):
        for c in curves:
            pts = c.points.get(tag, [])
            if pts:
                ax.plot([p[0] for p in pts], [p[2] for p in pts], marker=".",
                        label=f"{Path(c.run).name} ({c.generator})")
        ax.set_xlabel("minutes since the start of the run")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Minutes until each run's generated ECGs passed the quality marks.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (ROOT/SAVE of nvae_ecg.train or pulse2pulse.train)")
    p.add_argument("--r_peaks", type=float, default=0.9, help="share of ECGs with detectable R peaks to reach")
    p.add_argument("--out", default=None,
                   help="write OUT.md, OUT.json and the learning curves OUT.png (default: print the table only)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Read every run, print the table, write it (and the JSON) atomically when --out is given."""
    if not 0.0 < args.r_peaks <= 1.0:
        print(f"error: --r_peaks must be in (0, 1], got {args.r_peaks}", file=sys.stderr)
        return 2
    rows, curves = [], []
    for run in args.runs:
        try:
            curves.append(read_curve(run))
            rows.append(time_to_quality(curves[-1], args.r_peaks))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    table = markdown_table(rows, args.r_peaks)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_text(out.with_suffix(".md"), table)
        atomic_write_json(out.with_suffix(".json"), {"r_peaks": args.r_peaks, "runs": [asdict(r) for r in rows]})
        plot_curves(curves, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
