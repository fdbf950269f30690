"""Train the conditional WaveGAN* or Pulse2Pulse baseline with WGAN-GP on prepared Challenge 2021 data.

Training follows Thambawita et al. 2021 and the cNVAE-ECG authors' fork
(univanxx/Pulse2Pulse, ``pulse2pulse_train.py``/``wavegan_star_train.py``): WGAN-GP
with gradient-penalty weight 10, Adam (lr 1e-4, betas 0.5/0.9) for both networks,
batch 32, one critic step per batch and one generator step every ``--n_critic``
(5) batches, the generator conditioned on the batch's multi-hot labels. Epochs
default to the paper's tables (1,200 for Pulse2Pulse, 1,350 for WaveGAN*);
``--max_hours`` cuts a run at a wall-clock budget so that a GAN gets the same
training time as the VAE (the paper's protocol). The run folder mirrors
``nvae_ecg.train``: ``args.json``, ``log.txt``, TensorBoard events (losses,
Wasserstein estimate, gradient penalty, per-class sample figures) and
``checkpoints/latest.pt`` plus periodic copies, written atomically; ``--resume``
continues bit for bit on CPU, also from the middle of an epoch. Scalars are
accumulated on the device and read every ``--log_every`` steps, where a non-finite
loss stops the run without overwriting the last good checkpoint. Every ``--quality_every`` critic steps and at
the end, rank 0 logs the quality of ECGs generated for a fixed list of labels (:mod:`nvae_ecg.monitor`).

Example::

    python -m pulse2pulse.train --model wavegan_star --data_dir prepared --root runs --save wavegan_star --config small --epochs 2
    torchrun --nproc_per_node=2 -m pulse2pulse.train --model pulse2pulse --data_dir prepared --save p2p --amp bf16 --max_hours 24
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.loop import EpochSummary, LoopLimits, LoopState, run_epochs
from nvae_ecg.monitor import add_quality_args, run_monitor
from nvae_ecg.run import (ResumableSampler, TrainClock, amp_dtype, autocast, check_run_folder,
                          count_parameters, init_distributed, load_checkpoint, nan_exit, open_writer, resume_rng,
                          save_checkpoint, seed_everything, setup_run_dir, teardown)
from pulse2pulse.config import CONFIGS, COND_DISCRIMINATORS, MODELS, GANConfig, get_config
from pulse2pulse.models import build_discriminator, build_generator
from pulse2pulse.wgan import train_step

#: Epochs of the paper's Tables II/III (the fork's shell scripts ran 2,400 and 2,700).
PAPER_EPOCHS = {"pulse2pulse": 1200, "wavegan_star": 1350}
#: Marks a checkpoint of this package (``pulse2pulse.generate`` refuses others).
CHECKPOINT_KIND = "pulse2pulse-gan"
_MODEL_FLAGS = ("model_size", "disc_model_size", "latent_dim", "shift_factor", "cond_discriminator")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (run-folder flags as in nvae_ecg.train, optimiser flags as in the fork)."""
    p = argparse.ArgumentParser(description="Train a conditional WaveGAN* or Pulse2Pulse ECG generator (WGAN-GP).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and run folder")
    g.add_argument("--data_dir", "--data", dest="data_dir", required=True,
                   help="prepared data folder (output of nvae_ecg.data.prepare)")
    g.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="prepared dataset")
    g.add_argument("--classes", "--class_name", dest="classes", default="all",
                   help="conditioning classes: 'all' (the 9 paper classes) or comma-separated abbreviations/SNOMED codes")
    g.add_argument("--root", default="runs", help="parent folder of run folders")
    g.add_argument("--save", "--name", "--exp_name", dest="save", default=None,
                   help="run folder name under --root (default: the --model name)")
    g.add_argument("--resume", "--cont_training", dest="resume", action="store_true",
                   help="continue from ROOT/SAVE/checkpoints/latest.pt")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--seed", type=int, default=1, help="random seed")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")

    g = p.add_argument_group("model (defaults from --config)")
    g.add_argument("--model", required=True, choices=MODELS, help="generator: WaveGAN* or Pulse2Pulse")
    g.add_argument("--config", default="paper", choices=sorted(CONFIGS), help="named configuration (paper: d = 50)")
    g.add_argument("--model_size", "--ms", dest="model_size", type=int, default=None, help="generator model size d")
    g.add_argument("--disc_model_size", type=int, default=None, help="discriminator model size d")
    g.add_argument("--latent_dim", type=int, default=None, help="WaveGAN* noise dimension (100 in the paper)")
    g.add_argument("--shift_factor", type=int, default=None, help="phase-shuffle shift n of the discriminator")
    g.add_argument("--cond_discriminator", default=None, choices=COND_DISCRIMINATORS,
                   help="discriminator conditioning: none (the paper: only the generator sees the label) or "
                        "projection (inner product of a class embedding with the pooled features)")
    g.add_argument("--init_from", default=None, choices=("deepfake-ecg",),
                   help="start the generator from published weights: deepfake-ecg, the unconditional Pulse2Pulse "
                        "of Thambawita et al. trained on real ECGs (pip package; --model pulse2pulse --config "
                        "paper only; see pulse2pulse/deepfake.py)")

    g = p.add_argument_group("optimisation (WGAN-GP as in the reference code)")
    g.add_argument("--batch_size", "--bs", dest="batch_size", type=int, default=32, help="batch size per process")
    g.add_argument("--epochs", "--num_epochs", dest="epochs", type=int, default=None,
                   help="training epochs (default: paper Tables II/III: 1200 for pulse2pulse, 1350 for wavegan_star)")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many critic steps in total (0: no limit)")
    g.add_argument("--max_hours", "--time_budget_hours", dest="max_hours", type=float, default=0.0,
                   help="stop after this much training wall-clock time in hours, summed over resumes (0: no limit)")
    g.add_argument("--n_critic", type=int, default=5, help="critic steps (batches) per generator step")
    g.add_argument("--gp_weight", "--lmbda", dest="gp_weight", type=float, default=10.0,
                   help="gradient-penalty weight lambda")
    g.add_argument("--learning_rate", "--lr", dest="learning_rate", type=float, default=1e-4,
                   help="Adam learning rate of both networks")
    g.add_argument("--beta1", "--b1", dest="beta1", type=float, default=0.5, help="Adam beta1")
    g.add_argument("--beta2", "--b2", dest="beta2", type=float, default=0.9, help="Adam beta2")
    g.add_argument("--amp", default="none", choices=("none", "bf16"),
                   help="bf16 autocast on CUDA (ignored on CPU); fp16 is not offered because the gradient "
                        "penalty's double backward would need loss scaling")

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log_every", type=int, default=50,
                   help="read the device-side scalars (and check for NaN and the time budget) every k steps")
    g.add_argument("--sample_every", type=int, default=100,
                   help="per-class sample figures every k epochs (0: never; the paper runs 1200-1350 epochs)")
    g.add_argument("--save_every", type=int, default=100,
                   help="keep a periodic checkpoint copy every k epochs (the fork's --save_interval); "
                        "latest.pt is rewritten every epoch")
    add_quality_args(p)
    args = p.parse_args(argv)
    if args.save is None:
        args.save = args.model
    if args.epochs is None:
        args.epochs = PAPER_EPOCHS[args.model]
    for name in ("batch_size", "n_critic", "log_every", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.init_from is not None:
        from pulse2pulse.deepfake import init_error

        if (msg := init_error(args.model, args.config, args.model_size)) is not None:
            p.error(msg)
    return args


def build_config(args, num_classes: int) -> GANConfig:
    """The named configuration with the model flags given on the command line applied."""
    overrides = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k, None) is not None}
    return get_config(args.config, model=args.model, num_classes=num_classes, **overrides)


def _sample_figures(g_core, writer, step: int, device, bounds, class_names, seed: int) -> None:
    """One generated 12-lead ECG per class (fixed noise) as TensorBoard figures."""
    import matplotlib.pyplot as plt

    from nvae_ecg.plot import plot_ecg12

    k = len(class_names)
    gen = torch.Generator(device=device).manual_seed(seed)  # own generator: the training RNG stream is untouched
    with torch.no_grad():
        x01 = g_core.sample(torch.eye(k, device=device), generator=gen)
    x12 = eight_to_twelve(bounds.from_unit(x01.double().cpu().numpy()))
    for i, name in enumerate(class_names):
        fig = plot_ecg12(x12[i], title=f"generated {name} ({g_core.cfg.model}, step {step})", scale=0.6)
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
    train_ds = GeneratorDataset(args.data_dir, args.dataset, split="train", classes=args.classes)
    if len(train_ds) == 0:
        raise SystemExit(f"error: no training ECGs in {args.data_dir}/{args.dataset} for classes {args.classes}")
    length = int(train_ds[0][0].shape[-1])
    if length != 5000:
        raise SystemExit(f"error: {args.data_dir}/{args.dataset} holds ECGs of {length} samples; the GAN "
                         "generators produce exactly 5000 (prepare with --fs 500 --seconds 10)")
    logger = setup_run_dir(save_dir, args, info.is_main, args.resume)
    seed_everything(args.seed + info.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    class_names = [CLASS_ABBREVS[i] for i in train_ds.classes]

    resume = load_checkpoint(ckpt_path) if args.resume else None
    if resume is not None:
        if resume.get("kind") != CHECKPOINT_KIND:
            raise SystemExit(f"error: {ckpt_path} is not a pulse2pulse GAN checkpoint")
        cfg = GANConfig.from_dict(resume["config"])
        if cfg.model != args.model:
            raise SystemExit(f"error: {ckpt_path} holds a {cfg.model} model but --model {args.model} was given")
        if list(resume["classes"]) != class_names:
            raise SystemExit(f"error: checkpoint classes {resume['classes']} differ from --classes {args.classes}")
    else:
        cfg = build_config(args, num_classes=len(class_names))

    g_core = build_generator(cfg)
    if resume is None and args.init_from is not None:
        from pulse2pulse.deepfake import load_into

        loaded = load_into(g_core)  # class tensors start at zero: the published generator for every label
        logger.info("generator initialised from %s: %d parameters loaded, new (zeroed): %s", args.init_from,
                    loaded["n_loaded"], ", ".join(loaded["new"]))
    g_core = g_core.to(device)
    d_core = build_discriminator(cfg).to(device)
    opt_g = torch.optim.Adam(g_core.parameters(), lr=args.learning_rate, betas=(args.beta1, args.beta2))
    opt_d = torch.optim.Adam(d_core.parameters(), lr=args.learning_rate, betas=(args.beta1, args.beta2))
    epoch0, batch0, step, g_step, prev_seconds = 0, 0, 0, 0, 0.0
    if resume is not None:
        g_core.load_state_dict(resume["model"])
        d_core.load_state_dict(resume["discriminator"])
        opt_g.load_state_dict(resume["optimizer_g"])
        opt_d.load_state_dict(resume["optimizer_d"])
        epoch0, batch0 = int(resume["epoch"]), int(resume["batch_in_epoch"])
        step, g_step, prev_seconds = int(resume["step"]), int(resume["g_step"]), float(resume["train_seconds"])
        resume_rng(resume["rng"], info.rank, logger, ckpt_path)
        logger.info("resumed from %s at epoch %d (+%d batches), step %d, %.2f h of training", ckpt_path, epoch0,
                    batch0, step, prev_seconds / 3600)
    g_model, d_model = g_core, d_core
    if info.distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_model = DistributedDataParallel(g_core, device_ids=ids)
        d_model = DistributedDataParallel(d_core, device_ids=ids)

    drop_last = len(train_ds) // info.world_size > args.batch_size
    sampler = ResumableSampler(len(train_ds), args.batch_size, args.seed, info.rank, info.world_size, drop_last)
    # A private generator keeps the DataLoader's worker-seed draw off the global RNG stream.
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=False,
                              num_workers=args.num_workers, pin_memory=device.type == "cuda",
                              persistent_workers=False, generator=torch.Generator().manual_seed(args.seed))
    steps_per_epoch = sampler.batches_per_epoch()
    if steps_per_epoch == 0:
        raise SystemExit(f"error: {len(train_ds)} training ECGs are fewer than one batch per process")
    amp = autocast(device, args.amp)
    use_y_in_d = cfg.cond_discriminator != "none"

    writer = open_writer(save_dir, enabled=info.is_main)
    if info.is_main:
        logger.info("config %s: %s", args.config, cfg.to_dict())
        logger.info("classes: %s", class_names)
        logger.info("parameters: G %s %.3fM, D %.3fM; train %d ECGs; %d steps/epoch; device %s x%d; amp %s",
                    cfg.model, count_parameters(g_core) / 1e6, count_parameters(d_core) / 1e6, len(train_ds),
                    steps_per_epoch, device, info.world_size, args.amp if amp_dtype(device, args.amp) else "none")

    # Quality while training (rank 0 only): fixed labels, seeded noise on a forked RNG (training RNG untouched).
    monitor = run_monitor(train_ds, args.quality_every, args.quality_n, info.is_main, logger)
    quality_step = -1  # step of the last quality evaluation (its seconds count as training time, on every rank)

    clock = TrainClock(prev_seconds, args.max_hours)
    train_seconds = clock.seconds
    state = LoopState(epoch0, batch0, step)

    def quality() -> None:
        nonlocal quality_step
        g_core.eval()
        monitor(lambda y: g_core.sample(y.to(device)), writer, logger, state.step, device=device, title=cfg.model)
        g_core.train()
        writer.add_scalar("quality/train_hours", train_seconds() / 3600, state.step)
        quality_step = state.step

    def save(epoch_done: int, batch_in_epoch: int, periodic: bool) -> None:
        save_checkpoint(lambda: {
            "kind": CHECKPOINT_KIND, "generator": cfg.model, "model": g_core.state_dict(),
            "discriminator": d_core.state_dict(), "optimizer_g": opt_g.state_dict(),
            "optimizer_d": opt_d.state_dict(), "config": cfg.to_dict(), "args": vars(args),
            "classes": class_names, "dataset": args.dataset,
            "bounds": {"lower": train_ds.bounds.lower.tolist(), "upper": train_ds.bounds.upper.tolist()},
            "epoch": epoch_done, "batch_in_epoch": batch_in_epoch, "step": state.step, "g_step": g_step,
            "train_seconds": train_seconds()}, ckpt_path, info,
            copy_to=save_dir / "checkpoints" / f"epoch_{epoch_done:04d}.pt" if periodic else None)

    keys = ("d_loss", "wasserstein", "gp", "d_real", "d_fake", "g_loss")
    # g_loss comes from the generator updates only: a critic-only step does not count in its mean.
    critic_only = torch.tensor([1.0] * (len(keys) - 1) + [0.0], device=device)
    every_term = torch.ones(len(keys), device=device)

    def train_critic_and_generator(batch) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal g_step
        x, y = (t.to(device, non_blocking=True) for t in batch)
        # A critic update, plus a generator update every n_critic critic steps (global count: the fork counted
        # per epoch); the fake batch carries the real batch's labels, as in the fork.
        g_update = (state.step + 1) % args.n_critic == 0
        parts, g_loss = train_step(g_core, d_core, opt_g, opt_d, x, y, y if use_y_in_d else None, args.gp_weight,
                                   amp, g_update, generator_call=g_model, critic_call=d_model)
        terms = [parts[k].detach().double() for k in ("loss", "wasserstein", "gp", "d_real", "d_fake")]
        if g_loss is None:
            return torch.stack(terms + [torch.zeros_like(terms[0])]), critic_only
        g_step += 1
        return torch.stack(terms + [g_loss.detach().double()]), every_term

    def on_step(at: int) -> None:
        if monitor is not None and at % args.quality_every == 0:
            quality()

    def on_epoch(summary: EpochSummary) -> None:
        avg, epoch = summary.means, summary.epoch
        if info.is_main:
            logger.info("epoch %d%s step %d (G %d): D loss %.4f W %.4f GP %.4f D(real) %.3f D(fake) %.3f G loss %.4f "
                        "(%.1f s, %.2f steps/s, %.1f ECG/s; %.3f h trained)", epoch + 1, "" if summary.complete else
                        f" (stopped after {summary.batch_in_epoch}/{steps_per_epoch} batches)", state.step,
                        g_step, avg["d_loss"], avg["wasserstein"], avg["gp"], avg["d_real"], avg["d_fake"],
                        avg["g_loss"], summary.seconds, summary.batches / max(summary.seconds, 1e-9),
                        summary.batches * args.batch_size * info.world_size / max(summary.seconds, 1e-9),
                        train_seconds() / 3600)
            for k, v in avg.items():
                if not math.isnan(v):  # NaN: no generator step in this (part of an) epoch
                    writer.add_scalar(f"epoch/{k}", v, epoch + 1)
            if args.sample_every and summary.complete and ((epoch + 1) % args.sample_every == 0
                                                           or epoch + 1 == args.epochs):
                _sample_figures(g_core, writer, state.step, device, train_ds.bounds, class_names, args.seed)
        done = summary.epoch_done
        save(done, 0 if summary.complete else summary.batch_in_epoch,
             periodic=summary.complete and bool(args.save_every) and done % args.save_every == 0)
        if info.is_main:
            writer.flush()

    g_core.train()
    d_core.train()
    limits = LoopLimits(steps_per_epoch, args.log_every, args.max_steps, args.epochs)
    stop_reason, nonfinite = run_epochs(train_loader, sampler, train_critic_and_generator, keys, state, limits, clock,
                                        info, device, writer, on_step=on_step, on_epoch=on_epoch,
                                        checked=("d_loss", "g_loss"))
    if nonfinite:
        return nan_exit(logger, writer, state.step, state.epoch, ckpt_path, info)
    if monitor is not None and state.step != quality_step:
        quality()  # the final generator
    if info.is_main:
        why = f" ({stop_reason})" if stop_reason else ""
        logger.info("done%s: %d critic steps, %d generator steps, %.3f h; checkpoint %s", why, state.step, g_step,
                    train_seconds() / 3600, ckpt_path)
        writer.close()
    teardown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
