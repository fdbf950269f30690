"""Sources of the quality report: the generated-sample folders grouped by generator, and their sampling.

:func:`generated_sources` groups the folders of ``--generated`` / ``--generated_root`` by the ``generator`` field of
their ``meta.json`` (as :mod:`train_test.figures` does) and refuses, before any work, a set of another length or
sampling rate, a set in which any ECG holds NaN or inf (naming the file, the number of such ECGs and their first rows:
NaN would otherwise pass as "unmeasurable" physiology and be skipped by the averages), and an unconditional set
(``meta.json`` ``"unconditional": true``, e.g. ``python -m pulse2pulse.deepfake``) whose labels are not all zero.
:func:`sample_rows` subsamples a labelled source to at most ``max_per_class`` ECGs per class (the union over
classes, the same rule for real and generated ECGs); :func:`sample_unconditional` draws a fixed number of ECGs.

Example::

    python -c "from train_test.quality import generated_sources; print(generated_sources(root='results/generated'))"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nvae_ecg.classes import CLASS_ABBREVS
from train_test.data import Source, discover_generated
from train_test.figures import Pool
from train_test.quality.metrics import FS

#: Row names of the real data in quality.json and quality.md.
REFERENCE = "real: train vs. test"
REAL_TEST = "real test"


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
        fs = gs.meta.get("fs", FS)
        if float(fs) != FS:
            raise ValueError(f"{gs.path}/meta.json: fs {fs} Hz, expected {FS:g} Hz")
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


def per_class_counts(labels: np.ndarray) -> dict:
    """ECGs carrying each class, by class abbreviation."""
    return {a: int((labels[:, c] == 1).sum()) for c, a in enumerate(CLASS_ABBREVS)}

