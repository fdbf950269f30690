"""The Markdown of the quality report: quality.json's dictionary as the tables of quality.md.

:func:`quality_markdown` writes the overview (generators x metrics, the real reference row first), the table of all
ECGs pooled, the per-class tables (TRTS, recognised share, TSTR, FD, KID, precision/recall/density/coverage, PSD
Jensen-Shannon distances), the physiology tables (class criteria pass rates, median [IQR] per metric and class), the
memorisation verdicts and the figure links; :mod:`train_test.report` embeds it in report.md one heading level down.

Example::

    python -c "import json; from train_test.quality import quality_markdown; print(quality_markdown(json.load(open('results/quality/quality.json'))))"
"""

from __future__ import annotations

import math
from pathlib import Path

from nvae_ecg.classes import CLASS_ABBREVS, NUM_CLASSES
from nvae_ecg.leads import LEADS12
from train_test.quality.metrics import MEMORISATION_ALARM
from train_test.quality.physiology import CHECKS, PHYS_METRICS, PHYS_NAMES, PHYS_UNITS
from train_test.quality.sources import REAL_TEST


def fmt(x, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (scientific below 1e-3); "n/a" for None, NaN and inf."""
    if x is None:
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def pct(x) -> str:
    """A fraction as a whole percentage; "n/a" for None."""
    return "n/a" if x is None else f"{100 * x:.0f}%"


def quality_markdown(q: dict, image_prefix: str = "", level: int = 1) -> str:
    """The Markdown report of a quality.json dictionary; images are linked as ``image_prefix + name``."""
    h = "#" * level
    rows = q["rows"]
    cfg, clf = q["config"], q["classifier"]
    gen_rows = [r for r in rows if r["kind"] == "generator"]
    lines = [f"{h} Synthetic-ECG quality\n",
             f"Real data: the `{cfg['dataset']}` splits of `{cfg['real']}`; every source sampled to at most "
             f"{cfg['max_per_class']} ECGs per class (real test: {q['real']['test']['n_sampled']} ECGs; "
             f"reference row: {q['real']['train']['n_sampled']} training ECGs vs. the real test ECGs). "
             f"Classifier: `{clf['arch']}` trained on the real training split ({clf['checkpoint']}); features: "
             f"its penultimate layer ({clf['feature_dim']} dimensions). Physiology: {q['physiology_backend']}. "
             f"k = {cfg['k']} for precision/recall/density/coverage.\n"]
    if any(r.get("surrogate") for r in gen_rows):
        lines.append("Generators marked *(surrogate)* are real ECGs plus noise (`train_test.surrogate`): "
                     "their numbers say nothing about a generator.\n")
    lines += [f"{h}# Overview\n",
              "| source | TRTS AUROC ↑ | TSTR AUROC ↑ | FD ↓ | KID ↓ | precision ↑ | recall ↑ | density "
              "| coverage ↑ | PSD JS ↓ | corr. diff ↓ | limb error (mV) | near copies |",
              "|---|" + "---|" * 12]
    for r in rows:
        real = r["realism"]["overall"]
        sig = r["signal"]
        mem = r["memorisation"]
        if r["kind"] == "reference":
            trts = tstr_cell = f"TRTR {fmt(clf['trtr']['macro'])}"
            mem_cell = f"{pct(mem['fraction_below'])} (by definition)"
        elif r.get("unconditional"):
            trts = tstr_cell = "unconditional"
            mem_cell = pct(mem["fraction_below"]) + (" **flagged**" if mem["flagged"] else "")
        else:
            trts = fmt(r["fidelity"]["trts"]["macro"])
            t = r["fidelity"].get("tstr")
            tstr_cell = fmt(t["macro"]) if t else "not run"
            mem_cell = pct(mem["fraction_below"]) + (" **flagged**" if mem["flagged"] else "")
        label = r["name"] + (" *(surrogate)*" if r.get("surrogate") else "")
        lines.append(f"| {label} | {trts} | {tstr_cell} | {fmt(real['fd'])} | {fmt(real['kid'])} | "
                     f"{fmt(real['precision'])} | {fmt(real['recall'])} | {fmt(real['density'])} | "
                     f"{fmt(real['coverage'])} | {fmt(sig['psd_js']['overall'])} | {fmt(sig['corr']['overall'])} | "
                     f"{fmt(sig['limb_error']['max'])} | {mem_cell} |")
    lines += ["",
              "TRTS: the real-data classifier's macro AUROC on the generated ECGs against their requested labels; "
              "TSTR: a classifier trained on the generated ECGs only, macro AUROC on the real test split over the "
              "classes the generator produced; the reference row shows TRTR (trained and tested on real data) in "
              "both. FD, KID, precision, recall, density, coverage, PSD JS and corr. diff are per-class values "
              "averaged over classes (generated vs. real test ECGs of the class). Limb error: the largest "
              "violation of Einthoven/Goldberger (0 for generators that derive II, aVR, aVL, aVF). Near copies: "
              f"generated ECGs closer to a training ECG than the 1st percentile of real test ECGs "
              f"(flagged above {100 * MEMORISATION_ALARM:.0f}%).\n"]
    if any(r.get("unconditional") for r in gen_rows):
        lines.append("Unconditional sources (no requested labels, e.g. the published `deepfake-ecg` generator "
                     "trained on real ECGs) have no per-class figures; compare them in the pooled table below.\n")
    if all("pooled" in r for r in rows):
        lines += ["**All ECGs pooled** (every sampled ECG of a source vs. every sampled real test ECG, "
                  "whatever the labels: the class mix counts)\n",
                  "| source | ECGs | FD ↓ | KID ↓ | precision ↑ | recall ↑ | density | coverage ↑ | PSD JS ↓ "
                  "| corr. diff ↓ | R peaks found |",
                  "|---|" + "---|" * 10]
        for r in rows:
            pl = r["pooled"]
            label = r["name"] + (" *(surrogate)*" if r.get("surrogate") else "") + (
                " *(unconditional)*" if r.get("unconditional") else "")
            lines.append(f"| {label} | {pl['n_generated']} | {fmt(pl['fd'])} | {fmt(pl['kid'])} | "
                         f"{fmt(pl['precision'])} | {fmt(pl['recall'])} | {fmt(pl['density'])} | "
                         f"{fmt(pl['coverage'])} | {fmt(pl['psd_js'])} | {fmt(pl['corr'])} | {pct(pl['r_peaks'])} |")
        lines += ["", "R peaks found: the share of the source's ECGs whose heart rate could be measured (the "
                      "reference row: the real test ECGs).\n"]

    def class_table(title: str, get) -> None:
        lines.append(f"**{title}**\n")
        lines.append("| source | " + " | ".join(CLASS_ABBREVS) + " |")
        lines.append("|---|" + "---|" * NUM_CLASSES)
        for r in rows:
            lines.append(f"| {r['name']} | " + " | ".join("unconditional" if r.get("unconditional") else get(r, a)
                                                          for a in CLASS_ABBREVS) + " |")
        lines.append("")

    lines.append(f"{h}# Per class\n")
    lines.append("ECGs per class (real test / generated, sampled): "
                 + "; ".join(f"{r['name']}: " + (f"unconditional, {r['n_sampled']} ECGs" if r.get("unconditional")
                                                 else ", ".join(f"{a} {r['n_per_class'][a]}" for a in CLASS_ABBREVS))
                             for r in rows) + ".\n")

    def fid(key):
        def get(r, a):
            if r["kind"] == "reference":
                return fmt(clf["trtr"]["per_class"].get(a)) if key != "recognised" else pct(
                    r["fidelity"]["recognised"].get(a))
            if key == "tstr":
                t = r["fidelity"].get("tstr")
                return fmt(t["per_class"].get(a)) if t else "not run"
            return fmt(r["fidelity"]["trts"]["per_class"].get(a)) if key == "trts" else pct(
                r["fidelity"]["recognised"].get(a))
        return get

    class_table("TRTS AUROC (reference: TRTR)", fid("trts"))
    class_table("Recognised by the real-data classifier (logit above its Youden threshold on real validation)",
                fid("recognised"))
    class_table("TSTR AUROC on the real test split (reference: TRTR)", fid("tstr"))
    for key, title in (("fd", "Frechet distance ↓"), ("kid", "KID ↓"), ("precision", "precision ↑"),
                       ("recall", "recall ↑"), ("density", "density"), ("coverage", "coverage ↑")):
        class_table(title, lambda r, a, key=key: fmt(r["realism"]["per_class"][a][key]))
    class_table("PSD Jensen-Shannon distance (mean over leads) ↓",
                lambda r, a: fmt(r["signal"]["psd_js"]["per_class"].get(a)))
    lines.append("**PSD Jensen-Shannon distance per lead (mean over classes) ↓**\n")
    lines.append("| source | " + " | ".join(LEADS12) + " |")
    lines.append("|---|" + "---|" * len(LEADS12))
    for r in rows:
        if r.get("unconditional"):  # no classes to average over: its pooled spectra
            lines.append(f"| {r['name']} (all ECGs pooled) | " + " | ".join(
                fmt(r["pooled"]["psd_js_per_lead"][ld]) for ld in LEADS12) + " |")
            continue
        lines.append(f"| {r['name']} | " + " | ".join(fmt(r["signal"]["psd_js"]["per_lead"][ld]) for ld in LEADS12)
                     + " |")
    lines.append("")

    lines.append(f"{h}# Physiology\n")
    phys_names = [REAL_TEST if r["kind"] == "reference" else r["name"] for r in rows]
    lines.append("Share of the ECGs of a class that meet its criterion (ECGs whose value could not be measured "
                 "count as failing; number of ECGs in brackets).\n")
    lines.append("| class | criterion | " + " | ".join(phys_names) + " |")
    lines.append("|---|---|" + "---|" * len(rows))
    for a, check in CHECKS.items():
        cells = []
        for r in rows:
            ch = r["physiology"]["checks"].get(a, {})
            cells.append("unconditional" if r.get("unconditional") else
                         f"{pct(ch.get('fraction'))} ({ch.get('n', 0)})" if ch.get("n") else "no ECG")
        lines.append(f"| {a} | {check.text} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in PHYS_METRICS:
        unit = PHYS_UNITS[m]
        lines.append(f"**{PHYS_NAMES[m]}{f' ({unit})' if unit else ''}: median [IQR] (measured/ECGs)**\n")
        lines.append("| class | " + " | ".join(phys_names) + " |")
        lines.append("|---|" + "---|" * len(rows))
        for a in (*CLASS_ABBREVS, "all"):
            cells = []
            for r in rows:
                if a != "all" and r.get("unconditional"):
                    cells.append("unconditional")
                    continue
                s = r["physiology"]["overall" if a == "all" else "per_class"]
                s = s[m] if a == "all" else s[a][m]
                cells.append("no ECG" if not s["n"] else "n/a" if s["median"] is None else
                             f"{fmt(s['median'])} [{fmt(s['q1'])}-{fmt(s['q3'])}] ({s['n_measured']}/{s['n']})")
            lines.append(f"| {'all ECGs' if a == 'all' else a} | " + " | ".join(cells) + " |")
        lines.append("")

    lines.append(f"{h}# Memorisation\n")
    ref = next(r for r in rows if r["kind"] == "reference")["memorisation"]
    lines.append(f"Distance: RMS difference of the 12 leads (each minus its median, averaged to 50 Hz) to the "
                 f"nearest of {q['real']['n_train_nn']} real training ECGs, divided by the ECG's own RMS amplitude "
                 f"(0: an exact copy; about 1 or more: flat, weak or noise-like ECGs, which absolute distances would "
                 f"mistake for copies). Threshold: the 1st percentile of the real test ECGs' relative distances "
                 f"({fmt(ref['threshold'])}).\n")
    lines.append("| source | ECGs | median relative distance | below threshold | verdict |")
    lines.append("|---|---|---|---|---|")
    for r, pn in zip(rows, phys_names):
        mem = r["memorisation"]
        verdict = ("reference" if r["kind"] == "reference" else "n/a" if mem["flagged"] is None else
                   "**possible copies of training ECGs**" if mem["flagged"] else "no sign of copying")
        lines.append(f"| {pn} | {mem['n']} | {fmt(mem['median_distance'])} | {pct(mem['fraction_below'])} | "
                     f"{verdict} |")
    lines.append("")
    demo = q.get("demographics")
    if demo:
        lines += demographics_markdown(demo, h)
    lines.append(f"{h}# Figures\n")
    for name in q.get("figures", []):
        lines.append(f"![{Path(name).stem}]({image_prefix}{name})\n")
    return "\n".join(lines)


#: How far a generator may score above the real reference before the cell says so: such a lead means the predictor
#: reads something real ECGs do not carry (off-distribution ECGs, e.g. flat lines whose level follows the condition).
ABOVE_REAL_MARGIN = 0.1


def demographics_markdown(demo: dict, h: str = "#") -> list[str]:
    """The lines of the report's demographic section (``quality.json["demographics"]``)."""
    lines = []
    pr = demo["predictor"]
    lines.append(f"{h}# Demographics\n")
    lines.append(f"Does an ECG asked for an age and sex look it? An age/sex predictor (`{pr['arch']}`, "
                 f"{pr['epochs']} epochs, {pr['n_train']} real training ECGs: {pr['n_train_age']} with an age, "
                 f"{pr['n_train_sex']} with a sex) scores the real test ECGs against their recorded age/sex "
                 "(reference) and each generator's sets that carry `conditions.npy` against the requested "
                 "ones. Sex AUROC: predicted male probability vs. requested sex (undefined with one sex only); "
                 "age MAE in years beside the chance MAE (always guessing the median age); age r: Pearson "
                 "correlation. In brackets, the label-only control: the same predictions against the requests "
                 "shuffled among ECGs with the same diagnoses (age and sex go with the diagnoses, so ECGs of "
                 "the right class alone score above chance); demographics come out when a row beats its "
                 f"bracket. *above real*: more than {ABOVE_REAL_MARGIN} above the real reference, so the predictor "
                 "reads something real ECGs do not carry (read it with the realism sections).\n")
    lines.append("| source | sets with conditions | ECGs (age / sex) | sex AUROC ↑ (shuffled) | age MAE ↓ "
                 "(shuffled) | chance MAE | age r ↑ (shuffled) |")
    lines.append("|---|" + "---|" * 6)

    ref = next((r for r in demo["rows"] if r["kind"] == "reference"), {})

    def with_ctl(r, key):
        cell = f"{fmt(r[key])} ({fmt(r.get(key + '_shuffled'))})"
        above = r["kind"] != "reference" and None not in (r[key], ref.get(key)) and \
            r[key] > ref[key] + ABOVE_REAL_MARGIN
        return cell + (" *above real*" if above else "")

    for r in demo["rows"]:
        if r.get("note"):
            lines.append(f"| {r['name']} | 0 of {r['sets']} | - | {r['note']} | | | |")
            continue
        n_age, n_sex = (int(v) if v is not None else 0 for v in (r["n_age"], r["n_sex"]))
        sets = "reference" if r["kind"] == "reference" else f"{r['sets_with_conditions']} of {r['sets']}"
        lines.append(f"| {r['name']} | {sets} | {n_age} / {n_sex} | {with_ctl(r, 'sex_auroc')} | "
                     f"{with_ctl(r, 'age_mae')} | {fmt(r['age_mae_chance'])} | {with_ctl(r, 'age_corr')} |")
    lines.append("")
    return lines
