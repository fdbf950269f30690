"""Training sets for the benchmarks: real prepared splits plus generated ECGs, read from memory maps.

Real data come from :mod:`nvae_ecg.data.datasets` (``load_prepared`` and
``select_indices``); generated sets from the folder format of
:mod:`nvae_ecg.samples`. Generated folders are grouped by the ``generator`` and
``task_type`` fields of their ``meta.json`` (never by folder name), so any new
generator that writes the format joins the benchmarks. How many generated ECGs of
which label combination enter a training set is decided by :mod:`nvae_ecg.counts`,
the one counting function the samplers also use: ``addition`` takes round(n x
count) ECGs of every label combination of the real training split, ``imbalance``
takes round(n x (count of the reference class - count of the class)) single-label
ECGs of each target class. Which generated ECGs are taken is a prefix of one seeded
permutation per label combination, so a larger proportion contains the smaller one.

:class:`EcgSet` concatenates (signals file, rows, targets) sources and reads whole
batches with one sorted fancy-index per source (``__getitems__``), which keeps a
DataLoader over memory-mapped files fast; the memory maps are opened lazily in the
reading process, so the set pickles cheaply into DataLoader workers.

Example::

    python -m train_test.data --data_dir prepared --generated_root results/generated --task_type imbalance \\
        --proportion 1.0
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nvae_ecg.classes import CLASS_ABBREVS, class_index, to_model_columns
from nvae_ecg.counts import TASK_TYPES, PlanItem, addition_plan, imbalance_plan, plan_summary
from nvae_ecg.data import DATASETS
from nvae_ecg.data.datasets import load_prepared, select_indices
from nvae_ecg.samples import read_samples


@dataclass
class Source:
    """Rows of one (N, 12, T) float32 ``.npy`` file with their float32 targets (len(rows), C)."""

    path: Path
    rows: np.ndarray
    targets: np.ndarray
    name: str = ""

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.targets = np.asarray(self.targets, dtype=np.float32)
        if self.targets.ndim != 2 or len(self.targets) != len(self.rows):
            raise ValueError(f"source {self.name or self.path}: {len(self.rows)} rows but targets of shape "
                             f"{self.targets.shape}")


def _identity(batch):
    return batch


class EcgSet(Dataset):
    """Concatenated sources yielding ``(x (12, T) float32 mV, y (C,) float32)``; batched reads via ``__getitems__``."""

    #: Pass as ``collate_fn`` to a DataLoader: ``__getitems__`` already returns stacked tensors.
    collate_fn = staticmethod(_identity)

    def __init__(self, sources: Sequence[Source]):
        sources = [s for s in sources if len(s.rows)]
        if not sources:
            raise ValueError("EcgSet needs at least one non-empty source")
        widths = {s.targets.shape[1] for s in sources}
        if len(widths) != 1:
            raise ValueError(f"sources have different numbers of target columns: {sorted(widths)}")
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s.rows) for s in self.sources])
        self.targets = np.concatenate([s.targets for s in self.sources], axis=0)
        self._maps: list | None = None
        shapes = set()
        for s in self.sources:
            arr = np.load(s.path, mmap_mode="r")
            if arr.ndim != 3 or arr.dtype != np.float32:
                raise ValueError(f"{s.path}: expected a (N, 12, T) float32 array, got {arr.shape} {arr.dtype}")
            if len(s.rows) and (s.rows.min() < 0 or s.rows.max() >= arr.shape[0]):
                raise IndexError(f"{s.path}: rows out of range for {arr.shape[0]} records")
            shapes.add(arr.shape[1:])
            del arr
        if len(shapes) != 1:
            raise ValueError(f"sources have different signal shapes {sorted(shapes)}: {[str(s.path) for s in self.sources]}")
        self.signal_shape = shapes.pop()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_targets(self) -> int:
        """Number of target columns."""
        return int(self.targets.shape[1])

    def __getstate__(self):
        # Never pickle memory maps: numpy would copy whole arrays into the worker pickles.
        state = self.__dict__.copy()
        state["_maps"] = None
        return state

    def _open(self) -> list:
        if self._maps is None:
            self._maps = [np.load(s.path, mmap_mode="r") for s in self.sources]
        return self._maps

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked ``(x (B, 12, T), y (B, C))`` for a list of indices, reading each source once in row order."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for {len(self)} records")
        maps = self._open()
        x = np.empty((len(idx), *self.signal_shape), dtype=np.float32)
        src = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(src):
            pos = np.flatnonzero(src == k)
            rows = self.sources[k].rows[idx[pos] - self.offsets[k]]
            order = np.argsort(rows, kind="stable")
            # Sorted fancy indexing on a memmap reads the file sequentially.
            x[pos[order]] = maps[k][rows[order]]
        return torch.from_numpy(x), torch.from_numpy(self.targets[idx])

    def __getitem__(self, i: int):
        x, y = self.__getitems__([int(i)])
        return x[0], y[0]


def lead_stats(sources: Sequence[Source], chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead mean and standard deviation (float64 accumulation) over all samples of the given sources."""
    total, total_sq, count, n_leads = None, None, 0, None
    for s in sources:
        arr = np.load(s.path, mmap_mode="r")
        rows = np.sort(s.rows)
        for start in range(0, len(rows), chunk):
            x = np.asarray(arr[rows[start:start + chunk]], dtype=np.float64)
            if total is None:
                n_leads = x.shape[1]
                total, total_sq = np.zeros(n_leads), np.zeros(n_leads)
            total += x.sum(axis=(0, 2))
            total_sq += (x * x).sum(axis=(0, 2))
            count += x.shape[0] * x.shape[2]
        del arr
    if not count:
        raise ValueError("cannot compute lead statistics of an empty training set")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    # A flat lead (all zeros in tiny data) must not divide by zero.
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def signal_shape(path) -> tuple[int, ...]:
    """Shape (leads, samples) of one record of an (N, leads, samples) ``.npy`` file."""
    arr = np.load(path, mmap_mode="r")
    return tuple(int(d) for d in arr.shape[1:])


def real_source(prepared_dir, dataset: str, split: str, columns: Sequence[int], fraction: float = 1.0,
                fraction_seed: int = 0) -> Source:
    """All records of a prepared split (unlabelled ones stay, as negatives) with the given label columns as targets."""
    prep = load_prepared(prepared_dir, dataset)
    rows = select_indices(prep, split, fraction=fraction, fraction_seed=fraction_seed)
    if not len(rows):
        raise ValueError(f"{Path(prepared_dir) / dataset}: the {split!r} split is empty; prepare more records")
    return Source(Path(prepared_dir) / dataset / "signals.npy", rows, to_model_columns(prep.labels[rows], columns),
                  name=f"{dataset}/{split}")


def train_labels(prepared_dir, dataset: str = "ptb-xl") -> np.ndarray:
    """(N_train, 9) multi-hot labels of a prepared training split: the input of the counting recipes."""
    prep = load_prepared(prepared_dir, dataset)
    return prep.labels[select_indices(prep, "train")]


# ----------------------------------------------------------------------------------------------- generated sets


#: task_type of an unconditional generated set (meta.json ``"unconditional": true``, all-zero labels).
UNCONDITIONAL = "unconditional"


@dataclass
class GeneratedFolder:
    """One generated-sample folder on disk, identified by the ``generator`` and ``task_type`` of its meta.json.

    It holds the folder's path, labels and meta.json, not its signals: the benchmarks pick rows by label and read
    them from :attr:`signals_path`. The arrays themselves, read from the folder, are
    :class:`nvae_ecg.samples.GeneratedSamples`.
    """

    generator: str
    task_type: str
    path: Path
    labels: np.ndarray
    meta: dict = field(repr=False)
    length: int = 5000

    @property
    def signals_path(self) -> Path:
        """The folder's signals.npy."""
        return self.path / "signals.npy"


def open_generated(path, name: str | None = None) -> GeneratedFolder:
    """Read a generated-sample folder; ``name`` overrides the generator name of its meta.json."""
    s = read_samples(path)
    generator = name or s.meta.get("generator")
    task = s.meta.get("task_type")
    if not generator:
        raise ValueError(f"{Path(path) / 'meta.json'} has no 'generator' field; pass the folder as NAME=PATH")
    # An unconditional set (e.g. python -m pulse2pulse.deepfake) enters the quality report only; the enrichment
    # benchmarks select their task types and never pick it up.
    unconditional = bool(s.meta.get("unconditional")) and task == UNCONDITIONAL
    if task not in TASK_TYPES and not unconditional:
        raise ValueError(f"{Path(path) / 'meta.json'}: task_type {task!r} is not one of {TASK_TYPES}; "
                         f"regenerate the set with --task_type")
    return GeneratedFolder(str(generator), str(task), Path(path), np.asarray(s.labels), s.meta, int(s.signals.shape[2]))


def discover_generated(specs: Sequence[str] = (), root=None) -> dict[tuple[str, str], GeneratedFolder]:
    """Generated sets keyed by (generator, task_type) from ``NAME=PATH``/``PATH`` specs and subfolders of ``root``."""
    found: dict[tuple[str, str], GeneratedFolder] = {}

    def add(gs: GeneratedFolder):
        key = (gs.generator, gs.task_type)
        if key in found:
            raise ValueError(f"two generated sets for generator {gs.generator!r}, task {gs.task_type!r}: "
                             f"{found[key].path} and {gs.path}; give one of them another name with NAME=PATH")
        found[key] = gs

    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"generated root {root} does not exist (run scripts/generate_samples.sh first)")
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "meta.json").is_file())
        if not subdirs:
            raise FileNotFoundError(f"{root} holds no generated-sample folder (subfolders with meta.json)")
        for p in subdirs:
            add(open_generated(p))
    for spec in specs:
        name, sep, path = spec.partition("=")
        add(open_generated(path, name) if sep else open_generated(spec))
    return found


def enrichment_plan(labels9: np.ndarray, task_type: str, proportion: float, target_columns: Sequence[int],
                    reference: str = "SR") -> list[PlanItem]:
    """Label combinations and counts of generated ECGs to add at ``proportion`` (paper Sec. IV, Table I).

    ``addition``: round(n x count) of every label combination of the real training split.
    ``imbalance``: round(n x (count of ``reference`` - count of c)) single-label ECGs of each target class c.
    """
    if proportion < 0:
        raise ValueError(f"proportion must be >= 0, got {proportion}")
    if task_type == "addition":
        return addition_plan(labels9, factor=proportion)
    if task_type == "imbalance":
        ref = class_index(reference)
        return imbalance_plan(labels9, factor=proportion, targets=[c for c in target_columns if c != ref],
                              reference=ref)
    raise ValueError(f"unknown task_type {task_type!r}; choose one of {TASK_TYPES}")


def pick_generated(gs: GeneratedFolder, plan: Sequence[PlanItem], seed: int = 0) -> np.ndarray:
    """Rows of a generated set fulfilling a plan: per combination, a prefix of a seeded permutation of its rows."""
    picked, missing = [], []
    gen_labels = gs.labels.astype(np.int64)
    for item in plan:
        combo = np.asarray(item.labels, dtype=np.int64)
        if len(combo) != gen_labels.shape[1]:
            raise ValueError(f"plan has {len(combo)} label columns, {gs.path} has {gen_labels.shape[1]}")
        rows = np.flatnonzero((gen_labels == combo).all(axis=1))
        # Permute independently of the plan so nested proportions take nested subsets.
        perm = np.random.default_rng([seed, *combo.tolist()]).permutation(len(rows))
        if len(rows) < item.count:
            name = "+".join(a for a, v in zip(CLASS_ABBREVS, combo) if v) or "none"
            missing.append(f"{name}: need {item.count}, have {len(rows)}")
            continue
        picked.append(rows[perm[:item.count]])
    if missing:
        raise ValueError(f"generated set {gs.path} ({gs.generator}, {gs.task_type}) has too few ECGs for "
                         f"{'; '.join(missing)}. Generate a larger set (e.g. a larger --factor) or lower the proportion.")
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def generated_source(gs: GeneratedFolder, plan: Sequence[PlanItem], target_columns: Sequence[int], seed: int = 0,
                     length: int | None = None) -> Source:
    """The generated rows picked for a plan, with their targets restricted to ``target_columns``."""
    if length is not None and gs.length != length:
        raise ValueError(f"{gs.path}: generated ECGs have {gs.length} samples, the real ones {length}")
    rows = pick_generated(gs, plan, seed)
    return Source(gs.signals_path, rows, to_model_columns(gs.labels[rows], target_columns),
                  name=f"{gs.generator}/{gs.task_type}")


def add_generated_flags(p: argparse.ArgumentParser) -> None:
    """--generated / --generated_root, shared by the experiment entry points."""
    p.add_argument("--generated", nargs="*", default=[],
                   help="generated-sample folders, PATH or NAME=PATH (NAME overrides meta.json's generator)")
    p.add_argument("--generated_root", default=None,
                   help="folder whose subfolders are generated-sample folders, grouped by meta.json's "
                        "generator and task_type")


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the enrichment-plan printout."""
    p = argparse.ArgumentParser(prog="python -m train_test.data",
                                description="Print the generated ECGs a benchmark would add to the training split.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", "--prepared_dir", dest="data_dir", required=True,
                   help="prepared data folder (python -m nvae_ecg.data.prepare)")
    p.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="prepared dataset whose training split is enriched")
    add_generated_flags(p)
    p.add_argument("--task_type", default="imbalance", choices=TASK_TYPES, help="enrichment recipe")
    p.add_argument("--proportion", type=float, default=1.0, help="proportion n of the recipe")
    p.add_argument("--targets", default="MI", help="comma-separated target classes (imbalance fills these)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of generated ECGs")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    """Print the plan and, for every matching generated set, whether it can fulfil it."""
    from nvae_ecg.classes import resolve_classes

    cols = resolve_classes(args.targets)
    plan = enrichment_plan(train_labels(args.data_dir, args.dataset), args.task_type, args.proportion, cols)
    print(json.dumps(plan_summary(plan, CLASS_ABBREVS), indent=2))
    sets = discover_generated(args.generated, args.generated_root) if (args.generated or args.generated_root) else {}
    for (gen, task), gs in sorted(sets.items()):
        if task != args.task_type:
            continue
        try:
            rows = pick_generated(gs, plan, args.seed)
            print(f"{gen}: {len(rows)} ECGs from {gs.path}")
        except ValueError as e:
            print(f"{gen}: {e}")


if __name__ == "__main__":
    main(parse_args())
