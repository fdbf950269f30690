"""Synthetic-ECG quality report: class fidelity, realism, diversity, signal statistics, physiology and memorisation.

The report compares every generator (its generated-sample folders, grouped by the ``generator`` field of their
``meta.json``) with the real data of one prepared dataset and writes ``quality.json``, ``quality.md`` and four
figures: TRTS and TSTR against TRTR with an XResNet1d trained on the real training split; FD, KID and
precision/recall/density/coverage in that classifier's penultimate features, per class and over all ECGs pooled;
Welch spectra, inter-lead correlations and the limb-lead identities; heart rate, intervals, axis, voltage and the
per-class criteria; the distance of each generated ECG to its nearest real training ECG against that of real test
ECGs; a reference row "real: train vs. test" gives every number a scale, and an unconditional set (``meta.json``
``"unconditional": true``) is compared on the pooled figures only. The package splits it by concern:
:mod:`~train_test.quality.metrics` and :mod:`~train_test.quality.physiology` (pure functions on arrays, re-exported
here, imported without torch), :mod:`~train_test.quality.sources` (generated sets, NaN refusal, sampling),
:mod:`~train_test.quality.features` (the classifier, its features, TSTR), :mod:`~train_test.quality.compare`,
:mod:`~train_test.quality.plots`, :mod:`~train_test.quality.markdown` and :mod:`~train_test.quality.driver` (the
driver and the command line; :func:`evaluate`, :func:`main`, :func:`parse_args` and :func:`quality_markdown` are
reachable from here and load on first use). ``train_test/evaluate_quality.py`` is the command-line name kept.

Example::

    python -m train_test.evaluate_quality --data_dir data/prepared --generated_root results/generated \\
        --out_dir results/quality --arch tiny --epochs 1 --device cpu
"""

from __future__ import annotations

import importlib

from train_test.quality.metrics import (FS, MEMORISATION_ALARM, MEMORISATION_PERCENTILE, NN_POOL, PRDC, PSD_BAND,
                                        PSD_SEGMENT_S, correlation_distance, frechet_distance, kernel_distance,
                                        lead_correlations, limb_errors, memorisation, nearest_distances,
                                        normalised_spectra, pooled_signals, prdc, psd_js_distance,
                                        relative_nearest_distances, welch_psd)
from train_test.quality.physiology import (BACKENDS, BASELINE_WINDOW, CHECKS, MIN_QRS_MV, PHYS_METRICS,
                                           PHYS_NAMES, PHYS_UNITS, QRS_WINDOW, Check, backend_description,
                                           check_fractions, ecg_physiology, physiology_batch, physiology_of,
                                           resolve_backend, summarise)

#: Names of the report modules (they import torch and matplotlib), loaded when first asked for.
_LAZY = {
    "evaluate": "driver", "main": "driver", "parse_args": "driver", "QUALITY_FORMAT": "driver",
    "QualityOptions": "driver",
    "quality_markdown": "markdown",
    "GenSource": "sources", "REAL_TEST": "sources", "REFERENCE": "sources", "generated_sources": "sources",
    "non_finite_rows": "sources", "sample_rows": "sources", "sample_unconditional": "sources",
    "CKPT_FORMAT": "features", "SourceStats": "features", "build_from_checkpoint": "features", "embed": "features",
    "load_classifier": "features", "source_stats": "features", "train_classifier": "features", "tstr": "features",
    "youden_thresholds": "features",
    "FIGURES": "plots",
}

__all__ = ["backend_description", "BACKENDS", "BASELINE_WINDOW", "build_from_checkpoint", "Check", "check_fractions",
           "CHECKS", "CKPT_FORMAT", "correlation_distance", "ecg_physiology", "embed", "evaluate", "FIGURES",
           "frechet_distance", "FS", "generated_sources", "GenSource", "kernel_distance", "lead_correlations",
           "limb_errors", "load_classifier", "main", "memorisation", "MEMORISATION_ALARM", "MEMORISATION_PERCENTILE",
           "MIN_QRS_MV", "nearest_distances", "NN_POOL", "non_finite_rows", "normalised_spectra", "parse_args",
           "PHYS_METRICS", "PHYS_NAMES", "PHYS_UNITS", "physiology_batch", "physiology_of", "pooled_signals", "PRDC",
           "prdc", "PSD_BAND", "psd_js_distance", "PSD_SEGMENT_S", "QRS_WINDOW", "QUALITY_FORMAT", "QualityOptions",
           "quality_markdown", "REAL_TEST", "REFERENCE", "relative_nearest_distances", "resolve_backend",
           "sample_rows", "sample_unconditional", "source_stats", "SourceStats", "summarise", "train_classifier",
           "tstr", "welch_psd", "youden_thresholds"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"train_test.quality.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
