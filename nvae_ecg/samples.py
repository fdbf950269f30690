"""The generated-sample format shared by every generator in the repository.

A generated set is one folder::

    GEN_DIR/
      signals.npy   (N, 12, 5000) float32, mV, leads I, II, III, aVR, aVL, aVF, V1..V6
      labels.npy    (N, 9) uint8 multi-hot over the paper classes (nvae_ecg.classes order)
      meta.json     generator, task_type, checkpoint, temperature, seed, classes,
                    counts per label combination, normalisation bounds, fs, length, ...
      conditions.npy  optional, (N,) structured: age float32 (years, NaN = not set),
                    sex '<U1' ('M', 'F', '' = not set): the demographics each ECG was asked for

``nvae_ecg.generate`` and ``pulse2pulse.generate`` write it with :class:`SampleWriter`;
``train_test`` reads it with :func:`read_samples`, so a new generator joins the
benchmarks by writing this folder. Sets of generators conditioned on demographics carry
``conditions.npy`` (:func:`make_conditions`; passed batch by batch to :meth:`SampleWriter.write`, or added to
a finished folder with :func:`write_conditions`); sets without it were not conditioned on them. Writing streams into a memory-mapped file in a
temporary sibling folder that is renamed into place only when complete, so a crash
never leaves a half-written set behind.

Example::

    python -c "from nvae_ecg.samples import read_samples; s = read_samples('results/generated/cnvae_imbalance'); print(s.signals.shape, s.meta['generator'])"
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nvae_ecg.classes import CLASS_ABBREVS, CLASS_CODES, NUM_CLASSES
from nvae_ecg.io import atomic_write_json  # also imported from here by train_test
from nvae_ecg.leads import LEADS12

FORMAT_VERSION = "cnvae-ecg-generated/1"
#: Optional per-ECG demographics of a generated set (older readers ignore the file, so the version is unchanged).
CONDITIONS_FILE = "conditions.npy"
CONDITIONS_DTYPE = np.dtype([("age", "<f4"), ("sex", "<U1")])


@dataclass
class GeneratedSamples:
    """The arrays of a generated-sample folder as read from disk (signals memory-mapped), with its meta.json.

    ``train_test.data.GeneratedFolder`` is the benchmarks' handle on such a folder (path, labels, meta; no signals).
    """

    path: Path
    signals: np.ndarray
    labels: np.ndarray
    meta: dict
    conditions: np.ndarray | None = None  # CONDITIONS_DTYPE rows, or None for a set without demographics

    def __len__(self) -> int:
        return int(self.signals.shape[0])


class SampleWriter:
    """Stream batches of 12-lead mV ECGs and labels into a generated-sample folder, atomically.

    Use as a context manager; the folder appears under ``out_dir`` only when the block
    exits without error and exactly ``n`` ECGs were written.
    """

    def __init__(self, out_dir: str | os.PathLike, n: int, length: int = 5000, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise FileExistsError(f"{self.out_dir} already exists; pass --overwrite to replace it")
        self.n, self.length, self.pos = int(n), int(length), 0
        self.tmp = self.out_dir.with_name(f".{self.out_dir.name}.tmp-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.signals = np.lib.format.open_memmap(self.tmp / "signals.npy", mode="w+", dtype=np.float32,
                                                 shape=(self.n, 12, self.length))
        self.labels = np.zeros((self.n, NUM_CLASSES), dtype=np.uint8)
        self.conditions: np.ndarray | None = None  # allocated by the first batch that carries conditions
        self.meta: dict = {}

    def write(self, signals12, labels, conditions=None) -> None:
        """Append a batch: signals (B, 12, length) in mV, labels (B, 9) multi-hot and optionally the (B,)
        demographics of :func:`make_conditions` (every batch or none)."""
        x = np.asarray(signals12, dtype=np.float32)
        y = np.asarray(labels)
        if x.ndim != 3 or x.shape[1:] != (12, self.length):
            raise ValueError(f"expected signals of shape (B, 12, {self.length}), got {x.shape}")
        if y.shape != (x.shape[0], NUM_CLASSES):
            raise ValueError(f"expected labels of shape ({x.shape[0]}, {NUM_CLASSES}), got {y.shape}")
        if not np.isfinite(x).all():
            raise ValueError("generated signals contain NaN or inf; refusing to write them")
        end = self.pos + x.shape[0]
        if end > self.n:
            raise ValueError(f"writing {end} ECGs into a set of {self.n}")
        if (conditions is not None) != (self.conditions is not None) and self.pos > 0:
            raise ValueError("conditions must be given with every batch or with none")
        if conditions is not None:
            c = _check_conditions(conditions, x.shape[0])
            if self.conditions is None:
                self.conditions = np.zeros(self.n, dtype=CONDITIONS_DTYPE)
            self.conditions[self.pos:end] = c
        self.signals[self.pos:end] = x
        self.labels[self.pos:end] = y
        self.pos = end

    def close(self, meta: dict) -> Path:
        """Flush, write labels and meta.json, and move the folder into place."""
        if self.pos != self.n:
            raise RuntimeError(f"only {self.pos} of {self.n} ECGs were written")
        self.signals.flush()
        del self.signals
        np.save(self.tmp / "labels.npy", self.labels)
        if self.conditions is not None:
            np.save(self.tmp / CONDITIONS_FILE, self.conditions)
        counts = {}
        for row in self.labels:
            key = "+".join(a for a, v in zip(CLASS_ABBREVS, row) if v) or "none"
            counts[key] = counts.get(key, 0) + 1
        full = {
            "format": FORMAT_VERSION,
            "n": self.n,
            "fs": 500,
            "length": self.length,
            "leads": list(LEADS12),
            "units": "mV",
            "classes": list(CLASS_ABBREVS),
            "class_codes": list(CLASS_CODES),
            "counts": counts,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        full.update(meta)
        atomic_write_json(self.tmp / "meta.json", full)
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.tmp, self.out_dir)
        return self.out_dir

    def abort(self) -> None:
        """Remove the temporary folder."""
        if hasattr(self, "signals"):
            del self.signals
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def read_samples(path: str | os.PathLike, mmap: bool = True) -> GeneratedSamples:
    """Read and validate a generated-sample folder; errors name the folder and what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"generated-sample folder {path} does not exist (run a generation script first)")
    for name in ("signals.npy", "labels.npy", "meta.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a generated-sample folder: {name} is missing")
    with open(path / "meta.json") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}/meta.json: unknown format {meta.get('format')!r}, expected {FORMAT_VERSION!r}")
    signals = np.load(path / "signals.npy", mmap_mode="r" if mmap else None)
    labels = np.load(path / "labels.npy")
    if signals.ndim != 3 or signals.shape[1] != 12:
        raise ValueError(f"{path}/signals.npy has shape {signals.shape}, expected (N, 12, length)")
    if labels.shape != (signals.shape[0], NUM_CLASSES):
        raise ValueError(f"{path}/labels.npy has shape {labels.shape}, expected ({signals.shape[0]}, {NUM_CLASSES})")
    return GeneratedSamples(path, signals, labels, meta, read_conditions(path, len(labels)))


def make_conditions(ages, sexes) -> np.ndarray:
    """(N,) CONDITIONS_DTYPE rows from ages (years, NaN = not set) and sexes ('M', 'F', '' = not set)."""
    ages = np.asarray(ages, dtype=np.float32).reshape(-1)
    sexes = np.asarray(sexes, dtype=str).reshape(-1)
    if ages.shape != sexes.shape:
        raise ValueError(f"{ages.size} ages for {sexes.size} sexes")
    bad = sorted(set(sexes.tolist()) - {"M", "F", ""})
    if bad:
        raise ValueError(f"sex must be 'M', 'F' or '' (not set), got {bad}")
    out = np.zeros(ages.size, dtype=CONDITIONS_DTYPE)
    out["age"], out["sex"] = ages, sexes
    return out


def _check_conditions(conditions, n: int) -> np.ndarray:
    c = np.asarray(conditions)
    if c.dtype != CONDITIONS_DTYPE:
        raise ValueError(f"conditions must have dtype {CONDITIONS_DTYPE} (see make_conditions), got {c.dtype}")
    if c.shape != (n,):
        raise ValueError(f"expected conditions of shape ({n},), got {c.shape}")
    return c


def write_conditions(path: str | os.PathLike, conditions) -> Path:
    """Add ``conditions.npy`` to a finished generated-sample folder, atomically (temporary file, then rename).

    For drivers whose writer did not receive the conditions batch by batch; the rows follow signals.npy (or, in a
    folder of WFDB records without labels.npy, the record names in order).
    """
    path = Path(path)
    labels = path / "labels.npy"
    n = int(np.load(labels, mmap_mode="r").shape[0]) if labels.is_file() else len(np.asarray(conditions))
    c = _check_conditions(conditions, n)
    tmp = path / f".{CONDITIONS_FILE}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / CONDITIONS_FILE)
    return path / CONDITIONS_FILE


def read_conditions(path: str | os.PathLike, n: int | None = None) -> np.ndarray | None:
    """The per-ECG demographics of a generated set, or None when it has no ``conditions.npy``."""
    file = Path(path) / CONDITIONS_FILE
    if not file.is_file():
        return None
    c = np.load(file, allow_pickle=False)
    if c.dtype != CONDITIONS_DTYPE or c.ndim != 1 or (n is not None and c.shape[0] != n):
        raise ValueError(f"{file} holds {c.dtype} {c.shape}; expected ({n},) {CONDITIONS_DTYPE}")
    return c
