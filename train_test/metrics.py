"""AUROC per class and macro, bootstrap confidence intervals and model selection for the benchmarks.

Point estimates use ``sklearn.metrics.roc_auc_score`` class by class. A class whose
test labels are all 0 or all 1 has no AUROC: it is reported as NaN and left out of
the macro average with a warning (silently averaging a 0.5 or dropping the class
unannounced would change the number). Bootstrap intervals resample the test records
with replacement (the same resample for every class, so the macro interval is
consistent) and use a rank formula for AUROC (Mann-Whitney U, ties averaged), which
equals sklearn's value and is vectorised over resamples. Model selection takes the
first epoch with the best validation macro AUROC.

Example::

    python -c "import numpy as np; from train_test.metrics import auroc; print(auroc(np.array([[0],[1],[1]]), np.array([[0.1],[0.8],[0.4]])))"
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score


@dataclass
class AurocResult:
    """Per-class AUROC (NaN where undefined), their macro mean over defined classes, optional 95 % intervals."""

    per_class: dict[str, float]
    macro: float
    undefined: list[str] = field(default_factory=list)
    ci: dict[str, tuple[float, float]] | None = None
    macro_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN kept as NaN; json writes it as NaN)."""
        out = {"per_class": dict(self.per_class), "macro": self.macro, "undefined": list(self.undefined)}
        if self.ci is not None:
            out["ci"] = {k: list(v) for k, v in self.ci.items()}
            out["macro_ci"] = list(self.macro_ci) if self.macro_ci is not None else None
        return out


def _check(y_true: np.ndarray, scores: np.ndarray, class_names: Sequence[str] | None):
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    names = list(class_names) if class_names is not None else [str(i) for i in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} class names for {y.shape[1]} label columns")
    return y.astype(np.int8), s, names


def auroc(y_true, scores, class_names: Sequence[str] | None = None, warn: bool = True) -> AurocResult:
    """Per-class AUROC with sklearn and the macro mean over classes whose labels take both values."""
    y, s, names = _check(y_true, scores, class_names)
    per_class, undefined = {}, []
    for c, name in enumerate(names):
        if y[:, c].min() == y[:, c].max():
            per_class[name] = math.nan
            undefined.append(name)
        else:
            per_class[name] = float(roc_auc_score(y[:, c], s[:, c]))
    defined = [v for v in per_class.values() if not math.isnan(v)]
    macro = float(np.mean(defined)) if defined else math.nan
    if undefined and warn:
        warnings.warn(f"AUROC undefined (only one label value among {len(y)} records) for {undefined}; "
                      f"reported as NaN and left out of the macro average", RuntimeWarning, stacklevel=2)
    return AurocResult(per_class, macro, undefined)


def rank_auroc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC along the last axis by the Mann-Whitney rank formula (ties averaged); NaN where one label value only."""
    y = np.asarray(y, dtype=bool)
    ranks = rankdata(np.asarray(s, dtype=np.float64), axis=-1)
    n_pos = y.sum(axis=-1)
    n_neg = y.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (ranks * y).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
        out = u / (n_pos * n_neg)
    return np.where((n_pos == 0) | (n_neg == 0), np.nan, out)


def bootstrap_auroc(y_true, scores, class_names: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, chunk: int = 100) -> AurocResult:
    """:func:`auroc` plus percentile bootstrap intervals (``n_boot`` resamples of the records, ``level`` coverage)."""
    res = auroc(y_true, scores, class_names)
    if n_boot <= 0:
        return res
    y, s, names = _check(y_true, scores, class_names)
    n, n_cls = y.shape
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, n_cls))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        # (b, n, C) -> (b, C, n): AUROC along the records axis for every resample and class at once.
        boot[start:start + b] = rank_auroc(y[idx].transpose(0, 2, 1), s[idx].transpose(0, 2, 1))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    ci = {}
    for c, name in enumerate(names):
        col = boot[:, c][np.isfinite(boot[:, c])]
        ci[name] = ((float(np.percentile(col, lo_q)), float(np.percentile(col, hi_q)))
                    if len(col) and name not in res.undefined else (math.nan, math.nan))
    keep = [c for c, name in enumerate(names) if name not in res.undefined]
    if keep:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample may miss a rare class entirely
            macro = np.nanmean(boot[:, keep], axis=1)
        macro = macro[np.isfinite(macro)]
        res.macro_ci = (float(np.percentile(macro, lo_q)), float(np.percentile(macro, hi_q)))
    else:
        res.macro_ci = (math.nan, math.nan)
    res.ci = ci
    return res


def select_best_epoch(val_scores: Sequence[float], val_losses: Sequence[float] | None = None) -> int:
    """0-based epoch with the highest validation score (first one on ties; NaN ignored).

    When no epoch has a defined score (a validation split without positives), the
    epoch with the lowest validation loss is taken; failing that, the last epoch.
    """
    scores = np.asarray(val_scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no epochs to select from")
    finite = np.isfinite(scores)
    if finite.any():
        return int(np.argmax(np.where(finite, scores, -np.inf)))
    if val_losses is not None:
        losses = np.asarray(val_losses, dtype=np.float64)
        if np.isfinite(losses).any():
            warnings.warn("validation AUROC undefined in every epoch; selecting the epoch by validation loss",
                          RuntimeWarning, stacklevel=2)
            return int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))
    return len(scores) - 1
