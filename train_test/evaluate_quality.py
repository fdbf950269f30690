"""Synthetic-ECG quality report: class fidelity, realism, diversity, signal statistics, physiology and memorisation.

``python -m train_test.evaluate_quality --real PREPARED_DIR --generated GEN_DIR [GEN_DIR ...] --out_dir OUT``
compares every generator (its generated-sample folders, grouped by the ``generator``
field of their ``meta.json`` as in :mod:`train_test.figures`) with the real data of
one prepared dataset and writes into OUT:

- ``quality.json``: every number below; ``quality.md``: the tables (generators x
  metrics, per class and overall) with the figures; ``quality_*.png``;
- ``classifier.pt`` (or ``--classifier_ckpt``): an XResNet1d trained on the real
  training split for all 9 classes (model selection on the real validation split),
  reused when the file already exists. Its test AUROC is TRTR (train real, test real).

Metrics (see :mod:`train_test.quality` for the definitions and references):

- class fidelity: TRTS, that classifier's per-class AUROC on the generated ECGs
  against the labels they were generated for, and the fraction of each class's
  generated ECGs it recognises (logit above the threshold maximising Youden's J on
  the real validation split); TSTR, a classifier of the same configuration trained
  on one generator's ECGs only, selected on the real validation split and scored on
  the real test split (next to TRTR);
- realism and diversity, per class and averaged over classes: Frechet distance,
  kernel (KID) distance and precision/recall/density/coverage with ``--k``
  neighbours, all in the classifier's penultimate-layer features (the input of its
  last Linear), generated vs. real test ECGs of the class;
- signal statistics: Welch spectra per lead (Jensen-Shannon distance), inter-lead
  correlation matrices, the limb-lead identity error;
- physiology (real test vs. generated): heart rate, RR irregularity, PR, QRS, QT(c),
  QRS axis, Sokolow-Lyon voltage, and the class criteria of
  :data:`train_test.quality.CHECKS` as pass rates; computed in ``--workers`` processes;
- memorisation: the distance of each generated ECG to its nearest real training
  ECG, relative to the ECG's own amplitude, vs. that of the real test ECGs; the fraction of generated ECGs closer than the
  1st percentile of the test distances (about 1 % for a generator whose ECGs are as
  new as unseen patients; above 5 % is flagged).

A generated set in which any ECG holds NaN or inf is refused before any work, with
the file, the number of such ECGs and their first rows (NaN would otherwise pass
as "unmeasurable" physiology and be skipped by the averages).

An unconditional generated set (``meta.json`` ``"unconditional": true``, all-zero labels, e.g. the
published ``deepfake-ecg`` generator written by ``python -m pulse2pulse.deepfake``) has no
class to be compared on: its per-class cells read "unconditional", TRTS and TSTR are not
computed, and it is sampled to as many ECGs as the real test sample. The table "All ECGs
pooled" gives every source (conditional ones too) the same figures over all its sampled
ECGs against all sampled real test ECGs, whatever the labels (so a class mix that differs
from the real one counts): FD, KID, precision/recall/density/coverage, PSD JS, inter-lead
correlation difference and the share of ECGs with a measurable heart rate (R peaks
found); the physiology tables end with a row over all ECGs.

A reference row "real: train vs. test" gives every metric a scale: the same
numbers for a sample of the real training split against the real test split. Each
source is subsampled to at most ``--max_per_class`` ECGs per class (the union over
classes; the same rule for real and generated ECGs).

Example::

    python -m train_test.evaluate_quality --real data/prepared --generated_root results/generated \\
        --out_dir results/quality --arch tiny --epochs 1 --device cpu
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nvae_ecg.classes import CLASS_ABBREVS, NUM_CLASSES  # noqa: E402
from nvae_ecg.io import atomic_write_json, atomic_write_text  # noqa: E402
from nvae_ecg.leads import LEADS12  # noqa: E402
from nvae_ecg.plot import save_figure  # noqa: E402
from nvae_ecg.utils import atomic_torch_save  # noqa: E402
from train_test import quality as Q  # noqa: E402
from train_test.classifier import (Standardizer, TrainConfig, add_train_flags, config_from_args, fit,  # noqa: E402
                                   make_loader, predict, resolve_device, seed_everything)
from train_test.data import (EcgSet, Source, add_generated_flags, discover_generated, lead_stats,  # noqa: E402
                             real_source)
from train_test.figures import GEN_COLORS, Pool, real_pool  # noqa: E402
from train_test.metrics import auroc  # noqa: E402

QUALITY_FORMAT = "cnvae-ecg-quality/1"
CKPT_FORMAT = "cnvae-ecg-quality-classifier/1"
REFERENCE = "real: train vs. test"
REAL_TEST = "real test"
FIGURES = ("quality_psd.png", "quality_correlation.png", "quality_physiology.png", "quality_memorisation.png")


# ------------------------------------------------------------------------------------------- sources


@dataclass
class GenSource:
    """One generator: its ECGs pooled over its folders, and the same folders as classifier training sources."""

    name: str
    pool: Pool
    sources: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    surrogate: bool = False
    unconditional: bool = False


def non_finite_rows(signals: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Indices of the ECGs of an (N, 12, T) array with any NaN or inf, read in chunks (memory-mapped sets)."""
    bad = [lo + np.flatnonzero(~np.isfinite(np.asarray(signals[lo: lo + chunk])).reshape(
        len(signals[lo: lo + chunk]), -1).all(axis=1)) for lo in range(0, len(signals), chunk)]
    return np.concatenate(bad).astype(np.int64) if bad else np.zeros(0, dtype=np.int64)


def generated_sources(specs: Sequence[str] = (), root=None, length: int | None = None) -> dict[str, GenSource]:
    """Generated-sample folders (``--generated`` / ``--generated_root``) grouped by generator, of the real length."""
    out: dict[str, GenSource] = {}
    for (gen, task), gs in sorted(discover_generated(specs, root).items()):
        if length is not None and gs.length != length:
            raise ValueError(f"{gs.path}: generated ECGs have {gs.length} samples, the real ones {length}; "
                             f"generate the set at the real length")
        fs = gs.meta.get("fs", Q.FS)
        if float(fs) != Q.FS:
            raise ValueError(f"{gs.path}/meta.json: fs {fs} Hz, expected {Q.FS:g} Hz")
        signals = np.load(gs.signals_path, mmap_mode="r")
        bad = non_finite_rows(signals)
        if len(bad):
            # NaN would pass every metric silently (physiology NaN = "unmeasurable", spectra and features NaN-skipped).
            raise ValueError(f"{gs.signals_path}: {len(bad)} of {len(signals)} generated ECGs contain NaN or inf "
                             f"(rows {', '.join(map(str, bad[:10]))}{', ...' if len(bad) > 10 else ''}); "
                             f"regenerate the set or remove those ECGs")
        unconditional = bool(gs.meta.get("unconditional"))
        if gen in out and out[gen].unconditional != unconditional:
            raise ValueError(f"generator {gen}: {gs.path} is {'' if unconditional else 'not '}unconditional, "
                             f"{out[gen].paths[0]} is {'not ' if unconditional else ''}; name one with NAME=PATH")
        if unconditional and gs.labels.any():
            raise ValueError(f"{gs.path}/meta.json says unconditional but labels.npy holds labels")
        entry = out.setdefault(gen, GenSource(gen, Pool(gen), unconditional=unconditional))
        rows = np.arange(len(gs.labels))
        entry.pool.add(signals, rows, gs.labels)
        entry.sources.append(Source(gs.signals_path, rows, gs.labels.astype(np.float32), name=f"{gen}/{task}"))
        entry.paths.append(str(gs.path))
        entry.surrogate = entry.surrogate or bool(gs.meta.get("surrogate"))
    return out


def sample_rows(labels: np.ndarray, max_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted union over classes of at most ``max_per_class`` random rows with each class (0: every labelled row)."""
    y = np.asarray(labels)
    picked = []
    for c in range(y.shape[1]):
        rows = np.flatnonzero(y[:, c] == 1)
        if 0 < max_per_class < len(rows):
            rows = rng.choice(rows, max_per_class, replace=False)
        picked.append(rows)
    return np.unique(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def sample_unconditional(n: int, n_target: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted random rows of an unconditional set: ``n_target`` of its ``n`` ECGs (0 or more than n: all)."""
    if 0 < n_target < n:
        return np.sort(rng.choice(n, n_target, replace=False))
    return np.arange(n)


def _per_class_counts(labels: np.ndarray) -> dict:
    return {a: int((labels[:, c] == 1).sum()) for c, a in enumerate(CLASS_ABBREVS)}


# ------------------------------------------------------------------------------------------- classifier


def youden_thresholds(y_true: np.ndarray, logits: np.ndarray) -> list[float]:
    """Per class, the logit threshold maximising sensitivity + specificity - 1 (0.0 where the class is undefined)."""
    out = []
    for c in range(y_true.shape[1]):
        y = y_true[:, c]
        if y.min() == y.max():
            out.append(0.0)  # no positives or no negatives: fall back to probability 0.5
            continue
        fpr, tpr, thr = roc_curve(y, logits[:, c])
        j = int(np.argmax(tpr - fpr))
        out.append(float(thr[j]) if np.isfinite(thr[j]) else 0.0)
    return out


def train_classifier(prepared_dir, dataset: str, cfg: TrainConfig, seed: int, path: Path) -> dict:
    """Train the 9-class XResNet1d on the real training split (TRTR), save it with its statistics and thresholds."""
    from train_test.xresnet1d import build_model

    cols = list(range(NUM_CLASSES))
    train_src = real_source(prepared_dir, dataset, "train", cols)
    stats = lead_stats([train_src])
    val_set = EcgSet([real_source(prepared_dir, dataset, "val", cols)])
    test_set = EcgSet([real_source(prepared_dir, dataset, "test", cols)])
    seed_everything(seed)
    model = build_model(cfg.arch, 12, NUM_CLASSES)
    model, res = fit(model, EcgSet([train_src]), val_set, test_set, stats, cfg, CLASS_ABBREVS, seed=seed,
                     desc="TRTR classifier")
    device = resolve_device(cfg.device)
    val_logits, _ = predict(model, make_loader(val_set, cfg.eval_batch_size, False, cfg.num_workers, device),
                            Standardizer(*stats).to(device), device, cfg.amp)
    ckpt = {"format": CKPT_FORMAT, "arch": cfg.arch, "classes": list(CLASS_ABBREVS), "dataset": dataset,
            "prepared_dir": str(Path(prepared_dir).resolve()), "seed": seed, "train_config": asdict(cfg),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "mean": np.asarray(stats[0]).tolist(), "std": np.asarray(stats[1]).tolist(),
            "thresholds": youden_thresholds(val_set.targets, val_logits), "fit": res.to_dict()}
    atomic_torch_save(ckpt, path)
    return ckpt


def load_classifier(path: Path, prepared_dir, dataset: str) -> dict:
    """Read a checkpoint of :func:`train_classifier`; clear errors when it belongs to other data or is not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"{path} is not a readable classifier checkpoint ({e}); delete it to retrain") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a quality classifier checkpoint (format {CKPT_FORMAT}); "
                         f"give another --classifier_ckpt or pass --retrain_classifier")
    if ckpt["classes"] != list(CLASS_ABBREVS):
        raise ValueError(f"{path} was trained for classes {ckpt['classes']}, not {list(CLASS_ABBREVS)}; "
                         f"pass --retrain_classifier")
    if ckpt["dataset"] != dataset:
        raise ValueError(f"{path} was trained on dataset {ckpt['dataset']!r}, not {dataset!r}; "
                         f"pass --retrain_classifier or another --classifier_ckpt")
    if ckpt["prepared_dir"] != str(Path(prepared_dir).resolve()):
        tqdm.write(f"note: {path} was trained on {ckpt['prepared_dir']}, evaluating against {prepared_dir}")
    return ckpt


def build_from_checkpoint(ckpt: dict, device: torch.device):
    """The classifier of a checkpoint in eval mode on ``device`` and its standardiser."""
    from train_test.xresnet1d import build_model

    model = build_model(ckpt["arch"], 12, NUM_CLASSES)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, Standardizer(np.asarray(ckpt["mean"]), np.asarray(ckpt["std"])).to(device)


@torch.no_grad()
def embed(model, standardize, x: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Logits (B, 9) and penultimate features (B, d) (the input of the last Linear) of a (B, 12, T) mV batch."""
    captured = {}
    head = model[-1][-1]
    hook = head.register_forward_hook(lambda mod, inp, out: captured.__setitem__("f", inp[0]))
    try:
        logits = model(standardize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)))
    finally:
        hook.remove()
    return logits.float().cpu().numpy(), captured["f"].float().cpu().numpy()


# ------------------------------------------------------------------------------------------- per-source passes


@dataclass
class SourceStats:
    """Per-ECG numbers of one sampled source: labels, logits, features, spectra, correlations, limb errors."""

    labels: np.ndarray
    logits: np.ndarray
    feats: np.ndarray
    spectra: np.ndarray  # (n, 12, F) unit-mass spectra in PSD_BAND
    corr: np.ndarray
    limb: np.ndarray
    pooled: np.ndarray | None = None
    phys: dict | None = None


def source_stats(pool: Pool, rows: np.ndarray, model, standardize, device, batch: int, desc: str,
                 pooled: bool = False) -> tuple[SourceStats, np.ndarray]:
    """One chunked pass over the sampled ECGs of a source; returns the stats and the spectrum frequencies."""
    parts: dict[str, list] = {k: [] for k in ("logits", "feats", "spectra", "corr", "limb", "pooled")}
    freqs = None
    for lo in tqdm(range(0, len(rows), batch), desc=desc, unit="batch", leave=False):
        x = pool.get_many(rows[lo: lo + batch])
        logits, feats = embed(model, standardize, x, device)
        f, psd = Q.welch_psd(x)
        freqs, spectra = Q.normalised_spectra(f, psd)
        parts["logits"].append(logits)
        parts["feats"].append(feats)
        parts["spectra"].append(spectra.astype(np.float32))
        parts["corr"].append(Q.lead_correlations(x).astype(np.float32))
        parts["limb"].append(Q.limb_errors(x))
        if pooled:
            parts["pooled"].append(Q.pooled_signals(x))
    cat = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    return SourceStats(pool.labels[rows], cat["logits"], cat["feats"], cat["spectra"], cat["corr"], cat["limb"],
                       cat["pooled"]), freqs


def _fork_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def physiology_of(pool: Pool, rows: np.ndarray, backend: str, workers: int, desc: str, chunk: int = 16) -> dict:
    """:func:`train_test.quality.physiology_batch` over the sampled ECGs, in ``workers`` processes."""
    chunks = [rows[lo: lo + chunk] for lo in range(0, len(rows), chunk)]
    results = []
    bar = tqdm(total=len(rows), desc=desc, unit="ECG", leave=False)
    if workers <= 1:
        for c in chunks:
            results.append(Q.physiology_batch(pool.get_many(c), Q.FS, backend))
            bar.update(len(c))
    else:
        with ProcessPoolExecutor(workers, mp_context=_fork_context()) as ex:
            # A bounded window of chunks keeps at most a few batches of signals in flight.
            for start in range(0, len(chunks), 4 * workers):
                window = chunks[start: start + 4 * workers]
                futures = [ex.submit(Q.physiology_batch, pool.get_many(c), Q.FS, backend) for c in window]
                for c, fut in zip(window, futures):
                    results.append(fut.result())
                    bar.update(len(c))
    bar.close()
    if not results:
        return {m: np.zeros(0) for m in Q.PHYS_METRICS}
    return {m: np.concatenate([r[m] for r in results]) for m in Q.PHYS_METRICS}


def train_pooled(pool: Pool, rows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Pooled signals (memorisation space) of the real training ECGs, read in chunks."""
    out = []
    for lo in tqdm(range(0, len(rows), batch), desc="memorisation: training ECGs", unit="batch", leave=False):
        out.append(Q.pooled_signals(pool.get_many(rows[lo: lo + batch])))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


# ------------------------------------------------------------------------------------------- comparisons


def _mean(values) -> float | None:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def _num(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def realism(real: SourceStats, fake: SourceStats, k: int) -> dict:
    """Per class and class-averaged FD, KID and PRDC of two sources' features."""
    per_class = {}
    for c, name in enumerate(CLASS_ABBREVS):
        r, f = real.feats[real.labels[:, c] == 1], fake.feats[fake.labels[:, c] == 1]
        entry = {"n_real": int(len(r)), "n_generated": int(len(f)), "fd": None, "kid": None, "precision": None,
                 "recall": None, "density": None, "coverage": None}
        if len(r) and len(f):
            entry["fd"] = _num(Q.frechet_distance(r, f))
            entry["kid"] = _num(Q.kernel_distance(r, f))
            entry.update({m: _num(v) for m, v in Q.prdc(r, f, k).to_dict().items()})
        per_class[name] = entry
    keys = ("fd", "kid", "precision", "recall", "density", "coverage")
    overall = {m: _mean(e[m] for e in per_class.values()) for m in keys}
    overall["n_classes"] = sum(e["fd"] is not None for e in per_class.values())
    return {"per_class": per_class, "overall": overall}


def _nanmean(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a lead flat in every ECG stays NaN and is reported so
        return np.nanmean(x, axis=0)


def _mean_spectrum(stats: SourceStats, mask: np.ndarray) -> np.ndarray | None:
    return _nanmean(stats.spectra[mask]) if mask.any() else None


def _mean_corr(stats: SourceStats, mask: np.ndarray) -> np.ndarray | None:
    return _nanmean(stats.corr[mask]) if mask.any() else None


def signal_statistics(real: SourceStats, fake: SourceStats) -> dict:
    """PSD Jensen-Shannon distances (per lead and class) and correlation differences (per class), class-averaged."""
    per_class_js, per_class_corr, per_lead = {}, {}, []
    for c, name in enumerate(CLASS_ABBREVS):
        ra, fa = _mean_spectrum(real, real.labels[:, c] == 1), _mean_spectrum(fake, fake.labels[:, c] == 1)
        if ra is None or fa is None:
            per_class_js[name], per_class_corr[name] = None, None
            continue
        js = Q.psd_js_distance(ra, fa)
        per_lead.append(js)
        per_class_js[name] = _num(np.nanmean(js)) if np.isfinite(js).any() else None
        per_class_corr[name] = _num(Q.correlation_distance(_mean_corr(real, real.labels[:, c] == 1),
                                                           _mean_corr(fake, fake.labels[:, c] == 1)))
    lead_js = _nanmean(np.stack(per_lead)) if per_lead else np.full(len(LEADS12), np.nan)
    return {"psd_js": {"per_class": per_class_js, "overall": _mean(per_class_js.values()),
                       "per_lead": {lead: _num(v) for lead, v in zip(LEADS12, lead_js)}},
            "corr": {"per_class": per_class_corr, "overall": _mean(per_class_corr.values())},
            "limb_error": {"max": _num(fake.limb.max()) if len(fake.limb) else None,
                           "median": _num(np.median(fake.limb)) if len(fake.limb) else None}}


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
        out["fd"] = _num(Q.frechet_distance(real.feats, fake.feats))
        out["kid"] = _num(Q.kernel_distance(real.feats, fake.feats))
        out.update({m: _num(v) for m, v in Q.prdc(real.feats, fake.feats, k).to_dict().items()})
        everyone_r, everyone_f = np.ones(len(real.labels), bool), np.ones(len(fake.labels), bool)
        js = Q.psd_js_distance(_mean_spectrum(real, everyone_r), _mean_spectrum(fake, everyone_f))
        out["psd_js"] = _num(np.nanmean(js)) if np.isfinite(js).any() else None
        out["psd_js_per_lead"] = {lead: _num(v) for lead, v in zip(LEADS12, js)}
        out["corr"] = _num(Q.correlation_distance(_mean_corr(real, everyone_r), _mean_corr(fake, everyone_f)))
    hr = (phys if phys is not None else fake.phys or {}).get("hr")
    if hr is not None and len(hr):
        out["r_peaks"] = float(np.isfinite(np.asarray(hr, dtype=np.float64)).mean())
    return out


def physiology_summary(stats: SourceStats) -> dict:
    """Class criteria pass rates and per-class / overall distributions of every physiological metric."""
    phys, y = stats.phys, stats.labels
    per_class = {name: {m: Q.summarise(phys[m][y[:, c] == 1]) for m in Q.PHYS_METRICS}
                 for c, name in enumerate(CLASS_ABBREVS)}
    return {"checks": Q.check_fractions(phys, y, CLASS_ABBREVS), "per_class": per_class,
            "overall": {m: Q.summarise(phys[m]) for m in Q.PHYS_METRICS}}


def class_fidelity(stats: SourceStats, thresholds: Sequence[float]) -> dict:
    """TRTS per-class AUROC of the requested labels and the fraction of each class the classifier recognises."""
    res = auroc(stats.labels, stats.logits, CLASS_ABBREVS, warn=False)
    recognised = {}
    for c, name in enumerate(CLASS_ABBREVS):
        pos = stats.labels[:, c] == 1
        recognised[name] = float((stats.logits[pos, c] > thresholds[c]).mean()) if pos.any() else None
    return {"trts": {"per_class": {k: _num(v) for k, v in res.per_class.items()}, "macro": _num(res.macro)},
            "recognised": recognised}


def tstr(gen: GenSource, prepared_dir, dataset: str, cfg: TrainConfig, stats, seed: int) -> dict:
    """Train on one generator's ECGs only (all 9 classes), select on real validation, score the real test split."""
    from train_test.xresnet1d import build_model

    cols = list(range(NUM_CLASSES))
    val_set = EcgSet([real_source(prepared_dir, dataset, "val", cols)])
    test_set = EcgSet([real_source(prepared_dir, dataset, "test", cols)])
    seed_everything(seed)
    model = build_model(cfg.arch, 12, NUM_CLASSES)
    _, res = fit(model, EcgSet(gen.sources), val_set, test_set, stats, cfg, CLASS_ABBREVS, seed=seed,
                 desc=f"TSTR {gen.name}")
    absent = [a for c, a in enumerate(CLASS_ABBREVS) if not any((s.targets[:, c] == 1).any() for s in gen.sources)]
    # A class the generator never produced cannot be learnt from it: its AUROC is no statement about realism.
    per_class = {k: (None if k in absent else _num(v)) for k, v in res.test["per_class"].items()}
    return {"per_class": per_class, "macro": _mean(per_class.values()), "not_generated": absent,
            "best_epoch": res.best_epoch, "n_train": res.n_train, "seconds": res.seconds}


# ------------------------------------------------------------------------------------------- figures


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
    for ax, m in zip(axes.flat, Q.PHYS_METRICS):
        data = [np.asarray(phys[n][m])[np.isfinite(phys[n][m])] for n in names]
        for k, d in enumerate(data):
            if len(d):
                ax.boxplot([d], positions=[k], widths=0.6, showfliers=False,
                           medianprops=dict(color=_color(k), lw=2), boxprops=dict(color=_color(k)))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([f"{n}\n({len(d)})" for n, d in zip(names, data)], fontsize=7, rotation=20)
        ax.set_xlim(-0.6, len(names) - 0.4)
        unit = Q.PHYS_UNITS[m]
        ax.set_title(f"{Q.PHYS_NAMES[m]}" + (f" ({unit})" if unit else ""), fontsize=9)
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


# ------------------------------------------------------------------------------------------- markdown


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _pct(x) -> str:
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
            trts = tstr_cell = f"TRTR {_f(clf['trtr']['macro'])}"
            mem_cell = f"{_pct(mem['fraction_below'])} (by definition)"
        elif r.get("unconditional"):
            trts = tstr_cell = "unconditional"
            mem_cell = _pct(mem["fraction_below"]) + (" **flagged**" if mem["flagged"] else "")
        else:
            trts = _f(r["fidelity"]["trts"]["macro"])
            t = r["fidelity"].get("tstr")
            tstr_cell = _f(t["macro"]) if t else "not run"
            mem_cell = _pct(mem["fraction_below"]) + (" **flagged**" if mem["flagged"] else "")
        label = r["name"] + (" *(surrogate)*" if r.get("surrogate") else "")
        lines.append(f"| {label} | {trts} | {tstr_cell} | {_f(real['fd'])} | {_f(real['kid'])} | "
                     f"{_f(real['precision'])} | {_f(real['recall'])} | {_f(real['density'])} | "
                     f"{_f(real['coverage'])} | {_f(sig['psd_js']['overall'])} | {_f(sig['corr']['overall'])} | "
                     f"{_f(sig['limb_error']['max'])} | {mem_cell} |")
    lines += ["",
              "TRTS: the real-data classifier's macro AUROC on the generated ECGs against their requested labels; "
              "TSTR: a classifier trained on the generated ECGs only, macro AUROC on the real test split over the "
              "classes the generator produced; the reference row shows TRTR (trained and tested on real data) in "
              "both. FD, KID, precision, recall, density, coverage, PSD JS and corr. diff are per-class values "
              "averaged over classes (generated vs. real test ECGs of the class). Limb error: the largest "
              "violation of Einthoven/Goldberger (0 for generators that derive II, aVR, aVL, aVF). Near copies: "
              f"generated ECGs closer to a training ECG than the 1st percentile of real test ECGs "
              f"(flagged above {100 * Q.MEMORISATION_ALARM:.0f}%).\n"]
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
            lines.append(f"| {label} | {pl['n_generated']} | {_f(pl['fd'])} | {_f(pl['kid'])} | "
                         f"{_f(pl['precision'])} | {_f(pl['recall'])} | {_f(pl['density'])} | "
                         f"{_f(pl['coverage'])} | {_f(pl['psd_js'])} | {_f(pl['corr'])} | {_pct(pl['r_peaks'])} |")
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
                return _f(clf["trtr"]["per_class"].get(a)) if key != "recognised" else _pct(
                    r["fidelity"]["recognised"].get(a))
            if key == "tstr":
                t = r["fidelity"].get("tstr")
                return _f(t["per_class"].get(a)) if t else "not run"
            return _f(r["fidelity"]["trts"]["per_class"].get(a)) if key == "trts" else _pct(
                r["fidelity"]["recognised"].get(a))
        return get

    class_table("TRTS AUROC (reference: TRTR)", fid("trts"))
    class_table("Recognised by the real-data classifier (logit above its Youden threshold on real validation)",
                fid("recognised"))
    class_table("TSTR AUROC on the real test split (reference: TRTR)", fid("tstr"))
    for key, title in (("fd", "Frechet distance ↓"), ("kid", "KID ↓"), ("precision", "precision ↑"),
                       ("recall", "recall ↑"), ("density", "density"), ("coverage", "coverage ↑")):
        class_table(title, lambda r, a, key=key: _f(r["realism"]["per_class"][a][key]))
    class_table("PSD Jensen-Shannon distance (mean over leads) ↓",
                lambda r, a: _f(r["signal"]["psd_js"]["per_class"].get(a)))
    lines.append("**PSD Jensen-Shannon distance per lead (mean over classes) ↓**\n")
    lines.append("| source | " + " | ".join(LEADS12) + " |")
    lines.append("|---|" + "---|" * len(LEADS12))
    for r in rows:
        if r.get("unconditional"):  # no classes to average over: its pooled spectra
            lines.append(f"| {r['name']} (all ECGs pooled) | " + " | ".join(
                _f(r["pooled"]["psd_js_per_lead"][ld]) for ld in LEADS12) + " |")
            continue
        lines.append(f"| {r['name']} | " + " | ".join(_f(r["signal"]["psd_js"]["per_lead"][ld]) for ld in LEADS12)
                     + " |")
    lines.append("")

    lines.append(f"{h}# Physiology\n")
    phys_names = [REAL_TEST if r["kind"] == "reference" else r["name"] for r in rows]
    lines.append("Share of the ECGs of a class that meet its criterion (ECGs whose value could not be measured "
                 "count as failing; number of ECGs in brackets).\n")
    lines.append("| class | criterion | " + " | ".join(phys_names) + " |")
    lines.append("|---|---|" + "---|" * len(rows))
    for a, check in Q.CHECKS.items():
        cells = []
        for r in rows:
            ch = r["physiology"]["checks"].get(a, {})
            cells.append("unconditional" if r.get("unconditional") else
                         f"{_pct(ch.get('fraction'))} ({ch.get('n', 0)})" if ch.get("n") else "no ECG")
        lines.append(f"| {a} | {check.text} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in Q.PHYS_METRICS:
        unit = Q.PHYS_UNITS[m]
        lines.append(f"**{Q.PHYS_NAMES[m]}{f' ({unit})' if unit else ''}: median [IQR] (measured/ECGs)**\n")
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
                             f"{_f(s['median'])} [{_f(s['q1'])}-{_f(s['q3'])}] ({s['n_measured']}/{s['n']})")
            lines.append(f"| {'all ECGs' if a == 'all' else a} | " + " | ".join(cells) + " |")
        lines.append("")

    lines.append(f"{h}# Memorisation\n")
    ref = next(r for r in rows if r["kind"] == "reference")["memorisation"]
    lines.append(f"Distance: RMS difference of the 12 leads (each minus its median, averaged to 50 Hz) to the "
                 f"nearest of {q['real']['n_train_nn']} real training ECGs, divided by the ECG's own RMS amplitude "
                 f"(0: an exact copy; about 1 or more: flat, weak or noise-like ECGs, which absolute distances would "
                 f"mistake for copies). Threshold: the 1st percentile of the real test ECGs' relative distances "
                 f"({_f(ref['threshold'])}).\n")
    lines.append("| source | ECGs | median relative distance | below threshold | verdict |")
    lines.append("|---|---|---|---|---|")
    for r, pn in zip(rows, phys_names):
        mem = r["memorisation"]
        verdict = ("reference" if r["kind"] == "reference" else "n/a" if mem["flagged"] is None else
                   "**possible copies of training ECGs**" if mem["flagged"] else "no sign of copying")
        lines.append(f"| {pn} | {mem['n']} | {_f(mem['median_distance'])} | {_pct(mem['fraction_below'])} | "
                     f"{verdict} |")
    lines.append("")
    lines.append(f"{h}# Figures\n")
    for name in q.get("figures", []):
        lines.append(f"![{Path(name).stem}]({image_prefix}{name})\n")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- driver


def evaluate(args: argparse.Namespace) -> dict:
    """Run every stage and write quality.json, quality.md and the figures; return the JSON dictionary."""
    t_start = time.time()
    timing: dict[str, float] = {}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_from_args(args)
    backend = Q.resolve_backend(args.physiology_backend)
    rng = np.random.default_rng(args.seed)

    # Sources first: a bad folder fails before any training.
    train_pool = real_pool(args.real, args.dataset, "train")
    test_pool = real_pool(args.real, args.dataset, "test")
    if not len(test_pool) or not len(train_pool):
        raise ValueError(f"{Path(args.real) / args.dataset}: the train and test splits must both hold ECGs")
    gens = generated_sources(args.generated, args.generated_root, length=test_pool.length)
    if not gens:
        raise ValueError("no generated set given: pass --generated GEN_DIR ... or --generated_root ROOT")
    train_rows = sample_rows(train_pool.labels, args.max_per_class, rng)
    test_rows = sample_rows(test_pool.labels, args.max_per_class, rng)
    # An unconditional set has no class to cap: as many ECGs as the real test sample (all with --max_per_class 0).
    gen_rows = {g: sample_unconditional(len(s.pool), len(test_rows) if args.max_per_class else 0, rng)
                if s.unconditional else sample_rows(s.pool.labels, args.max_per_class, rng) for g, s in gens.items()}
    for g, rows in gen_rows.items():
        if not len(rows):
            raise ValueError(f"generator {g}: no ECG carries any of the 9 classes ({gens[g].paths})")

    # A checkpoint to reuse is checked now, so a wrong one fails before minutes of work.
    ckpt_path = Path(args.classifier_ckpt) if args.classifier_ckpt else out / "classifier.pt"
    trained_here = args.retrain_classifier or not ckpt_path.is_file()
    ckpt = None if trained_here else load_classifier(ckpt_path, args.real, args.dataset)

    # Physiology before torch runs anything, so the worker processes fork from a parent without torch threads.
    t0 = time.time()
    workers = max(1, args.workers)
    phys = {REAL_TEST: physiology_of(test_pool, test_rows, backend, workers, "physiology: real test")}
    for g, s in gens.items():
        phys[g] = physiology_of(s.pool, gen_rows[g], backend, workers, f"physiology: {g}")
    timing["physiology"] = time.time() - t0

    # The real-data classifier (TRTR), reused from its checkpoint when there is one.
    t0 = time.time()
    if trained_here:
        ckpt = train_classifier(args.real, args.dataset, cfg, args.seed, ckpt_path)
    else:
        tqdm.write(f"reusing the classifier {ckpt_path} ({ckpt['arch']})")
    timing["classifier"] = time.time() - t0
    device = resolve_device(cfg.device)
    model, standardize = build_from_checkpoint(ckpt, device)

    t0 = time.time()
    # On a CPU large batches only add memory traffic (XResNet1d101: 0.08 s/ECG at 16, 0.11 s at 256 on 2 cores).
    batch = max(1, cfg.eval_batch_size if device.type == "cuda" else min(cfg.eval_batch_size, 32))
    train_stats, freqs = source_stats(train_pool, train_rows, model, standardize, device, batch, "features: real train")
    test_stats, _ = source_stats(test_pool, test_rows, model, standardize, device, batch, "features: real test",
                                 pooled=True)
    test_stats.phys = phys[REAL_TEST]
    gen_stats = {}
    for g, s in gens.items():
        gen_stats[g], _ = source_stats(s.pool, gen_rows[g], model, standardize, device, batch, f"features: {g}",
                                       pooled=True)
        gen_stats[g].phys = phys[g]
    timing["features"] = time.time() - t0

    # Memorisation: nearest real training ECG (all of them, or a random --max_train_nn).
    t0 = time.time()
    nn_rows = np.arange(len(train_pool))
    if 0 < args.max_train_nn < len(nn_rows):
        nn_rows = np.sort(rng.choice(nn_rows, args.max_train_nn, replace=False))
    train_pooled_x = train_pooled(train_pool, nn_rows)
    # Relative to each ECG's own amplitude: flat or weak generated ECGs are not "copies" (in absolute distance they
    # sit next to the lowest-amplitude training ECGs).
    test_nn, _ = Q.relative_nearest_distances(test_stats.pooled, train_pooled_x)
    gen_nn = {g: Q.relative_nearest_distances(st.pooled, train_pooled_x)[0] for g, st in gen_stats.items()}
    del train_pooled_x
    timing["memorisation"] = time.time() - t0

    # TSTR (one training per generator) unless skipped.
    t0 = time.time()
    tstr_res = {}
    if not args.no_tstr:
        stats = (np.asarray(ckpt["mean"], dtype=np.float32), np.asarray(ckpt["std"], dtype=np.float32))
        # The configuration the real-data classifier was trained with, so TSTR and TRTR differ in the data only.
        tcfg = TrainConfig(**{**ckpt["train_config"], "device": cfg.device, "num_workers": cfg.num_workers,
                              "eval_batch_size": cfg.eval_batch_size})
        for g, s in tqdm(gens.items(), desc="TSTR", unit="generator", leave=False):
            if not s.unconditional:  # no labels to train a classifier on
                tstr_res[g] = tstr(s, args.real, args.dataset, tcfg, stats, args.seed)
    timing["tstr"] = time.time() - t0

    # Assemble the rows: the real reference first, then the generators.
    thresholds = ckpt["thresholds"]
    ref_mem = Q.memorisation(test_nn, test_nn)
    ref_mem["flagged"] = None
    rows = [{"name": REFERENCE, "kind": "reference", "surrogate": False, "paths": [str(args.real)],
             "n_total": len(test_pool), "n_sampled": int(len(test_rows)),
             "n_per_class": _per_class_counts(test_stats.labels),
             "fidelity": {"trtr": ckpt["fit"]["test"], **class_fidelity(test_stats, thresholds)},
             "realism": realism(test_stats, train_stats, args.k),
             "signal": signal_statistics(test_stats, train_stats) | {
                 "limb_error": {"max": _num(test_stats.limb.max()), "median": _num(np.median(test_stats.limb))}},
             "physiology": physiology_summary(test_stats), "memorisation": ref_mem,
             "pooled": pooled_comparison(test_stats, train_stats, args.k, test_stats.phys)}]
    for g, st in gen_stats.items():
        if gens[g].unconditional:
            fidelity = {"trts": None, "recognised": None, "tstr": None}
        else:
            fidelity = class_fidelity(st, thresholds)
            fidelity["tstr"] = tstr_res.get(g)
        rows.append({"name": g, "kind": "generator", "surrogate": gens[g].surrogate,
                     "unconditional": gens[g].unconditional, "pooled": pooled_comparison(test_stats, st, args.k),
                     "paths": gens[g].paths,
                     "n_total": len(gens[g].pool), "n_sampled": int(len(gen_rows[g])),
                     "n_per_class": _per_class_counts(st.labels), "fidelity": fidelity,
                     "realism": realism(test_stats, st, args.k), "signal": signal_statistics(test_stats, st),
                     "physiology": physiology_summary(st), "memorisation": Q.memorisation(gen_nn[g], test_nn)})

    # Figures.
    t0 = time.time()
    everyone = {REAL_TEST: test_stats, **gen_stats}
    spectra = {n: _mean_spectrum(s, np.ones(len(s.labels), dtype=bool)) for n, s in everyone.items()}
    mats = {n: _mean_corr(s, np.ones(len(s.labels), dtype=bool)) for n, s in everyone.items()}
    corr_d = {n: _num(Q.correlation_distance(mats[REAL_TEST], m)) for n, m in mats.items() if n != REAL_TEST}
    written = [save_figure(plot_psd(freqs, spectra), out / FIGURES[0], dpi=110),
               save_figure(plot_correlations(mats, corr_d), out / FIGURES[1], dpi=110),
               save_figure(plot_physiology({n: s.phys for n, s in everyone.items()}), out / FIGURES[2], dpi=110),
               save_figure(plot_memorisation({REAL_TEST: test_nn, **gen_nn}, ref_mem["threshold"]), out / FIGURES[3], dpi=110)]
    timing["figures"] = time.time() - t0
    timing["total"] = time.time() - t_start

    fit_res = ckpt["fit"]
    q = {"format": QUALITY_FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
         "config": {"real": str(args.real), "dataset": args.dataset, "generated": list(args.generated),
                    "generated_root": args.generated_root, "seed": args.seed, "k": args.k,
                    "max_per_class": args.max_per_class, "max_train_nn": args.max_train_nn,
                    "workers": workers, "tstr": not args.no_tstr, "train_config": asdict(cfg)},
         "classes": list(CLASS_ABBREVS), "physiology_backend": Q.backend_description(backend),
         "classifier": {"checkpoint": str(ckpt_path), "trained_here": trained_here, "arch": ckpt["arch"],
                        "feature_dim": int(test_stats.feats.shape[1]), "trtr": fit_res["test"],
                        "best_epoch": fit_res["best_epoch"], "n_train": fit_res["n_train"],
                        "thresholds": dict(zip(CLASS_ABBREVS, thresholds))},
         "real": {"train": {"n_split": len(train_pool), "n_sampled": int(len(train_rows)),
                            "n_per_class": _per_class_counts(train_stats.labels)},
                  "test": {"n_split": len(test_pool), "n_sampled": int(len(test_rows)),
                           "n_per_class": _per_class_counts(test_stats.labels)},
                  "n_train_nn": int(len(nn_rows))},
         "rows": rows, "figures": [p.name for p in written], "timing": timing}
    atomic_write_json(out / "quality.json", q)
    atomic_write_text(out / "quality.md", quality_markdown(q))
    q["written"] = [str(p) for p in (*written, out / "quality.json", out / "quality.md")]
    return q


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the quality report."""
    p = argparse.ArgumentParser(prog="python -m train_test.evaluate_quality",
                                description="Quality of generated ECGs against real ones: class fidelity (TRTS, "
                                            "TSTR), feature distances, precision/recall, spectra, physiology and "
                                            "memorisation.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--real", required=True, help="prepared data folder (python -m nvae_ecg.data.prepare)")
    p.add_argument("--dataset", default="ptb-xl", choices=("ptb-xl", "georgia", "ningbo"),
                   help="prepared dataset the generators were trained on")
    add_generated_flags(p)
    p.add_argument("--out_dir", required=True, help="folder for quality.json, quality.md and the figures")
    p.add_argument("--classifier_ckpt", default=None,
                   help="classifier checkpoint: reused when the file exists, else trained on the real training "
                        "split and saved there (default: OUT_DIR/classifier.pt)")
    p.add_argument("--retrain_classifier", action="store_true",
                   help="train the classifier even if --classifier_ckpt exists (and overwrite it)")
    p.add_argument("--no_tstr", action="store_true", help="skip TSTR (one classifier training per generator)")
    p.add_argument("--max_per_class", type=int, default=200,
                   help="ECGs per class and source (0: all); the union over classes is evaluated")
    p.add_argument("--max_train_nn", type=int, default=0,
                   help="real training ECGs searched for the nearest neighbour of the memorisation check (0: all)")
    p.add_argument("--k", type=int, default=5, help="neighbours of precision/recall/density/coverage")
    p.add_argument("--physiology_backend", default="auto", choices=Q.BACKENDS,
                   help="auto: neurokit2 when installed, else the ecg_stats R-peak detector (no PR/QRS/QT)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes for the physiology measurements")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the classifier trainings")
    add_train_flags(p)
    args = p.parse_args(argv)
    if args.k < 1:
        p.error("--k must be >= 1")
    if args.max_per_class < 0 or args.max_train_nn < 0:
        p.error("--max_per_class and --max_train_nn must be >= 0")
    if not args.generated and args.generated_root is None:
        p.error("give generated sets with --generated GEN_DIR ... or --generated_root ROOT")
    return args


def main(args: argparse.Namespace) -> dict:
    """Write the quality report and print where it is."""
    q = evaluate(args)
    for r in q["rows"]:
        real = r["pooled"] if r.get("unconditional") else r["realism"]["overall"]  # no classes: all ECGs pooled
        tqdm.write(f"{r['name']}: FD {_f(real['fd'])}, KID {_f(real['kid'])}, precision {_f(real['precision'])}, "
                   f"recall {_f(real['recall'])}, near copies {_pct(r['memorisation']['fraction_below'])}")
    print(f"quality report: {Path(args.out_dir) / 'quality.md'} ({q['timing']['total']:.1f} s)")
    return q


if __name__ == "__main__":
    main(parse_args())
