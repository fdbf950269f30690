"""Surrogate generated sets for smoke runs and tests: real training ECGs plus noise, in the generated-sample format.

The benchmarks read generated ECGs only through the folder format of
:mod:`nvae_ecg.samples`, so their whole pipeline can be exercised without a trained
generator. This module writes such folders with :class:`~nvae_ecg.samples.SampleWriter`
from the counting recipe of :mod:`nvae_ecg.counts` (``imbalance`` or ``addition``
with ``--factor``): each requested ECG is a random real training ECG carrying the
requested label combination (or, when none does, any training ECG with that class),
plus Gaussian noise and a random amplitude scale. ``meta.json`` records
``"surrogate": true``; these numbers say nothing about a generator.

Example::

    python -m train_test.surrogate --data_dir prepared results/generated/fake_imbalance --generator fake \\
        --task_type imbalance
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.counts import TASK_TYPES, generation_plan, plan_summary, plan_to_labels
from nvae_ecg.data.datasets import load_prepared, select_indices
from nvae_ecg.samples import SampleWriter


def write_surrogate(prepared_dir, out_dir, generator: str = "surrogate", task_type: str = "imbalance",
                    factor: float | None = None, dataset: str = "ptb-xl", noise_mv: float = 0.02, seed: int = 0,
                    batch: int = 64, overwrite: bool = False) -> Path:
    """Write a surrogate generated set following ``generation_plan(train labels, task_type, factor)``."""
    prep = load_prepared(prepared_dir, dataset)
    rows = select_indices(prep, "train")
    y_train = prep.labels[rows].astype(np.int64)
    plan = generation_plan(y_train, task_type, factor)
    labels = plan_to_labels(plan, y_train.shape[1])
    if not len(labels):
        raise ValueError(f"the {task_type} plan of {Path(prepared_dir) / dataset} asks for no ECG at factor {factor}")
    rng = np.random.default_rng(seed)
    # For every requested row: a real row with the same combination, else one sharing its first class.
    source = np.empty(len(labels), dtype=np.int64)
    for combo in np.unique(labels, axis=0):
        want = np.flatnonzero((labels == combo).all(axis=1))
        pool = rows[(y_train == combo).all(axis=1)]
        if not len(pool):
            pool = rows[y_train[:, int(np.argmax(combo))] == 1]
        if not len(pool):
            pool = rows
        source[want] = rng.choice(pool, size=len(want))
    length = int(prep.signals.shape[2])
    with SampleWriter(out_dir, len(labels), length=length, overwrite=overwrite) as w:
        for start in tqdm(range(0, len(labels), batch), desc=f"surrogate {generator}/{task_type}", leave=False):
            idx = source[start:start + batch]
            x = np.asarray(prep.signals[np.sort(idx)], dtype=np.float32)[np.argsort(np.argsort(idx))]
            scale = rng.uniform(0.9, 1.1, size=(len(idx), 1, 1)).astype(np.float32)
            x = x * scale + rng.normal(0.0, noise_mv, size=x.shape).astype(np.float32)
            w.write(x, labels[start:start + batch])
        return w.close({"generator": generator, "task_type": task_type, "surrogate": True,
                        "factor": factor, "seed": seed, "dataset": dataset, "noise_mv": noise_mv,
                        "plan": plan_summary(plan, CLASS_ABBREVS)})


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the surrogate writer."""
    p = argparse.ArgumentParser(prog="python -m train_test.surrogate",
                                description="Write a surrogate generated set (real ECGs + noise) for smoke runs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=None, help="prepared data folder (python -m nvae_ecg.data.prepare)")
    # The old spelling, `surrogate PREPARED_DIR OUT_DIR`, keeps working (a hidden positional before OUT_DIR).
    p.add_argument("legacy_data_dir", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("out_dir", help="generated-sample folder to write")
    p.add_argument("--generator", default="surrogate", help="name stored as meta.json 'generator'")
    p.add_argument("--task_type", default="imbalance", choices=TASK_TYPES, help="counting recipe")
    p.add_argument("--factor", type=float, default=None,
                   help="recipe factor (default: 1 for imbalance, 2 for addition, as the generation scripts)")
    p.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="prepared dataset")
    p.add_argument("--noise_mv", type=float, default=0.02, help="standard deviation of the added noise in mV")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = p.parse_args(argv)
    legacy = vars(args).pop("legacy_data_dir")
    if legacy is not None and args.data_dir is not None:
        p.error("give the prepared data folder once: --data_dir PREPARED_DIR OUT_DIR")
    args.data_dir = args.data_dir if args.data_dir is not None else legacy
    if args.data_dir is None:
        p.error("--data_dir is required")
    return args


def main(args: argparse.Namespace) -> None:
    """Write the folder and print where it is."""
    path = write_surrogate(args.data_dir, args.out_dir, args.generator, args.task_type, args.factor,
                           args.dataset, args.noise_mv, args.seed, overwrite=args.overwrite)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(parse_args())
