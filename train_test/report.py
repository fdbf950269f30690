"""Tables, CSVs and figures of the downstream benchmarks from their results files, plus real vs. generated ECG figures.

``python -m train_test.report RESULTS_DIR`` reads every results file of
:mod:`train_test.enrich_train` and :mod:`train_test.enrich_pretrain` found in
RESULTS_DIR (or one folder below), recognised by their ``experiment`` field, and
writes into ``RESULTS_DIR/report`` (or ``--out_dir``):

- ``report.json``: every aggregated number (means, standard deviations, seeds, intervals);
- ``enrich_train.csv`` / ``enrich_pretrain.csv``: one row per run (and class), for any other analysis;
- ``tables.md``: MI test AUROC per proportion and generator (the data of paper Fig. 2/3) and,
  per fine-tuning dataset, the layout of paper Tables VI (Georgia) and VII (Ningbo): classes x
  arms, per-class test AUROC averaged over the fine-tuning fractions, mean +- std over seeds,
  the best arm of every row in bold;
- ``enrich_train_<task>.png``: test AUROC vs. proportion, one line per generator, the real-only
  baseline as a horizontal line, bands of +-1 std when several seeds ran (paper Fig. 2/3);
- ``enrich_pretrain_<target>.png``: macro test AUROC vs. fine-tuning fraction, one line per arm;
- ``report.md``: the tables with their figures, and, with ``--data_dir`` (the real
  training data) and ``--generated_root``/``--generated`` (generated-sample folders),
  the ECG figures of :mod:`train_test.figures`: 12-lead clinical plots of real and
  generated ECGs per class, nearest real neighbours (paper Fig. 4/5), the median
  lead-I heartbeat (paper Fig. 6) and heart-rate distributions per class. With
  ``--data_dir`` the benchmark results are optional. The synthetic-ECG quality
  tables and figures of :mod:`train_test.quality` are appended when a
  ``quality.json`` lies in RESULTS_DIR, one of its subfolders, or ``--quality_dir``.

Example::

    python -m train_test.report results/benchmarks --data_dir data/prepared --generated_root results/generated
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nvae_ecg.io import atomic_write_text  # noqa: E402
from nvae_ecg.plot import save_figure  # noqa: E402
from nvae_ecg.samples import atomic_write_json  # noqa: E402
from train_test.figures import add_figure_flags, render_figures  # noqa: E402
from train_test.results import load_results  # noqa: E402

EXPERIMENTS = ("enrich_train", "enrich_pretrain")
ARM_LABELS = {"none": "No pretraining", "real": "PTB-XL (real)"}
TABLE_NAMES = {"georgia": "Table VI (Georgia)", "ningbo": "Table VII (Ningbo)", "ptb-xl": "PTB-XL"}
DATASET_NAMES = {"georgia": "Georgia", "ningbo": "Ningbo", "ptb-xl": "PTB-XL"}


def _band(ax, x, mean, std, color, alpha):
    # AUROC lives in [0, 1]: a +-std band is clipped there rather than drawn past the scale.
    ax.fill_between(x, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=color, alpha=alpha, lw=0)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _stats(values) -> dict:
    v = np.asarray([_num(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v)),
            "values": [float(x) for x in v]}


def find_results(results_dir) -> dict[str, list[dict]]:
    """Results files below ``results_dir`` (depth <= 1), grouped by experiment."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist")
    found: dict[str, list[dict]] = defaultdict(list)
    for path in sorted([*root.glob("*.json"), *root.glob("*/*.json")]):
        try:
            data = load_results(path)
        except (ValueError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if data["experiment"] in EXPERIMENTS:
            data["_path"] = str(path)
            found[data["experiment"]].append(data)
    if not found:
        raise FileNotFoundError(f"no enrich_train/enrich_pretrain results file (*.json with an 'experiment' field) "
                                f"in {root} or its subfolders; run scripts/enrich_train.sh or enrich_pretrain.sh")
    return found


# ------------------------------------------------------------------------------------------------ aggregation


def summarise_train(files: list[dict]) -> dict:
    """{task: {"baseline": stats, "generators": {gen: {proportion: stats}}}} of the MI test AUROC over seeds."""
    by = defaultdict(list)
    for data in files:
        for cell in data["cells"].values():
            by[(cell["generator"], cell["task_type"], float(cell["proportion"]))].append(cell)
    baseline = _stats([c["test"]["macro"] for k, cells in by.items() if k[0] == "baseline" for c in cells])
    tasks = sorted({k[1] for k in by if k[0] != "baseline"})
    out = {}
    for task in tasks or ["none"]:
        gens = defaultdict(dict)
        for (gen, t, prop), cells in sorted(by.items()):
            if gen == "baseline" or t != task:
                continue
            st = _stats([c["test"]["macro"] for c in cells])
            st["seeds"] = [c["seed"] for c in cells]
            st["ci"] = [c["test"].get("macro_ci") for c in cells]
            gens[gen][prop] = st
        out[task] = {"baseline": baseline, "generators": dict(gens)}
    return out


def _arm_label(arm: str, task: str, prop: float, multi_prop: bool) -> str:
    if arm in ARM_LABELS:
        return ARM_LABELS[arm]
    return f"{arm} (n={prop:g})" if multi_prop else arm


def summarise_pretrain(files: list[dict]) -> dict:
    """{target: {"classes": [...], "arms": {label: {"per_class": {c: stats}, "macro": stats, "by_fraction": ...}}}}."""
    cells = [c for data in files for c in data["cells"].values()]
    props_per_arm = defaultdict(set)
    for c in cells:
        props_per_arm[c["arm"]].add(float(c["proportion"]))
    out = {}
    for target in sorted({c["target"] for c in cells}):
        tc = [c for c in cells if c["target"] == target]
        classes = list(tc[0]["test"]["per_class"].keys())
        arms = {}
        order = sorted({(c["arm"], c["task_type"], float(c["proportion"])) for c in tc},
                       key=lambda a: (a[0] not in ARM_LABELS, list(ARM_LABELS).index(a[0]) if a[0] in ARM_LABELS else 0,
                                      a[0], a[2]))
        for arm, task, prop in order:
            ac = [c for c in tc if (c["arm"], c["task_type"], float(c["proportion"])) == (arm, task, prop)]
            seeds = sorted({c["seed"] for c in ac})
            fractions = sorted({float(c["fraction"]) for c in ac})
            per_seed_class = {cls: [] for cls in classes}
            per_seed_macro = []
            for s in seeds:
                sc = [c for c in ac if c["seed"] == s]
                with np.errstate(all="ignore"):
                    for cls in classes:
                        v = np.array([_num(c["test"]["per_class"].get(cls)) for c in sc])
                        per_seed_class[cls].append(float(np.nanmean(v)) if np.isfinite(v).any() else math.nan)
                    m = np.array([_num(c["test"]["macro"]) for c in sc])
                    per_seed_macro.append(float(np.nanmean(m)) if np.isfinite(m).any() else math.nan)
            by_fraction = {}
            for f in fractions:
                by_fraction[f] = _stats([c["test"]["macro"] for c in ac if float(c["fraction"]) == f])
            label = _arm_label(arm, task, prop, len(props_per_arm[arm]) > 1)
            arms[label] = {"arm": arm, "task_type": task, "proportion": prop, "seeds": seeds, "fractions": fractions,
                           "per_class": {cls: _stats(per_seed_class[cls]) for cls in classes},
                           "macro": _stats(per_seed_macro), "by_fraction": by_fraction}
        out[target] = {"classes": classes, "arms": arms}
    return out


# ------------------------------------------------------------------------------------------------ rendering


def _fmt(st: dict, digits: int = 3) -> str:
    if not st or st.get("mean") is None:
        return "n/a"
    s = f"{st['mean']:.{digits}f}"
    if st.get("n", 0) > 1:
        s += f" ± {st['std']:.{digits}f}"
    return s


def _bold_row(cells: list[dict], digits: int = 3) -> list[str]:
    means = [round(c["mean"], digits) if c and c.get("mean") is not None else None for c in cells]
    best = max((m for m in means if m is not None), default=None)
    return [f"**{_fmt(c, digits)}**" if m is not None and m == best and sum(x is not None for x in means) > 1
            else _fmt(c, digits) for c, m in zip(cells, means)]


def markdown_train(summary: dict, target: str = "MI") -> str:
    """Markdown tables: rows proportions, columns generators, best per row in bold, baseline stated above."""
    lines = []
    for task, s in summary.items():
        gens = sorted(s["generators"])
        lines.append(f"### Training-set enrichment, task `{task}`: {target} test AUROC\n")
        lines.append(f"Baseline (proportion 0, real training split only): {_fmt(s['baseline'])}"
                     f" ({s['baseline']['n']} seed(s))\n")
        if not gens:
            lines.append("(no generated set)\n")
            continue
        props = sorted({p for g in gens for p in s["generators"][g]})
        lines.append("| n | " + " | ".join(gens) + " |")
        lines.append("|---|" + "---|" * len(gens))
        for p in props:
            row = _bold_row([s["generators"][g].get(p, {}) for g in gens])
            lines.append(f"| {p:g} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def markdown_pretrain(summary: dict) -> str:
    """Tables VI/VII layout: classes x arms, per-class test AUROC averaged over fractions, best per row in bold."""
    lines = []
    for target, s in summary.items():
        arms = list(s["arms"])
        any_arm = next(iter(s["arms"].values()))
        fr = ", ".join(f"{f:g}" for f in any_arm["fractions"])
        lines.append(f"### {TABLE_NAMES.get(target, target)}: test AUROC after fine-tuning, mean over fractions {fr}\n")
        lines.append("| Class | " + " | ".join(arms) + " |")
        lines.append("|---|" + "---|" * len(arms))
        for cls in s["classes"]:
            row = _bold_row([s["arms"][a]["per_class"][cls] for a in arms])
            lines.append(f"| {cls} | " + " | ".join(row) + " |")
        row = _bold_row([s["arms"][a]["macro"] for a in arms])
        lines.append("| **Macro** | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_train(summary: dict, out_dir: Path, target: str = "MI") -> list[Path]:
    """One figure per task: test AUROC vs. proportion per generator, baseline line, +-std bands."""
    paths = []
    for task, s in summary.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        all_props = sorted({p for g in s["generators"].values() for p in g}) or [0.0, 1.0]
        base = s["baseline"]
        if base.get("mean") is not None:
            ax.axhline(base["mean"], color="black", ls="--", lw=1.2, label="real only (n = 0)")
            if base["n"] > 1:
                ax.axhspan(max(base["mean"] - base["std"], 0.0), min(base["mean"] + base["std"], 1.0), color="black",
                           alpha=0.08, lw=0)
        for i, gen in enumerate(sorted(s["generators"])):
            pts = s["generators"][gen]
            props = [p for p in sorted(pts) if pts[p]["mean"] is not None]
            mean = np.array([pts[p]["mean"] for p in props])
            std = np.array([pts[p]["std"] for p in props])
            c = colors[i % len(colors)]
            ax.plot(props, mean, marker="o", ms=4, color=c, label=gen)
            if any(pts[p]["n"] > 1 for p in props):
                _band(ax, props, mean, std, c, 0.18)
        ax.set_xlabel("proportion n of generated ECGs")
        ax.set_ylabel(f"{target} test AUROC")
        ax.set_title(f"Training-set enrichment ({task})")
        ax.set_xticks(all_props)
        ax.set_xticklabels([f"{p:g}" for p in all_props], rotation=45 if len(all_props) > 8 else 0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        path = out_dir / f"enrich_train_{task}.png"
        save_figure(fig, path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_pretrain(summary: dict, out_dir: Path) -> list[Path]:
    """One figure per target: macro test AUROC vs. fine-tuning fraction per arm, +-std bands."""
    paths = []
    for target, s in summary.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, arm) in enumerate(s["arms"].items()):
            fr = [f for f in sorted(arm["by_fraction"]) if arm["by_fraction"][f]["mean"] is not None]
            mean = np.array([arm["by_fraction"][f]["mean"] for f in fr])
            std = np.array([arm["by_fraction"][f]["std"] for f in fr])
            c = "black" if arm["arm"] == "none" else colors[i % len(colors)]
            ls = "--" if arm["arm"] in ARM_LABELS else "-"
            ax.plot(fr, mean, marker="o", ms=4, color=c, ls=ls, label=label)
            if any(arm["by_fraction"][f]["n"] > 1 for f in fr):
                _band(ax, fr, mean, std, c, 0.15)
        ax.set_xlabel("fraction n of the fine-tuning training split")
        ax.set_ylabel("macro test AUROC")
        ax.set_title(f"Pretraining enrichment, fine-tuned on {DATASET_NAMES.get(target, target)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        path = out_dir / f"enrich_pretrain_{target}.png"
        save_figure(fig, path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def train_rows(files: list[dict]) -> list[dict]:
    """One CSV row per enrich_train cell."""
    rows = []
    for data in files:
        for key, c in sorted(data["cells"].items()):
            ci = c["test"].get("macro_ci") or [None, None]
            rows.append({"generator": c["generator"], "task_type": c["task_type"], "proportion": c["proportion"],
                         "seed": c["seed"], "test_auroc": c["test"]["macro"], "ci_low": ci[0], "ci_high": ci[1],
                         "best_epoch": c["best_epoch"] + 1, "val_auroc": c["val_score"][c["best_epoch"]],
                         "n_real": c.get("n_real"), "n_generated": c.get("n_generated"), "file": data["_path"]})
    return rows


def pretrain_rows(files: list[dict]) -> list[dict]:
    """One CSV row per enrich_pretrain cell and class (plus a 'macro' row)."""
    rows = []
    for data in files:
        for key, c in sorted(data["cells"].items()):
            ci = c["test"].get("ci") or {}
            for cls, v in [*c["test"]["per_class"].items(), ("macro", c["test"]["macro"])]:
                lo, hi = (c["test"].get("macro_ci") if cls == "macro" else ci.get(cls)) or (None, None)
                rows.append({"target": c["target"], "arm": c["arm"], "task_type": c["task_type"],
                             "proportion": c["proportion"], "fraction": c["fraction"], "seed": c["seed"],
                             "class": cls, "test_auroc": v, "ci_low": lo, "ci_high": hi,
                             "best_epoch": c["best_epoch"] + 1, "file": data["_path"]})
    return rows


def build_report(results_dir, out_dir=None, prepared_dir=None, generated=(), generated_root=None,
                 dataset: str = "ptb-xl", max_per_class: int = 200, nn_candidates: int = 2000, seed: int = 0,
                 quality_dir=None) -> dict:
    """Aggregate, then write report.json, CSVs, tables.md, report.md and PNGs; return the aggregated dictionary.

    With ``prepared_dir`` the ECG figures of :mod:`train_test.figures` join report.md (real training split of
    ``dataset`` vs. the generated sets) and the benchmark results become optional. The quality report of
    :mod:`train_test.quality` joins report.md when ``quality_dir`` (or RESULTS_DIR, or one of its
    subfolders) holds a quality.json.
    """
    try:
        found = find_results(results_dir)
    except FileNotFoundError:
        if prepared_dir is None and find_quality(results_dir, quality_dir) is None:
            raise
        found = {}
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = {"sources": {k: [d["_path"] for d in v] for k, v in found.items()}}
    md = ["# Downstream benchmarks\n"]
    full = ["# cNVAE-ECG report\n",
            f"Written by `python -m train_test.report` on {_dt.date.today().isoformat()} from `{results_dir}`"
            + (f", `{prepared_dir}`" if prepared_dir is not None else "") + ".\n"]
    written = []
    if "enrich_train" in found:
        files = found["enrich_train"]
        target = files[0]["config"].get("target", "MI")
        s = summarise_train(files)
        report["enrich_train"] = {"target": target, "config": files[0]["config"], "tasks": _keys_to_str(s)}
        md.append("## Training-set enrichment (paper Fig. 2, Fig. 3)\n")
        md.append(markdown_train(s, target))
        atomic_write_text(out / "enrich_train.csv", _csv(train_rows(files)))
        pngs = plot_train(s, out, target)
        written += [out / "enrich_train.csv", *pngs]
        full += [md[-2], md[-1], *[f"![{p.stem}]({p.name})\n" for p in pngs]]
    if "enrich_pretrain" in found:
        files = found["enrich_pretrain"]
        s = summarise_pretrain(files)
        report["enrich_pretrain"] = {"config": files[0]["config"], "targets": _keys_to_str(s),
                                     "pretrain": {k: v.get("test") for d in files for k, v in d.get("pretrain", {}).items()}}
        md.append("## Pretraining enrichment (paper Tables VI, VII)\n")
        md.append(markdown_pretrain(s))
        atomic_write_text(out / "enrich_pretrain.csv", _csv(pretrain_rows(files)))
        pngs = plot_pretrain(s, out)
        written += [out / "enrich_pretrain.csv", *pngs]
        full += [md[-2], md[-1], *[f"![{p.stem}]({p.name})\n" for p in pngs]]
    if not found:
        full.append(f"No benchmark results (enrich_train.json / enrich_pretrain.json) in `{results_dir}`.\n")
    if prepared_dir is not None:
        fig = render_figures(prepared_dir, out, generated, generated_root, dataset, max_per_class=max_per_class,
                             nn_candidates=nn_candidates, seed=seed)
        report["figures"] = {"prepared_dir": str(prepared_dir), "dataset": dataset, "heart_rate": fig["heart_rate"]}
        written += [Path(p) for p in fig["written"]]
        full.append(fig["markdown"])
    quality = find_quality(results_dir, quality_dir)
    if quality is not None:
        # Lazy import: a report without a quality section does not need the quality package.
        from train_test.quality.markdown import quality_markdown

        rel = Path(os.path.relpath(quality.parent, out)).as_posix()
        full.append(quality_markdown(json.loads(quality.read_text()), "" if rel == "." else rel + "/", level=2))
        report["quality"] = str(quality)
    text = "\n".join(md)
    atomic_write_text(out / "tables.md", text)
    atomic_write_text(out / "report.md", "\n".join(full))
    atomic_write_json(out / "report.json", report)
    written += [out / "tables.md", out / "report.md", out / "report.json"]
    report["written"] = [str(p) for p in written]
    report["markdown"] = text
    report["report_md"] = str(out / "report.md")
    return report


def find_quality(results_dir, quality_dir=None) -> Path | None:
    """quality.json in ``quality_dir`` (required there), else in RESULTS_DIR or one of its subfolders, else None."""
    if quality_dir is not None:
        path = Path(quality_dir) / "quality.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; run python -m train_test.evaluate_quality "
                                    f"--out_dir {quality_dir} first")
        return path
    root = Path(results_dir)
    if not root.is_dir():
        return None
    found = sorted([*root.glob("quality.json"), *root.glob("*/quality.json")])
    return found[0] if found else None


def _keys_to_str(obj):
    if isinstance(obj, dict):
        return {(f"{k:g}" if isinstance(k, float) else str(k)): _keys_to_str(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keys_to_str(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the report."""
    p = argparse.ArgumentParser(prog="python -m train_test.report",
                                description="Render tables, CSVs and figures of the downstream benchmarks.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results_dir", help="folder holding enrich_train.json / enrich_pretrain.json (or one level below)")
    p.add_argument("--out_dir", default=None, help="where to write the report (default: RESULTS_DIR/report)")
    p.add_argument("--quality_dir", default=None,
                   help="folder of a train_test.quality report to include (default: a quality.json found "
                        "in RESULTS_DIR or one of its subfolders)")
    add_figure_flags(p)
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    """Write the report and print the Markdown tables."""
    rep = build_report(args.results_dir, args.out_dir, args.data_dir, args.generated, args.generated_root,
                       args.dataset, args.max_per_class, args.nn_candidates, args.seed, args.quality_dir)
    print(rep["markdown"])
    print("wrote " + ", ".join(rep["written"]))
    print(f"report: {rep['report_md']}")


if __name__ == "__main__":
    main(parse_args())
