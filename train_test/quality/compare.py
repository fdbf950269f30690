"""Comparisons of the quality report: two sampled sources' per-ECG statistics turned into the report's numbers.

:func:`realism` (per class and class-averaged FD, KID and PRDC in the classifier features), :func:`signal_statistics`
(PSD Jensen-Shannon distances per lead and class, inter-lead correlation differences, limb-lead errors),
:func:`pooled_comparison` (all ECGs of a source against all real ones, whatever the labels: the view of an
unconditional generator), :func:`physiology_summary` (class criteria pass rates and distributions) and
:func:`class_fidelity` (TRTS AUROC and the share of each class the real-data classifier recognises), all on the
:class:`train_test.quality.features.SourceStats` of :func:`train_test.quality.features.source_stats`.

Example::

    python -m train_test.evaluate_quality --data_dir data/prepared --generated_root results/generated \\
        --out_dir results/quality --arch tiny --epochs 1 --device cpu
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.leads import LEADS12
from train_test.metrics import auroc
from train_test.quality.features import SourceStats
from train_test.quality.metrics import (correlation_distance, finite_mean, finite_or_none, frechet_distance,
                                        kernel_distance, prdc, psd_js_distance)
from train_test.quality.physiology import PHYS_METRICS, check_fractions, summarise


def realism(real: SourceStats, fake: SourceStats, k: int) -> dict:
    """Per class and class-averaged FD, KID and PRDC of two sources' features."""
    per_class = {}
    for c, name in enumerate(CLASS_ABBREVS):
        r, f = real.feats[real.labels[:, c] == 1], fake.feats[fake.labels[:, c] == 1]
        entry = {"n_real": int(len(r)), "n_generated": int(len(f)), "fd": None, "kid": None, "precision": None,
                 "recall": None, "density": None, "coverage": None}
        if len(r) and len(f):
            entry["fd"] = finite_or_none(frechet_distance(r, f))
            entry["kid"] = finite_or_none(kernel_distance(r, f))
            entry.update({m: finite_or_none(v) for m, v in prdc(r, f, k).to_dict().items()})
        per_class[name] = entry
    keys = ("fd", "kid", "precision", "recall", "density", "coverage")
    overall = {m: finite_mean(e[m] for e in per_class.values()) for m in keys}
    overall["n_classes"] = sum(e["fd"] is not None for e in per_class.values())
    return {"per_class": per_class, "overall": overall}


def _nanmean(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a lead flat in every ECG stays NaN and is reported so
        return np.nanmean(x, axis=0)


def mean_spectrum(stats: SourceStats, mask: np.ndarray) -> np.ndarray | None:
    """Mean unit-mass spectrum (12, F) of the ECGs selected by ``mask`` (None when none is)."""
    return _nanmean(stats.spectra[mask]) if mask.any() else None


def mean_corr(stats: SourceStats, mask: np.ndarray) -> np.ndarray | None:
    """Mean inter-lead correlation matrix (12, 12) of the ECGs selected by ``mask`` (None when none is)."""
    return _nanmean(stats.corr[mask]) if mask.any() else None


def signal_statistics(real: SourceStats, fake: SourceStats) -> dict:
    """PSD Jensen-Shannon distances (per lead and class) and correlation differences (per class), class-averaged."""
    per_class_js, per_class_corr, per_lead = {}, {}, []
    for c, name in enumerate(CLASS_ABBREVS):
        ra, fa = mean_spectrum(real, real.labels[:, c] == 1), mean_spectrum(fake, fake.labels[:, c] == 1)
        if ra is None or fa is None:
            per_class_js[name], per_class_corr[name] = None, None
            continue
        js = psd_js_distance(ra, fa)
        per_lead.append(js)
        per_class_js[name] = finite_or_none(np.nanmean(js)) if np.isfinite(js).any() else None
        per_class_corr[name] = finite_or_none(correlation_distance(mean_corr(real, real.labels[:, c] == 1),
                                                           mean_corr(fake, fake.labels[:, c] == 1)))
    lead_js = _nanmean(np.stack(per_lead)) if per_lead else np.full(len(LEADS12), np.nan)
    return {"psd_js": {"per_class": per_class_js, "overall": finite_mean(per_class_js.values()),
                       "per_lead": {lead: finite_or_none(v) for lead, v in zip(LEADS12, lead_js)}},
            "corr": {"per_class": per_class_corr, "overall": finite_mean(per_class_corr.values())},
            "limb_error": {"max": finite_or_none(fake.limb.max()) if len(fake.limb) else None,
                           "median": finite_or_none(np.median(fake.limb)) if len(fake.limb) else None}}


def pooled_comparison(real: SourceStats, fake: SourceStats, k: int, phys: dict | None = None) -> dict:
    """All sampled ECGs of a source vs. all sampled real ECGs, whatever the labels (the unconditional view).

    FD, KID and PRDC in the classifier features, the PSD Jensen-Shannon distance of the mean spectra (mean over
    leads, and per lead), the inter-lead correlation difference, and the share of the source's ECGs with a
    measurable heart rate (R peaks found in lead II) from ``phys`` (default: the source's own physiology).
    """
    out = {"n_real": int(len(real.feats)), "n_generated": int(len(fake.feats)), "fd": None, "kid": None,
           "precision": None, "recall": None, "density": None, "coverage": None, "psd_js": None,
           "psd_js_per_lead": {lead: None for lead in LEADS12}, "corr": None, "r_peaks": None}
    if len(real.feats) and len(fake.feats):
        out["fd"] = finite_or_none(frechet_distance(real.feats, fake.feats))
        out["kid"] = finite_or_none(kernel_distance(real.feats, fake.feats))
        out.update({m: finite_or_none(v) for m, v in prdc(real.feats, fake.feats, k).to_dict().items()})
        everyone_r, everyone_f = np.ones(len(real.labels), bool), np.ones(len(fake.labels), bool)
        js = psd_js_distance(mean_spectrum(real, everyone_r), mean_spectrum(fake, everyone_f))
        out["psd_js"] = finite_or_none(np.nanmean(js)) if np.isfinite(js).any() else None
        out["psd_js_per_lead"] = {lead: finite_or_none(v) for lead, v in zip(LEADS12, js)}
        out["corr"] = finite_or_none(correlation_distance(mean_corr(real, everyone_r), mean_corr(fake, everyone_f)))
    hr = (phys if phys is not None else fake.phys or {}).get("hr")
    if hr is not None and len(hr):
        out["r_peaks"] = float(np.isfinite(np.asarray(hr, dtype=np.float64)).mean())
    return out


def physiology_summary(stats: SourceStats) -> dict:
    """Class criteria pass rates and per-class / overall distributions of every physiological metric."""
    phys, y = stats.phys, stats.labels
    per_class = {name: {m: summarise(phys[m][y[:, c] == 1]) for m in PHYS_METRICS}
                 for c, name in enumerate(CLASS_ABBREVS)}
    return {"checks": check_fractions(phys, y, CLASS_ABBREVS), "per_class": per_class,
            "overall": {m: summarise(phys[m]) for m in PHYS_METRICS}}


def class_fidelity(stats: SourceStats, thresholds: Sequence[float]) -> dict:
    """TRTS per-class AUROC of the requested labels and the fraction of each class the classifier recognises."""
    res = auroc(stats.labels, stats.logits, CLASS_ABBREVS, warn=False)
    recognised = {}
    for c, name in enumerate(CLASS_ABBREVS):
        pos = stats.labels[:, c] == 1
        recognised[name] = float((stats.logits[pos, c] > thresholds[c]).mean()) if pos.any() else None
    return {"trts": {"per_class": {k: finite_or_none(v) for k, v in res.per_class.items()}, "macro": finite_or_none(res.macro)},
            "recognised": recognised}

