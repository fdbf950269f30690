"""The run machinery every trainer shares: device, precision, seeds, processes, run folder, RNG and checkpoints.

cNVAE-ECG (``nvae_ecg.train``), the GAN baselines (``pulse2pulse.train``), the XResNet classifier
(``train_test.classifier``) and the samplers (``nvae_ecg.sampler_driver``) take from here, and only from here, what a
run needs around its loop: the device (:func:`resolve_device`, one error for a missing GPU), the autocast context
(:func:`autocast`), seeding (:func:`seed_everything`), parameter counts, the torchrun process group
(:func:`init_distributed`, :func:`rank0_decides`, :func:`any_rank`), the run folder (``args.json``, ``log.txt``
and the command on rank 0, temporaries of killed runs removed, a TensorBoard writer or a silent stand-in), the NaN
stop that keeps the last good checkpoint, and atomic plain-data checkpoints holding every rank's RNG state, read
back with ``torch.load(weights_only=True)`` (a file holding other Python objects is refused: unpickling it could
run arbitrary code; ``python -m nvae_ecg.utils convert --trusted`` converts an old one of ours).

Example::

    python -c "import torch; from nvae_ecg.run import count_parameters, resolve_device; print(resolve_device('auto'), count_parameters(torch.nn.Linear(3, 2)))"
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import subprocess
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from nvae_ecg.io import remove_stale_temporaries

#: ``--amp`` names and the autocast dtype each selects on CUDA (autocast is off on CPU and with "none").
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---- device, precision, seeds, sizes --------------------------------------------------------------------------------
def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """'auto' -> CUDA when visible, else CPU; otherwise a torch device ('cpu', 'cuda', 'cuda:1').

    ``local_rank`` picks the GPU of a torchrun process for a bare 'cuda' or 'auto'. Asking for CUDA without a
    visible GPU stops with one message (SystemExit), whichever entry point asked.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {spec} was requested but no CUDA device is visible; use --device cpu")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (bf16, fp16) on ``device``; None when autocast is off (CPU, 'none')."""
    if amp not in ("none", *AMP_DTYPES):
        raise ValueError(f"unknown --amp {amp!r}; choose one of none, {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES.get(amp) if device.type == "cuda" else None


def autocast(device: torch.device, amp: str):
    """The mixed-precision context of ``--amp`` on ``device`` (a reusable ``nullcontext`` when off)."""
    dtype = amp_dtype(device, amp)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---- processes ------------------------------------------------------------------------------------------------------
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
    """Initialise torch.distributed under torchrun and pick this process's device (its local GPU under CUDA)."""
    info = DistInfo()
    device = resolve_device(device_flag, local_rank=info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def teardown(info: DistInfo) -> None:
    """Leave the process group (a no-op for a single process)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


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


def any_rank(flags: Sequence[torch.Tensor | bool | float], distributed: bool, device: torch.device) -> list[bool]:
    """Whether each flag (a 0-d tensor or a Python value) is set on any process: one all-reduce, one host sync."""
    t = torch.stack([torch.as_tensor(f, device=device).to(torch.float32).reshape(()) for f in flags])
    if distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


class TrainClock:
    """Training seconds summed over resumes, and the ``--max_hours`` budget both trainers stop at (0: none)."""

    def __init__(self, prev_seconds: float = 0.0, max_hours: float = 0.0) -> None:
        self.prev_seconds, self.max_hours, self._start = float(prev_seconds), float(max_hours), time.time()

    def seconds(self) -> float:
        """Seconds trained, this process's run included."""
        return self.prev_seconds + time.time() - self._start

    def over(self) -> bool:
        """Whether the budget is used up (never without one)."""
        return self.max_hours > 0 and self.seconds() >= self.max_hours * 3600

    def over_at_start(self) -> bool:
        """Whether the resumed run had already used its budget."""
        return self.max_hours > 0 and self.prev_seconds >= self.max_hours * 3600


# ---- run folder ------------------------------------------------------------------------------------------------------
def check_run_folder(ckpt_path: Path, resume: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether to go on: a new run needs no ``ckpt_path``, ``--resume`` needs one (else every rank leaves).

    Rank 0 looks and every rank follows its verdict (a collective): ranks could disagree on a file system shared
    lazily between nodes, and a rank exiting alone leaves the others waiting under srun or mpirun.
    """
    code = 0
    if info.is_main and not resume and ckpt_path.exists():
        print(f"error: {ckpt_path} exists; pass --resume to continue that run or choose another --save",
              file=sys.stderr)
        code = 2
    elif info.is_main and resume and not ckpt_path.exists():
        print(f"error: --resume given but {ckpt_path} does not exist", file=sys.stderr)
        code = 2
    if rank0_decides(code, info.distributed, device):
        teardown(info)
        return False
    return True


def setup_run_dir(save_dir: str | os.PathLike, args, is_main: bool, resume: bool) -> logging.Logger:
    """Create the run folder, write args.json, log the command, remove temporaries of killed runs in
    ``checkpoints/``, and return a logger (silent on ranks > 0)."""
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
    for stale in remove_stale_temporaries(save_dir / "checkpoints"):
        logger.info("removed %s, left by a killed run", stale)
    logger.info("command: %s", " ".join(sys.argv))
    return logger


class EmptyWriter:
    """Stand-in for SummaryWriter on ranks > 0 (and wherever nothing is logged): every call does nothing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def open_writer(log_dir: str | os.PathLike | None, enabled: bool = True):
    """A TensorBoard SummaryWriter on ``log_dir``, or an :class:`EmptyWriter` when disabled or without a folder."""
    if not enabled or log_dir is None:
        return EmptyWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


def nan_exit(logger: logging.Logger, writer, step: int, epoch: int, ckpt_path: Path, info: DistInfo) -> int:
    """Log a non-finite loss, close the writer, leave the process group; exit code 3 (the checkpoint is kept)."""
    logger.error("non-finite loss by step %d (epoch %d); stopping. The last good checkpoint is %s", step, epoch + 1,
                 ckpt_path if ckpt_path.exists() else "none (none was saved yet)")
    writer.close()
    teardown(info)
    return 3


# ---- RNG states -------------------------------------------------------------------------------------------------------
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


def resume_rng(saved: dict | list, rank: int, logger: logging.Logger, ckpt_path: Path) -> None:
    """:func:`restore_rank_rng`, warning when this rank has no saved state (the resumed run is then not bit-exact)."""
    if not restore_rank_rng(saved, rank):
        logger.warning("%s holds no RNG state for rank %d (saved with fewer processes): that rank starts "
                       "from its seed, so the run is not bit-exact with an uninterrupted one", ckpt_path, rank)


# ---- data order ----------------------------------------------------------------------------------------------------
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


# ---- checkpoints ------------------------------------------------------------------------------------------------------
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


def save_checkpoint(state: Callable[[], dict], path: Path, info: DistInfo, copy_to: Path | None = None) -> None:
    """Write ``state()`` plus every rank's RNG state and the code version, atomically, on rank 0 (to ``path`` and
    ``copy_to``). A collective: all ranks call it, for the RNG gather."""
    rngs = gather_rng_states(info.distributed)  # every rank's own noise stream, for a bit-exact resume
    if not info.is_main:
        return
    ckpt = to_plain({**state(), "rng": rngs, "code_version": git_version(),
                     "torch_version": str(torch.__version__)})  # plain data: loadable with weights_only=True
    atomic_torch_save(ckpt, path)
    if copy_to is not None:
        atomic_torch_save(ckpt, copy_to)


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
