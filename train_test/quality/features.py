"""The quality report's classifier: the real-data XResNet1d (TRTR), its features, and TSTR trainings.

:func:`train_classifier` trains the 9-class XResNet1d on the real training split (model selection on the real
validation split) and saves it with its standardisation and per-class Youden thresholds (:func:`youden_thresholds`);
:func:`load_classifier` checks a saved one against the data; :func:`embed` returns logits and the penultimate
features (the input of the last Linear) of a batch; :func:`source_stats` makes one chunked pass over a sampled source
(logits, features, spectra, lead correlations, limb errors, pooled signals for the memorisation check);
:func:`tstr` trains a classifier of the same configuration on one generator's ECGs only and scores it on the real
test split.

Example::

    python -c "from train_test.quality import load_classifier; print(load_classifier('results/quality/classifier.pt', 'data/prepared', 'ptb-xl')['fit']['test'])"
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_curve
from tqdm import tqdm

from nvae_ecg.classes import CLASS_ABBREVS, NUM_CLASSES
from nvae_ecg.utils import atomic_torch_save
from train_test.classifier import Standardizer, TrainConfig, fit, make_loader, predict, resolve_device, seed_everything
from train_test.data import EcgSet, lead_stats, real_source
from train_test.figures import Pool
from train_test.quality.metrics import (finite_mean, finite_or_none, lead_correlations, limb_errors,
                                        normalised_spectra, pooled_signals, welch_psd)
from train_test.quality.sources import GenSource

CKPT_FORMAT = "cnvae-ecg-quality-classifier/1"


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
    per_class = {k: (None if k in absent else finite_or_none(v)) for k, v in res.test["per_class"].items()}
    return {"per_class": per_class, "macro": finite_mean(per_class.values()), "not_generated": absent,
            "best_epoch": res.best_epoch, "n_train": res.n_train, "seconds": res.seconds}


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
        f, psd = welch_psd(x)
        freqs, spectra = normalised_spectra(f, psd)
        parts["logits"].append(logits)
        parts["feats"].append(feats)
        parts["spectra"].append(spectra.astype(np.float32))
        parts["corr"].append(lead_correlations(x).astype(np.float32))
        parts["limb"].append(limb_errors(x))
        if pooled:
            parts["pooled"].append(pooled_signals(x))
    cat = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    return SourceStats(pool.labels[rows], cat["logits"], cat["feats"], cat["spectra"], cat["corr"], cat["limb"],
                       cat["pooled"]), freqs


def train_pooled(pool: Pool, rows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Pooled signals (memorisation space) of the real training ECGs, read in chunks."""
    out = []
    for lo in tqdm(range(0, len(rows), batch), desc="memorisation: training ECGs", unit="batch", leave=False):
        out.append(pooled_signals(pool.get_many(rows[lo: lo + batch])))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

