"""Training and sampling throughput of every generator and of the downstream classifier, fast path vs float64.

The harness builds a named configuration on synthetic input (uniform noise of the real shape, one-hot
labels cycling through the classes), runs ``--warmup`` untimed and ``--steps`` timed training
steps exactly as the trainers do them, then ``--split_steps`` more with a device synchronisation
between forward, backward and optimiser (so the split costs nothing in the throughput figure),
then ``--sample_batches`` sampling batches; step times are medians over the timed steps. The
modes run side by side, each in a fresh process so that peak memory is its own: the *fast* path
(float32 on CPU; float32 weights with bf16 autocast on CUDA; optional ``torch.compile``),
*float64* (this code with float64 weights and inputs: the effect of precision alone) and, for
cNVAE-ECG, *original* (float64 and the authors' operator structure of ``nvae_ecg.reference_ops``:
per-layer weight normalisation, plain BatchNorm + ELU, their mixture likelihood with its
host-synchronising range check, per-parameter Adamax), which is how the original code runs and the
reference of the speed targets. ``--repeats N`` runs the modes N times, interleaved, and reports each
mode's median run and the per-repeat ratios (neighbouring runs share the machine's state, which on a
shared VM drifts by tens of percent over minutes). One table is printed with the fast/float64 and
fast/original ratios; ``--json`` writes the figures with machine details.

What is timed is a :class:`Benchmark`: a name, a workload factory and its modes. This module holds the
harness and the core's own, ``cnvae`` (the trainer's ``compute_loss`` + ``apply_gradients``).
The packages above the core bring theirs (``pulse2pulse.bench``: the WGAN-GP step of ``pulse2pulse.train``;
``train_test.bench``: the XResNet1d101 BCE step of ``train_test.classifier``) and declare them under the
entry-point group ``cnvae_ecg.bench`` (pyproject.toml), through which ``--model`` finds them here without
the core importing the packages above it; ``python -m pulse2pulse.bench`` / ``python -m train_test.bench``
run the same harness on their own workloads without the entry points (a checkout that is not installed).

Why one file above 500 lines: the harness (modes, one child process per mode, operator and FLOP counting,
interleaved repeats, the tables) is one piece that every workload runs through; besides it only the core's own
workload (cnvae, about 60 lines) and the DataLoader measurement live here, the others in their packages.

Example::

    python -m nvae_ecg.bench --model cnvae --config small --batch_size 8 --steps 5 --json bench_small.json
    python -m nvae_ecg.bench --model cnvae --config small --batch_size 8 --steps 12 --repeats 3 --no-count_ops
    python -m nvae_ecg.bench --model wavegan_star --config small --batch_size 8   # = python -m pulse2pulse.bench
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from nvae_ecg.data import DATASETS
from nvae_ecg.io import atomic_write_json
from nvae_ecg.kernels import keep_freed_cpu_memory
from nvae_ecg.run import autocast, resolve_device
from nvae_ecg.train import COMPILE_CHOICES

#: Where installed packages declare their benchmarks (``module:BENCHMARKS``, a sequence of :class:`Benchmark`).
ENTRY_POINT_GROUP = "cnvae_ecg.bench"
#: fast: float32 (+ bf16 autocast on CUDA); float64: this code in float64; original (cnvae only): float64 with
#: the authors' operator structure too (``nvae_ecg.reference_ops``): how the original code runs.
MODES = ("fast", "float64", "original")


@dataclass
class Workload:
    """One model's training step, split into phases where that is meaningful, and its sampler."""

    batch: int
    params: int
    forward: Callable[[], torch.Tensor]            # returns the loss (the whole step when backward is None)
    backward: Optional[Callable[[torch.Tensor], None]] = None
    optimize: Optional[Callable[[], None]] = None
    sample: Optional[Callable[[], torch.Tensor]] = None
    notes: list = field(default_factory=list)
    compile: str = "none"                          # torch.compile mode in effect (reported as is)


@dataclass(frozen=True)
class Benchmark:
    """A model the harness can time: ``build(args, device, dtype, mode)`` returns its :class:`Workload`.

    ``modes`` are the modes it runs (the default of ``--modes``); ``add_arguments(parser)`` adds its own flags
    (added once per distinct function, so that models sharing flags share the function).
    """

    name: str
    build: Callable[[argparse.Namespace, torch.device, torch.dtype, str], Workload]
    modes: tuple[str, ...] = ("fast", "float64")
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None


@dataclass
class ModeResult:
    """Figures of one precision mode."""

    mode: str
    dtype: str
    autocast: str
    compile: str
    train_ecg_per_s: float
    step_ms: float        # median over the timed steps
    step_ms_mean: float
    forward_ms: float
    backward_ms: float
    optimizer_ms: float
    sample_ecg_per_s: float
    peak_mem_gib: float
    peak_mem_kind: str
    params: int
    ops_per_step: int
    gflop_per_ecg: float
    notes: list


def labels(b: int, k: int, device, dtype) -> torch.Tensor:
    """One-hot labels (b, k) cycling through the k classes."""
    y = torch.zeros(b, k, device=device, dtype=dtype)
    y[torch.arange(b), torch.arange(b) % k] = 1.0
    return y


def autocast_for(device: torch.device, fast: bool):
    """The trainers' ``--amp bf16`` for the fast path (:func:`nvae_ecg.run.autocast`: CUDA only, CPU bf16 autocast
    is slower there); nothing otherwise."""
    return autocast(device, "bf16" if fast else "none")


def cnvae_workload(args, device: torch.device, dtype: torch.dtype, mode: str) -> Workload:
    """cNVAE-ECG training step (loss of nvae_ecg.train with every regulariser the flags switch on) and sampler."""
    from nvae_ecg.config import get_config
    from nvae_ecg.model import AutoEncoder, count_parameters
    from nvae_ecg.objectives import kl_balancer_coeff
    from nvae_ecg.reference_ops import use_authors_structure
    from nvae_ecg.objectives import compute_loss
    from nvae_ecg.train import apply_gradients, compile_model

    fast, original = mode == "fast", mode == "original"
    if device.type == "cpu" and not original:
        keep_freed_cpu_memory()  # as nvae_ecg.train does; the authors' code did not
    overrides = {"length": args.length} if args.length else {}
    cfg = get_config(args.config, **overrides)
    model = AutoEncoder(cfg).to(device=device, dtype=dtype)
    notes = []
    if fast and args.compile != "none":
        notes.append(compile_model(model, args.compile))
    if original:
        notes += use_authors_structure(model)
    opt = torch.optim.Adamax(model.parameters(), 1e-3, weight_decay=3e-4, eps=1e-3, foreach=not original)
    b = args.batch_size
    x = torch.rand(b, cfg.num_input_channels, cfg.length, device=device, dtype=dtype)
    y = labels(b, cfg.num_classes, device, dtype)
    alpha_i = kl_balancer_coeff(cfg.num_latent_scales, model.groups_per_scale, fun="square").to(device)
    # kl_w < 1 keeps the KL-balancing branch live, as during the first 30 % of training.
    amp = autocast_for(device, fast)

    def forward() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss, _, _ = compute_loss(model, x, y, 0.5, alpha_i, 1e-2, kl_balance=args.kl_balance,
                                      spectral_regularization=args.spectral_regularization)
        return loss

    @torch.no_grad()
    def sample() -> torch.Tensor:
        model.eval()
        with amp:
            out = model.sample(y, t=1.0)
        model.train()
        return out

    return Workload(b, count_parameters(model), forward, lambda loss: loss.backward(),
                    lambda: apply_gradients(model, opt, None, 0.0), sample, notes,
                    compile=args.compile if fast else "none")


def cnvae_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of the cNVAE-ECG workload."""
    p.add_argument("--compile", default="none", choices=COMPILE_CHOICES,
                   help="torch.compile in the fast path (cnvae): every residual cell on its own, or none")
    p.add_argument("--kl_balance", action="store_true", help="include NVAE's KL balancing in the loss")
    p.add_argument("--spectral_regularization", action="store_true",
                   help="include NVAE's spectral regulariser (off by default, as in nvae_ecg.train and the authors' code)")


#: The core's own benchmarks; the packages above declare theirs under ENTRY_POINT_GROUP.
BENCHMARKS = (Benchmark("cnvae", cnvae_workload, MODES, cnvae_arguments),)


def declared_entry_points() -> list[EntryPoint]:
    """The ENTRY_POINT_GROUP entry points of every distribution on sys.path.

    Read from all of them, not only the first of each name as ``importlib.metadata.entry_points`` does: a stale
    ``cnvae_ecg.egg-info`` in the working directory (an old build) would otherwise hide the installed ones.
    """
    found: dict[tuple[str, str], EntryPoint] = {}
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found.setdefault((ep.name, ep.value), ep)
    return list(found.values())


def discover(benchmarks: Optional[Iterable[Benchmark]] = None) -> tuple[dict[str, Benchmark], dict[str, str]]:
    """The benchmarks by name, and the entry points that failed to load (name -> error).

    ``benchmarks`` given: exactly those (a package's own CLI). Otherwise the core's :data:`BENCHMARKS` followed by
    those the installed packages declare under :data:`ENTRY_POINT_GROUP`, in entry-point name order.
    """
    if benchmarks is not None:
        return {b.name: b for b in benchmarks}, {}
    found = {b.name: b for b in BENCHMARKS}
    failed: dict[str, str] = {}
    for ep in sorted(declared_entry_points(), key=lambda e: e.name):
        try:
            provided = ep.load()
        except Exception as e:  # a package whose optional dependencies are missing: its models are unavailable
            failed[ep.name] = f"{ep.value}: {type(e).__name__}: {e}"
            continue
        for b in provided:
            found.setdefault(b.name, b)
    return found, failed


class OpCounter(TorchDispatchMode):
    """Counts ATen operators that run a kernel (views and metadata ops excluded): ~ kernel launches on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _slow_conv_flops(x_shape, w_shape, _kernel_size, _bias, _stride, _padding, out_shape=None, **_) -> int:
    """FLOPs of ATen's im2col + GEMM convolution (torch's own formula for it misreads its arguments)."""
    return conv_flop_count(x_shape, w_shape, out_shape)


def _slow_conv_backward_flops(grad_out_shape, x_shape, w_shape, _kernel_size, _stride, _padding, output_mask,
                              out_shape=None, **_) -> int:
    """FLOPs of its backward: one forward's worth for the input gradient and one for the weight gradient."""
    return conv_flop_count(x_shape, w_shape, grad_out_shape) * (int(output_mask[0]) + int(output_mask[1]))


#: The convolution kernel Conv1D picks for some float32 CPU shapes (nvae_ecg.kernels.use_gemm_conv).
SLOW_CONV_FLOPS = {torch.ops.aten._slow_conv2d_forward: _slow_conv_flops,
                   torch.ops.aten._slow_conv2d_backward: _slow_conv_backward_flops}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda max allocated"
    # ru_maxrss is KiB on Linux, bytes on macOS; each mode runs in its own process, so the peak is its own.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20), "process peak RSS"


def run_mode(args: argparse.Namespace, mode: str, benchmark: Optional[Benchmark] = None) -> ModeResult:
    """Time one precision mode in this process (``benchmark``: the one of ``args.model`` by default)."""
    if benchmark is None:
        benchmark = discover()[0][args.model]
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = mode == "fast"
    dtype = torch.float32 if fast else torch.float64
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = fast
        torch.backends.cudnn.allow_tf32 = fast
    w = benchmark.build(args, device, dtype, mode)

    def step() -> None:
        loss = w.forward()
        if w.backward is not None:
            w.backward(loss)
            w.optimize()

    for _ in range(args.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Each step is timed on its own and the median reported: on a shared machine one step slowed by another
    # process would otherwise move the mean of a handful of steps by tens of percent.
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)

    phases = [float("nan")] * 3
    if w.backward is not None and args.split_steps > 0:
        split = []
        for _ in range(args.split_steps):
            t = time.perf_counter()
            loss = w.forward()
            _sync(device)
            t1 = time.perf_counter()
            w.backward(loss)
            _sync(device)
            t2 = time.perf_counter()
            w.optimize()
            _sync(device)
            t3 = time.perf_counter()
            split.append((t1 - t, t2 - t1, t3 - t2))
        phases = [1000 * statistics.median(col) for col in zip(*split)]

    ops, gflop = 0, float("nan")
    if args.count_ops:
        # Matmul/convolution FLOPs of forward + backward (torch's FlopCounterMode), per training ECG.
        with FlopCounterMode(display=False, custom_mapping=SLOW_CONV_FLOPS) as flops, OpCounter() as counter:
            step()
        ops, gflop = counter.count, flops.get_total_flops() / w.batch / 1e9

    sample_rate = float("nan")
    if w.sample is not None and args.sample_batches > 0:
        w.sample()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.sample_batches):
            w.sample()
        _sync(device)
        sample_rate = args.sample_batches * w.batch / (time.perf_counter() - t0)
    mem, kind = _peak_memory(device)
    return ModeResult(mode=mode, dtype=str(dtype).replace("torch.", ""),
                      autocast="bf16" if fast and device.type == "cuda" else "none",
                      compile=w.compile,
                      train_ecg_per_s=w.batch / step_s, step_ms=1000 * step_s,
                      step_ms_mean=1000 * statistics.fmean(times), forward_ms=phases[0],
                      backward_ms=phases[1], optimizer_ms=phases[2], sample_ecg_per_s=sample_rate,
                      peak_mem_gib=mem, peak_mem_kind=kind, params=w.params, ops_per_step=ops,
                      gflop_per_ecg=gflop, notes=w.notes)


def _child(args: argparse.Namespace, mode: str, benchmark: Optional[Benchmark], queue) -> None:
    try:
        queue.put(("ok", asdict(run_mode(args, mode, benchmark))))
    except BaseException as e:  # report to the parent instead of dying silently
        queue.put(("error", f"{type(e).__name__}: {e}"))


def run_isolated(args: argparse.Namespace, mode: str, benchmark: Optional[Benchmark] = None) -> dict:
    """Run one mode in a fresh (spawned) process, so its peak memory and warm-up are its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(args, mode, benchmark, queue))
    proc.start()
    while True:
        try:
            status, payload = queue.get(timeout=5)
            break
        except queue_mod.Empty:
            if not proc.is_alive():  # killed (e.g. by the out-of-memory killer) before it could report
                raise RuntimeError(f"benchmark mode {mode!r} died with exit code {proc.exitcode} "
                                   "(out of memory? try a smaller --batch_size)") from None
    proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark mode {mode!r} failed: {payload}")
    return payload


def data_throughput(args: argparse.Namespace, device: torch.device, ds) -> dict:
    """ECGs/s that the trainer's DataLoader (memory-mapped rows, workers, pinned memory) delivers to the device."""
    from torch.utils.data import DataLoader, RandomSampler

    loader = DataLoader(ds, batch_size=args.batch_size, sampler=RandomSampler(ds), drop_last=True,
                        num_workers=args.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.num_workers > 0)
    n, it = 0, iter(loader)
    next(it)  # worker start-up is a one-off cost
    t0 = time.perf_counter()
    for x, _ in it:
        x.to(device, non_blocking=True)
        n += x.shape[0]
        if n >= args.data_ecgs:
            break
    _sync(device)
    dt = time.perf_counter() - t0
    return {"data_dir": str(args.data_dir), "dataset": args.dataset, "num_workers": args.num_workers,
            "ecgs": n, "ecg_per_s": n / max(dt, 1e-9)}


def machine_info(device: torch.device) -> dict:
    """Host, torch and accelerator details recorded next to the figures."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def format_table(results: list[dict], args: argparse.Namespace) -> str:
    """One Markdown table: a row per mode plus the fast/float64 ratio."""
    cols = [("train ECG/s", "train_ecg_per_s", "{:.2f}"), ("step ms", "step_ms", "{:.1f}"),
            ("fwd ms", "forward_ms", "{:.1f}"), ("bwd ms", "backward_ms", "{:.1f}"),
            ("opt ms", "optimizer_ms", "{:.1f}"), ("sample ECG/s", "sample_ecg_per_s", "{:.2f}"),
            ("peak GiB", "peak_mem_gib", "{:.2f}"), ("ops/step", "ops_per_step", "{:d}"),
            ("GFLOP/ECG", "gflop_per_ecg", "{:.1f}")]
    head = ["mode", "dtype", "autocast", "compile"] + [c[0] for c in cols]
    lines = [f"{args.model} / {args.config}, batch {args.batch_size}, device {args.device}, "
             f"{args.steps} timed steps after {args.warmup} warm-up",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["mode"], r["dtype"], r["autocast"], r["compile"]] + [f.format(r[k]) for _, k, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    by_mode = {r["mode"]: r for r in results}
    for ref in ("float64", "original"):
        if "fast" in by_mode and ref in by_mode:
            ratio = by_mode["fast"]["train_ecg_per_s"] / by_mode[ref]["train_ecg_per_s"]
            line = f"fast / {ref}: training {ratio:.2f}x"
            if by_mode["fast"]["sample_ecg_per_s"] > 0:  # NaN (no sampler) compares False
                line += f", sampling {by_mode['fast']['sample_ecg_per_s'] / by_mode[ref]['sample_ecg_per_s']:.2f}x"
            lines.append(line)
    return "\n".join(lines)


def median_run(runs: list[dict]) -> dict:
    """The run with the median step time (the lower middle one for an even count), with every run's step time."""
    ordered = sorted(runs, key=lambda r: r["step_ms"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["step_ms_runs"] = [r["step_ms"] for r in runs]
    return chosen


def format_repeats(runs: dict[str, list[dict]], errors: dict[str, str]) -> str:
    """Step time of every run per mode and, against each reference mode, the spread of the per-repeat ratios."""
    lines = []
    for mode, rs in runs.items():
        if rs and mode not in errors:
            lines.append(f"{mode} step ms per run: " + ", ".join(f"{r['step_ms']:.1f}" for r in rs))
    fast = runs.get("fast", [])
    for ref in ("float64", "original"):
        pairs = list(zip(fast, runs.get(ref, [])))
        if pairs and ref not in errors and "fast" not in errors:
            ratios = [r["step_ms"] / f["step_ms"] for f, r in pairs]
            lines.append(f"fast / {ref} per repeat: " + ", ".join(f"{x:.2f}x" for x in ratios)
                         + f" (min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x)")
    return "\n".join(lines)


def parse_args(argv=None, benchmarks: Optional[Iterable[Benchmark]] = None) -> argparse.Namespace:
    """Command-line flags: the harness's plus those of every benchmark (see :func:`discover` for ``benchmarks``)."""
    found, failed = discover(benchmarks)
    names = list(found)
    p = argparse.ArgumentParser(description="Training/sampling throughput, fast path vs float64 eager.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=names[0], metavar="MODEL",
                   help="what to benchmark: " + ", ".join(names))
    p.add_argument("--config", default="paper",
                   help="named configuration of that model (cnvae: nvae_ecg.config; GANs: pulse2pulse.config; "
                        "xresnet1d101: train_test.archs name, 'paper' = xresnet1d101)")
    p.add_argument("--length", type=int, default=0, help="ECG length in samples (0: the configuration's)")
    p.add_argument("--batch_size", type=int, default=8, help="training and sampling batch size")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--split_steps", type=int, default=2,
                   help="extra steps timed phase by phase (forward/backward/optimizer); 0: skip")
    p.add_argument("--sample_batches", type=int, default=2, help="timed sampling batches (0: skip)")
    p.add_argument("--count_ops", action=argparse.BooleanOptionalAction, default=True,
                   help="count the ATen operators (~ GPU kernel launches) and matmul/conv FLOPs of one extra "
                        "training step")
    p.add_argument("--modes", nargs="+", default=None, choices=MODES,
                   help="modes to run: fast, float64 (this code in float64), original (cnvae only: float64 and "
                        "the authors' operator structure; the reference of the speed targets); default: all "
                        "three for cnvae, fast and float64 for the other models")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every mode this many times, interleaved (fast, float64, original, fast, ...), each in a "
                        "fresh process, and report the run with the median step time: on a shared machine whose "
                        "speed drifts over minutes one run per mode can move a ratio by tens of percent")
    p.add_argument("--no_isolate", action="store_true",
                   help="run the modes in this process (peak RSS then covers both); default: one process each")
    p.add_argument("--data_dir", default=None,
                   help="prepared data folder: also measure the trainer's DataLoader throughput on it")
    p.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="with --data_dir")
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader workers for the data measurement")
    p.add_argument("--data_ecgs", type=int, default=2000, help="ECGs to read for the data measurement")
    p.add_argument("--json", default=None, help="write the figures and machine details to this JSON file")
    added = []
    for b in found.values():
        if b.add_arguments is not None and b.add_arguments not in added:
            b.add_arguments(p)
            added.append(b.add_arguments)
    args = p.parse_args(argv)
    if args.model not in found:
        msg = (f"--model {args.model!r} is not a registered benchmark (registered: {', '.join(names)}); the "
               f"packages above the core register theirs under the entry-point group {ENTRY_POINT_GROUP!r} when "
               "installed (pip install -e .), or run their own module (python -m <package>.bench)")
        if failed:
            msg += "; failed to load: " + "; ".join(f"{k} ({v})" for k, v in failed.items())
        p.error(msg)
    for name in ("batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    modes = found[args.model].modes
    if args.modes is None:
        args.modes = list(modes)
    for mode in args.modes:
        if mode not in modes:
            p.error(f"--modes {mode}: --model {args.model} runs {', '.join(modes)} only"
                    + (" ('original' reproduces the authors' cNVAE-ECG code structure)" if mode == "original" else ""))
    return args


def main(args: argparse.Namespace, benchmarks: Optional[Iterable[Benchmark]] = None) -> dict:
    """Run the benchmark, print the table, optionally write JSON; returns the figures."""

    benchmark = discover(benchmarks)[0][args.model]
    device = resolve_device(args.device)
    args.device = device.type
    data_ds = None
    if args.data_dir:  # opened first, so a wrong --data_dir fails before minutes of timing
        from nvae_ecg.data.datasets import GeneratorDataset

        data_ds = GeneratorDataset(args.data_dir, args.dataset, split="train", classes="all")
    runs: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    errors: dict[str, str] = {}
    for rep in range(args.repeats):
        for mode in args.modes:
            if mode in errors:
                continue
            tag = f" (run {rep + 1}/{args.repeats})" if args.repeats > 1 else ""
            print(f"[bench] {args.model}/{args.config} {mode}{tag} ...", file=sys.stderr, flush=True)
            if args.no_isolate:
                runs[mode].append(asdict(run_mode(args, mode, benchmark)))
                continue
            try:
                runs[mode].append(run_isolated(args, mode, benchmark))
            except RuntimeError as e:  # keep the modes that did finish (a float64 run may not fit in memory)
                errors[mode] = str(e)
                print(f"[bench] {e}", file=sys.stderr, flush=True)
    results = [median_run(runs[mode]) for mode in args.modes if mode not in errors and runs[mode]]
    table = format_table(results, args)
    if args.repeats > 1:
        table += "\n" + format_repeats(runs, errors)
    for mode, msg in errors.items():
        table += f"\n{mode}: FAILED ({msg})"
    data = None
    if data_ds is not None:
        data = data_throughput(args, device, data_ds)
        table += (f"\ndata loading ({data['dataset']}, {data['num_workers']} workers): {data['ecg_per_s']:.0f} ECG/s "
                  f"over {data['ecgs']} ECGs")
    print(table)
    out = {"args": vars(args), "machine": machine_info(device), "results": results, "runs": runs, "errors": errors,
           "data": data, "table": table}
    by_mode = {r["mode"]: r for r in results}
    if "fast" in by_mode and "float64" in by_mode:
        out["train_speedup"] = by_mode["fast"]["train_ecg_per_s"] / by_mode["float64"]["train_ecg_per_s"]
    if "fast" in by_mode and "original" in by_mode:
        out["train_speedup_vs_original"] = by_mode["fast"]["train_ecg_per_s"] / by_mode["original"]["train_ecg_per_s"]
    if args.json:
        atomic_write_json(Path(args.json), out)
    return out


def cli(benchmarks: Optional[Iterable[Benchmark]] = None, argv=None) -> int:
    """The command line: exit status 1 when a mode failed."""
    benchmarks = None if benchmarks is None else tuple(benchmarks)
    return 1 if main(parse_args(argv, benchmarks), benchmarks)["errors"] else 0


if __name__ == "__main__":
    from nvae_ecg.bench import cli as _cli  # the module under its own name, so that spawned modes unpickle it

    sys.exit(_cli())
