"""How many ECGs of which label combination to generate: one pure function for every consumer.

The paper uses two recipes (Sec. IV, Table I). ``imbalance``: for every class
except SR, generate (largest class count - that class count) single-label ECGs, so
that every class reaches the majority count (e.g. LAD: 15,263 - 4,061 = 11,202).
``addition``: for every distinct label combination in the training split, generate
its count times a factor (2 in the authors' generation script). The sampler
(``nvae_ecg.generate``), the GAN baselines and the downstream benchmarks
(``train_test``) all call :func:`generation_plan`, so their numbers cannot drift.

Example::

    python -c "import numpy as np; from nvae_ecg.counts import generation_plan; print(generation_plan(np.eye(3, dtype=int)[[0,0,0,1,2]], 'imbalance'))"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

TASK_TYPES = ("imbalance", "addition")


@dataclass(frozen=True)
class PlanItem:
    """One label combination (0/1 tuple over the label columns) and how many ECGs to generate with it."""

    labels: tuple[int, ...]
    count: int


def _as_label_matrix(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be a 2-D (records, classes) 0/1 matrix, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must contain only 0 and 1 (multi-hot)")
    return y.astype(np.int64)


def class_counts(labels) -> np.ndarray:
    """Number of records carrying each class (column sums of a multi-hot matrix)."""
    return _as_label_matrix(labels).sum(axis=0)


def imbalance_plan(labels, factor: float = 1.0, exclude: Sequence[int] = (0,),
                   targets: Sequence[int] | None = None, reference: int | None = None) -> list[PlanItem]:
    """Single-label ECGs that lift each class to the reference count: round(factor * (ref - count)).

    ``reference`` is a column index whose count is the target (default: the largest class);
    ``targets`` restricts the classes to fill (default: all but ``exclude``, i.e. all but SR).
    """
    y = _as_label_matrix(labels)
    counts = y.sum(axis=0)
    ref = int(counts.max()) if reference is None else int(counts[reference])
    cols = [c for c in range(y.shape[1]) if c not in set(exclude)] if targets is None else list(targets)
    plan = []
    for c in cols:
        n = int(round(factor * max(ref - int(counts[c]), 0)))
        if n > 0:
            onehot = tuple(int(i == c) for i in range(y.shape[1]))
            plan.append(PlanItem(onehot, n))
    return plan


def addition_plan(labels, factor: float = 2.0) -> list[PlanItem]:
    """For every distinct non-empty label combination: round(factor * its count) ECGs, most frequent first.

    Records without any of the classes have no condition to generate from and are left out.
    """
    y = _as_label_matrix(labels)
    combos = Counter(tuple(int(v) for v in row) for row in y if row.any())
    plan = []
    for combo, count in sorted(combos.items(), key=lambda kv: (-kv[1], kv[0])):
        n = int(round(factor * count))
        if n > 0:
            plan.append(PlanItem(combo, n))
    return plan


def generation_plan(labels, task_type: str, factor: float | None = None, **kwargs) -> list[PlanItem]:
    """Dispatch to :func:`imbalance_plan` (factor default 1) or :func:`addition_plan` (factor default 2)."""
    if task_type == "imbalance":
        return imbalance_plan(labels, 1.0 if factor is None else factor, **kwargs)
    if task_type == "addition":
        return addition_plan(labels, 2.0 if factor is None else factor)
    raise ValueError(f"unknown task_type {task_type!r}; choose one of {TASK_TYPES}")


def plan_to_labels(plan: Sequence[PlanItem], num_classes: int | None = None) -> np.ndarray:
    """Expand a plan into the (N, C) uint8 label matrix of the ECGs to generate, in plan order."""
    if not plan:
        return np.zeros((0, num_classes or 0), dtype=np.uint8)
    width = len(plan[0].labels)
    rows = [np.tile(np.asarray(item.labels, dtype=np.uint8), (item.count, 1)) for item in plan]
    out = np.concatenate(rows, axis=0)
    if num_classes is not None and width != num_classes:
        raise ValueError(f"plan has {width} label columns, expected {num_classes}")
    return out


def plan_summary(plan: Sequence[PlanItem], class_names: Sequence[str]) -> dict[str, int]:
    """Readable {'LAD': 11202, 'SR+MI': 40, ...} summary of a plan."""
    out = {}
    for item in plan:
        name = "+".join(n for n, v in zip(class_names, item.labels) if v) or "none"
        out[name] = out.get(name, 0) + item.count
    return out
