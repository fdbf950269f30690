"""Incremental, resumable results files of the benchmark experiments.

Each experiment writes one JSON file ``{"experiment", "config", "cells": {key: record}}``
and rewrites it atomically (temporary file + rename) after every finished cell, so a
killed run loses at most the cell in progress and a rerun skips every cell already
present. The ``config`` stores the settings that change results (architecture,
epochs, optimiser, data); rerunning into the same folder with different ones is
refused instead of mixing incomparable numbers (use another ``--out_dir`` or
``--overwrite``). Settings that only enlarge the grid (generators, proportions,
seeds) may differ between runs: new cells are added to the same file.

Example::

    python -m train_test.results results/enrich_train/enrich_train.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from nvae_ecg.samples import atomic_write_json


class ResultsStore:
    """The results file of one experiment: cells keyed by a string, written atomically after each cell."""

    def __init__(self, path: str | os.PathLike, experiment: str, config: dict, overwrite: bool = False):
        self.path = Path(path)
        self.experiment = experiment
        self.config = config
        if self.path.exists() and not overwrite:
            with open(self.path) as f:
                data = json.load(f)
            if data.get("experiment") != experiment:
                raise ValueError(f"{self.path} holds results of {data.get('experiment')!r}, not {experiment!r}; "
                                 f"choose another --out_dir")
            old = data.get("config", {})
            diff = {k: (old.get(k), v) for k, v in config.items() if k in old and old.get(k) != v}
            if diff:
                raise ValueError(f"{self.path} was written with other settings {diff} (old, new); rerun with the "
                                 f"same flags to resume, or pass --overwrite / another --out_dir")
            self.data = data
            self.data["config"] = {**old, **config}
        else:
            self.data = {"experiment": experiment, "config": config, "cells": {}}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def cells(self) -> dict:
        """All finished cells."""
        return self.data["cells"]

    def __contains__(self, key: str) -> bool:
        return key in self.data["cells"]

    def add(self, key: str, record: dict) -> None:
        """Store one finished cell and rewrite the file atomically."""
        self.data["cells"][key] = _clean(record)
        atomic_write_json(self.path, self.data)

    def set(self, name: str, value) -> None:
        """Store a top-level entry (e.g. pretraining summaries) and rewrite the file."""
        self.data[name] = _clean(value)
        atomic_write_json(self.path, self.data)


def _clean(obj):
    """Replace NaN/inf by None recursively so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _clean(obj.item())
    return obj


def fmt_prop(x: float) -> str:
    """Canonical text of a proportion or fraction in cell keys ('0.1', '1', '1.5')."""
    return f"{float(x):g}"


def load_results(path: str | os.PathLike) -> dict:
    """Read a results file and check it is one of ours."""
    path = Path(path)
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "experiment" not in data or "cells" not in data:
        raise ValueError(f"{path} is not a train_test results file (no 'experiment'/'cells')")
    return data


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the results-file summary."""
    p = argparse.ArgumentParser(prog="python -m train_test.results", description="Summarise a results file.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", help="results JSON written by enrich_train or enrich_pretrain")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    """Print the experiment, its settings and the number of finished cells."""
    data = load_results(args.path)
    print(f"{args.path}: {data['experiment']}, {len(data['cells'])} finished cells")
    print(json.dumps(data["config"], indent=2))


if __name__ == "__main__":
    main(parse_args())
