"""Training data of the CVAE: the shared generator dataset plus each record's demographic condition vector.

:class:`DemographicDataset` wraps :class:`nvae_ecg.data.datasets.GeneratorDataset` (the 8 independent leads in
[0, 1] and the multi-hot label) and adds the 4-d vector of :mod:`nvae_ecg.demographics` of the same record: the
wrapped dataset's ``records`` rows are its selected records.csv rows in item order, so item ``i`` joins row ``i``.
The age z-score uses the statistics of the dataset's whole training split (pass them to the validation set so
that both use the training statistics). :func:`build_condition` concatenates what a model is conditioned on
(``--condition demographics``, ``classes`` or ``both``).

Example::

    python -c "from cvae_ecg.data import DemographicDataset; d = DemographicDataset('prepared', 'ptb-xl'); x, y, c = d[0]; print(len(d), x.shape, y, c)"
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.demographics import CONDITION_DIM, DemographicStats, fit_stats_prepared, records_conditions

#: What the CVAE can be conditioned on (the cNVAE-ECG flag's names).
CONDITIONS = ("demographics", "classes", "both")


def condition_dim(condition: str, num_classes: int) -> int:
    """Size of the condition vector for ``--condition`` and the model's number of classes."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    return {"demographics": CONDITION_DIM, "classes": num_classes, "both": CONDITION_DIM + num_classes}[condition]


def build_condition(condition: str, demo: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's condition c: demographics (B, 4), labels (B, K) or both concatenated (demographics first)."""
    if condition == "demographics":
        return demo
    if condition == "classes":
        return labels
    if condition == "both":
        return torch.cat([demo, labels.to(demo.dtype)], dim=1)
    raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")


class DemographicDataset(Dataset):
    """``(x, y, d)``: x float32 (8, T) in [0, 1], y float32 multi-hot (C,), d float32 (4,) demographic vector."""

    def __init__(self, prepared_dir: str | os.PathLike, dataset: str = "ptb-xl", split: str = "train", classes=None,
                 stats: DemographicStats | None = None, **kwargs):
        self.base = GeneratorDataset(prepared_dir, dataset, split=split, classes=classes, **kwargs)
        self.stats = stats if stats is not None else fit_stats_prepared(prepared_dir, dataset)
        self.conditions = records_conditions(self.base.records, self.stats)
        if len(self.conditions) != len(self.base):
            raise RuntimeError(f"{len(self.conditions)} demographic rows for {len(self.base)} ECGs")

    # The attributes the trainers and the quality monitor read from a generator dataset.
    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    @property
    def bounds(self):
        return self.base.bounds

    @property
    def classes(self):
        return self.base.classes

    @property
    def class_names(self):
        return self.base.class_names

    @property
    def records(self):
        return self.base.records

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, torch.from_numpy(self.conditions[int(i)].copy())
