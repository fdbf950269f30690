"""Train the conditional 1-D NVAE (cNVAE-ECG) on prepared Challenge 2021 data.

Objective, schedule and flags follow NVAE's ``train.py`` (Vahdat & Kautz 2020) as
ported by the paper's authors: NELBO = reconstruction NLL under the 8-lead
discretised logistic mixture + KL summed over latent groups, with KL warm-up, the
BatchNorm scale penalty, Adamax, linear LR warm-up then cosine decay. Differences
from the authors' code (float32/bf16 instead of float64, one class list stored in
the checkpoint, a correct importance-weighted NLL, resumable atomic checkpoints,
torchrun instead of a hand-rolled launcher) are listed in docs/differences.md. Every run
writes ``args.json``, ``log.txt``, TensorBoard events and ``checkpoints/`` into
``--root/--save``; ``--resume`` continues from ``checkpoints/latest.pt`` bit for bit
(every rank's RNG state is saved, and a run cut by ``--max_steps`` in the middle of an
epoch continues from the batch where it stopped). Every ``--quality_every`` steps and at the end, rank 0 logs the
quality of ECGs sampled for a fixed list of labels (:mod:`nvae_ecg.monitor`: share with R peaks, heart rate per
class against the real class, Welch-PSD distance, a 12-lead figure per class) on a forked RNG.

``--condition`` (an extension; the paper's is ``classes``): ``demographics`` or ``both`` condition the model on
each record's [age z-score, age missing, male, female] (:mod:`nvae_ecg.demographics`; the z-score uses the whole
training split, stored in the checkpoint as ``demographics`` next to ``bounds``); the datasets then yield
``(x, y, c)`` and the figures and quality monitor sample at the training-mean age, sexes alternating M/F.

Why one file above 500 lines: the flags (about 120 lines, one per hyper-parameter of the authors' command line,
with their spellings as hidden aliases) and ``main``, the training step and epoch end in the order of NVAE's
``train.py``; the machinery every trainer shares is :mod:`nvae_ecg.run` (run folder, DDP, checkpoints) and
:mod:`nvae_ecg.loop` (the epoch loop, NaN guard, budget), the loss :func:`nvae_ecg.objectives.compute_loss`.

Example::

    python -m nvae_ecg.train --data_dir prepared --root runs --save demo --config small --epochs 5
    python -m nvae_ecg.train --data_dir prepared --root runs --save demo2d --config small2d --epochs 5  # 2-D STFT
    python -m nvae_ecg.train --data_dir prepared --root runs --save demo_both --config demo --condition both
    torchrun --nproc_per_node=4 -m nvae_ecg.train --data_dir prepared --root runs --save paper --config paper --amp bf16
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS, PAPER_CLASSES
from nvae_ecg.config import (ARCH_INSTANCES, CONDITIONS, CONFIGS, OUTPUT_PADDINGS, REPRESENTATIONS, ModelConfig,
                             get_config)
from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.demographics import DemographicStats, condition_matrix, fit_stats_prepared
from nvae_ecg.rhythm import fit_rhythm
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.loop import Accumulate, EpochSummary, LoopLimits, LoopState, run_epochs
from nvae_ecg.model import AutoEncoder
from nvae_ecg.monitor import add_quality_args, run_monitor
from nvae_ecg.objectives import (compute_loss, kl_balancer_coeff, kl_coeff, log_iw, num_active_units,
                                 reconstruction_loss)
from nvae_ecg.stft import fit_normalization
from nvae_ecg.run import (ResumableSampler, TrainClock, autocast, check_run_folder, count_parameters,
                          init_distributed, load_checkpoint, nan_exit, open_writer, resume_rng, save_checkpoint,
                          seed_everything, setup_run_dir, teardown)
from nvae_ecg.utils import keep_freed_cpu_memory

# Model flags take their defaults from the named configuration (--config) unless given.
_MODEL_FLAGS = {f.name: f for f in fields(ModelConfig)}
_MODEL_HELP = {
    "num_input_channels": "leads modelled (the 8 independent leads)",
    "length": "ECG length in samples (10 s at 500 Hz = 5000)",
    "num_classes": "number of conditioning classes (set from --classes; not a flag to edit by hand)",
    "num_channels_enc": "channels after the stem (encoder)",
    "num_channels_dec": "channels of the decoder at the output resolution",
    "num_preprocess_blocks": "pre-process blocks, each halving the length",
    "num_preprocess_cells": "cells per pre-process block",
    "num_postprocess_blocks": "post-process blocks, each doubling the length",
    "num_postprocess_cells": "cells per post-process block",
    "num_latent_scales": "number of latent scales",
    "num_groups_per_scale": "latent groups at the highest-resolution scale",
    "min_groups_per_scale": "lower bound on groups per scale with --ada_groups",
    "ada_groups": "halve the number of groups per scale going down in resolution",
    "num_latent_per_group": "latent channels per group",
    "num_cell_per_cond_enc": "encoder cells per latent group",
    "num_cell_per_cond_dec": "decoder cells per latent group",
    "num_mixture_dec": "logistic mixture components of the decoder",
    "num_x_bits": "bits of the discretised output (bins = 2**bits)",
    "arch_instance": "cell operations",
    "use_se": "squeeze-and-excitation in every cell",
    "res_dist": "parameterise the posterior relative to the prior",
    "representation": "what the NVAE models: the 8-lead signal (1-D, cNVAE-ECG) or its STFT (2-D, 2D-cNVAE-ECG)",
    "stft_n_fft": "STFT size with --representation stft (F = n_fft // 2 + 1 frequency bins)",
    "stft_hop_length": "STFT hop in samples with --representation stft (T = 1 + length // hop frames)",
    "stft_win_length": "Hann window length (<= n_fft) with --representation stft",
    "rhythm": "condition on a beat-phase map (nvae_ecg.rhythm; an extension, on in the demo preset)",
    "output_padding": "padding of the output conv: zeros (NVAE, the authors) or replicate (no edge artefact)",
    "condition": "what the model is conditioned on: the paper's classes, the demographic vector [age z-score, age "
                 "missing, male, female] of records.csv (an extension; z-score by the training split), or both "
                 "(unset: the --config preset's, classes; a resumed run keeps its own)",
}
_MODEL_CHOICES = {"arch_instance": ARCH_INSTANCES, "representation": REPRESENTATIONS, "condition": CONDITIONS,
                  "output_padding": OUTPUT_PADDINGS}


def _str2bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "y"):
        return True
    if v.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (names follow NVAE and the authors' scripts)."""
    p = argparse.ArgumentParser(description="Train cNVAE-ECG (conditional 1-D NVAE).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and run folder")
    g.add_argument("--data_dir", "--data", dest="data_dir", required=True, help="prepared data folder (output of nvae_ecg.data.prepare)")
    g.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="prepared dataset")
    g.add_argument("--classes", "--class_name", dest="classes", default="all",
                   help="conditioning classes: 'all' (the 9 paper classes) or comma-separated abbreviations/SNOMED codes")
    g.add_argument("--labelled_only", action="store_true",
                   help="train and validate only on records carrying at least one of --classes (default: every "
                        "record of the split, the others with an all-zero label, as the authors' ECGDataset)")
    g.add_argument("--root", default="runs", help="parent folder of run folders")
    g.add_argument("--save", "--name", dest="save", default="cnvae", help="run folder name under --root")
    g.add_argument("--resume", "--cont_training", dest="resume", action="store_true",
                   help="continue from ROOT/SAVE/checkpoints/latest.pt")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--seed", type=int, default=1, help="random seed")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")

    g = p.add_argument_group("model (defaults from --config)")
    g.add_argument("--config", default="paper", choices=sorted(CONFIGS), help="named model configuration")
    for name, f in _MODEL_FLAGS.items():
        if name == "num_classes":
            continue
        if f.type in (bool, "bool"):
            g.add_argument(f"--{name}", nargs="?", const=True, default=None, type=_str2bool,
                           help=_MODEL_HELP.get(name, name) + " (flag alone = true; or true/false)")
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type, f.type) if isinstance(f.type, str) else f.type
            g.add_argument(f"--{name}", type=typ, default=None, choices=_MODEL_CHOICES.get(name),
                           help=_MODEL_HELP.get(name, name))

    g = p.add_argument_group("optimisation (NVAE / authors' defaults)")
    # Paper Table V says batch 32; the authors' training_conditional.sh runs 64 per GPU on 2 GPUs.
    g.add_argument("--batch_size", type=int, default=64, help="batch size per process")
    g.add_argument("--epochs", type=int, default=500, help="training epochs")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many steps in total (0: no limit)")
    g.add_argument("--max_hours", "--time_budget_hours", dest="max_hours", type=float, default=0.0,
                   help="stop once this many hours of training (summed over resumes) are used, checked every "
                        "--log_every steps; the same budget flag as pulse2pulse.train, for equal wall-clock "
                        "comparisons (0: no limit)")
    g.add_argument("--learning_rate", type=float, default=1e-3, help="peak learning rate")
    g.add_argument("--learning_rate_min", type=float, default=5e-4,
                   help="final learning rate of the cosine decay (authors' default; NVAE uses 1e-4)")
    g.add_argument("--weight_decay", type=float, default=3e-4, help="Adamax weight decay")
    g.add_argument("--percent_epochs", type=float, default=5,
                   help="percent of the epochs with linear LR warm-up (authors' script: 5)")
    g.add_argument("--warmup_steps", type=int, default=0,
                   help="linear LR warm-up over this many steps instead of --percent_epochs (0: use --percent_epochs); "
                        "a short run warms up over a fixed number of steps whatever its epochs")
    g.add_argument("--optimizer", default="adamax", choices=OPTIMIZERS,
                   help="adamax (NVAE and the authors, eps 1e-3) or adam (eps 1e-8; learns the demo data faster, "
                        "see BENCHMARKS.md)")
    g.add_argument("--weight_decay_norm", type=float, default=1e-2,
                   help="weight of the BN scale penalty (and of the spectral penalty when enabled)")
    g.add_argument("--weight_decay_norm_init", type=float, default=10.0,
                   help="initial weight with --weight_decay_norm_anneal")
    g.add_argument("--weight_decay_norm_anneal", action="store_true",
                   help="anneal the norm weight from --weight_decay_norm_init to --weight_decay_norm (NVAE)")
    g.add_argument("--kl_anneal_portion", type=float, default=0.3, help="portion of training with KL warm-up")
    g.add_argument("--kl_const_portion", type=float, default=1e-4, help="portion with a constant KL coefficient")
    g.add_argument("--kl_const_coeff", type=float, default=1e-4, help="the constant (minimum) KL coefficient")
    g.add_argument("--kl_anneal_steps", type=int, default=0,
                   help="KL warm-up over this many steps instead of --kl_anneal_portion (0: use the portion)")
    g.add_argument("--kl_const_steps", type=int, default=0,
                   help="steps at the constant KL coefficient before the warm-up, instead of --kl_const_portion "
                        "(0: use the portion)")
    g.add_argument("--kl_balance", action="store_true",
                   help="NVAE's KL balancing with 'square' group coefficients (off in the authors' code)")
    g.add_argument("--spectral_regularization", action="store_true",
                   help="add NVAE's spectral regularisation of every weight-normalised conv (never called "
                        "in the authors' code)")
    g.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                   help="mixed precision on CUDA (ignored on CPU)")
    g.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="parameter dtype; float64 reproduces the authors' (slow) setting")
    g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes under torchrun")
    g.add_argument("--grad_clip", type=float, default=0.0, help="clip the gradient norm (0: off, as NVAE)")
    g.add_argument("--grad_accum_steps", type=int, default=1,
                   help="micro-batches of --batch_size per optimiser step (effective batch = product x processes)")
    g.add_argument("--compile", default="none", choices=COMPILE_CHOICES,
                   help="torch.compile each residual cell ('cells'; regional compilation, compiles in minutes) "
                        "or nothing")

    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--log_every", type=int, default=50, help="log training scalars every k steps")
    g.add_argument("--eval_every", type=int, default=1, help="validation NELBO every k epochs")
    g.add_argument("--iw_every", type=int, default=10,
                   help="importance-weighted log-likelihood every k epochs (0: only at the end)")
    g.add_argument("--iw_samples", type=int, default=10, help="importance samples K for the IW estimate")
    g.add_argument("--sample_every", type=int, default=5, help="generated ECG figures every k epochs (0: never)")
    g.add_argument("--save_every", type=int, default=5, help="keep a periodic checkpoint copy every k epochs")
    g.add_argument("--max_val_batches", type=int, default=0, help="limit validation batches (0: all)")
    add_quality_args(p, temperature=True)
    g = p.add_argument_group("accepted for compatibility with the authors' command lines")
    g.add_argument("--num_nf", type=int, default=0, choices=(0,),
                   help="normalising-flow cells per group: only 0 (the paper's setting) is implemented")
    g.add_argument("--num_process_per_node", type=int, default=1,
                   help="GPUs: launch with torchrun --nproc_per_node=N instead (checked, not used)")
    g.add_argument("--master_address", default=None, help="ignored: torchrun sets the rendezvous")
    g.add_argument("--master_port", default=None, help="ignored: torchrun sets the rendezvous")
    g.add_argument("--input_size", type=int, default=None,
                   help="ignored: the ECG length comes from the prepared data (see --length)")
    g.add_argument("--fold_idx", type=int, default=None, help="ignored: splits are fixed by prepare")
    g.add_argument("--sample", action="store_true", help="ignored: figures are controlled by --sample_every")
    g.add_argument("--fast_adamax", action="store_true", help="ignored: torch.optim.Adamax is used")
    args = p.parse_args(argv)
    for flag in ("warmup_steps", "kl_anneal_steps", "kl_const_steps"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.grad_accum_steps < 1:
        p.error(f"--grad_accum_steps must be >= 1, got {args.grad_accum_steps}")
    if args.num_process_per_node > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        p.error(f"--num_process_per_node {args.num_process_per_node}: launch with "
                f"'torchrun --nproc_per_node={args.num_process_per_node} -m nvae_ecg.train ...' instead")
    return args


def build_config(args, num_classes: int, length: int) -> ModelConfig:
    """The named configuration with every explicitly given model flag applied."""
    overrides = {k: getattr(args, k) for k in _MODEL_FLAGS if k != "num_classes" and getattr(args, k, None) is not None}
    overrides.setdefault("length", length)
    overrides["num_classes"] = num_classes
    return get_config(args.config, **overrides)


def lr_at(step: int, epoch: int, *, learning_rate: float, learning_rate_min: float, epochs: int,
          percent_epochs: float, steps_per_epoch: int, warmup_steps: int = 0) -> float:
    """Linear warm-up (per step), then per-epoch cosine decay.

    Mirrors NVAE's train.py: warm-up iterations = steps/epoch * warm-up epochs (floor(epochs * percent_epochs /
    100)); after it, CosineAnnealingLR with T_max = epochs - warmup_epochs - 1 stepped once per epoch. With
    ``warmup_steps`` > 0 the warm-up lasts that many steps and the cosine decay starts at the epoch they end in.
    """
    if warmup_steps > 0:
        warmup_iters = warmup_steps
        warmup_epochs = min(warmup_steps // max(steps_per_epoch, 1), epochs)
    else:
        warmup_epochs = math.floor(epochs * percent_epochs / 100.0)
        warmup_iters = steps_per_epoch * warmup_epochs
    if step < warmup_iters:
        return learning_rate * step / warmup_iters
    t_max = max(epochs - warmup_epochs - 1, 1)
    e = min(max(epoch - warmup_epochs, 0), t_max)
    return learning_rate_min + (learning_rate - learning_rate_min) * (1 + math.cos(math.pi * e / t_max)) / 2


def kl_schedule(total_steps: int, *, anneal_portion: float, const_portion: float, anneal_steps: int = 0,
                const_steps: int = 0) -> tuple[float, float]:
    """(warm-up steps, constant steps) of the KL coefficient: the given step counts, else portions of the run."""
    anneal = anneal_steps if anneal_steps > 0 else anneal_portion * total_steps
    const = const_steps if const_steps > 0 else const_portion * total_steps
    return float(anneal), float(const)


#: Optimisers of ``--optimizer``: NVAE's Adamax (eps 1e-3, the authors' too) or Adam.
OPTIMIZERS = ("adamax", "adam")


def build_optimizer(params, name: str, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """The ``--optimizer`` over params (foreach: one multi-tensor kernel per update op, ~2,000 tensors in `paper`)."""
    if name == "adamax":
        return torch.optim.Adamax(params, learning_rate, weight_decay=weight_decay, eps=1e-3, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, learning_rate, weight_decay=weight_decay, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


#: What ``--compile`` can wrap: nothing, or every residual cell on its own (regional compilation).
COMPILE_CHOICES = ("none", "cells")


def compile_model(model: AutoEncoder, mode: str) -> str:
    """torch.compile every residual cell of the model in place; returns a note on what was compiled."""
    if mode == "none":
        return "compile: none"
    if mode != "cells":
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {COMPILE_CHOICES}")
    from nvae_ecg.neural_operations import Cell

    cells = [m for m in model.modules() if isinstance(m, Cell)]
    shapes = {(m.cell_type, m.ops[0].conv.in_channels, m.ops[0].conv.out_channels) for m in cells}
    # One graph per distinct cell shape; the default recompile limit (8) would silently drop the rest to eager.
    limit = 4 * len(shapes) + 8
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
    torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit,
                                                            4 * limit)
    for m in cells:
        m.compile(dynamic=False)
    return f"compile: {len(cells)} cells, {len(shapes)} distinct"


def apply_gradients(model, opt, scaler, grad_clip: float) -> None:
    """Optimiser step after backward: optional unscale + clip, step, scaler update (scaler may be None)."""
    if grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()


@torch.no_grad()
def evaluate(model, loader, device, dtype, iw_samples: int = 0, max_batches: int = 0, amp: str = "none"):
    """Validation NELBO per ECG and, with iw_samples > 0, the importance-weighted NLL estimate.

    The IW estimate draws K independent posterior samples per ECG and computes
    -(logsumexp_k log w_k - log K) (Burda et al. 2016); the authors' code drew one
    sample and still subtracted log K.
    """
    core = model.module if isinstance(model, DistributedDataParallel) else model
    core.eval()
    tot_nelbo, tot_nll, n = 0.0, 0.0, 0
    for b, batch in enumerate(loader):
        if max_batches and b >= max_batches:
            break
        x, y, c = unpack_batch(batch, device, dtype)
        with autocast(device, amp):
            out = core(x, y, demographics=c)
            d = core.decoder_output(out.logits)
            recon = reconstruction_loss(d, x)
            nelbo = recon + torch.stack(out.kl_all, dim=1).sum(dim=1)
            tot_nelbo += nelbo.double().sum().item()
            if iw_samples > 0:
                lw = [log_iw(d, x, out.log_q, out.log_p)]
                for _ in range(iw_samples - 1):
                    o = core(x, y, demographics=c)
                    lw.append(log_iw(core.decoder_output(o.logits), x, o.log_q, o.log_p))
                ll = torch.logsumexp(torch.stack(lw, dim=1).double(), dim=1) - math.log(iw_samples)
                tot_nll += (-ll).sum().item()
        n += x.shape[0]
    core.train()
    return tot_nelbo / max(n, 1), (tot_nll / max(n, 1) if iw_samples > 0 else float("nan"))


def unpack_batch(batch, device: torch.device, dtype: torch.dtype):
    """(x, y, c) of a loader batch on the device: c the (B, 4) demographics, or None for (x, y) batches."""
    x, y = batch[0].to(device, dtype, non_blocking=True), batch[1].to(device, dtype, non_blocking=True)
    c = batch[2].to(device, dtype, non_blocking=True) if len(batch) > 2 else None
    return x, y, c


def monitor_demographics(n: int, stats: DemographicStats | None, device: torch.device,
                         dtype: torch.dtype) -> torch.Tensor | None:
    """Fixed demographics of the figures and the quality monitor: the training-mean age, sexes alternating M/F."""
    # Fixed rather than drawn, so that every evaluation of a run (and of a resumed run) sees the same targets
    # without touching any RNG; the same choice as cvae_ecg.train.monitor_condition.
    if stats is None:
        return None
    sexes = ["M" if i % 2 == 0 else "F" for i in range(n)]
    return torch.from_numpy(condition_matrix([stats.age_mean] * n, sexes, stats)).to(device, dtype)


def _sample_figures(core, writer, step, device, dtype, bounds, class_idx, seed, stats=None):
    from nvae_ecg.plot import plot_ecg12

    core.eval()
    gen = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with gen, torch.no_grad():
        torch.manual_seed(seed)
        k = core.cfg.num_classes
        y = torch.eye(k, device=device, dtype=dtype)
        x01 = core.sample(y, t=0.8, demographics=monitor_demographics(k, stats, device, dtype))
        x12 = eight_to_twelve(bounds.from_unit(x01.double().cpu()).numpy())
    core.train()
    import matplotlib.pyplot as plt

    for i in range(k):
        name = PAPER_CLASSES[class_idx[i]].abbrev
        fig = plot_ecg12(x12[i], title=f"generated {name} (t=0.8, step {step})", scale=0.6)
        writer.add_figure(f"samples/{name}", fig, step)
        plt.close(fig)


def fit_data_statistics(core: AutoEncoder, train_ds, batch_size: int, num_workers: int, logger,
                        progress: bool) -> None:
    """Fit what a new model takes from the training split and saves with its weights: the 2-D variant's STFT
    normalisation and the beat-phase map's per-class rhythm statistics."""
    if core.spectrogram is not None:
        # Own generator: fitting must not draw from the global RNG stream.
        norm_loader = DataLoader(train_ds, batch_size=batch_size, num_workers=num_workers,
                                 generator=torch.Generator())
        n_fit = fit_normalization(core.spectrogram, norm_loader, total=len(norm_loader))
        logger.info("STFT normalisation (per channel and frequency) fitted on %d training ECGs", n_fit)
    if core.rhythm_model is not None:
        fit_rhythm(core.rhythm_model, train_ds, progress=progress)
        for name, row in core.rhythm_model.summary(train_ds.class_names).items():
            logger.info("rhythm %-6s %4d records  median HR %5.1f bpm  R-R CV %.3f", name, row["records"],
                        row["hr_bpm"], row["rr_cv"])


def validate(core: AutoEncoder, val_loader, epoch_done: int, iw_samples: int, *, seed: int, device: torch.device,
             dtype: torch.dtype, max_batches: int, amp: str, writer, logger) -> None:
    """Validation NELBO (and the IW NLL with ``iw_samples`` > 0) after ``epoch_done`` epochs, logged and written."""
    # Evaluation draws its own seeded randomness so that it never shifts the training RNG stream (a resumed run
    # must see exactly the same latent draws).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 7919 * epoch_done)
        v_nelbo, v_nll = evaluate(core, val_loader, device, dtype, iw_samples, max_batches, amp)
    writer.add_scalar("epoch/val_nelbo", v_nelbo, epoch_done)
    msg = f"epoch {epoch_done}: val nelbo {v_nelbo:.2f}"
    if iw_samples:
        writer.add_scalar("epoch/val_iw_nll", v_nll, epoch_done)
        msg += f", val IW NLL (K={iw_samples}) {v_nll:.2f}"
    logger.info(msg)


def main(args: argparse.Namespace) -> int:
    """Train; returns a process exit code (non-zero on a non-finite loss)."""
    info, device = init_distributed(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    save_dir = Path(args.root) / args.save
    ckpt_path = save_dir / "checkpoints" / "latest.pt"
    if not check_run_folder(ckpt_path, args.resume, info, device):
        return 2
    resume = load_checkpoint(ckpt_path) if args.resume else None
    # What the model is conditioned on decides what the datasets yield: a resumed run keeps its own condition.
    condition = args.condition or CONFIGS[args.config].condition
    stats = None
    if resume is not None:
        condition = ModelConfig.from_dict(resume["config"]).condition
        if args.condition is not None and args.condition != condition:
            raise SystemExit(f"error: {ckpt_path} is conditioned on {condition}, not --condition {args.condition}")
        if "demographics" in resume:
            stats = DemographicStats.from_dict(resume["demographics"])  # the run's own, even if the data moved
    if condition != "classes" and stats is None:
        # The z-score of the age uses the whole training split (whatever classes are selected), for both splits.
        stats = fit_stats_prepared(args.data_dir, args.dataset)
    # Open the data before creating the run folder, so a wrong --data_dir leaves nothing behind.
    train_ds = GeneratorDataset(args.data_dir, args.dataset, split="train", classes=args.classes,
                                require_label=args.labelled_only, demographics=stats)
    val_ds = GeneratorDataset(args.data_dir, args.dataset, split="val", classes=args.classes,
                              require_label=args.labelled_only, demographics=stats)
    if len(train_ds) == 0:
        raise SystemExit(f"error: no training ECGs in {args.data_dir}/{args.dataset} for classes {args.classes}")
    logger = setup_run_dir(save_dir, args, info.is_main, args.resume)
    seed_everything(args.seed + info.rank)
    class_idx = list(train_ds.classes)
    length = int(train_ds[0][0].shape[-1])
    cfg = build_config(args, num_classes=len(class_idx), length=length)

    if resume is not None:
        cfg = ModelConfig.from_dict(resume["config"])
        if list(resume["classes"]) != [CLASS_ABBREVS[i] for i in class_idx]:
            raise SystemExit(f"error: checkpoint classes {resume['classes']} differ from --classes {args.classes}")

    if device.type == "cpu" and keep_freed_cpu_memory():
        logger.info("glibc keeps freed tensors in its heap for reuse (no mmap per allocation): "
                    "fewer page faults per step")
    model = AutoEncoder(cfg).to(device=device, dtype=dtype)
    compile_note = compile_model(model, args.compile)
    if info.distributed and args.sync_bn:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # torch's SyncBatchNorm runs only on GPUs
            logger.warning("--sync_bn ignored on CPU: SyncBatchNorm needs CUDA")
    core = model
    opt = build_optimizer(model.parameters(), args.optimizer, args.learning_rate, args.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=(device.type == "cuda" and args.amp == "fp16"))
    start_epoch, start_batch, step, prev_seconds = 0, 0, 0, 0.0
    if resume is not None:
        core.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        start_epoch, step = int(resume["epoch"]), int(resume["step"])
        start_batch = int(resume.get("batch_in_epoch", 0))  # batches of epoch start_epoch + 1 already trained on
        prev_seconds = float(resume.get("train_seconds", 0.0))
        resume_rng(resume["rng"], info.rank, logger, ckpt_path)
        logger.info("resumed from %s at epoch %d (+%d batches), step %d", ckpt_path, start_epoch, start_batch, step)
    else:
        fit_data_statistics(core, train_ds, args.batch_size, args.num_workers, logger, info.is_main)
    if info.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # Data order depends only on (seed, epoch), so a resumed run sees the same batches, and the sampler can start in
    # the middle of an epoch. A private generator keeps the DataLoader's per-epoch worker-seed draw off the global
    # RNG stream, which a run resumed mid-epoch would otherwise draw from at another point than the straight run.
    sampler = ResumableSampler(len(train_ds), args.batch_size, args.seed, info.rank, info.world_size,
                               drop_last=len(train_ds) // info.world_size > args.batch_size)
    common = dict(num_workers=args.num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=args.num_workers > 0)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=False,
                              generator=torch.Generator().manual_seed(args.seed), **common)
    val_loader = DataLoader(val_ds, batch_size=args.batch_size, shuffle=False, **common) if len(val_ds) else None
    # A step is one optimiser update over grad_accum_steps micro-batches; a trailing partial group is dropped.
    accum = args.grad_accum_steps
    groups = Accumulate(train_loader, sampler, accum)
    steps_per_epoch = groups.batches_per_epoch()
    if steps_per_epoch == 0:
        raise SystemExit(f"error: {len(train_ds)} training ECGs give fewer than --grad_accum_steps {accum} "
                         f"batches of --batch_size {args.batch_size}")
    total_steps = steps_per_epoch * args.epochs
    kl_anneal, kl_const = kl_schedule(total_steps, anneal_portion=args.kl_anneal_portion,
                                      const_portion=args.kl_const_portion, anneal_steps=args.kl_anneal_steps,
                                      const_steps=args.kl_const_steps)
    alpha_i = kl_balancer_coeff(cfg.num_latent_scales, core.groups_per_scale, fun="square").to(device)

    writer = open_writer(save_dir, enabled=info.is_main)
    if info.is_main:
        logger.info("config %s: %s", args.config, cfg.to_dict())
        logger.info("classes: %s", [CLASS_ABBREVS[i] for i in class_idx])
        logger.info("condition: %s%s", cfg.condition, "" if stats is None else
                    f" (age mean {stats.age_mean:.1f} y, std {stats.age_std:.1f} y over {stats.n_records:.0f} "
                    f"training records, {stats.n_age_missing:.0f} without age, {stats.n_sex_unknown:.0f} without sex)")
        logger.info("parameters: %.3fM; groups per scale %s; train %d, val %d ECGs; %d steps/epoch of %d x %d "
                    "ECGs; device %s x%d; dtype %s, amp %s, %s", count_parameters(core) / 1e6,
                    core.groups_per_scale, len(train_ds), len(val_ds), steps_per_epoch, accum, args.batch_size,
                    device, info.world_size, args.dtype, args.amp, compile_note)
    # Quality while training (rank 0 only): fixed labels, seeded noise on a forked RNG (training RNG untouched).
    monitor = run_monitor(train_ds, args.quality_every, args.quality_n, info.is_main, logger,
                          detail=f" at t={args.quality_temperature:g}")
    quality_step = -1  # step of the last quality evaluation
    clock = TrainClock(prev_seconds, args.max_hours)
    # The loop counts optimiser steps; the checkpoint's batch_in_epoch counts micro-batches.
    state = LoopState(start_epoch, start_batch // accum, step)
    latest = {}  # the last step's schedule and outputs, for the log-step scalars and the epoch line

    def quality() -> None:
        nonlocal quality_step
        core.eval()
        monitor(lambda y: core.sample(y.to(device, dtype), t=args.quality_temperature,
                                      demographics=monitor_demographics(y.shape[0], stats, device, dtype)),
                writer, logger, state.step, device=device, title=f"t={args.quality_temperature:g}")
        writer.add_scalar("quality/train_hours", clock.seconds() / 3600, state.step)
        core.train()
        quality_step = state.step

    def save(epoch: int, batch_in_epoch: int, periodic: bool) -> None:
        """Checkpoint after ``epoch`` complete epochs and ``batch_in_epoch`` batches of the next (all ranks call it)."""
        save_checkpoint(lambda: {
            "kind": "cnvae", "model": core.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": {"type": "warmup_cosine", "epochs": args.epochs, "percent_epochs": args.percent_epochs,
                          "learning_rate": args.learning_rate, "learning_rate_min": args.learning_rate_min,
                          "warmup_steps": args.warmup_steps, "optimizer": args.optimizer},
            "scaler": scaler.state_dict(), "step": state.step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "config": cfg.to_dict(), "args": vars(args), "classes": [CLASS_ABBREVS[i] for i in class_idx],
            "bounds": {"lower": train_ds.bounds.lower.tolist(), "upper": train_ds.bounds.upper.tolist()},
            "condition": cfg.condition, **({} if stats is None else {"demographics": stats.to_dict()}),
            "dataset": args.dataset, "train_seconds": clock.seconds()}, ckpt_path, info,
            copy_to=save_dir / "checkpoints" / f"epoch_{epoch:04d}.pt" if periodic else None)

    def train_step(micro_batches) -> torch.Tensor:
        lr = lr_at(state.step, state.epoch, learning_rate=args.learning_rate,
                   learning_rate_min=args.learning_rate_min, epochs=args.epochs, percent_epochs=args.percent_epochs,
                   steps_per_epoch=steps_per_epoch, warmup_steps=args.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        kl_w = kl_coeff(state.step, kl_anneal, kl_const, args.kl_const_coeff)
        if args.weight_decay_norm_anneal:
            wdn = math.exp((1 - kl_w) * math.log(args.weight_decay_norm_init) + kl_w * math.log(args.weight_decay_norm))
        else:
            wdn = args.weight_decay_norm
        opt.zero_grad(set_to_none=True)
        terms = torch.zeros(4, device=device, dtype=torch.float64)
        for micro, batch in enumerate(micro_batches):
            x, y, c = unpack_batch(batch, device, dtype)
            # DDP all-reduces the gradients only on the last micro-batch of the group.
            sync = nullcontext() if (micro == accum - 1 or not info.distributed) else model.no_sync()
            with sync:
                with autocast(device, args.amp):
                    loss, parts, out = compute_loss(model, x, y, kl_w, alpha_i, wdn, kl_balance=args.kl_balance,
                                                     spectral_regularization=args.spectral_regularization,
                                                     demographics=c)
                scaler.scale(loss / accum).backward()
            terms += torch.stack([loss.detach(), parts["recon"].detach(), parts["kl"].detach(),
                                  parts["nelbo"].detach()]).double() / accum
        apply_gradients(model, opt, scaler, args.grad_clip)
        latest.update(lr=lr, kl_w=kl_w, parts=parts, out=out)
        return terms

    def on_step(at: int) -> None:
        if info.is_main and at % args.log_every == 0:
            writer.add_scalar("train/lr", latest["lr"], at)
            writer.add_scalar("train/kl_coeff", latest["kl_w"], at)
            writer.add_scalar("train/bn_loss", latest["parts"]["bn_loss"].item(), at)
            writer.add_scalar("kl/total_active", num_active_units(latest["out"].kl_diag), at)
        if monitor is not None and at % args.quality_every == 0:
            quality()

    def on_epoch(summary: EpochSummary) -> None:
        vals, epoch, epoch_done, step = summary.means, summary.epoch, summary.epoch_done, state.step
        lr, kl_w = latest["lr"], latest["kl_w"]
        active = num_active_units(latest["out"].kl_diag)
        if info.is_main:
            if summary.stop == "time budget":
                logger.info("time budget of %g h used at step %d", args.max_hours, step)
            n_per_point = cfg.num_input_channels * length
            logger.info("epoch %d%s step %d: loss %.2f nelbo %.2f (%.4f nats/point) recon %.2f kl %.2f active %d "
                        "lr %.2e kl_w %.4f (%.1f s, %.1f ECG/s)", epoch + 1, "" if summary.complete else
                        f" (stopped after {summary.batch_in_epoch}/{steps_per_epoch} steps)", step,
                        vals["loss"], vals["nelbo"], vals["nelbo"] / n_per_point, vals["recon"], vals["kl"], active,
                        lr, kl_w, summary.seconds, summary.batches * info.world_size * accum * args.batch_size
                        / max(summary.seconds, 1e-9))
            for k, v in vals.items():
                writer.add_scalar(f"epoch/train_{k}", v, epoch + 1)
            writer.add_scalar("epoch/active_units", active, epoch + 1)
            writer.add_scalar("epoch/lr", lr, epoch + 1)
            last = summary.stop is not None
            if val_loader is not None and ((summary.complete and epoch_done % args.eval_every == 0) or last):
                periodic_iw = bool(args.iw_every) and summary.complete and epoch_done % args.iw_every == 0
                validate(core, val_loader, epoch_done, args.iw_samples if (last or periodic_iw) else 0,
                         seed=args.seed, device=device, dtype=dtype, max_batches=args.max_val_batches,
                         amp=args.amp, writer=writer, logger=logger)
            if args.sample_every and ((summary.complete and epoch_done % args.sample_every == 0) or last):
                _sample_figures(core, writer, step, device, dtype, train_ds.bounds, class_idx, args.seed, stats)
        save(epoch_done, 0 if summary.complete else summary.batch_in_epoch * accum,
             periodic=summary.complete and bool(args.save_every) and epoch_done % args.save_every == 0)
        if info.is_main:
            writer.flush()

    model.train()
    limits = LoopLimits(steps_per_epoch, args.log_every, args.max_steps, args.epochs)
    _, nonfinite = run_epochs(groups, groups, train_step, ("loss", "recon", "kl", "nelbo"), state, limits, clock, info,
                              device, writer, on_step=on_step, on_epoch=on_epoch)
    if nonfinite:
        return nan_exit(logger, writer, state.step, state.epoch, ckpt_path, info)
    if monitor is not None and state.step != quality_step:
        quality()  # the final model
    if info.is_main:
        logger.info("done: %d steps; checkpoint %s", state.step, ckpt_path)
        writer.close()
    teardown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
