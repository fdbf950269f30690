"""Prepare the PhysioNet/CinC Challenge 2021 training data (PTB-XL, Georgia, Ningbo) for training.

For every dataset folder ``RAW_DIR/{ptb-xl,georgia,ningbo}`` (any nesting below)
each ``.hea``/``.mat`` record is read in mV with :mod:`nvae_ecg.data.challenge`,
resampled to 500 Hz by its own sampling rate (polyphase, exact rational ratio) and
cut to the first 10 s, or padded at the end when shorter (zeros by default,
``--pad_mode edge`` repeats the last sample; records shorter than ``--min_seconds``
are skipped) -- records are never stretched in time, which would change the heart
rate (the original code resized every record to 5000 samples). Labels are the 9
paper classes (:mod:`nvae_ecg.classes`) as multi-hot vectors. The outlier filter of
the paper (Sec. "Data") is applied per dataset on the 8 independent leads: a record
is dropped when any lead goes below the 2.5th percentile of the per-record minima
or above the 97.5th percentile of the per-record maxima; that band is stored as
``bounds.json`` (the generators' min-max normalisation). With ``--no_filter`` the
band is computed the same way but no record is dropped (out-of-band samples are
clipped at normalisation time). Kept records are split 80/10/10 at random with
``--seed``, or for PTB-XL by the official patient-wise ``strat_fold`` column
(folds 1-8 train, 9 val, 10 test) when ``--ptbxl_database`` is given.

Records are streamed in two passes with bounded memory: pass 1 reads and resamples
in a process pool (``--num_workers``, default all cores) and writes float32 rows straight
into a temporary ``.npy`` of shape (n_found, 12, 5000) while returning only the
per-record minima/maxima of the 8 leads; then bounds, filter and splits are
computed and the kept rows are copied in chunks into ``signals.npy``. Each dataset
is written into ``OUT_DIR/.tmp-<dataset>-<pid>`` and moved into place only when
complete, so a crash leaves the previous ``OUT_DIR/<dataset>`` intact. A selected dataset
that this run skips (missing or empty folder, no usable record) has its earlier
``OUT_DIR/<dataset>`` removed, so ``OUT_DIR`` holds exactly the datasets its
``prepare.json`` describes (datasets not in ``--datasets`` are kept and listed from their
own ``prepare.json``); when no dataset is usable nothing is changed. Unusable
records are skipped with a reason (listed in ``records.csv`` and in the summary);
``--strict`` turns any skip into an error. Output layout: see the repository docs
(signals.npy, labels.npy, records.csv, bounds.json, prepare.json per dataset).

Why one file above 500 lines: the preparation is one pipeline (discover, read in worker processes, bounds,
filter, split, swap atomically into place) whose stages share :class:`PrepareOptions` and the temporary folder;
the record reader is :mod:`nvae_ecg.data.challenge` and the bounds :mod:`nvae_ecg.data.bounds`.

Example::

    python -m nvae_ecg.data.prepare ../shared/data/challenge2021-sample prepared --num_workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, fields
from multiprocessing import Pool
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS, NUM_CLASSES, codes_to_multihot
from nvae_ecg.data.bounds import Bounds
from nvae_ecg.io import atomic_write_json
from nvae_ecg.data.challenge import REASONS, RecordError, fit_length, read_header, read_record, resample_to
from nvae_ecg.leads import INDEPENDENT_IDX, LEADS8

#: Dataset folder names of the Challenge 2021 training set handled here.
SPLITS = ("train", "val", "test")
RECORD_COLUMNS = ("record", "path", "age", "sex", "dx", "fs", "n_samples", "kept", "reason", "index", "split", "detail")
_COPY_CHUNK = 256  # rows per chunk when copying kept records (about 60 MB of float32)


@dataclass(frozen=True)
class PrepareOptions:
    """Everything a preparation run is told (the flags of :func:`parse_args`, same names, same order; prepare.json
    records them as ``flags``)."""

    raw_dir: Path
    out_dir: Path
    datasets: Sequence[str] = DATASETS
    fs: float = 500.0
    seconds: float = 10.0
    pad_mode: str = "zero"
    min_seconds: float = 5.0
    lower_percentile: float = 2.5
    upper_percentile: float = 97.5
    no_filter: bool = False
    seed: int = 0
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1)
    split_mode: str = "auto"
    ptbxl_database: Path | None = None
    num_workers: int = 1
    strict: bool = False
    max_records: int | None = None
    max_messages: int = 20

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PrepareOptions":
        return cls(**vars(args))

    def flags(self) -> dict:
        """The options as prepare.json stores them (paths as strings)."""
        return {f.name: (str(v) if isinstance(v, Path) else v) for f in fields(self) for v in [getattr(self, f.name)]}


class PrepareError(RuntimeError):
    """A problem that stops the preparation (bad flags, --strict skip, no usable data)."""


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags of the preparation."""
    p = argparse.ArgumentParser(
        prog="python -m nvae_ecg.data.prepare",
        description="Read, resample, filter, label and split the Challenge 2021 PTB-XL/Georgia/Ningbo records.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("raw_dir", type=Path, help="folder holding ptb-xl/, georgia/, ningbo/ of the Challenge 2021 training set")
    p.add_argument("out_dir", type=Path, help="output folder; one sub-folder per dataset is (re)written")
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="datasets to prepare")
    p.add_argument("--fs", type=float, default=500.0, help="target sampling rate in Hz")
    p.add_argument("--seconds", type=float, default=10.0, help="target duration in seconds (first seconds kept)")
    p.add_argument("--pad_mode", choices=("zero", "edge"), default="zero",
                   help="how records shorter than --seconds are padded at the end: zeros or the last sample repeated")
    p.add_argument("--min_seconds", type=float, default=5.0,
                   help="records shorter than this are skipped instead of padded (0 keeps every non-empty record)")
    p.add_argument("--lower_percentile", type=float, default=2.5,
                   help="percentile of the per-record minima giving the lower bound of each lead")
    p.add_argument("--upper_percentile", type=float, default=97.5,
                   help="percentile of the per-record maxima giving the upper bound of each lead")
    p.add_argument("--no_filter", action="store_true",
                   help="keep records outside the percentile band (bounds are still computed and stored)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random train/val/test split")
    p.add_argument("--split_fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"),
                   help="fractions of the random split; must sum to 1")
    p.add_argument("--split_mode", choices=("auto", "random", "strat_fold"), default="auto",
                   help="ptb-xl split: strat_fold uses the official folds of --ptbxl_database (1-8 train, 9 val, 10 test); "
                        "auto = strat_fold when --ptbxl_database is given, else random; georgia/ningbo are always random")
    p.add_argument("--ptbxl_database", type=Path, default=None,
                   help="official PTB-XL ptbxl_database.csv (columns ecg_id, strat_fold) for the patient-wise split")
    p.add_argument("--num_workers", "--workers", dest="num_workers", type=int, default=os.cpu_count() or 1,
                   help="reader processes (1 = in this process)")
    p.add_argument("--strict", action="store_true", help="stop with an error at the first skipped record or dataset")
    p.add_argument("--max_records", type=int, default=None,
                   help="read only the first N records (sorted by name) of each dataset, for quick trials")
    p.add_argument("--max_messages", type=int, default=20, help="skipped-record messages printed per dataset")
    args = p.parse_args(argv)
    fr = args.split_fractions
    if any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        p.error(f"--split_fractions must be non-negative and sum to 1, got {fr}")
    if args.split_mode == "strat_fold" and args.ptbxl_database is None:
        p.error("--split_mode strat_fold needs --ptbxl_database PATH (the official ptbxl_database.csv)")
    if not 0 <= args.lower_percentile < args.upper_percentile <= 100:
        p.error("need 0 <= --lower_percentile < --upper_percentile <= 100")
    if args.num_workers < 1:
        p.error("--num_workers must be at least 1")
    if args.fs <= 0 or args.seconds <= 0 or args.min_seconds < 0:
        p.error("--fs and --seconds must be positive and --min_seconds non-negative")
    if args.min_seconds > args.seconds:
        p.error("--min_seconds cannot exceed --seconds")
    return args


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def discover_records(dataset_dir: Path) -> tuple[list[Path], list[Path]]:
    """Headers under a dataset folder (any depth, sorted by record name then path) and ``.mat`` files without header."""
    heas = sorted(dataset_dir.rglob("*.hea"), key=lambda p: (_natural_key(p.stem), _natural_key(str(p))))
    with_header = {p.with_suffix("") for p in heas}
    orphans = sorted((m for m in dataset_dir.rglob("*.mat") if m.with_suffix("") not in with_header),
                     key=lambda p: _natural_key(str(p)))
    return heas, orphans


# ---------------------------------------------------------------- pass 1 (worker side)
_CFG: dict | None = None
_PASS1_FD: tuple[str, int] | None = None  # (pass-1 file, open descriptor) of this process


def _init_worker(cfg: dict | None) -> None:
    """Give a reader process its settings; the pass-1 file is opened lazily on first use."""
    global _CFG, _PASS1_FD
    if _PASS1_FD is not None:
        os.close(_PASS1_FD[1])
    _CFG = cfg
    _PASS1_FD = None


def _write_row(i: int, x: np.ndarray) -> None:
    """Write row i of the pass-1 .npy with pwrite: no mapped pages pile up in the worker's resident memory."""
    global _PASS1_FD
    path = _CFG["memmap"]
    if _PASS1_FD is None or _PASS1_FD[0] != path:
        if _PASS1_FD is not None:
            os.close(_PASS1_FD[1])
        _PASS1_FD = (path, os.open(path, os.O_WRONLY))
    data = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    offset = _CFG["offset"] + i * len(data)
    while data:
        written = os.pwrite(_PASS1_FD[1], data, offset)
        data, offset = data[written:], offset + written


def _process(task: tuple[int, str]) -> dict:
    """Read, resample and fit one record, write it to row i of the pass-1 file, return metadata and 8-lead min/max."""
    i, hea = task
    cfg = _CFG
    out = {"i": i, "ok": False, "reason": "", "detail": "", "age": math.nan, "sex": "", "dx": "",
           "fs": math.nan, "n_samples": -1, "min": None, "max": None}
    try:
        rec = read_record(hea)
        h = rec.header
        out.update(age=h.age, sex=h.sex, dx=";".join(h.dx), fs=h.fs, n_samples=rec.signal.shape[-1])
        duration = rec.signal.shape[-1] / h.fs
        if duration < cfg["min_seconds"]:
            raise RecordError("too_short", hea, f"record lasts {duration:.2f} s, less than --min_seconds {cfg['min_seconds']:g}")
        # Crop in the original rate first (plus a margin for the filter) so long records cost no more than 10 s.
        keep = min(rec.signal.shape[-1], int(math.ceil(cfg["seconds"] * h.fs)) + int(math.ceil(0.5 * h.fs)))
        x = resample_to(rec.signal[:, :keep], h.fs, cfg["fs"])
        valid = int(round(rec.signal.shape[-1] * cfg["fs"] / h.fs))
        x = fit_length(x[:, : min(valid, cfg["n"])], cfg["n"], cfg["pad_mode"]).astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise RecordError("non_finite", hea, "resampling produced non-finite samples")
        _write_row(i, x)
        x8 = x[list(INDEPENDENT_IDX)]
        out.update(ok=True, min=x8.min(axis=1), max=x8.max(axis=1))
    except RecordError as exc:
        out.update(reason=exc.reason, detail=str(exc))
        if not out["dx"]:
            try:  # metadata of skipped records still goes to records.csv when the header allows it
                h = read_header(hea)
                out.update(age=h.age, sex=h.sex, dx=";".join(h.dx), fs=h.fs, n_samples=h.n_samples)
            except RecordError:
                pass
    except Exception as exc:  # a bug or an unforeseen file problem: stop, but name the file
        raise RuntimeError(f"{hea}: unexpected {type(exc).__name__} while preparing this record: {exc}") from exc
    return out


# ---------------------------------------------------------------- filter and splits
def compute_bounds(mins: np.ndarray, maxs: np.ndarray, lower_percentile: float, upper_percentile: float) -> Bounds:
    """Per-lead band: lower percentile of per-record minima, upper percentile of per-record maxima (paper, Sec. Data)."""
    lower = np.percentile(mins.astype(np.float64), lower_percentile, axis=0)
    upper = np.percentile(maxs.astype(np.float64), upper_percentile, axis=0)
    return Bounds(lower=lower, upper=upper, lower_percentile=lower_percentile, upper_percentile=upper_percentile)


def outlier_details(mins: np.ndarray, maxs: np.ndarray, bounds: Bounds) -> list[str]:
    """For each record, '' when inside the band on all 8 leads, else the first violation in words."""
    below = mins < bounds.lower[None, :]
    above = maxs > bounds.upper[None, :]
    out = []
    for r in range(mins.shape[0]):
        msg = ""
        for j in range(len(LEADS8)):
            if below[r, j]:
                msg = f"lead {LEADS8[j]} min {mins[r, j]:.3f} mV < lower bound {bounds.lower[j]:.3f} mV"
                break
            if above[r, j]:
                msg = f"lead {LEADS8[j]} max {maxs[r, j]:.3f} mV > upper bound {bounds.upper[j]:.3f} mV"
                break
        out.append(msg)
    return out


def random_split(n: int, fractions, rng: np.random.Generator) -> np.ndarray:
    """Random assignment of n items to train/val/test with counts round(f*n) for val and test."""
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    labels = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test, dtype=object)
    return labels[rng.permutation(n)] if n else labels


def ptbxl_ecg_id(record: str) -> int:
    """PTB-XL ecg_id of a Challenge record name (HR00001 -> 1)."""
    m = re.fullmatch(r"HR(\d+)", record)
    if m is None:
        raise PrepareError(f"record {record!r} is not a PTB-XL Challenge name (HR<digits>); cannot look up its strat_fold")
    return int(m.group(1))


def strat_fold_split(records, database: Path) -> np.ndarray:
    """Official PTB-XL split from ptbxl_database.csv: strat_fold 1-8 train, 9 val, 10 test."""
    if not database.is_file():
        raise PrepareError(f"--ptbxl_database {database} does not exist")
    try:
        db = pd.read_csv(database, usecols=["ecg_id", "strat_fold"])
    except ValueError as exc:
        raise PrepareError(f"{database}: needs columns 'ecg_id' and 'strat_fold' ({exc})") from exc
    if db["ecg_id"].duplicated().any():
        raise PrepareError(f"{database}: duplicated ecg_id values")
    folds = dict(zip(db["ecg_id"].astype(int), db["strat_fold"]))
    out = []
    for rec in records:
        eid = ptbxl_ecg_id(rec)
        if eid not in folds:
            raise PrepareError(f"{database}: no row for ecg_id {eid} (record {rec}); is it the PTB-XL database file?")
        f = folds[eid]
        if not (isinstance(f, (int, np.integer)) or float(f).is_integer()) or not 1 <= int(f) <= 10:
            raise PrepareError(f"{database}: strat_fold {f!r} of ecg_id {eid} is not an integer in 1..10")
        out.append("train" if int(f) <= 8 else ("val" if int(f) == 9 else "test"))
    return np.array(out, dtype=object)


# ---------------------------------------------------------------- helpers
def _versions() -> dict:
    import scipy
    import wfdb

    return {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
            "wfdb": wfdb.__version__, "pandas": pd.__version__}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out_dir: Path) -> list[str]:
    """Remove temporary/deleted folders of dead runs and restore a dataset folder a crash left as ``.old-*``."""
    notes = []
    if not out_dir.is_dir():
        return notes
    for entry in sorted(out_dir.iterdir()):
        m = re.fullmatch(r"\.(tmp|old|del)-(.+)-(\d+)", entry.name)
        if m is None or not entry.is_dir() or _pid_alive(int(m.group(3))):
            continue
        kind, ds = m.group(1), m.group(2)
        if kind == "old" and not (out_dir / ds).exists():
            os.replace(entry, out_dir / ds)
            notes.append(f"restored {out_dir / ds} from {entry.name} left by an interrupted run")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            notes.append(f"removed {entry} left by an interrupted run")
    return notes


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Move a finished dataset folder into place, replacing an old one; on failure the old one is restored."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.parent / f".old-{final.name}-{os.getpid()}"
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_dataset_folder(folder: Path) -> Path | None:
    """Move a dataset folder out of the loaders' sight in one rename; returns where it went (delete it later)."""
    if not folder.exists():
        return None
    # ``.del-`` (not ``.old-``): clean_stale must never restore a folder that was removed on purpose.
    gone = folder.parent / f".del-{folder.name}-{os.getpid()}"
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(folder, gone)
    return gone


def existing_datasets(out_dir: Path, selected: list[str]) -> dict[str, dict]:
    """Summaries of the dataset folders already in OUT_DIR, read from their own prepare.json."""
    out = {}
    for name in DATASETS:
        folder = out_dir / name
        if not folder.exists():
            continue
        try:
            summary = json.loads((folder / "prepare.json").read_text())
            ok = isinstance(summary, dict) and summary.get("status") == "ok" and summary.get("dataset") == name
        except (OSError, ValueError):
            ok = False
        if ok:
            out[name] = summary
        elif name not in selected:
            # Not the output of a completed prepare run, yet the loaders would read it: refuse rather than guess.
            raise PrepareError(f"{folder} has no valid prepare.json (not written by a completed prepare run); "
                               f"remove it or add {name} to --datasets")
        # (a selected one is replaced or removed by this run)
    return out


def _write_overall(out_dir: Path, raw_dir: Path, entries: dict[str, dict], earlier: set[str],
                   opts: PrepareOptions, t0: float) -> dict:
    """Write OUT_DIR/prepare.json describing exactly the dataset entries given (in DATASETS order)."""
    overall = {
        "raw_dir": str(raw_dir),
        "out_dir": str(out_dir),
        "datasets": {name: {k: v for k, v in entries[name].items() if k not in ("flags", "versions", "messages")}
                     for name in DATASETS if name in entries},
        # Datasets kept from an earlier run (not in --datasets); their flags are in OUT_DIR/<dataset>/prepare.json.
        "datasets_from_earlier_runs": [name for name in DATASETS if name in earlier],
        "flags": opts.flags(),
        "versions": _versions(),
        "seconds": round(time.time() - t0, 3),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "prepare.json", overall)
    return overall


def _create_npy(path: Path, shape: tuple[int, ...]) -> int:
    """Create a float32 .npy of the given shape (sparse, unwritten rows) and return the data offset in bytes."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    offset = int(mm.offset)
    del mm
    return offset


def _copy_rows(src: Path, src_offset: int, rows: np.ndarray, dst: Path, row_shape: tuple[int, ...]) -> None:
    """Copy selected rows of a float32 .npy into a new .npy with plain reads/writes (memory: one chunk)."""
    row_bytes = int(np.prod(row_shape)) * 4
    dst_offset = _create_npy(dst, (len(rows), *row_shape))
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fout.seek(dst_offset)
        for a in range(0, len(rows), _COPY_CHUNK):
            chunk = bytearray()
            for i in rows[a:a + _COPY_CHUNK]:
                fin.seek(src_offset + int(i) * row_bytes)
                data = fin.read(row_bytes)
                if len(data) != row_bytes:
                    raise PrepareError(f"{src}: short read of row {i}; the temporary file is damaged")
                chunk += data
            fout.write(chunk)


def _class_counts(labels: np.ndarray) -> dict:
    return {abbr: int(labels[:, k].sum()) for k, abbr in enumerate(CLASS_ABBREVS)}


# ---------------------------------------------------------------- one dataset
def _skip_dataset(name: str, status: str, message: str, opts: PrepareOptions) -> dict:
    if opts.strict:
        raise PrepareError(f"--strict: {message}")
    tqdm.write(f"[{name}] skipped: {message}", file=sys.stderr)
    return {"dataset": name, "status": status, "message": message}


def _run_pass1(name: str, heas: list[Path], memmap_path: Path, offset: int, opts: PrepareOptions, n_target: int):
    """Yield per-record results of pass 1, in record order, from a pool or this process."""
    cfg = {"memmap": str(memmap_path), "offset": int(offset), "fs": float(opts.fs), "seconds": float(opts.seconds),
           "n": n_target, "pad_mode": opts.pad_mode, "min_seconds": float(opts.min_seconds)}
    tasks = [(i, str(h)) for i, h in enumerate(heas)]
    workers = min(opts.num_workers, len(tasks))
    bar = dict(total=len(tasks), desc=f"{name}: reading", unit="rec", mininterval=0.5, dynamic_ncols=True)
    if workers <= 1:
        _init_worker(cfg)
        try:
            for t in tqdm(tasks, **bar):
                yield _process(t)
        finally:
            _init_worker(None)
        return
    chunksize = max(1, min(32, len(tasks) // (workers * 8)))
    with Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield from tqdm(pool.imap(_process, tasks, chunksize=chunksize), **bar)


def prepare_dataset(name: str, opts: PrepareOptions) -> dict:
    """Prepare one dataset folder into OUT_DIR/<name> atomically; returns its summary (also in its prepare.json)."""
    t0 = time.time()
    raw_dir, out_dir = Path(opts.raw_dir), Path(opts.out_dir)
    ds_dir = raw_dir / name
    if not ds_dir.is_dir():
        return _skip_dataset(name, "missing_folder", f"dataset folder {ds_dir} does not exist", opts)
    heas, orphans = discover_records(ds_dir)
    if opts.max_records is not None:
        heas = heas[: opts.max_records]
    if not heas:
        return _skip_dataset(name, "empty_folder", f"dataset folder {ds_dir} holds no .hea header files", opts)

    rows: list[dict] = []
    messages: list[str] = []

    def skip_row(path: Path, record: str, reason: str, detail: str, **meta) -> None:
        if opts.strict:
            raise PrepareError(f"--strict: {detail}")
        row = {"record": record, "path": str(path.relative_to(raw_dir)), "age": math.nan, "sex": "", "dx": "",
               "fs": math.nan, "n_samples": -1, "kept": False, "reason": reason, "index": -1, "split": "", "detail": detail}
        row.update(meta)
        rows.append(row)
        messages.append(detail)

    for m in orphans:
        skip_row(m, m.stem, "missing_header", f"{m}: .mat file has no .hea header next to it")
    seen: dict[str, Path] = {}
    unique = []
    for h in heas:
        if h.stem in seen:
            skip_row(h, h.stem, "duplicate_record", f"{h}: record {h.stem} already found at {seen[h.stem]}")
        else:
            seen[h.stem] = h
            unique.append(h)
    heas = unique

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        n_target = int(round(opts.fs * opts.seconds))
        raw_path = tmp / "_pass1_signals.npy"
        offset = _create_npy(raw_path, (len(heas), 12, n_target))
        n = len(heas)
        ok = np.zeros(n, dtype=bool)
        mins = np.full((n, len(LEADS8)), np.nan, dtype=np.float32)
        maxs = np.full((n, len(LEADS8)), np.nan, dtype=np.float32)
        read_rows = []
        results = _run_pass1(name, heas, raw_path, offset, opts, n_target)
        try:
            for res in results:
                i = res["i"]
                h = heas[i]
                row = {"record": h.stem, "path": str(h.relative_to(raw_dir)), "age": res["age"], "sex": res["sex"],
                       "dx": res["dx"], "fs": res["fs"], "n_samples": res["n_samples"], "kept": False,
                       "reason": res["reason"], "index": -1, "split": "", "detail": res["detail"]}
                if res["ok"]:
                    ok[i] = True
                    mins[i], maxs[i] = res["min"], res["max"]
                else:
                    if opts.strict:
                        raise PrepareError(f"--strict: {res['detail']}")
                    messages.append(res["detail"])
                read_rows.append(row)
        finally:
            results.close()  # stops the pool at once on --strict errors and interrupts

        n_read = int(ok.sum())
        if n_read == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            summary = _skip_dataset(name, "no_usable_records",
                                    f"no record of {ds_dir} could be used ({len(rows) + n} found, all skipped)", opts)
            summary["skipped_by_reason"] = dict(Counter(r["reason"] for r in rows + read_rows))
            summary["n_found"] = summary["n_skipped"] = len(rows) + n
            summary["messages"] = messages[: opts.max_messages]
            return summary
        read_idx = np.flatnonzero(ok)
        try:
            bounds = compute_bounds(mins[read_idx], maxs[read_idx], opts.lower_percentile, opts.upper_percentile)
        except ValueError as exc:
            raise PrepareError(f"{ds_dir}: cannot compute the normalisation bounds from {n_read} records ({exc})") from exc
        details = outlier_details(mins[read_idx], maxs[read_idx], bounds)
        keep = np.zeros(n, dtype=bool)
        for j, i in enumerate(read_idx):
            if details[j] and not opts.no_filter:
                read_rows[i]["reason"] = "outlier"
                read_rows[i]["detail"] = f"{heas[i]}: {details[j]}"
            else:
                keep[i] = True
        kept_idx = np.flatnonzero(keep)
        kept_records = [heas[i].stem for i in kept_idx]

        use_strat = name == "ptb-xl" and opts.ptbxl_database is not None and opts.split_mode in ("auto", "strat_fold")
        if use_strat:
            splits = strat_fold_split(kept_records, Path(opts.ptbxl_database))
            split_mode = "strat_fold"
        else:
            rng = np.random.default_rng([opts.seed, DATASETS.index(name)])
            splits = random_split(len(kept_idx), opts.split_fractions, rng)
            split_mode = "random"
        labels = np.zeros((len(kept_idx), NUM_CLASSES), dtype=np.uint8)
        for k, i in enumerate(kept_idx):
            read_rows[i].update(kept=True, index=k, split=splits[k])
            labels[k] = codes_to_multihot(read_rows[i]["dx"].split(";"))

        t_pass1 = time.time() - t0
        _copy_rows(raw_path, offset, kept_idx, tmp / "signals.npy", (12, n_target))
        raw_path.unlink()
        np.save(tmp / "labels.npy", labels)
        bounds.save(tmp / "bounds.json")

        all_rows = read_rows + rows
        records = pd.DataFrame(all_rows, columns=list(RECORD_COLUMNS))
        order = sorted(range(len(all_rows)), key=lambda r: (_natural_key(all_rows[r]["record"]), all_rows[r]["path"]))
        records = records.iloc[order].reset_index(drop=True)
        records.to_csv(tmp / "records.csv", index=False)

        reasons = Counter(r["reason"] for r in all_rows if r["reason"])
        split_arr = np.asarray(splits, dtype=object)
        summary = {
            "dataset": name,
            "status": "ok",
            "raw_dir": str(ds_dir),
            "n_found": len(all_rows),
            "n_read": n_read,
            "n_skipped": int(sum(v for k, v in reasons.items() if k != "outlier")),
            "n_dropped_outlier": int(reasons.get("outlier", 0)),
            "n_kept": int(len(kept_idx)),
            "skipped_by_reason": {k: int(v) for k, v in sorted(reasons.items())},
            "split_mode": split_mode,
            "splits": {s: int((split_arr == s).sum()) for s in SPLITS},
            "class_counts": {"all": _class_counts(labels),
                             **{s: _class_counts(labels[split_arr == s]) for s in SPLITS}},
            "n_unlabelled": int((labels.sum(axis=1) == 0).sum()),
            "bounds": bounds.to_dict(),
            "shape": [int(len(kept_idx)), 12, n_target],
            "flags": opts.flags(),
            "versions": _versions(),
            "messages": messages[: opts.max_messages],
            "seconds_pass1": round(t_pass1, 3),
            "seconds": round(time.time() - t0, 3),
        }
        atomic_write_json(tmp / "prepare.json", summary)
        _swap_into_place(tmp, out_dir / name)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- report
def format_summary(summaries: list[dict]) -> str:
    """Console table of found/skipped/dropped/kept records and splits per dataset, then skips by reason."""
    head = f"{'dataset':<9} {'status':<18} {'found':>6} {'read':>6} {'skipped':>7} {'outlier':>7} {'kept':>6} {'train':>6} {'val':>5} {'test':>5}"
    lines = [head, "-" * len(head)]
    reason_lines = []
    for s in summaries:
        sp = s.get("splits", {})
        lines.append(
            f"{s['dataset']:<9} {s['status']:<18} {s.get('n_found', 0):>6} {s.get('n_read', 0):>6} "
            f"{s.get('n_skipped', 0):>7} {s.get('n_dropped_outlier', 0):>7} {s.get('n_kept', 0):>6} "
            f"{sp.get('train', 0):>6} {sp.get('val', 0):>5} {sp.get('test', 0):>5}"
        )
        for reason, count in s.get("skipped_by_reason", {}).items():
            reason_lines.append(f"  {s['dataset']:<9} {reason:<20} {count:>6}  ({REASONS.get(reason, '')})")
    if reason_lines:
        lines += ["", "skipped / dropped by reason (details in <dataset>/records.csv):"] + reason_lines
    labelled = [s for s in summaries if s.get("status") == "ok"]
    if labelled:
        lines += ["", "kept records per class: " + " ".join(f"{a:>5}" for a in CLASS_ABBREVS) + "  none"]
        for s in labelled:
            cc = s["class_counts"]["all"]
            lines.append(f"  {s['dataset']:<22}" + " ".join(f"{cc[a]:>5}" for a in CLASS_ABBREVS) + f"  {s['n_unlabelled']:>4}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    """Prepare every selected dataset and write OUT_DIR/prepare.json; exits non-zero when nothing usable was found."""
    t0 = time.time()
    opts = PrepareOptions.from_args(args)
    raw_dir, out_dir = Path(opts.raw_dir), Path(opts.out_dir)
    try:
        if not raw_dir.is_dir():
            raise PrepareError(f"raw folder {raw_dir} does not exist; it must hold {', '.join(DATASETS)}/ "
                               "of the Challenge 2021 training set")
        for note in clean_stale(out_dir):
            print(note, file=sys.stderr)
        # OUT_DIR/prepare.json lists exactly the dataset folders present (the loaders read every folder there):
        # those already there, read from their own prepare.json, updated as each dataset of this run is swapped in
        # and, at the end, as those this run skipped are removed.
        entries = existing_datasets(out_dir, opts.datasets)
        earlier = set(entries) - set(opts.datasets)
        summaries = []
        for name in opts.datasets:
            s = prepare_dataset(name, opts)
            for msg in s.get("messages", []):
                tqdm.write(f"[{name}] skipped: {msg}", file=sys.stderr)
            n_more = s.get("n_skipped", 0) - len(s.get("messages", []))
            if s.get("messages") and n_more > 0:
                tqdm.write(f"[{name}] ... and {n_more} more skipped records (see records.csv)", file=sys.stderr)
            summaries.append(s)
            if s["status"] == "ok":  # its folder was just swapped in
                entries[name] = s
                _write_overall(out_dir, raw_dir, entries, earlier, opts, t0)
        print(format_summary(summaries))
        if not any(s["status"] == "ok" for s in summaries):
            raise PrepareError(f"no dataset of {raw_dir} had usable records ({', '.join(opts.datasets)}); "
                               "nothing written")
        # A dataset skipped in this run must not leave its earlier folder behind for the loaders: move it away
        # first (one rename), then record the skip, then delete it.
        removed = []
        for s in summaries:
            if s["status"] != "ok":
                gone = _remove_dataset_folder(out_dir / s["dataset"])
                if gone is not None:
                    removed.append(gone)
                    print(f"removed {out_dir / s['dataset']} of an earlier run: {s['dataset']} is {s['status']} "
                          "in this run", file=sys.stderr)
                entries[s["dataset"]] = s
        overall = _write_overall(out_dir, raw_dir, entries, earlier, opts, t0)
        for gone in removed:
            shutil.rmtree(gone, ignore_errors=True)
        print(f"wrote {', '.join(str(out_dir / s['dataset']) for s in summaries if s['status'] == 'ok')} "
              f"in {overall['seconds']:.1f} s")
        if earlier:
            print(f"kept {', '.join(str(out_dir / n) for n in sorted(earlier))} of an earlier run (not in --datasets)")
        return overall
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main(parse_args())
