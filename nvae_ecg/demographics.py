"""Demographic conditions (age, sex) of the prepared records: the 4-d condition vector, its statistics and draws.

``prepare`` keeps each record's header ``# Age:`` / ``# Sex:`` in ``records.csv`` (columns ``age``, a float that
is NaN when the header says ``NaN``, ``Unknown``, nothing or something unparseable, and ``sex``, one of ``Male``,
``Female``, ``Unknown``; see :func:`nvae_ecg.data.challenge.parse_age`/``parse_sex``). A generator conditioned on
demographics sees the vector :data:`CONDITION_NAMES` = [age z-score, age-missing flag, male, female]: the z-score
uses the mean and standard deviation of the known ages of the dataset's *training* split (:class:`DemographicStats`,
plain floats stored in checkpoints next to the normalisation bounds), a missing age gives z = 0 with the flag set,
and an unknown sex sets neither sex entry. :class:`DemographicPool` draws (age, sex) pairs from the training split
jointly with the labels, so that generated sets keep the demographics of each label combination; the command-line
``--age 70 --sex F`` of the samplers is parsed by :func:`parse_age` / :func:`parse_sex` (clear errors outside 0-120
years or for a sex other than M/F). Ages in ``records.csv`` outside 0-120 (placeholders in some exports) count as
missing rather than stopping a training run.

Example::

    python -c "from nvae_ecg.demographics import fit_stats_prepared, condition_vector; s = fit_stats_prepared('prepared', 'ptb-xl'); print(s, condition_vector(70, 'F', s))"
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from nvae_ecg.classes import to_model_columns
from nvae_ecg.io import atomic_write_json

#: Entries of the condition vector, in order.
CONDITION_NAMES: tuple[str, ...] = ("age_z", "age_missing", "male", "female")
CONDITION_DIM = len(CONDITION_NAMES)
#: Sex codes of the API ('' = unknown); records.csv spells them Male / Female / Unknown.
SEXES: tuple[str, ...] = ("M", "F")
#: Ages (years) accepted from the command line; records outside count as missing.
AGE_RANGE: tuple[float, float] = (0.0, 120.0)
#: File name of saved statistics (beside a dataset's bounds.json, or anywhere).
STATS_FILE = "demographics.json"

_SEX_WORDS = {"m": "M", "male": "M", "f": "F", "female": "F"}


# ---- parsing ---------------------------------------------------------------------------------------------------------
def parse_age(value) -> float:
    """A requested age in years (``--age 70``); ValueError unless it is a number within 0-120."""
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"age must be a number of years, got {value!r}") from None
    lo, hi = AGE_RANGE
    if not (math.isfinite(age) and lo <= age <= hi):
        raise ValueError(f"age must lie within {lo:g}-{hi:g} years, got {value!r}")
    return age


def parse_sex(value) -> str:
    """A requested sex (``--sex F``): 'M' or 'F' (also male/female, any case); ValueError otherwise."""
    code = _SEX_WORDS.get(str(value).strip().lower()) if value is not None else None
    if code is None:
        raise ValueError(f"sex must be M or F, got {value!r}")
    return code


def record_age(value) -> float:
    """Age of a records.csv cell: float years, NaN when missing, unparseable or outside 0-120."""
    try:
        age = float(value)
    except (TypeError, ValueError):
        return math.nan
    lo, hi = AGE_RANGE
    return age if math.isfinite(age) and lo <= age <= hi else math.nan


def record_sex(value) -> str:
    """Sex of a records.csv cell: 'M', 'F' or '' (Unknown, empty, NaN from a default pandas read, anything else)."""
    if not isinstance(value, str):
        return ""
    return _SEX_WORDS.get(value.strip().lower(), "")


def _require_columns(records: pd.DataFrame) -> None:
    missing = {"age", "sex"} - set(records.columns)
    if missing:
        raise ValueError(f"records lack the column(s) {sorted(missing)}; they come from the records.csv written by "
                         "nvae_ecg.data.prepare")


def record_demographics(records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(ages float64 (N,) with NaN for missing, sexes '<U1' (N,) of 'M'/'F'/'') of records.csv rows, in row order."""
    _require_columns(records)
    ages = np.array([record_age(v) for v in records["age"].tolist()], dtype=np.float64)
    sexes = np.array([record_sex(v) for v in records["sex"].tolist()], dtype="<U1")
    return ages, sexes


# ---- statistics ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemographicStats:
    """Training-split age mean/std (years) for the z-score, with the counts they came from; plain floats only."""

    age_mean: float
    age_std: float
    n_records: float = 0.0
    n_age_missing: float = 0.0
    n_sex_unknown: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"DemographicStats.{f.name} must be a finite number, got {v!r}")
        if self.age_std <= 0:
            raise ValueError(f"DemographicStats.age_std must be positive, got {self.age_std}")

    def to_dict(self) -> dict[str, float]:
        """Plain dict of floats (checkpoints, JSON)."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> "DemographicStats":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DemographicStats key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**{k: float(v) for k, v in d.items()})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dict as JSON atomically (a folder gets ``demographics.json`` inside it)."""
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILE
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DemographicStats":
        """Read statistics saved by :meth:`save` (a file or the folder holding ``demographics.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILE
        with open(path) as f:
            return cls.from_dict(json.load(f))


def fit_stats(records: pd.DataFrame) -> DemographicStats:
    """Statistics of the given rows (pass the training split): mean and std (ddof 0) of the known ages.

    Without any known age the z-score degenerates to (age - 0) / 1, and a single distinct age gets std 1, so the
    vector stays finite; the counts record how much the statistics rest on.
    """
    ages, sexes = record_demographics(records)
    known = ages[np.isfinite(ages)]
    mean = float(known.mean()) if known.size else 0.0
    std = float(known.std()) if known.size else 1.0
    if not std > 0:
        std = 1.0
    return DemographicStats(age_mean=mean, age_std=std, n_records=float(len(ages)),
                            n_age_missing=float(len(ages) - known.size), n_sex_unknown=float((sexes == "").sum()))


def training_records(prepared_dir: str | os.PathLike, dataset: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Kept training-split rows of a prepared dataset and their (N, 9) labels (rows in signals.npy order)."""
    from nvae_ecg.data.datasets import load_prepared

    prepared = load_prepared(prepared_dir, dataset)
    mask = (prepared.records["split"] == "train").to_numpy()
    return prepared.records[mask].reset_index(drop=True), np.asarray(prepared.labels)[mask]


def fit_stats_prepared(prepared_dir: str | os.PathLike, dataset: str) -> DemographicStats:
    """:func:`fit_stats` over the whole training split of a prepared dataset (whatever classes a model selects)."""
    return fit_stats(training_records(prepared_dir, dataset)[0])


# ---- condition vectors -----------------------------------------------------------------------------------------------
def condition_matrix(ages: Sequence[float] | np.ndarray, sexes: Sequence[str] | np.ndarray,
                     stats: DemographicStats) -> np.ndarray:
    """(N, 4) float32 condition vectors from ages (years, NaN = missing) and sexes ('M', 'F', '' = unknown)."""
    ages = np.asarray(ages, dtype=np.float64).reshape(-1)
    sexes = np.asarray(sexes, dtype=str).reshape(-1)
    if ages.shape != sexes.shape:
        raise ValueError(f"{ages.size} ages for {sexes.size} sexes")
    bad = sorted(set(sexes.tolist()) - {"M", "F", ""})
    if bad:
        raise ValueError(f"sexes must be 'M', 'F' or '' (unknown), got {bad}")
    missing = ~np.isfinite(ages)
    out = np.zeros((ages.size, CONDITION_DIM), dtype=np.float32)
    out[:, 0] = np.where(missing, 0.0, (np.where(missing, 0.0, ages) - stats.age_mean) / stats.age_std)
    out[:, 1] = missing
    out[:, 2] = sexes == "M"
    out[:, 3] = sexes == "F"
    return out


def condition_vector(age: float | None, sex: str | None, stats: DemographicStats) -> np.ndarray:
    """(4,) float32 vector of one person; ``age`` None/NaN = missing, ``sex`` None/'' = unknown."""
    a = math.nan if age is None else float(age)
    return condition_matrix([a], [sex or ""], stats)[0]


def records_conditions(records: pd.DataFrame, stats: DemographicStats) -> np.ndarray:
    """(N, 4) float32 condition vectors of records.csv rows (missing age/sex as documented), in row order."""
    return condition_matrix(*record_demographics(records), stats)


# ---- draws from the training split -----------------------------------------------------------------------------------
class DemographicPool:
    """(age, sex) of training records with their labels, to draw targets jointly with a label combination.

    ``draw(labels, n, rng)`` samples records uniformly with replacement among those whose label row equals
    ``labels`` exactly (on the pool's columns), and returns their ages and sexes. Only records with a known age and
    sex are drawn (a target must be checkable); when no such record carries the combination, the draw widens to the
    records carrying every class of it, then to the whole pool (``last_scope`` says which was used). ``age`` or
    ``sex`` fixes that attribute and draws the other among records matching it (``--sex F`` keeps the ages of women).
    """

    SCOPES = ("exact", "superset", "all")

    def __init__(self, ages: np.ndarray, sexes: np.ndarray, labels: np.ndarray):
        ages = np.asarray(ages, dtype=np.float64).reshape(-1)
        sexes = np.asarray(sexes, dtype="<U1").reshape(-1)
        labels = np.asarray(labels).astype(np.uint8)
        if labels.ndim != 2 or labels.shape[0] != ages.size or sexes.size != ages.size:
            raise ValueError(f"need N ages, N sexes and (N, K) labels, got {ages.shape}, {sexes.shape}, {labels.shape}")
        keep = np.isfinite(ages) & (sexes != "")
        self.ages, self.sexes, self.labels = ages[keep], sexes[keep], labels[keep]
        self.n_dropped = int((~keep).sum())
        self.last_scope = ""
        if self.ages.size == 0:
            raise ValueError("no training record has both a known age and a known sex; demographics cannot be "
                             "drawn (give --age and --sex)")

    @classmethod
    def from_records(cls, records: pd.DataFrame, labels: np.ndarray,
                     class_cols: Sequence[int] | None = None) -> "DemographicPool":
        """Pool of records.csv rows with their (N, 9) labels, restricted to ``class_cols`` (a model's classes)."""
        labels = np.asarray(labels)
        if class_cols is not None:
            labels = to_model_columns(labels, class_cols)
        return cls(*record_demographics(records), labels)

    @classmethod
    def from_prepared(cls, prepared_dir: str | os.PathLike, dataset: str,
                      class_cols: Sequence[int] | None = None) -> "DemographicPool":
        """Pool of a prepared dataset's training split."""
        records, labels = training_records(prepared_dir, dataset)
        return cls.from_records(records, labels, class_cols)

    def candidates(self, labels: Sequence[int] | np.ndarray, age: float | None = None,
                   sex: str | None = None) -> tuple[np.ndarray, str]:
        """Row indices a draw for ``labels`` chooses from, and the scope ('exact', 'superset', 'all') used."""
        row = np.asarray(labels).astype(np.uint8).reshape(-1)
        if row.size != self.labels.shape[1]:
            raise ValueError(f"label row of {row.size} entries for a pool over {self.labels.shape[1]} classes")
        base = np.ones(self.ages.size, dtype=bool)
        if sex is not None:
            base &= self.sexes == sex
        if age is not None:
            base &= np.abs(self.ages - age) <= 5.0  # the sexes of people of about that age
            if not base.any():
                base = np.ones(self.ages.size, dtype=bool)
        exact = base & (self.labels == row).all(axis=1)
        superset = base & (self.labels[:, row.astype(bool)] == 1).all(axis=1)
        for scope, mask in zip(self.SCOPES, (exact, superset, base)):
            if mask.any():
                return np.flatnonzero(mask), scope
        raise ValueError(f"no training record has sex {sex!r}; demographics cannot be drawn for it")

    def draw(self, labels: Sequence[int] | np.ndarray, n: int, rng: np.random.Generator, age: float | None = None,
             sex: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (ages float64, sexes '<U1') for one label combination; fixed ``age``/``sex`` are repeated."""
        idx, self.last_scope = self.candidates(labels, age, sex)
        pick = idx[rng.integers(0, idx.size, size=int(n))]
        ages = np.full(int(n), float(age)) if age is not None else self.ages[pick].copy()
        sexes = np.full(int(n), sex, dtype="<U1") if sex is not None else self.sexes[pick].copy()
        return ages, sexes


# ---- command line ----------------------------------------------------------------------------------------------------
def _age_arg(value: str) -> float:
    try:
        return parse_age(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sex_arg(value: str) -> str:
    try:
        return parse_sex(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_demographic_args(p: argparse.ArgumentParser) -> None:
    """``--age`` and ``--sex`` of the samplers (unset: drawn from the training split with the labels)."""
    lo, hi = AGE_RANGE
    p.add_argument("--age", type=_age_arg, default=None,
                   help=f"age in years ({lo:g}-{hi:g}) of every generated ECG (default: drawn from the training "
                        "split jointly with each label combination)")
    p.add_argument("--sex", type=_sex_arg, default=None,
                   help="sex of every generated ECG, M or F (default: drawn from the training split jointly with "
                        "each label combination)")
