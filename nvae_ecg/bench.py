"""Training and sampling throughput of every generator and of the downstream classifier, fast path vs float64.

Builds a named configuration on synthetic input (uniform noise of the real shape, one-hot
labels cycling through the classes), runs ``--warmup`` untimed and ``--steps`` timed training
steps exactly as the trainers do them (the cNVAE-ECG step is ``nvae_ecg.train``'s
``compute_loss`` + ``apply_gradients``; the GAN step is ``pulse2pulse.train``'s critic update
with gradient penalty plus a generator update every ``--n_critic`` steps; the classifier step is
``train_test.classifier``'s BCE step), then ``--split_steps`` more with a device synchronisation
between forward, backward and optimiser (so the split costs nothing in the throughput figure),
then ``--sample_batches`` sampling batches; step times are medians over the timed steps. The
modes run side by side, each in a fresh process so that peak memory is its own: the *fast* path
(float32 on CPU; float32 weights with bf16 autocast on CUDA; optional ``torch.compile``),
*float64* (this code with float64 weights and inputs: the effect of precision alone) and, for
cNVAE-ECG, *original* (float64 and the authors' operator structure: per-layer weight
normalisation, plain BatchNorm + ELU, their mixture likelihood with its host-synchronising range
check, per-parameter Adamax), which is how the original code runs and the reference of the speed
targets. ``--repeats N`` runs the modes N times, interleaved, and reports each mode's median
run and the per-repeat ratios (neighbouring runs share the machine's state, which on a shared VM
drifts by tens of percent over minutes). One table is printed with the fast/float64 and
fast/original ratios; ``--json`` writes the figures with machine details.

Example::

    python -m nvae_ecg.bench --model cnvae --config small --batch_size 8 --steps 5 --json bench_small.json
    python -m nvae_ecg.bench --model cnvae --config small --batch_size 8 --steps 12 --repeats 3 --no-count_ops
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import torch

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from nvae_ecg.io import atomic_write_json
from nvae_ecg.utils import keep_freed_cpu_memory
from nvae_ecg.train import COMPILE_CHOICES

MODELS = ("cnvae", "wavegan_star", "pulse2pulse", "xresnet1d101")
#: fast: float32 (+ bf16 autocast on CUDA); float64: this code in float64; original (cnvae only): float64 with
#: the authors' operator structure too (``use_authors_structure``): how the original code runs.
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


def _labels(b: int, k: int, device, dtype) -> torch.Tensor:
    y = torch.zeros(b, k, device=device, dtype=dtype)
    y[torch.arange(b), torch.arange(b) % k] = 1.0
    return y


def _amp(device: torch.device, fast: bool):
    """bf16 autocast on CUDA for the fast path; nothing on CPU (CPU bf16 autocast is slower there)."""
    if fast and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class AuthorsMixture8:
    """The 8-lead mixture likelihood computed the way the authors' ``DiscMixLogistic`` port computes it (for timing).

    Same distribution as ``nvae_ecg.distributions.DiscMixLogistic8`` (our corrected edge thresholds), but with the
    authors' operator structure: a range check that reads two reductions back to the host, the lead coupling
    unrolled as one multiply-add per coefficient followed by a concatenation, and PixelCNN++'s difference of two
    sigmoids with a mid-point-density fallback selected by ``torch.where`` (NVAE distributions.py
    DiscMixLogistic.log_prob). It exists so that the benchmark's ``original`` mode costs what the original costs;
    ``tests/test_bench.py`` checks that it computes the same log-likelihood.
    """

    def __init__(self, param: torch.Tensor, num_mix: int, num_bits: int = 8) -> None:
        from nvae_ecg.distributions import DiscMixLogistic8

        self._ours = DiscMixLogistic8(param, num_mix, num_bits)  # parameter split, clamp and tanh are the same
        self.max_val = self._ours.max_val

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """Sampling is not what this class reproduces: DiscMixLogistic8's sampler."""
        return self._ours.sample(*args, **kwargs)

    def mean(self) -> torch.Tensor:
        """DiscMixLogistic8's mixture mean."""
        return self._ours.mean()

    def log_prob(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Joint log-likelihood (B, L) of x (B, 8, L) in [0, 1]; always range-checked (the authors' assert)."""
        import torch.nn.functional as F

        from nvae_ecg.distributions import COUPLING_PAIRS, NUM_LEADS

        del validate  # the authors' code asserted the range on every call
        if not (float(x.max()) <= 1.0 and float(x.min()) >= 0.0):
            raise ValueError("log_prob expects ECGs scaled to [0, 1]")
        d = self._ours
        xs = (2.0 * x.to(d.means.dtype) - 1.0).unsqueeze(2).expand(-1, -1, d.num_mix, -1)   # B, 8, M, L
        rows = [d.means[:, i] for i in range(NUM_LEADS)]
        for k, (r, c) in enumerate(COUPLING_PAIRS):
            rows[r] = rows[r] + d.coeffs[:, k] * xs[:, c]
        centered = xs - torch.cat([m.unsqueeze(1) for m in rows], dim=1)
        inv_s = torch.exp(-d.log_scales)
        plus_in = inv_s * (centered + 1.0 / self.max_val)
        min_in = inv_s * (centered - 1.0 / self.max_val)
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        log_cdf_plus = plus_in - F.softplus(plus_in)
        log_one_minus_cdf_min = -F.softplus(min_in)
        mid_in = inv_s * centered
        log_pdf_mid = mid_in - d.log_scales - 2.0 * F.softplus(mid_in)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-10)),
                              log_pdf_mid - math.log(self.max_val / 2))
        half_bin = 1.0 / self.max_val
        log_probs = torch.where(xs < -1.0 + half_bin, log_cdf_plus,
                                torch.where(xs > 1.0 - half_bin, log_one_minus_cdf_min, log_mid))
        log_probs = log_probs.sum(dim=1) + F.log_softmax(d.logit_probs, dim=1)
        return torch.logsumexp(log_probs, dim=1)


def use_authors_structure(model) -> list[str]:
    """Switch a cNVAE-ECG to the authors' operator structure (same model, same numbers up to rounding).

    Every convolution normalises its own weight on every call (``batch_weight_norm`` off), every residual cell
    runs plain ``nn.BatchNorm`` followed by ``F.elu``/``F.silu`` (no fused BatchNorm-activation), and the decoder
    likelihood is :class:`AuthorsMixture8`. The per-parameter Adamax is the caller's (``foreach=False``).
    """
    from nvae_ecg.neural_operations import ELU, BNActConv

    model.batch_weight_norm = False
    for m in model.modules():
        if isinstance(m, BNActConv):
            m.fused = False
            if isinstance(m.act, ELU):
                m.act = torch.nn.ELU()
    cfg = model.cfg
    if cfg.representation == "signal":
        model.decoder_output = lambda logits: AuthorsMixture8(logits, cfg.num_mixture_dec, cfg.num_x_bits)
    return ["original: per-layer weight normalisation, nn.BatchNorm + F.elu, the authors' mixture likelihood "
            "with its range check, per-parameter Adamax"]


def cnvae_workload(args, device: torch.device, dtype: torch.dtype, fast: bool, original: bool = False) -> Workload:
    """cNVAE-ECG training step (loss of nvae_ecg.train with every regulariser the flags switch on) and sampler."""
    from nvae_ecg.config import get_config
    from nvae_ecg.model import AutoEncoder, count_parameters
    from nvae_ecg.objectives import kl_balancer_coeff
    from nvae_ecg.train import apply_gradients, compile_model, compute_loss

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
    y = _labels(b, cfg.num_classes, device, dtype)
    alpha_i = kl_balancer_coeff(cfg.num_latent_scales, model.groups_per_scale, fun="square").to(device)
    # kl_w < 1 keeps the KL-balancing branch live, as during the first 30 % of training.
    loss_args = SimpleNamespace(kl_balance=args.kl_balance, spectral_regularization=args.spectral_regularization)
    amp = _amp(device, fast)

    def forward() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss, _, _ = compute_loss(model, x, y, 0.5, loss_args, alpha_i, 1e-2)
        return loss

    @torch.no_grad()
    def sample() -> torch.Tensor:
        model.eval()
        with amp:
            out = model.sample(y, t=1.0)
        model.train()
        return out

    return Workload(b, count_parameters(model), forward, lambda loss: loss.backward(),
                    lambda: apply_gradients(model, opt, None, 0.0), sample, notes)


def gan_workload(args, device: torch.device, dtype: torch.dtype, fast: bool) -> Workload:
    """WGAN-GP step of pulse2pulse.train (critic + generator every n_critic steps) and the generator's sampler."""
    from pulse2pulse.config import get_config
    from pulse2pulse.models import build_discriminator, build_generator, count_parameters
    from pulse2pulse.wgan import train_step

    cfg = get_config(args.config, model=args.model)
    g = build_generator(cfg).to(device=device, dtype=dtype)
    d = build_discriminator(cfg).to(device=device, dtype=dtype)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.9))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if fast and device.type == "cuda" else None
    b = args.batch_size
    x = torch.rand(b, cfg.num_channels, cfg.length, device=device, dtype=dtype)
    y = _labels(b, cfg.num_classes, device, dtype)
    y_d = y if cfg.cond_discriminator != "none" else None
    count = [0]

    def step() -> torch.Tensor:
        count[0] += 1
        parts, _ = train_step(g, d, opt_g, opt_d, x, y, y_d, 10.0, amp, count[0] % args.n_critic == 0)
        return parts["loss"]

    @torch.no_grad()
    def sample() -> torch.Tensor:
        with amp if amp is not None else nullcontext():
            return g(g.noise(b, device=device).to(dtype), y)

    n = count_parameters(g) + count_parameters(d)
    return Workload(b, n, step, None, None, sample,
                    [f"one step = critic update + generator update every {args.n_critic} steps"])


def xresnet_workload(args, device: torch.device, dtype: torch.dtype, fast: bool) -> Workload:
    """XResNet1d101 BCE training step of train_test.classifier (AdamW) on 12-lead input; no sampler."""
    from train_test.xresnet1d import build_model, count_parameters

    arch = args.config if args.config != "paper" else "xresnet1d101"
    model = build_model(arch, n_in=12, n_out=9).to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    b = args.batch_size
    length = args.length or 5000
    x = torch.randn(b, 12, length, device=device, dtype=dtype)
    y = _labels(b, 9, device, dtype)
    amp = _amp(device, fast)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def forward() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with amp:
            logits = model(x)
        return loss_fn(logits.to(dtype), y)

    return Workload(b, count_parameters(model), forward, lambda loss: loss.backward(), opt.step, None,
                    [f"arch {arch}"])


WORKLOADS: dict[str, Callable] = {"cnvae": cnvae_workload, "wavegan_star": gan_workload,
                                  "pulse2pulse": gan_workload, "xresnet1d101": xresnet_workload}


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


#: The convolution kernel Conv1D picks for some float32 CPU shapes (nvae_ecg.neural_operations.use_gemm_conv).
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


def run_mode(args: argparse.Namespace, mode: str) -> ModeResult:
    """Time one precision mode in this process."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = mode == "fast"
    dtype = torch.float32 if fast else torch.float64
    if device.type == "cpu" and args.model == "cnvae" and mode != "original":
        keep_freed_cpu_memory()  # as nvae_ecg.train does; the authors' code did not
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = fast
        torch.backends.cudnn.allow_tf32 = fast
    w = (cnvae_workload(args, device, dtype, fast, original=True) if mode == "original"
         else WORKLOADS[args.model](args, device, dtype, fast))

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
                      compile=args.compile if fast and args.model == "cnvae" else "none",
                      train_ecg_per_s=w.batch / step_s, step_ms=1000 * step_s,
                      step_ms_mean=1000 * statistics.fmean(times), forward_ms=phases[0],
                      backward_ms=phases[1], optimizer_ms=phases[2], sample_ecg_per_s=sample_rate,
                      peak_mem_gib=mem, peak_mem_kind=kind, params=w.params, ops_per_step=ops,
                      gflop_per_ecg=gflop, notes=w.notes)


def _child(args: argparse.Namespace, mode: str, queue) -> None:
    try:
        queue.put(("ok", asdict(run_mode(args, mode))))
    except BaseException as e:  # report to the parent instead of dying silently
        queue.put(("error", f"{type(e).__name__}: {e}"))


def run_isolated(args: argparse.Namespace, mode: str) -> dict:
    """Run one mode in a fresh (spawned) process, so its peak memory and warm-up are its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(args, mode, queue))
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


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Training/sampling throughput, fast path vs float64 eager.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="cnvae", choices=MODELS, help="what to benchmark")
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
    p.add_argument("--compile", default="none", choices=COMPILE_CHOICES,
                   help="torch.compile in the fast path (cnvae): every residual cell on its own, or none")
    p.add_argument("--kl_balance", action="store_true", help="include NVAE's KL balancing in the loss")
    p.add_argument("--spectral_regularization", action="store_true",
                   help="include NVAE's spectral regulariser (off by default, as in nvae_ecg.train and the authors' code)")
    p.add_argument("--n_critic", type=int, default=5, help="GANs: critic steps per generator step")
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
    p.add_argument("--dataset", default="ptb-xl", choices=("ptb-xl", "georgia", "ningbo"), help="with --data_dir")
    p.add_argument("--num_workers", type=int, default=2, help="DataLoader workers for the data measurement")
    p.add_argument("--data_ecgs", type=int, default=2000, help="ECGs to read for the data measurement")
    p.add_argument("--json", default=None, help="write the figures and machine details to this JSON file")
    args = p.parse_args(argv)
    for name in ("batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.modes is None:
        args.modes = list(MODES) if args.model == "cnvae" else ["fast", "float64"]
    if "original" in args.modes and args.model != "cnvae":
        p.error("--modes original reproduces the authors' cNVAE-ECG code structure; it exists for --model cnvae only")
    return args


def main(args: argparse.Namespace) -> dict:
    """Run the benchmark, print the table, optionally write JSON; returns the figures."""
    from nvae_ecg.generation import resolve_device

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
                runs[mode].append(asdict(run_mode(args, mode)))
                continue
            try:
                runs[mode].append(run_isolated(args, mode))
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


if __name__ == "__main__":
    sys.exit(1 if main(parse_args())["errors"] else 0)
