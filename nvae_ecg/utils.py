"""Run-folder plumbing shared by the trainers: seeding, logging, atomic checkpoints, distributed setup.

Every training entry point writes one folder per run (``args.json``, ``log.txt``,
TensorBoard events, ``checkpoints/``); only rank 0 logs and saves. Checkpoints are
plain ``torch.save`` dicts written to a temporary file and renamed, so a crash while
saving never corrupts the last good checkpoint.

Example::

    python -c "from nvae_ecg.utils import git_version; print(git_version())"
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


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
    """Snapshot of every RNG a training step touches, for bit-for-bit resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint dict with a clear error if it is missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # corrupt or truncated file
        raise RuntimeError(f"checkpoint {path} cannot be read ({e}); it may be truncated") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a cNVAE-ECG checkpoint (expected a dict with 'model' and 'config')")
    return ckpt


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
