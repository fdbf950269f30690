"""Demographic fidelity of generated ECGs: does an ECG asked for "70, female" look 70 and female to a predictor?

The quality report trains one predictor on real training ECGs (:func:`train_demographic_model`: the XResNet1d
backbone of :mod:`train_test.xresnet1d` with two outputs, the standardised age (mean-squared error) and the logit
of male sex (binary cross-entropy), each loss over the records where that attribute is known, inputs standardised
per lead with the real training statistics as in :mod:`train_test.classifier`), applies it
(:func:`predict_demographics`) to real test ECGs (the reference row: their recorded age/sex) and to each generated
set (against the age/sex it was asked for, ``conditions.npy`` of :mod:`nvae_ecg.samples`), and reports
:func:`demographic_fidelity`: AUROC of the predicted male probability against the requested sex, MAE and Pearson
correlation of the predicted against the requested age, and the chance MAE (always predicting the median requested
age) that gives the MAE its scale, each beside a label-only control (:func:`shuffle_within_labels`: the same
predictions against the requests shuffled among ECGs with the same diagnoses, since age and sex go with the
diagnoses). A generator without demographic conditioning gets :func:`unconditioned_row`.

Example::

    python -c "import numpy as np; from train_test.quality.demographics import demographic_fidelity; a = np.array([30., 50, 70]); print(demographic_fidelity(a + 1, np.array([.9, .2, .8]), a, np.array(['M', 'F', 'M'])))"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

#: Keys of a fidelity row (all floats; NaN where undefined).
FIDELITY_KEYS = ("n_age", "age_mae", "age_mae_chance", "age_corr", "n_sex", "sex_auroc")
#: Keys of the label-only control (suffix ``_shuffled`` in a row).
SHUFFLED_KEYS = ("age_mae", "age_corr", "sex_auroc")


def _known_age(age) -> np.ndarray:
    a = np.asarray(age, dtype=np.float64).reshape(-1)
    return np.isfinite(a)


def age_mae(pred_age, age) -> float:
    """Mean absolute error (years) over the ECGs with a requested/recorded age; NaN without any."""
    pred, a = np.asarray(pred_age, dtype=np.float64).reshape(-1), np.asarray(age, dtype=np.float64).reshape(-1)
    m = _known_age(a) & np.isfinite(pred)
    return float(np.abs(pred[m] - a[m]).mean()) if m.any() else math.nan


def chance_age_mae(age) -> float:
    """MAE of the best constant guess (the median age): the score of a predictor that learnt nothing."""
    a = np.asarray(age, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    return float(np.abs(a - np.median(a)).mean()) if a.size else math.nan


def age_correlation(pred_age, age) -> float:
    """Pearson correlation of predicted and requested age; NaN with fewer than 3 ages or a constant side."""
    pred, a = np.asarray(pred_age, dtype=np.float64).reshape(-1), np.asarray(age, dtype=np.float64).reshape(-1)
    m = _known_age(a) & np.isfinite(pred)
    if m.sum() < 3 or np.std(pred[m]) == 0 or np.std(a[m]) == 0:
        return math.nan
    return float(np.corrcoef(pred[m], a[m])[0, 1])


def sex_auroc(p_male, sex) -> float:
    """AUROC of the predicted male probability (or logit) against the sex ('M'/'F'; others ignored)."""
    p, s = np.asarray(p_male, dtype=np.float64).reshape(-1), np.asarray(sex, dtype=str).reshape(-1)
    m = np.isin(s, ("M", "F")) & np.isfinite(p)
    y = s[m] == "M"
    if y.all() or not y.any():
        return math.nan  # one sex only (e.g. a set generated with --sex F): AUROC undefined
    return float(roc_auc_score(y, p[m]))


def demographic_fidelity(pred_age, p_male, age, sex) -> dict[str, float]:
    """One report row: predictions against the requested (or recorded) age and sex, see :data:`FIDELITY_KEYS`."""
    s = np.asarray(sex, dtype=str).reshape(-1)
    return {"n_age": float(_known_age(age).sum()), "age_mae": age_mae(pred_age, age),
            "age_mae_chance": chance_age_mae(age), "age_corr": age_correlation(pred_age, age),
            "n_sex": float(np.isin(s, ("M", "F")).sum()), "sex_auroc": sex_auroc(p_male, sex)}


def shuffle_within_labels(age, sex, labels, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(age, sex) permuted among the ECGs with the same label vector: requests that keep only what the labels imply.

    Age and sex go with the diagnoses (AF, MI and LVH patients are older), so a generator that ignores the
    demographics but draws the right classes still scores above chance. Scoring the same predictions against these
    shuffled requests gives that label-only level; a generator carries demographics when it beats it."""
    a, s = np.asarray(age, dtype=np.float64).reshape(-1), np.asarray(sex, dtype=str).reshape(-1)
    lab = np.asarray(labels)
    if lab.ndim != 2 or len(lab) != len(a) or len(s) != len(a):
        raise ValueError(f"need one label row, age and sex per ECG, got {lab.shape}, {a.shape}, {s.shape}")
    perm = np.arange(len(a))
    _, group = np.unique(lab, axis=0, return_inverse=True)
    group = group.reshape(-1)  # numpy 2.0 returns it with the shape of the axis-0 input
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        perm[rows] = rows[rng.permutation(len(rows))]
    return a[perm], s[perm]


def fidelity_with_control(pred_age, p_male, age, sex, labels, rng: np.random.Generator) -> dict[str, float]:
    """:func:`demographic_fidelity` plus ``*_shuffled`` keys: the same predictions against requests shuffled within
    label sets (:func:`shuffle_within_labels`)."""
    row = demographic_fidelity(pred_age, p_male, age, sex)
    sa, ss = shuffle_within_labels(age, sex, labels, rng)
    ctl = demographic_fidelity(pred_age, p_male, sa, ss)
    return {**row, **{f"{k}_shuffled": ctl[k] for k in SHUFFLED_KEYS}}



def unconditioned_row(generator: str) -> dict:
    """The row of a generator without demographic conditioning (no ``conditions.npy``): nothing to compare."""
    return {**{k: math.nan for k in FIDELITY_KEYS}, **{f"{k}_shuffled": math.nan for k in SHUFFLED_KEYS},
            "note": f"{generator} is not conditioned on age/sex"}


# ---- the predictor ---------------------------------------------------------------------------------------------------
@dataclass
class DemographicModel:
    """An XResNet1d with outputs [standardised age, male logit], its input statistics and the age scale."""

    model: nn.Module
    lead_mean: np.ndarray
    lead_std: np.ndarray
    age_mean: float
    age_std: float


def _standardizer(mean, std):
    from train_test.classifier import Standardizer

    return Standardizer(mean, std)


def train_demographic_model(x: np.ndarray, age, sex, arch: str = "xresnet1d50", epochs: int = 20,
                            batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-2, seed: int = 0,
                            device: str | torch.device = "cpu") -> DemographicModel:
    """Fit age regression and sex classification on real ECGs x (N, leads, T) mV with ages (NaN = unknown) and
    sexes ('M', 'F', '' = unknown); AdamW as the report's classifier, every epoch over a seeded shuffle."""
    from train_test.xresnet1d import build_model

    x = np.asarray(x, dtype=np.float32)
    a = np.asarray(age, dtype=np.float64).reshape(-1)
    s = np.asarray(sex, dtype=str).reshape(-1)
    if x.ndim != 3 or len(a) != len(x) or len(s) != len(x):
        raise ValueError(f"need x (N, leads, T) with N ages and sexes, got {x.shape}, {a.shape}, {s.shape}")
    known = np.isfinite(a)
    if known.sum() < 2 or not np.isin(s, ("M", "F")).any():
        raise ValueError("need at least two known ages and one known sex to train the demographic predictor")
    age_mean, age_std = float(a[known].mean()), float(a[known].std()) or 1.0
    mean, std = x.mean(axis=(0, 2)), x.std(axis=(0, 2)) + 1e-6
    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(arch, n_in=x.shape[1], n_out=2).to(device)
    standardize = _standardizer(mean, std).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    xt = torch.from_numpy(x)
    age_t = torch.from_numpy(np.where(known, (a - age_mean) / age_std, 0.0).astype(np.float32))
    age_m = torch.from_numpy(known.astype(np.float32))
    sex_t = torch.from_numpy((s == "M").astype(np.float32))
    sex_m = torch.from_numpy(np.isin(s, ("M", "F")).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            if len(idx) < 2:
                continue  # batch norm cannot train on one ECG
            out = model(standardize(xt[idx].to(device)))
            am, sm = age_m[idx].to(device), sex_m[idx].to(device)
            l_age = ((out[:, 0] - age_t[idx].to(device)) ** 2 * am).sum() / am.sum().clamp(min=1)
            bce = nn.functional.binary_cross_entropy_with_logits(out[:, 1], sex_t[idx].to(device), reduction="none")
            l_sex = (bce * sm).sum() / sm.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            (l_age + l_sex).backward()
            opt.step()
    model.eval()
    return DemographicModel(model.cpu(), mean, std, age_mean, age_std)


@torch.no_grad()
def predict_demographics(dm: DemographicModel, x: np.ndarray, batch_size: int = 256,
                         device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(predicted age in years (N,), predicted male probability (N,)) of ECGs x (N, leads, T) mV."""
    device = torch.device(device)
    model = dm.model.to(device).eval()
    standardize = _standardizer(dm.lead_mean, dm.lead_std).to(device)
    ages, probs = [], []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.asarray(x[start:start + batch_size], dtype=np.float32)).to(device)
        out = model(standardize(xb)).float().cpu()
        ages.append(out[:, 0].numpy() * dm.age_std + dm.age_mean)
        probs.append(torch.sigmoid(out[:, 1]).numpy())
    dm.model.cpu()
    return np.concatenate(ages).astype(np.float64), np.concatenate(probs).astype(np.float64)


# ---- the report stage ------------------------------------------------------------------------------------------------
#: Name of the reference row (real test ECGs against their recorded age/sex).
REFERENCE_ROW = "real: test (recorded age/sex)"


def _json_floats(row: dict) -> dict:
    """NaN to None, so that quality.json stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _subset(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted random rows, at most ``cap`` of ``n`` (0: all)."""
    rows = np.arange(n)
    return np.sort(rng.choice(rows, cap, replace=False)) if 0 < cap < n else rows


def demographic_report(real_dir, dataset: str, generated: dict[str, list[str]], *, arch: str, epochs: int,
                       seed: int = 0, device: str | torch.device = "cpu", max_train: int = 4000,
                       max_eval: int = 1000, batch_size: int = 64, lr: float = 1e-3,
                       weight_decay: float = 1e-2) -> dict:
    """The report's demographic section: predictor trained on real training ECGs, reference row on the real test
    split, one row per generator (its sets with ``conditions.npy`` against the requested age/sex)."""
    from nvae_ecg.data.datasets import load_prepared, select_indices
    from nvae_ecg.demographics import record_demographics
    from nvae_ecg.samples import read_samples

    rng = np.random.default_rng(seed)
    prep = load_prepared(real_dir, dataset)
    ages, sexes = record_demographics(prep.records)  # row i of records = row i of signals.npy

    def real(split: str, cap: int):
        split_rows = select_indices(prep, split)
        rows = split_rows[_subset(len(split_rows), cap, rng)]
        return np.asarray(prep.signals[rows], dtype=np.float32), ages[rows], sexes[rows], prep.labels[rows]

    x_tr, a_tr, s_tr, _ = real("train", max_train)
    dm = train_demographic_model(x_tr, a_tr, s_tr, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
                                 weight_decay=weight_decay, seed=seed, device=device)
    del x_tr
    x_te, a_te, s_te, y_te = real("test", max_eval)
    pa, pm = predict_demographics(dm, x_te, device=device)
    rows = [{"name": REFERENCE_ROW, "kind": "reference", "sets": 1, "sets_with_conditions": 1,
             **fidelity_with_control(pa, pm, a_te, s_te, y_te, rng)}]
    for gen, paths in generated.items():
        preds, targets, labels, with_c = [], [], [], 0
        for path in paths:
            s = read_samples(path)
            if s.conditions is None:
                continue  # a set generated without demographics: nothing was asked for
            with_c += 1
            idx = _subset(len(s), max_eval, rng)
            preds.append(predict_demographics(dm, np.asarray(s.signals[idx], dtype=np.float32), device=device))
            targets.append(s.conditions[idx])
            labels.append(np.asarray(s.labels[idx]))
        base = {"name": gen, "kind": "generator", "sets": len(paths), "sets_with_conditions": with_c}
        if not with_c:
            rows.append({**base, **unconditioned_row(gen)})
            continue
        c = np.concatenate(targets)
        ages_req = np.asarray(c["age"], dtype=np.float64)
        rows.append({**base, **fidelity_with_control(np.concatenate([p[0] for p in preds]),
                                                     np.concatenate([p[1] for p in preds]), ages_req,
                                                     np.asarray(c["sex"], dtype=str), np.concatenate(labels), rng)})
    return {"predictor": {"arch": arch, "epochs": int(epochs), "n_train": int(len(a_tr)),
                          "n_train_age": int(np.isfinite(a_tr).sum()),
                          "n_train_sex": int(np.isin(s_tr, ("M", "F")).sum()), "age_mean": dm.age_mean,
                          "age_std": dm.age_std, "n_test": int(len(a_te)), "seed": int(seed)},
            "rows": [_json_floats(r) for r in rows]}
