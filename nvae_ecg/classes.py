"""The diagnostic classes of the paper and their SNOMED CT codes.

cNVAE-ECG is conditioned on 9 classes (paper Table I): sinus rhythm, myocardial
infarction, left axis deviation, left ventricular hypertrophy, atrial fibrillation,
sinus tachycardia, first-degree AV block, sinus bradycardia and T-wave abnormality.
This module is the single source of that list and its order: labels on disk, the
models' class embeddings and checkpoints all use it (the authors' code mixed an
8-class and a 9-class list, which broke its sampler). A model trained on a subset of the classes
has its own label columns; :func:`to_model_columns` and :func:`to_paper_columns` are the one mapping
between them and the 9 paper columns.

Example::

    python -c "from nvae_ecg.classes import resolve_classes; print(resolve_classes('MI,164889003'))"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class EcgClass:
    abbrev: str
    snomed: str
    name: str


#: Paper classes in label-column order (SR, MI, LAD, LVH, AF, STach, IAVB, SB, TAb).
PAPER_CLASSES: tuple[EcgClass, ...] = (
    EcgClass("SR", "426783006", "sinus rhythm"),
    EcgClass("MI", "164865005", "myocardial infarction"),
    EcgClass("LAD", "39732003", "left axis deviation"),
    EcgClass("LVH", "164873001", "left ventricular hypertrophy"),
    EcgClass("AF", "164889003", "atrial fibrillation"),
    EcgClass("STach", "427084000", "sinus tachycardia"),
    EcgClass("IAVB", "270492004", "first degree AV block"),
    EcgClass("SB", "426177001", "sinus bradycardia"),
    EcgClass("TAb", "164934002", "T-wave abnormality"),
)
CLASS_ABBREVS: tuple[str, ...] = tuple(c.abbrev for c in PAPER_CLASSES)
CLASS_CODES: tuple[str, ...] = tuple(c.snomed for c in PAPER_CLASSES)
NUM_CLASSES = len(PAPER_CLASSES)

_BY_KEY = {}
for _i, _c in enumerate(PAPER_CLASSES):
    _BY_KEY[_c.abbrev.lower()] = _i
    _BY_KEY[_c.snomed] = _i


def class_index(key: str) -> int:
    """Column of a class given its abbreviation (case-insensitive) or SNOMED CT code."""
    k = str(key).strip().lower()
    if k not in _BY_KEY:
        raise ValueError(
            f"unknown class {key!r}; known classes: "
            + ", ".join(f"{c.abbrev} ({c.snomed})" for c in PAPER_CLASSES)
        )
    return _BY_KEY[k]


def _column(key) -> int:
    # Integer column indices pass through (checked); anything else is an abbreviation or a code.
    if isinstance(key, int) or (hasattr(key, "dtype") and getattr(key, "dtype").kind in "iu"):
        k = int(key)
        if not 0 <= k < NUM_CLASSES:
            raise ValueError(f"class column {k} out of range 0..{NUM_CLASSES - 1}")
        return k
    return class_index(key)


def resolve_classes(spec: str | Sequence[str] | None) -> list[int]:
    """Column indices for a comma-separated string or a list of abbreviations, codes or column indices; None/'all': every class."""
    if spec is None:
        return list(range(NUM_CLASSES))
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "all"):
            return list(range(NUM_CLASSES))
        spec = [s for s in spec.split(",") if s.strip()]
    idx = [_column(s) for s in spec]
    if len(set(idx)) != len(idx):
        raise ValueError(f"class list {list(spec)} names a class twice")
    return idx


def to_model_columns(labels9, class_cols: Sequence[int]):
    """Labels over the 9 paper columns, shape (..., 9), restricted to a model's class columns (..., K).

    ``class_cols`` is the model's :func:`resolve_classes` list (a checkpoint's ``classes``); column j of the result is
    paper column ``class_cols[j]``. The dtype is kept. The inverse is :func:`to_paper_columns`.
    """
    import numpy as np

    return np.asarray(labels9)[..., list(class_cols)]


def to_paper_columns(labels, class_cols: Sequence[int]):
    """Labels over a model's class columns, shape (..., K), placed back on the 9 paper columns (..., 9).

    Column j goes to paper column ``class_cols[j]``; the classes the model lacks are 0. The dtype is kept.
    """
    import numpy as np

    y = np.asarray(labels)
    cols = list(class_cols)
    if y.shape[-1:] != (len(cols),):
        raise ValueError(f"labels of shape {y.shape} for {len(cols)} class columns")
    out = np.zeros(y.shape[:-1] + (NUM_CLASSES,), dtype=y.dtype)
    out[..., cols] = y
    return out


def codes_to_multihot(codes: Iterable[str]):
    """9-dim 0/1 vector (numpy uint8) of the paper classes present in a list of SNOMED codes."""
    import numpy as np

    v = np.zeros(NUM_CLASSES, dtype=np.uint8)
    for code in codes:
        i = _BY_KEY.get(str(code).strip())
        if i is not None and str(code).strip().isdigit():
            v[i] = 1
    return v
