"""Run-folder plumbing shared by the trainers: seeding, logging, atomic checkpoints, distributed setup.

Every training entry point writes one folder per run (``args.json``, ``log.txt``,
TensorBoard events, ``checkpoints/``); only rank 0 logs and saves. Checkpoints are
``torch.save`` dicts of plain data only (tensors, numbers, strings, lists, tuples,
dicts; every rank's RNG state included), written to a temporary file and renamed, so a
crash while saving never corrupts the last good checkpoint. They are read with
``torch.load(weights_only=True)``: a file holding any other Python object is refused,
because unpickling it could run arbitrary code. A checkpoint of an older version of
this repository (numpy RNG state inside) is converted once, after an explicit opt-in.

Example::

    python -c "from nvae_ecg.utils import git_version; print(git_version())"
    python -m nvae_ecg.utils convert --trusted runs/old/checkpoints/latest.pt   # old checkpoint -> plain data
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_MAX.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_cpu_memory() -> bool:
    """Let glibc reuse freed CPU tensors instead of unmapping them (no page faults per step); True if applied.

    By default glibc serves every allocation above a dynamic threshold (at most 32 MiB) with a fresh ``mmap`` and
    unmaps it on free, so each training step page-faults its large activations, weights and gradients in again:
    on a 2-core VM, system time rivalled user time in the ``paper`` configuration. Turning ``mmap`` off for
    allocations (M_MMAP_MAX = 0) and trimming off (M_TRIM_THRESHOLD = -1) keeps every freed buffer in the heap
    for the next step; the step's allocation pattern repeats, so the heap settles at the step's peak after a few
    steps.
    Measured on ``paper`` at length 2560, batch 1, float32 (2-vCPU VM): 3.9-4.7 s per step and 3.5 M minor page
    faults per benchmark run with only the mmap threshold raised to its 32 MiB maximum (the weight-sized tensors
    are larger), 2.8 s and 1.85 M faults (the model's first touch) with this. Same effect as
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1``; a no-op elsewhere than glibc on Linux.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_TRIM_THRESHOLD -1 (SIZE_MAX inside glibc) disables trimming: a positive threshold is at most 2 GiB here, and
    # `paper` frees more than that at the top of the heap within a step, which was returned and faulted in again.
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    return mallopt(_M_TRIM_THRESHOLD, -1) == 1 and ok


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Snapshot of every RNG a training step touches, as plain data (loadable with weights_only=True)."""
    version, mt, gauss_next = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": {"version": int(version), "state": [int(v) for v in mt], "gauss_next": gauss_next},
             "numpy": {"bit_generator": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain_rng(state: dict) -> dict:
    """An RNG snapshot in the plain form of :func:`rng_state`; older ones held numpy arrays and tuples."""
    out = dict(state)
    py = state.get("python")
    if isinstance(py, (tuple, list)) and len(py) == 3:
        out["python"] = {"version": int(py[0]), "state": [int(v) for v in py[1]], "gauss_next": py[2]}
    npst = state.get("numpy")
    if isinstance(npst, (tuple, list)) and len(npst) == 5:
        out["numpy"] = {"bit_generator": str(npst[0]), "key": torch.as_tensor(np.asarray(npst[1], dtype=np.int64)),
                        "pos": int(npst[2]), "has_gauss": int(npst[3]), "cached_gaussian": float(npst[4])}
    return out


def set_rng_state(state: dict) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    state = _plain_rng(state)
    py, npst = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss_next"]))
    key = np.asarray(torch.as_tensor(npst["key"]).numpy(), dtype=np.uint32)
    np.random.set_state((npst["bit_generator"], key, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(distributed: bool) -> list[dict]:
    """Every rank's :func:`rng_state`, in rank order (a collective: call it on all ranks)."""
    mine = rng_state()
    if not distributed:
        return [mine]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)  # pickled in memory between our own processes, never from a file
    return gathered


def restore_rank_rng(saved: dict | list, rank: int) -> bool:
    """Restore this rank's saved RNG state; False (seeded state kept) when the checkpoint has none for it.

    A list holds one state per rank (see :func:`gather_rng_states`); a single dict, from a single-process run or an
    older checkpoint, belongs to rank 0 only: other ranks replaying rank 0's noise would duplicate its samples.
    """
    states = saved if isinstance(saved, list) else [saved]
    if rank >= len(states):
        return False
    set_rng_state(states[rank])
    return True


def rank0_decides(code: int, distributed: bool, device: torch.device) -> int:
    """Rank 0's ``code`` on every rank (a collective), so that all processes stop or go on together.

    Launchers other than torchrun (srun, mpirun) do not tear down the other ranks when one exits early; they would
    wait forever in their first collective.
    """
    if not distributed:
        return code
    t = torch.tensor([code], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


class ResumableSampler(Sampler[int]):
    """Shuffled indices that depend only on (seed, epoch), split over ranks, able to start mid-epoch.

    ``set_epoch(epoch, skip_batches)`` drops the first ``skip_batches`` batches of this
    rank's order, so a run resumed in the middle of an epoch sees exactly the batches
    that the uninterrupted run saw. With one process the order is that of a
    ``RandomSampler`` whose generator is seeded with ``seed * 100003 + epoch``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True):
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self.skip = 0, 0
        self.per_rank = self.n // world_size if world_size > 1 else self.n

    def batches_per_epoch(self) -> int:
        """Batches of one full epoch on this rank."""
        if self.drop_last:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's permutation and how many leading batches to skip."""
        self.epoch, self.skip = int(epoch), int(skip_batches)

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        if self.world_size > 1:
            perm = perm[self.rank:self.per_rank * self.world_size:self.world_size]
        usable = self.batches_per_epoch() * self.batch_size if self.drop_last else len(perm)
        return perm[self.skip * self.batch_size:usable].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def git_version() -> str:
    """Commit hash of the code (with '-dirty' when modified), or 'unknown' outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def convert_command(path: str | os.PathLike) -> str:
    """The one-line command that converts an older checkpoint of this repository into plain data."""
    return f"python -m nvae_ecg.utils convert --trusted {path}"


def load_plain(path: str | os.PathLike, map_location="cpu", mmap: bool = False) -> Any:
    """torch.load with weights_only=True; a file holding other Python objects is refused (SystemExit naming it).

    Unpickling an arbitrary object can run any code (``__reduce__``), so nothing but tensors and plain data is
    read; other errors (missing, truncated, not a torch file) propagate unchanged.
    """
    try:
        return torch.load(path, map_location=map_location, mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise
        m = re.search(r"WeightsUnpickler error: ([^\n]*)", str(e))
        why = m.group(1).strip() if m else "objects other than tensors and plain data"
        raise SystemExit(
            f"error: refusing to load {path}: it holds Python objects that a weights-only load does not accept "
            f"({why}); unpickling them could run arbitrary code. If the file is a checkpoint written by an older "
            f"version of this repository and you trust it, convert it once into plain data with\n"
            f"    {convert_command(path)}") from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint dict of plain data, with a clear error if it is missing, unsafe or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = load_plain(path, map_location=map_location, mmap=mmap)
    except Exception as e:  # corrupt or truncated file
        raise RuntimeError(f"checkpoint {path} cannot be read ({e}); it may be truncated") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a cNVAE-ECG checkpoint (expected a dict with 'model' and 'config')")
    return ckpt


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """A copy of ``obj`` made of tensors and plain data only (numpy arrays -> tensors, numpy scalars and paths ->
    Python values); any other object is an error naming where it sits."""
    if isinstance(obj, np.generic):  # before the built-ins: np.float64 is a float subclass, pickled as numpy
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if obj is None or isinstance(obj, (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return obj
    for plain in (bool, int, float, str, bytes):
        if isinstance(obj, plain):  # subclasses (torch.__version__ is a TorchVersion) pickle as their class
            return obj if type(obj) is plain else plain(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, to_plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if isinstance(obj, dict):
        return {to_plain(k, where): to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where} holds a {type(obj).__module__}.{type(obj).__qualname__}, which is not plain data")


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike | None = None, backup: bool = True) -> Path:
    """Re-save a trusted older checkpoint as plain data (loads it with weights_only=False: trusted files only)."""
    src = Path(src)
    dst = src if dst is None else Path(dst)
    # The only full unpickling in the repository, reached only through `convert --trusted`.
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{src} is not a checkpoint of this repository (expected a dict with 'model' and 'config')")
    if "rng" in ckpt:
        rng = ckpt["rng"]
        ckpt["rng"] = [_plain_rng(r) for r in rng] if isinstance(rng, list) else _plain_rng(rng)
    plain = to_plain(ckpt)
    buf = io.BytesIO()
    torch.save(plain, buf)
    buf.seek(0)
    torch.load(buf, map_location="cpu", weights_only=True)  # the result must pass the safe load
    if backup and dst == src:
        shutil.copy2(src, src.with_name(src.name + ".bak"))
    atomic_torch_save(plain, dst)
    return dst


class DistInfo:
    """Rank/world size from torchrun's environment; single process when absent."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.distributed = self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_flag: str) -> tuple[DistInfo, torch.device]:
    """Initialise torch.distributed under torchrun and pick this process's device."""
    info = DistInfo()
    if device_flag == "auto":
        device_flag = "cuda" if torch.cuda.is_available() else "cpu"
    if device_flag == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is visible")
    if device_flag == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    else:
        device = torch.device("cpu")
    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def setup_run_dir(save_dir: str | os.PathLike, args, is_main: bool, resume: bool) -> logging.Logger:
    """Create the run folder, write args.json, and return a logger (silent on ranks > 0)."""
    save_dir = Path(save_dir)
    logger = logging.getLogger(f"run.{save_dir}")
    logger.handlers.clear()
    logger.propagate = False
    if not is_main:
        logger.addHandler(logging.NullHandler())
        return logger
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "checkpoints").mkdir(exist_ok=True)
    name = "args.json" if not resume else "args_resume.json"
    tmp = save_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(vars(args), indent=2, default=str))
    os.replace(tmp, save_dir / name)
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%m/%d %H:%M:%S")
    for h in (logging.StreamHandler(sys.stdout), logging.FileHandler(save_dir / "log.txt")):
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    return logger


class EmptyWriter:
    """Stand-in for SummaryWriter on ranks > 0."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def main(argv=None) -> int:
    """``python -m nvae_ecg.utils convert --trusted OLD.pt [--out NEW.pt]``: re-save an old checkpoint as plain data."""
    p = argparse.ArgumentParser(prog="python -m nvae_ecg.utils",
                                description="Checkpoint maintenance of cNVAE-ECG and the GAN baselines.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="re-save a checkpoint of an older version of this repository as plain data, "
                                       "so that it loads with weights_only=True")
    c.add_argument("checkpoint", help="the old checkpoint (rewritten in place unless --out; a .bak copy is kept)")
    c.add_argument("--out", default=None, help="write the converted checkpoint here instead")
    c.add_argument("--trusted", action="store_true",
                   help="required: I trust this file (reading it unpickles it fully, which can run any code it holds)")
    c.add_argument("--no_backup", action="store_true", help="do not keep CHECKPOINT.bak when converting in place")
    args = p.parse_args(argv)
    if not args.trusted:
        print(f"error: converting {args.checkpoint} unpickles it fully, which runs any code it carries; pass "
              "--trusted only for a file you or this repository wrote", file=sys.stderr)
        return 2
    try:
        load_plain(args.checkpoint)
        print(f"{args.checkpoint} already loads with weights_only=True; nothing to convert")
        return 0
    except SystemExit:
        pass
    out = convert_checkpoint(args.checkpoint, args.out, backup=not args.no_backup)
    print(f"wrote {out} (plain data; loads with weights_only=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
