"""The generated-sample format shared by every generator in the repository.

A generated set is one folder::

    GEN_DIR/
      signals.npy   (N, 12, 5000) float32, mV, leads I, II, III, aVR, aVL, aVF, V1..V6
      labels.npy    (N, 9) uint8 multi-hot over the paper classes (nvae_ecg.classes order)
      meta.json     generator, task_type, checkpoint, temperature, seed, classes,
                    counts per label combination, normalisation bounds, fs, length, ...

``nvae_ecg.generate`` and ``pulse2pulse.generate`` write it with :class:`SampleWriter`;
``train_test`` reads it with :func:`read_samples`, so a new generator joins the
benchmarks by writing this folder. Writing streams into a memory-mapped file in a
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


@dataclass
class GeneratedSamples:
    """A generated set as read from disk (signals memory-mapped)."""

    path: Path
    signals: np.ndarray
    labels: np.ndarray
    meta: dict

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
        self.meta: dict = {}

    def write(self, signals12, labels) -> None:
        """Append a batch: signals (B, 12, length) in mV and labels (B, 9) multi-hot."""
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
    return GeneratedSamples(path, signals, labels, meta)
