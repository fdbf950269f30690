"""Prepared-data loading, split/class/fraction selection and the torch datasets of generators and classifiers.

``load_prepared`` opens one dataset folder written by :mod:`nvae_ecg.data.prepare`
(signals memory-mapped, labels, the kept records ordered by their row index and the
normalisation bounds). ``select_indices`` picks the rows of a split, optionally only
those carrying one of the selected classes, and optionally a deterministic fraction
of them (nested: with the same seed a 10 % subset lies inside the 20 % one), which
the fine-tuning experiments use. ``GeneratorDataset`` yields the 8 independent leads
min-max normalised to [0, 1] by the dataset's bounds (the classifiers read their own
sets, :mod:`train_test.data`). It opens the memory map lazily in the process that
reads, so it pickles cheaply into DataLoader workers (fork or spawn).

Example::

    python -c "from nvae_ecg.data.datasets import GeneratorDataset; d = GeneratorDataset('prepared', 'ptb-xl', 'train', classes='SR,AF'); x, y = d[0]; print(len(d), x.shape, y)"
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from nvae_ecg.classes import CLASS_ABBREVS, NUM_CLASSES, resolve_classes, to_model_columns
from nvae_ecg.data.bounds import Bounds
from nvae_ecg.demographics import DemographicStats, records_conditions
from nvae_ecg.leads import INDEPENDENT_IDX, LEADS12

#: Splits stored in records.csv; "all" selects every kept record.
SPLITS = ("train", "val", "test", "all")
_PREPARE_HINT = "run scripts/prepare_data.sh or python -m nvae_ecg.data.prepare RAW_DIR OUT_DIR"


@dataclass
class PreparedData:
    """One prepared dataset: memory-mapped signals (N, 12, T) mV, labels (N, 9), kept records (row i = index i), bounds."""

    root: Path
    dataset: str
    signals: np.ndarray
    labels: np.ndarray
    records: pd.DataFrame
    bounds: Bounds

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _dataset_dir(prepared_dir: str | os.PathLike, dataset: str) -> Path:
    folder = Path(prepared_dir) / dataset
    if not folder.is_dir():
        raise FileNotFoundError(f"prepared dataset folder {folder} does not exist; {_PREPARE_HINT}")
    for name in ("signals.npy", "labels.npy", "records.csv", "bounds.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing (incomplete preparation); {_PREPARE_HINT}")
    return folder


def _load_meta(folder: Path) -> tuple[np.ndarray, pd.DataFrame, Bounds, tuple]:
    """Labels, kept records ordered by index, bounds and the signals' shape, checked for consistency."""
    labels = np.load(folder / "labels.npy")
    sig = np.load(folder / "signals.npy", mmap_mode="r")
    shape = tuple(sig.shape)
    dtype = sig.dtype
    del sig
    records = pd.read_csv(folder / "records.csv", dtype={"record": str, "dx": str, "split": str, "reason": str},
                          keep_default_na=False, na_values={"age": ["", "nan", "NaN"], "fs": ["", "nan", "NaN"]})
    need = {"record", "kept", "index", "split", "dx"}
    if not need <= set(records.columns):
        raise ValueError(f"{folder / 'records.csv'} lacks columns {sorted(need - set(records.columns))}; {_PREPARE_HINT}")
    kept_col = records["kept"].astype(str).str.lower() == "true"
    kept = records[kept_col].copy()
    kept["index"] = kept["index"].astype(int)
    kept = kept.sort_values("index").reset_index(drop=True)
    if len(shape) != 3 or shape[1] != len(LEADS12) or dtype != np.float32:
        raise ValueError(f"{folder / 'signals.npy'} has shape {shape} / dtype {dtype}; expected (N, 12, T) float32")
    if labels.shape != (shape[0], NUM_CLASSES):
        raise ValueError(f"{folder / 'labels.npy'} has shape {labels.shape}; expected ({shape[0]}, {NUM_CLASSES})")
    if not np.array_equal(kept["index"].to_numpy(), np.arange(shape[0])):
        raise ValueError(f"{folder / 'records.csv'}: kept rows do not index signals.npy 0..{shape[0] - 1}; {_PREPARE_HINT}")
    bad = sorted(set(kept["split"]) - {"train", "val", "test"})
    if bad:
        raise ValueError(f"{folder / 'records.csv'}: unknown split values {bad}")
    return labels, kept, Bounds.load(folder / "bounds.json"), shape


def load_prepared(prepared_dir: str | os.PathLike, dataset: str) -> PreparedData:
    """Open a prepared dataset folder (signals memory-mapped read-only); clear errors when it is missing or incomplete."""
    folder = _dataset_dir(prepared_dir, dataset)
    labels, kept, bounds, _ = _load_meta(folder)
    signals = np.load(folder / "signals.npy", mmap_mode="r")
    return PreparedData(root=Path(prepared_dir), dataset=dataset, signals=signals, labels=labels, records=kept, bounds=bounds)


def _select(labels: np.ndarray, splits: np.ndarray, split: str, classes: Sequence[int], fraction: float,
            fraction_seed: int, require_label: bool) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mask = np.ones(len(labels), dtype=bool) if split == "all" else (splits == split)
    if require_label:
        mask &= labels[:, list(classes)].sum(axis=1) > 0
    idx = np.flatnonzero(mask)
    if fraction < 1.0 and len(idx):
        k = max(1, int(round(fraction * len(idx))))
        # A prefix of one seeded permutation: subsets for growing fractions are nested.
        perm = np.random.default_rng(fraction_seed).permutation(len(idx))
        idx = np.sort(idx[perm[:k]])
    return idx


def select_indices(prepared: PreparedData, split: str, classes=None, fraction: float = 1.0,
                   fraction_seed: int = 0, require_label: bool = False) -> np.ndarray:
    """Sorted row indices of a split ('train'/'val'/'test'/'all'), optionally labelled with a selected class and subsampled."""
    cls = resolve_classes(classes)
    return _select(prepared.labels, prepared.records["split"].to_numpy(), split, cls, fraction, fraction_seed, require_label)


class _PreparedDataset(Dataset):
    """Shared selection logic; subclasses define how a signal row becomes ``x``."""

    def __init__(self, prepared_dir, dataset: str = "ptb-xl", split: str = "train", classes=None,
                 fraction: float = 1.0, fraction_seed: int = 0, require_label: bool = True):
        folder = _dataset_dir(prepared_dir, dataset)
        labels, kept, bounds, shape = _load_meta(folder)
        self.prepared_dir = Path(prepared_dir)
        self.dataset = dataset
        self.split = split
        self.signals_path = folder / "signals.npy"
        self.classes = resolve_classes(classes)
        self.class_names = [CLASS_ABBREVS[c] for c in self.classes]
        self.bounds = bounds
        self.indices = _select(labels, kept["split"].to_numpy(), split, self.classes, fraction, fraction_seed,
                               require_label)
        self.labels = to_model_columns(labels[self.indices], self.classes).astype(np.float32)
        self.records = kept.iloc[self.indices].reset_index(drop=True)
        self.n_samples = int(shape[2])
        self._signals = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self):
        # Never pickle the memory map (numpy would copy the whole array into the pickle).
        state = self.__dict__.copy()
        state["_signals"] = None
        return state

    def _row(self, i: int) -> np.ndarray:
        if self._signals is None:
            self._signals = np.load(self.signals_path, mmap_mode="r")
        return np.array(self._signals[self.indices[i]], dtype=np.float32)

    def _x(self, row: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} records")
        x = self._x(self._row(int(i)))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(self.labels[i].copy())


class GeneratorDataset(_PreparedDataset):
    """``(x, y)``: x float32 (8, T) independent leads in [0, 1] by the bounds (clipped), y float32 multi-hot (C,).

    With ``demographics`` (the training split's :class:`nvae_ecg.demographics.DemographicStats`, also for the
    validation set) items are ``(x, y, c)``, c float32 (4,) the record's condition vector (age z, age missing,
    male, female; :func:`nvae_ecg.demographics.records_conditions` of the same ``records`` row).
    """

    def __init__(self, prepared_dir, dataset: str = "ptb-xl", split: str = "train", classes=None,
                 fraction: float = 1.0, fraction_seed: int = 0, require_label: bool = True,
                 demographics: DemographicStats | None = None):
        super().__init__(prepared_dir, dataset, split, classes, fraction, fraction_seed, require_label)
        self.demographics = demographics
        self.conditions: np.ndarray | None = None
        if demographics is not None:
            self.conditions = records_conditions(self.records, demographics)

    def __getitem__(self, i: int):
        item = super().__getitem__(i)
        if self.conditions is None:
            return item
        return (*item, torch.from_numpy(self.conditions[int(i)].copy()))

    def _x(self, row: np.ndarray) -> np.ndarray:
        return self.bounds.to_unit(row[list(INDEPENDENT_IDX)], clip=True).astype(np.float32)
