"""Train SSSD-ECG (Alcaraz & Strodthoff 2023) on prepared Challenge 2021 data: a DDPM whose S4 denoiser is
conditioned on the multi-hot label.

Training follows the authors' ``src/sssd/train.py`` (AI4HealthUOL/SSSD-ECG): epsilon-prediction MSE with t
uniform over T = 200 steps, Adam (lr 2e-4, no weight decay), no EMA, no gradient clipping, no learning-rate
schedule, batch 6 (what their trainer runs: the DataLoader hard-codes 6; the ``batch_size`` 8 of their config
file is never read) and 100,000 iterations. Our adaptations, each a flag: the 8 independent leads I, III,
V1..V6 (theirs: I, V1..V6, aVF), our 9 classes, 100 Hz by default (``--length 1000``, the data resampled from
500 Hz; ``--length 5000`` trains at the native rate) and amplitudes in [-1, 1] via the prepare bounds
(``--amplitude``). The run folder is that of ``pulse2pulse.train`` (nvae_ecg.run): ``args.json``, ``log.txt``,
TensorBoard events (loss, per-class sample figures), ``checkpoints/latest.pt`` every ``--save_every`` steps and
at every epoch end plus periodic copies, written atomically; ``--resume`` continues bit for bit on CPU, also
from the middle of an epoch; ``--max_hours`` cuts the run at a wall-clock budget summed over resumes (the
paper's equal-time protocol); a non-finite loss stops it (exit 3) without overwriting the last good checkpoint.

Example::

    python -m sssd_ecg.train --data_dir prepared --root runs --save sssd_tiny --config tiny --max_steps 20
    torchrun --nproc_per_node=2 -m sssd_ecg.train --data_dir prepared --save sssd_ecg --amp bf16 --max_hours 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.data import DATASETS
from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.loop import EpochSummary, LoopLimits, LoopState, run_epochs
from nvae_ecg.monitor import add_quality_args, run_monitor
from nvae_ecg.run import (ResumableSampler, TrainClock, amp_dtype, autocast, check_run_folder,
                          count_parameters, init_distributed, load_checkpoint, nan_exit, open_writer, resume_rng,
                          save_checkpoint, seed_everything, setup_run_dir, teardown)
from sssd_ecg.config import AMPLITUDES, CONFIGS, SSSDConfig, get_config
from sssd_ecg.data import SSSDDataset, from_model, resample
from sssd_ecg.diffusion import Diffusion
from sssd_ecg.model import build_model

#: Marks a checkpoint of this package (``sssd_ecg.generate`` refuses others).
CHECKPOINT_KIND = "sssd-ecg"
#: Generator name in checkpoints and meta.json.
GENERATOR = "sssd_ecg"
_MODEL_FLAGS = ("length", "amplitude", "res_channels", "num_res_layers", "s4_d_state", "dt_min", "dt_max")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (run-folder flags as pulse2pulse.train, optimiser as the authors' trainer)."""
    p = argparse.ArgumentParser(description="Train the SSSD-ECG conditional diffusion ECG generator.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and run folder")
    g.add_argument("--data_dir", "--data", dest="data_dir", required=True,
                   help="prepared data folder (output of nvae_ecg.data.prepare)")
    g.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="prepared dataset")
    g.add_argument("--classes", "--class_name", dest="classes", default="all",
                   help="conditioning classes: 'all' (the 9 paper classes) or comma-separated abbreviations/SNOMED codes")
    g.add_argument("--root", default="runs", help="parent folder of run folders")
    g.add_argument("--save", "--name", "--exp_name", dest="save", default=GENERATOR,
                   help="run folder name under --root")
    g.add_argument("--resume", "--cont_training", dest="resume", action="store_true",
                   help="continue from ROOT/SAVE/checkpoints/latest.pt")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--seed", type=int, default=1, help="random seed")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")

    g = p.add_argument_group("model (defaults from --config)")
    g.add_argument("--config", default="paper", choices=sorted(CONFIGS),
                   help="named configuration (paper: the published network, 36 blocks of 256 channels)")
    g.add_argument("--length", type=int, default=None,
                   help="samples per 10 s ECG seen by the network (1000: 100 Hz as the authors; 5000: the native "
                        "500 Hz, untested by the authors; the S4 dt range scales by 1000 / length)")
    g.add_argument("--amplitude", default=None, choices=AMPLITUDES,
                   help="amplitude the network sees: pm1 ([-1, 1] via the prepare bounds), unit ([0, 1]) or mv "
                        "(millivolts, as the authors' unnormalised data)")
    g.add_argument("--res_channels", type=int, default=None, help="residual (and skip) channels C")
    g.add_argument("--num_res_layers", type=int, default=None, help="residual blocks")
    g.add_argument("--s4_d_state", type=int, default=None, help="S4 state size N (even)")
    g.add_argument("--dt_min", type=float, default=None, help="smallest initial S4 time step")
    g.add_argument("--dt_max", type=float, default=None, help="largest initial S4 time step")

    g = p.add_argument_group("optimisation (as the authors' trainer)")
    g.add_argument("--batch_size", "--bs", dest="batch_size", type=int, default=6,
                   help="batch size per process (their trainer runs 6; their config's 8 is never read)")
    g.add_argument("--max_steps", "--n_iters", dest="max_steps", type=int, default=100_000,
                   help="stop after this many optimiser steps in total (0: no limit)")
    g.add_argument("--epochs", "--num_epochs", dest="epochs", type=int, default=0,
                   help="stop after this many epochs (0: no limit; --max_steps decides)")
    g.add_argument("--max_hours", "--time_budget_hours", dest="max_hours", type=float, default=0.0,
                   help="stop after this much training wall-clock time in hours, summed over resumes (0: no limit)")
    g.add_argument("--learning_rate", "--lr", dest="learning_rate", type=float, default=2e-4, help="Adam learning rate")
    g.add_argument("--amp", default="none", choices=("none", "bf16"),
                   help="bf16 autocast on CUDA (ignored on CPU; the S4 FFT convolutions stay in float32)")

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log_every", type=int, default=100,
                   help="read the device-side loss (and check for NaN and the time budget) every k steps")
    g.add_argument("--sample_every", type=int, default=10_000,
                   help="per-class sample figures every k steps (0: never; each costs T network evaluations)")
    g.add_argument("--save_every", type=int, default=4000,
                   help="rewrite latest.pt and keep a copy step_NNNNNNN.pt every k steps (their iters_per_ckpt)")
    add_quality_args(p)
    p.set_defaults(quality_every=10_000)  # a quality check samples 200 steps per ECG
    args = p.parse_args(argv)
    for name in ("batch_size", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    for name in ("max_steps", "epochs", "save_every", "sample_every"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0")
    if not (args.max_steps or args.epochs or args.max_hours):
        p.error("give at least one of --max_steps, --epochs or --max_hours (the run would never end)")
    return args


def build_config(args, num_classes: int) -> SSSDConfig:
    """The named configuration with the model flags given on the command line applied."""
    overrides = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k, None) is not None}
    if "res_channels" in overrides:
        overrides["skip_channels"] = overrides["res_channels"]
    return get_config(args.config, num_classes=num_classes, **overrides)


def sampler_fn(model, diffusion: Diffusion, bounds, generator: torch.Generator | None = None,
               progress: bool = False):
    """y (B, K) -> (B, 8, data_length) in [0, 1]: T reverse steps, then back to 500 Hz and to [0, 1]."""
    cfg = model.cfg

    def sample(y: torch.Tensor) -> torch.Tensor:
        x = diffusion.sample(model, y, cfg.length, generator=generator, progress=progress)
        return from_model(resample(x.float(), cfg.data_length), cfg.amplitude, bounds)

    return sample


def _sample_figures(model, diffusion, writer, step: int, device, bounds, class_names, seed: int) -> None:
    """One generated 12-lead ECG per class (seeded noise on a private generator) as TensorBoard figures."""
    import matplotlib.pyplot as plt

    from nvae_ecg.plot import plot_ecg12

    gen = torch.Generator(device=device).manual_seed(seed)  # own generator: the training RNG stream is untouched
    x01 = sampler_fn(model, diffusion, bounds, gen)(torch.eye(len(class_names), device=device))
    x12 = eight_to_twelve(bounds.from_unit(x01.double().cpu().numpy()))
    for i, name in enumerate(class_names):
        fig = plot_ecg12(x12[i], title=f"generated {name} (SSSD-ECG, step {step})", scale=0.6)
        writer.add_figure(f"samples/{name}", fig, step)
        plt.close(fig)


def main(args: argparse.Namespace) -> int:
    """Train; returns a process exit code (2: run exists, 3: non-finite loss)."""
    info, device = init_distributed(args.device)
    save_dir = Path(args.root) / args.save
    ckpt_path = save_dir / "checkpoints" / "latest.pt"
    if not check_run_folder(ckpt_path, args.resume, info, device):
        return 2
    # Open and check the data before creating the run folder, so a wrong --data_dir leaves nothing behind.
    base_ds = GeneratorDataset(args.data_dir, args.dataset, "train", classes=args.classes)
    class_names = [CLASS_ABBREVS[c] for c in base_ds.classes]
    if len(base_ds) == 0:
        raise SystemExit(f"error: no training ECGs of classes {class_names} in {args.data_dir}/{args.dataset}")
    logger = setup_run_dir(save_dir, args, info.is_main, args.resume)
    seed_everything(args.seed + info.rank)

    resume = None
    if args.resume:
        resume = load_checkpoint(ckpt_path)
        if resume.get("kind") != CHECKPOINT_KIND:
            raise SystemExit(f"error: {ckpt_path} is not an SSSD-ECG checkpoint")
        cfg = SSSDConfig.from_dict(resume["config"])
        if list(resume["classes"]) != class_names:
            raise SystemExit(f"error: checkpoint classes {resume['classes']} differ from --classes {args.classes}")
    else:
        cfg = build_config(args, num_classes=len(class_names))
    if base_ds.n_samples != cfg.data_length:
        raise SystemExit(f"error: the prepared ECGs have {base_ds.n_samples} samples, the model expects "
                         f"{cfg.data_length} (10 s at 500 Hz: prepare with --fs 500 --seconds 10)")
    train_ds = SSSDDataset(base_ds, cfg.length, cfg.amplitude)

    # A resumed model gets its C from the checkpoint: skip S4's initial length correction.
    model = build_model(cfg, init_kernels=resume is None).to(device)
    diffusion = Diffusion.from_config(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    epoch0, batch0, step, prev_seconds = 0, 0, 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        epoch0, batch0 = int(resume["epoch"]), int(resume["batch_in_epoch"])
        step, prev_seconds = int(resume["step"]), float(resume["train_seconds"])
        resume_rng(resume["rng"], info.rank, logger, ckpt_path)
        logger.info("resumed from %s at epoch %d (+%d batches), step %d, %.2f h of training", ckpt_path, epoch0,
                    batch0, step, prev_seconds / 3600)
    call = model
    if info.distributed:
        call = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    drop_last = len(train_ds) // info.world_size > args.batch_size  # as the authors' drop_last=True
    sampler = ResumableSampler(len(train_ds), args.batch_size, args.seed, info.rank, info.world_size, drop_last)
    # A private generator keeps the DataLoader's worker-seed draw off the global RNG stream.
    loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=False,
                        num_workers=args.num_workers, pin_memory=device.type == "cuda", persistent_workers=False,
                        generator=torch.Generator().manual_seed(args.seed))
    steps_per_epoch = sampler.batches_per_epoch()
    if steps_per_epoch == 0:
        raise SystemExit(f"error: {len(train_ds)} training ECGs are fewer than one batch per process")
    amp = autocast(device, args.amp)

    writer = open_writer(save_dir, enabled=info.is_main)
    if info.is_main:
        logger.info("config %s: %s", args.config, cfg.to_dict())
        logger.info("classes: %s", class_names)
        logger.info("parameters: %d (%.3fM); %d ECGs at %g Hz (%d samples, amplitude %s); %d steps/epoch; "
                    "device %s x%d; amp %s", count_parameters(model), count_parameters(model) / 1e6, len(train_ds),
                    cfg.fs, cfg.length, cfg.amplitude, steps_per_epoch, device, info.world_size,
                    args.amp if amp_dtype(device, args.amp) else "none")

    monitor = run_monitor(base_ds, args.quality_every, args.quality_n, info.is_main, logger)
    quality_step = -1
    clock = TrainClock(prev_seconds, args.max_hours)
    train_seconds = clock.seconds

    def quality() -> None:
        nonlocal quality_step
        model.eval()
        # Seeded private generator: the training RNG stream is untouched, so a resume stays bit for bit.
        gen = torch.Generator(device=device).manual_seed(args.seed)
        monitor(lambda y: sampler_fn(model, diffusion, train_ds.bounds, gen)(y.to(device)), writer, logger, step,
                device=device, title="SSSD-ECG")
        model.train()
        writer.add_scalar("quality/train_hours", train_seconds() / 3600, step)
        quality_step = step

    def save(epoch_done: int, batch_in_epoch: int, periodic: bool) -> None:
        if batch_in_epoch >= steps_per_epoch:  # a periodic save on an epoch's last batch: resume at the next one
            epoch_done, batch_in_epoch = epoch_done + 1, 0
        save_checkpoint(lambda: {
            "kind": CHECKPOINT_KIND, "generator": GENERATOR, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "config": cfg.to_dict(), "args": vars(args), "classes": class_names,
            "dataset": args.dataset,
            "bounds": {"lower": train_ds.bounds.lower.tolist(), "upper": train_ds.bounds.upper.tolist()},
            "epoch": epoch_done, "batch_in_epoch": batch_in_epoch, "step": step,
            "train_seconds": train_seconds()}, ckpt_path, info,
            copy_to=save_dir / "checkpoints" / f"step_{step:07d}.pt" if periodic else None)

    def train_step(batch) -> torch.Tensor:
        x, y = (t.to(device, non_blocking=True) for t in batch)
        with amp:
            loss = diffusion.loss(model, x, y, call=call)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach().reshape(1)

    def on_step(at: int) -> None:
        nonlocal step
        step = at
        if monitor is not None and at % args.quality_every == 0:
            quality()
        if info.is_main and args.sample_every and at % args.sample_every == 0:
            model.eval()
            _sample_figures(model, diffusion, writer, at, device, train_ds.bounds, class_names, args.seed)
            model.train()

    def on_epoch(summary: EpochSummary) -> None:
        if info.is_main:
            logger.info("epoch %d%s step %d: loss %.5f (%.1f s, %.2f steps/s, %.1f ECG/s; %.3f h trained)",
                        summary.epoch + 1, "" if summary.complete else
                        f" (stopped after {summary.batch_in_epoch}/{steps_per_epoch} batches)", step,
                        summary.means["loss"], summary.seconds, summary.batches / max(summary.seconds, 1e-9),
                        summary.batches * args.batch_size * info.world_size / max(summary.seconds, 1e-9),
                        train_seconds() / 3600)
            writer.add_scalar("epoch/loss", summary.means["loss"], summary.epoch + 1)
        save(summary.epoch_done, 0 if summary.complete else summary.batch_in_epoch, periodic=False)
        if info.is_main:
            writer.flush()

    model.train()
    state = LoopState(epoch0, batch0, step)
    limits = LoopLimits(steps_per_epoch, args.log_every, args.max_steps, args.epochs, args.save_every)
    stop_reason, nonfinite = run_epochs(
        loader, sampler, train_step, ("loss",), state, limits, clock, info, device, writer, on_step=on_step,
        on_epoch=on_epoch, save_step=lambda st: save(st.epoch, st.batch_in_epoch, periodic=True))
    step = state.step
    if nonfinite:
        return nan_exit(logger, writer, step, state.epoch, ckpt_path, info)
    if monitor is not None and step != quality_step:
        model.eval()
        quality()  # the final model
    if info.is_main:
        why = f" ({stop_reason})" if stop_reason else ""
        logger.info("done%s: %d steps, %.3f h; checkpoint %s", why, step, train_seconds() / 3600, ckpt_path)
        writer.close()
    teardown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
