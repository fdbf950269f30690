"""The sampler driver shared by every generator: flags, the generation plan, and writing the output.

``nvae_ecg.generate`` (cNVAE-ECG, generator ``cnvae``, and its 2-D STFT variant,
``nvae2d``) and ``pulse2pulse.generate`` (WaveGAN*, Pulse2Pulse) differ only in how
a batch of [0, 1] 8-lead ECGs is drawn for a label batch. Everything
else lives here once: the common command-line flags, the plan of label combinations
and counts (:func:`nvae_ecg.counts.generation_plan` on the training split, or
``--labels``/``--count``), the mapping to 12-lead mV with the normalisation bounds
and the lead algebra, the target demographics of models conditioned on them
(:class:`DemographicTargets`: ``--age``/``--sex`` or drawn from the training split with the labels, written per ECG
into ``conditions.npy`` of the same atomic folder), and atomic output in the generated-sample format or as WFDB
records.

Example::

    python -m nvae_ecg.generate --checkpoint runs/demo/checkpoints/latest.pt --data_dir prepared \\
        --task_type addition --factor 2 --out_dir generated/cnvae_addition
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import (CLASS_ABBREVS, CLASS_CODES, NUM_CLASSES, resolve_classes, to_model_columns,
                              to_paper_columns)
from nvae_ecg.counts import PlanItem, generation_plan, plan_summary
from nvae_ecg.data.bounds import Bounds
from nvae_ecg.demographics import DemographicPool, DemographicStats, condition_matrix
from nvae_ecg.io import remove_stale_temporaries
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.samples import CONDITIONS_FILE, SampleWriter, make_conditions

#: sample_fn(y, t) -> (B, 8, L) tensor in [0, 1] for a (B, K) float label tensor over the model's classes.
SampleFn = Callable[[torch.Tensor, float], torch.Tensor]
#: before_item(item, t): called once per label combination, just before its first batch is drawn.
BeforeItemFn = Callable[[PlanItem, float], None]
#: With demographic targets, sample_fn(y, t, c) also takes the (B, 4) condition vectors (condition_matrix).
DemographicSampleFn = Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]


class DemographicTargets:
    """The requested (age, sex) of every generated ECG: fixed (``--age``/``--sex``) or drawn with its labels.

    Draws come from :class:`nvae_ecg.demographics.DemographicPool` (the training split jointly with the label
    combination) with a private seeded generator, so they never shift the samplers' torch or numpy streams; a fixed
    ``age``/``sex`` is repeated and the other attribute drawn among matching records. ``pool`` may be None only when
    both are fixed. :meth:`vectors` turns targets into the model's 4-d vectors with the training statistics.
    """

    def __init__(self, stats: DemographicStats, pool: DemographicPool | None, age: float | None, sex: str | None,
                 seed: int):
        if pool is None and (age is None or sex is None):
            raise ValueError("drawing demographics needs a DemographicPool (or fix both age and sex)")
        self.stats, self.pool, self.age, self.sex = stats, pool, age, sex
        self.rng = np.random.default_rng(seed)
        self.widened: dict[tuple, str] = {}  # label rows whose draw had to leave the exact combination

    @property
    def mode(self) -> str:
        """How the targets are chosen, in words (meta.json)."""
        if self.pool is None:
            return "fixed"
        fixed = [f"{k} {v}" for k, v in (("age", self.age), ("sex", self.sex)) if v is not None]
        return "drawn from the training split with the labels" + (f" (fixed {', '.join(fixed)})" if fixed else "")

    def draw(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ages float64, sexes '<U1') for label rows (B, K) over the model's classes, in row order."""
        rows = np.asarray(rows).round().astype(np.uint8)
        n = rows.shape[0]
        if self.pool is None:
            return np.full(n, float(self.age)), np.full(n, self.sex, dtype="<U1")
        ages, sexes = np.zeros(n), np.full(n, "", dtype="<U1")
        # One pool draw per distinct row, in order of first appearance (a driver batch holds a single row).
        uniq, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        for u in np.argsort(first):
            where = np.flatnonzero(inverse.reshape(-1) == u)
            a, s = self.pool.draw(uniq[u], where.size, self.rng, age=self.age, sex=self.sex)
            ages[where], sexes[where] = a, s
            if self.pool.last_scope != "exact":
                self.widened[tuple(uniq[u].tolist())] = self.pool.last_scope
        return ages, sexes

    def vectors(self, ages: np.ndarray, sexes: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, 4) float32 condition vectors of targets (age z-score with the training statistics)."""
        return torch.from_numpy(condition_matrix(ages, sexes, self.stats)).to(device)

    def report_widened(self, class_cols: Sequence[int]) -> None:
        """Print the label combinations whose demographics came from a wider scope than the exact combination."""
        for row, scope in self.widened.items():
            names = "+".join(CLASS_ABBREVS[c] for c, v in zip(class_cols, row) if v) or "none"
            print(f"note: no training record with a known age and sex carries exactly {names}; its demographics "
                  f"were drawn from the {scope} scope")


def demographic_targets(ckpt: dict, class_cols: Sequence[int], uses_demographics: bool, *, checkpoint,
                        seed: int, age: float | None = None, sex: str | None = None,
                        data_dir: str | os.PathLike | None = None,
                        dataset: str | None = None) -> DemographicTargets | None:
    """Targets from ``--age``/``--sex`` (add_demographic_args) and the training split; None for a model without.

    A model trained without demographics refuses ``--age``/``--sex`` (SystemExit naming ``checkpoint``);
    drawing needs ``data_dir`` unless both are given.
    """
    fixed = [f for f, v in (("--age", age), ("--sex", sex)) if v is not None]
    if not uses_demographics:
        if fixed:
            raise SystemExit(f"error: {checkpoint} was trained without demographics (condition "
                             f"{ckpt.get('condition', ckpt.get('config', {}).get('condition', 'classes'))!r}); it "
                             f"cannot honour {', '.join(fixed)}")
        return None
    if "demographics" not in ckpt:
        raise SystemExit(f"error: {checkpoint} is conditioned on demographics but stores no 'demographics' "
                         "statistics (a checkpoint of an older version?)")
    stats = DemographicStats.from_dict(ckpt["demographics"])
    pool = None
    if age is None or sex is None:
        if data_dir is None:
            raise SystemExit("error: drawing demographics needs --data_dir (the training split's ages and sexes); "
                             "or give both --age and --sex")
        pool = DemographicPool.from_prepared(data_dir, dataset or ckpt.get("dataset", "ptb-xl"), class_cols)
    return DemographicTargets(stats, pool, age, sex, seed)


def demographics_meta(targets: DemographicTargets | None, ckpt: dict) -> dict:
    """The meta.json entry of a set's demographics (mode, fixed values, statistics, file)."""
    if targets is None:
        return {"mode": "none", "file": None}
    return {"mode": targets.mode, "age": targets.age, "sex": targets.sex, "stats": ckpt["demographics"],
            "file": CONDITIONS_FILE}


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Add the flags every sampler shares (checkpoint, data, plan, output, batch, seed, device, format)."""
    p.add_argument("--checkpoint", required=True, help="checkpoint written by the generator's trainer")
    p.add_argument("--data_dir", default=None,
                   help="prepared data folder; its training split gives the counts for --task_type")
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="prepared dataset for the counts (default: the one the model was trained on)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out_dir", default=None, help="output folder (generated-sample format or WFDB records)")
    out.add_argument("--out_root", default=None,
                     help="instead of --out_dir: write to OUT_ROOT/<generator>_<task_type>, the generator name as it "
                          "goes into meta.json (the layout the benchmarks' --generated_root reads)")
    p.add_argument("--overwrite", action="store_true", help="replace --out_dir if it exists")
    p.add_argument("--task_type", default="imbalance", choices=("imbalance", "addition", "custom"),
                   help="imbalance: fill every class but SR up to the largest; addition: factor x every label "
                        "combination; custom: --labels and --count")
    p.add_argument("--factor", type=float, default=None,
                   help="multiplier of the counts (default 1 for imbalance, 2 for addition as the authors' script)")
    p.add_argument("--labels", action="append", default=None,
                   help="custom: a label combination such as 'SR,LAD' (repeatable, one per --count)")
    p.add_argument("--count", type=int, action="append", default=None, help="custom: ECGs per --labels")
    p.add_argument("--batch_size", type=int, default=64, help="ECGs per sampling call")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
    p.add_argument("--format", default="npy", choices=("npy", "wfdb"),
                   help="npy: the repository's generated-sample format; wfdb: Challenge-style .hea/.mat records")


@dataclass(frozen=True)
class PlanRequest:
    """What to generate: ``task_type`` imbalance/addition (counts of the training split of ``data_dir``) or custom."""

    task_type: str = "imbalance"
    factor: float | None = None  #: multiplier of the counts (None: generation_plan's default per task type)
    labels: Sequence[str] | None = None  #: custom: one label combination per entry of ``count``
    count: Sequence[int] | None = None
    data_dir: str | os.PathLike | None = None
    dataset: str | None = None  #: None: the checkpoint's dataset

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PlanRequest":
        """The request of add_common_args' flags."""
        return cls(args.task_type, args.factor, args.labels, args.count, args.data_dir, args.dataset)


@dataclass(frozen=True)
class Output:
    """Where and how write_generated writes: ``fmt`` npy (generated-sample format) or wfdb, ``batch_size`` per call."""

    out_dir: Path
    fmt: str = "npy"
    overwrite: bool = False
    batch_size: int = 64

    @classmethod
    def from_args(cls, args: argparse.Namespace, generator: str) -> "Output":
        """The output of add_common_args' flags; ``--out_root`` resolves to OUT_ROOT/<generator>_<task_type>."""
        out_dir = (Path(args.out_dir) if args.out_dir is not None
                   else Path(args.out_root) / f"{generator}_{args.task_type}")
        return cls(out_dir, args.format, args.overwrite, args.batch_size)


def build_plan(request: PlanRequest, ckpt: dict, class_cols: Sequence[int]) -> list[PlanItem]:
    """The plan over the 9 paper columns from the task type (training-split counts) or the custom labels/counts."""
    if request.task_type == "custom":
        if not request.labels or not request.count or len(request.labels) != len(request.count):
            raise SystemExit("error: --task_type custom needs matching --labels and --count (one --count per --labels)")
        plan = []
        for spec, n in zip(request.labels, request.count):
            cols = resolve_classes(spec)
            plan.append(PlanItem(tuple(int(c in cols) for c in range(NUM_CLASSES)), int(n)))
    else:
        if request.data_dir is None:
            raise SystemExit(f"error: --task_type {request.task_type} needs --data_dir (the prepared data, for the "
                             "counts)")
        from nvae_ecg.data.datasets import load_prepared, select_indices

        prepared = load_prepared(request.data_dir, request.dataset or ckpt.get("dataset", "ptb-xl"))
        idx = select_indices(prepared, "train", classes=list(class_cols))
        sub = to_model_columns(prepared.labels[idx], class_cols)
        # back from the model's columns to the 9 paper columns
        plan = [PlanItem(tuple(int(v) for v in to_paper_columns(item.labels, class_cols)), item.count)
                for item in generation_plan(sub, request.task_type, request.factor)]
    for item in plan:
        foreign = [CLASS_ABBREVS[c] for c in range(NUM_CLASSES) if item.labels[c] and c not in class_cols]
        if foreign:
            raise SystemExit(f"error: the model was trained on {ckpt['classes']} and cannot generate {foreign}")
    return plan


def bounds_from_checkpoint(ckpt: dict) -> Bounds:
    """The [0, 1] <-> mV normalisation stored in a checkpoint."""
    return Bounds(np.asarray(ckpt["bounds"]["lower"]), np.asarray(ckpt["bounds"]["upper"]))


def _batches(plan: Sequence[PlanItem], temps: Sequence[float], batch_size: int,
             before_item: BeforeItemFn | None = None):
    for item, t in zip(plan, temps):
        # A generator: the hook runs only when this combination's first batch is requested, after the previous
        # combination's batches have all been drawn.
        if before_item is not None and item.count > 0:
            before_item(item, float(t))
        for start in range(0, item.count, batch_size):
            yield np.asarray(item.labels, dtype=np.uint8), min(batch_size, item.count - start), float(t)


@torch.no_grad()
def _draw(sample_fn, row9: np.ndarray, n: int, t: float, class_cols, bounds: Bounds, device: torch.device,
          targets: DemographicTargets | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(B, 12, L) mV ECGs of one batch and, with targets, their requested demographics (CONDITIONS_DTYPE)."""
    rows = np.tile(to_model_columns(row9, class_cols), (n, 1))
    y = torch.as_tensor(rows, dtype=torch.float32, device=device)
    if targets is None:
        x01, conditions = sample_fn(y, t), None
    else:
        ages, sexes = targets.draw(rows)
        x01 = sample_fn(y, t, targets.vectors(ages, sexes, device))
        conditions = make_conditions(ages, sexes)
    return eight_to_twelve(bounds.from_unit(x01.double().cpu().numpy())).astype(np.float32), conditions


def write_generated(sample_fn: SampleFn | DemographicSampleFn, plan: Sequence[PlanItem], class_cols: Sequence[int],
                    bounds: Bounds, output: Output, meta: dict, length: int, device: torch.device,
                    temps: Sequence[float] | None = None, before_item: BeforeItemFn | None = None,
                    targets: DemographicTargets | None = None) -> int:
    """Draw every ECG of the plan and write it (output.fmt npy or wfdb) atomically to output.out_dir.

    With ``targets`` sample_fn also takes the batch's (B, 4) condition vectors, and the requested age/sex of every
    ECG go into the same atomic folder (``conditions.npy``; WFDB: the headers' Age/Sex and ``conditions.npy``).
    """
    n = int(sum(item.count for item in plan))
    if n == 0:
        print("nothing to generate: the plan is empty (no class below the reference count?)")
        return 0
    temps = [1.0] * len(plan) if temps is None else list(temps)
    print(f"generating {n} ECGs with {meta.get('generator')}: {plan_summary(plan, CLASS_ABBREVS)}")
    out = Path(output.out_dir)
    for stale in remove_stale_temporaries(out.parent, name=out.name):
        print(f"removed {stale}, left by a killed generation run")
    if output.fmt == "npy":
        with SampleWriter(out, n, length=length, overwrite=output.overwrite) as writer:
            with tqdm(total=n, desc="generating", unit="ECG") as bar:
                for row, b, t in _batches(plan, temps, output.batch_size, before_item):
                    x12, conditions = _draw(sample_fn, row, b, t, class_cols, bounds, device, targets)
                    writer.write(x12, np.tile(row, (b, 1)), conditions=conditions)
                    bar.update(b)
            writer.close(meta)
        print(f"wrote {n} ECGs to {out}")
        return 0
    from nvae_ecg.data.challenge import write_challenge_record

    if out.exists() and not output.overwrite:
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    k = 0
    parts = []
    try:
        with tqdm(total=n, desc="generating (wfdb)", unit="ECG") as bar:
            for row, b, t in _batches(plan, temps, output.batch_size, before_item):
                codes = [CLASS_CODES[c] for c in range(NUM_CLASSES) if row[c]]
                x12, conditions = _draw(sample_fn, row, b, t, class_cols, bounds, device, targets)
                for i in range(b):
                    k += 1
                    demo = {} if conditions is None else {
                        "age": f"{float(conditions['age'][i]):g}",
                        "sex": {"M": "Male", "F": "Female"}.get(str(conditions["sex"][i]), "Unknown")}
                    write_challenge_record(tmp / f"G{k:06d}", x12[i], 500, dx=codes, **demo)
                if conditions is not None:
                    parts.append(conditions)
                bar.update(b)
        if parts:  # inside the temporary folder, so the set appears with its conditions or not at all
            np.save(tmp / CONDITIONS_FILE, np.concatenate(parts))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {k} WFDB records to {out}")
    return 0

