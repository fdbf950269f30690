"""Train the CVAE of Sang et al. (YulingSang/CVAE_ECG) on prepared Challenge 2021 data, conditioned on demographics.

Source (line numbers: YulingSang/CVAE_ECG at f17e4ab, as read from the indexed copy of those files at 393dbcf).
Training follows their ``train.py``:7-9 and ``vae.py``:68-106: Adam with learning rate 1e-3 and Keras' defaults
(betas 0.9/0.999, epsilon 1e-7), batch 32, 300 epochs, loss = KL (summed over the latent dimensions) + MSE (mean
over all elements) with weights 1 and 1, the validation loss after every epoch (inference mode, as Keras'
``validation_data``). The condition is the 4-d demographic vector of each record (``--condition demographics``,
:mod:`nvae_ecg.demographics`), its multi-hot classes (``classes``) or both concatenated (``both``). One deviation:
their ``fit`` ran with ``shuffle=False``; we shuffle every epoch (records.csv is ordered by file name, so a fixed
order would present the sources in blocks). Amplitude (``--amplitude``): their data scale is not published; the
network models per-lead z-scores of the [0, 1] data (training-split statistics, stored in the model), which the
zero-mean, unit-variance output of their final batch norm starts from. The run folder mirrors ``pulse2pulse.train`` and ``nvae_ecg.train``
(shared :mod:`nvae_ecg.run`): ``args.json``, ``log.txt``, TensorBoard events, ``checkpoints/latest.pt`` written
atomically as plain data (loaded with ``weights_only=True``) with periodic copies, ``--resume`` bit for bit on CPU
also from the middle of an epoch, ``--max_hours`` summed over resumes, a non-finite loss stopping the run without
overwriting the last good checkpoint, and the quality monitor of :mod:`nvae_ecg.monitor` every
``--quality_every`` steps.

Example::

    python -m cvae_ecg.train --data_dir prepared --root runs --save cvae_ecg --condition both --epochs 300
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from cvae_ecg.config import AMPLITUDES, CONFIGS, CVAEConfig, get_config
from cvae_ecg.data import CONDITIONS, DemographicDataset, build_condition, condition_dim
from cvae_ecg.model import CVAE, cvae_loss, parameter_counts
from nvae_ecg.data import DATASETS
from nvae_ecg.demographics import DemographicStats, condition_matrix
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.loop import EpochSummary, LoopLimits, LoopState, run_epochs
from nvae_ecg.monitor import add_quality_args, run_monitor
from nvae_ecg.run import (ResumableSampler, TrainClock, amp_dtype, autocast, check_run_folder,
                          init_distributed, load_checkpoint, nan_exit, open_writer, resume_rng, save_checkpoint,
                          seed_everything, setup_run_dir, teardown)

#: Marks a checkpoint of this package (``cvae_ecg.generate`` refuses others).
CHECKPOINT_KIND = "cvae-ecg"
#: Generator name of the generated-sample format.
GENERATOR = "cvae_ecg"
#: Seed of the validation loss's noise (a private generator: the training RNG stream is untouched).
VAL_SEED = 12345


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (run-folder and optimiser flags named as in pulse2pulse.train)."""
    p = argparse.ArgumentParser(description="Train the conditional VAE of Sang et al. (ISBI 2022) on 10 s ECGs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and run folder")
    g.add_argument("--data_dir", "--data", dest="data_dir", required=True,
                   help="prepared data folder (output of nvae_ecg.data.prepare)")
    g.add_argument("--dataset", default="ptb-xl", choices=DATASETS, help="prepared dataset")
    g.add_argument("--classes", "--class_name", dest="classes", default="all",
                   help="classes of the training records: 'all' (the 9 paper classes) or comma-separated "
                        "abbreviations/SNOMED codes (also the conditioning classes with --condition classes/both)")
    g.add_argument("--root", default="runs", help="parent folder of run folders")
    g.add_argument("--save", "--name", "--exp_name", dest="save", default="cvae_ecg",
                   help="run folder name under --root")
    g.add_argument("--resume", "--cont_training", dest="resume", action="store_true",
                   help="continue from ROOT/SAVE/checkpoints/latest.pt")
    g.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--seed", type=int, default=1, help="random seed")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")

    g = p.add_argument_group("model (defaults from --config)")
    g.add_argument("--config", default="ecg", choices=sorted(CONFIGS),
                   help="named configuration (ecg: 8 x 5000; paper: their 12 x 400 median beat, not trainable on "
                        "our 10 s records)")
    g.add_argument("--condition", default="demographics", choices=CONDITIONS,
                   help="what the model is conditioned on: the 4-d demographic vector [age z, age missing, male, "
                        "female], the multi-hot classes, or both concatenated")
    g.add_argument("--latent_dim", type=int, default=None, help="latent dimensions (10 in their train.py)")
    g.add_argument("--amplitude", default=None, choices=AMPLITUDES,
                   help="what the network models: standard (per-lead z-scores of the training split, the preset's) "
                        "or unit (the [0, 1] data as stored)")

    g = p.add_argument_group("optimisation (Keras defaults of the reference code)")
    g.add_argument("--batch_size", "--bs", dest="batch_size", type=int, default=32, help="batch size per process")
    g.add_argument("--epochs", "--num_epochs", dest="epochs", type=int, default=300, help="training epochs")
    g.add_argument("--max_steps", type=int, default=0,
                   help="stop after this many optimiser steps in total (0: no limit)")
    g.add_argument("--max_hours", "--time_budget_hours", dest="max_hours", type=float, default=0.0,
                   help="stop after this much training wall-clock time in hours, summed over resumes (0: no limit)")
    g.add_argument("--learning_rate", "--lr", dest="learning_rate", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--beta1", "--b1", dest="beta1", type=float, default=0.9, help="Adam beta1 (Keras default)")
    g.add_argument("--beta2", "--b2", dest="beta2", type=float, default=0.999, help="Adam beta2 (Keras default)")
    g.add_argument("--adam_eps", type=float, default=1e-7, help="Adam epsilon (Keras default; PyTorch's is 1e-8)")
    g.add_argument("--kl_weight", type=float, default=1.0, help="weight of the KL term (1 in their compile)")
    g.add_argument("--rec_weight", type=float, default=1.0,
                   help="weight of the MSE term (their loss_weights['decoder'] = 1; with MSE averaged over 40,000 "
                        "elements the posterior collapses on our data, see cvae_ecg/README.md; 20000 = the ELBO of a "
                        "unit-variance Gaussian decoder on 8 x 5000 z-scored samples)")
    g.add_argument("--amp", default="none", choices=("none", "bf16"), help="bf16 autocast on CUDA (ignored on CPU)")

    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log_every", type=int, default=50,
                   help="read the device-side scalars (and check for NaN and the time budget) every k steps")
    g.add_argument("--sample_every", type=int, default=10, help="sample figures every k epochs (0: never)")
    g.add_argument("--save_every", type=int, default=50,
                   help="keep a periodic checkpoint copy every k epochs; latest.pt is rewritten every epoch")
    add_quality_args(p)
    args = p.parse_args(argv)
    if args.batch_size < 2:
        p.error("--batch_size must be >= 2 (batch norm cannot normalise a batch of one)")
    for name in ("log_every", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.config == "paper":
        p.error("--config paper is the published 12 x 400 median-beat configuration (for its parameter count); "
                "the prepared records are 8 leads x 10 s: use --config ecg")
    return args


def build_config(args, num_classes: int) -> CVAEConfig:
    """The named configuration with the condition size of --condition and the model flags applied."""
    overrides = {"condition_dim": condition_dim(args.condition, num_classes)}
    if args.latent_dim is not None:
        overrides["latent_dim"] = args.latent_dim
    if args.amplitude is not None:
        overrides["amplitude"] = args.amplitude
    return get_config(args.config, **overrides)


def monitor_condition(condition: str, labels: torch.Tensor, stats: DemographicStats) -> torch.Tensor:
    """Conditions for figures and the quality monitor: the training-mean age, sexes alternating M/F by row."""
    n = labels.shape[0]
    sexes = ["M" if i % 2 == 0 else "F" for i in range(n)]
    demo = torch.from_numpy(condition_matrix([stats.age_mean] * n, sexes, stats)).to(labels.device)
    return build_condition(condition, demo, labels.float())


def _sample_figures(model, writer, step: int, device, bounds, class_names, condition, stats, seed: int) -> None:
    """One generated 12-lead ECG per class (or per sex without classes) as TensorBoard figures."""
    import matplotlib.pyplot as plt

    from nvae_ecg.plot import plot_ecg12

    k = len(class_names) if condition != "demographics" else 2
    names = class_names if condition != "demographics" else ["M", "F"]
    gen = torch.Generator(device=device).manual_seed(seed)
    eye = torch.eye(len(class_names), device=device)[:k] if condition != "demographics" \
        else torch.zeros(2, len(class_names), device=device)
    was_training = model.training
    model.eval()
    x01 = model.sample(monitor_condition(condition, eye, stats), generator=gen)
    model.train(was_training)
    x12 = eight_to_twelve(bounds.from_unit(x01.double().cpu().numpy()))
    for i, name in enumerate(names):
        fig = plot_ecg12(x12[i], title=f"generated {name} (cvae_ecg, step {step})", scale=0.6)
        writer.add_figure(f"samples/{name}", fig, step)
        plt.close(fig)


def lead_statistics(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead mean and standard deviation over every sample of every ECG of ``dataset`` (float64 sums)."""
    total = total_sq = None
    n = 0
    for i in range(len(dataset)):
        x = dataset[i][0].double().numpy()
        total = x.sum(1) if total is None else total + x.sum(1)
        total_sq = (x * x).sum(1) if total_sq is None else total_sq + (x * x).sum(1)
        n += x.shape[1]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    if not np.all(std > 0):
        raise SystemExit(f"error: a lead of the training ECGs is constant (std {std.tolist()}); "
                         "use --amplitude unit or check the prepared data")
    return mean, std


@torch.no_grad()
def validation_loss(model: CVAE, loader, condition: str, device, amp, kl_weight: float = 1.0,
                    rec_weight: float = 1.0) -> dict[str, float]:
    """Mean loss terms over a loader in inference mode (batch-norm statistics), noise from a private generator."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(VAL_SEED)
    sums, n = torch.zeros(3, device=device, dtype=torch.float64), 0
    for x, y, d in loader:
        x, y, d = x.to(device), y.to(device), d.to(device)
        c = build_condition(condition, d, y)
        with amp:
            recon, mu, logvar = model(model.to_model(x), c, generator=gen)
        total, kl, mse = cvae_loss(model.to_model(x), recon.float(), mu.float(), logvar.float(), kl_weight=kl_weight,
                                   rec_weight=rec_weight)
        sums += torch.stack([total, kl, mse]).double() * x.shape[0]
        n += x.shape[0]
    model.train(was_training)
    return dict(zip(("loss", "kl", "mse"), (sums / max(n, 1)).tolist()))


def main(args: argparse.Namespace) -> int:
    """Train; returns a process exit code (2: run exists or is missing, 3: non-finite loss)."""
    info, device = init_distributed(args.device)
    save_dir = Path(args.root) / args.save
    ckpt_path = save_dir / "checkpoints" / "latest.pt"
    if not check_run_folder(ckpt_path, args.resume, info, device):
        return 2
    # Open and check the data before creating the run folder, so a wrong --data_dir leaves nothing behind.
    train_ds = DemographicDataset(args.data_dir, args.dataset, split="train", classes=args.classes)
    if len(train_ds) == 0:
        raise SystemExit(f"error: no training ECGs in {args.data_dir}/{args.dataset} for classes {args.classes}")
    val_ds = DemographicDataset(args.data_dir, args.dataset, split="val", classes=args.classes, stats=train_ds.stats)
    length = int(train_ds[0][0].shape[-1])
    class_names = list(train_ds.class_names)

    resume = load_checkpoint(ckpt_path) if args.resume else None
    if resume is not None:
        if resume.get("kind") != CHECKPOINT_KIND:
            raise SystemExit(f"error: {ckpt_path} is not a cvae_ecg checkpoint")
        if resume["condition"] != args.condition:
            raise SystemExit(f"error: {ckpt_path} is conditioned on {resume['condition']}, not --condition "
                             f"{args.condition}")
        if list(resume["classes"]) != class_names:
            raise SystemExit(f"error: checkpoint classes {resume['classes']} differ from --classes {args.classes}")
        cfg = CVAEConfig.from_dict(resume["config"])
        stats = DemographicStats.from_dict(resume["demographics"])  # the run's own statistics, even if data moved
    else:
        cfg = build_config(args, num_classes=len(class_names))
        stats = train_ds.stats
    if length != cfg.length or train_ds[0][0].shape[0] != cfg.n_leads:
        raise SystemExit(f"error: {args.data_dir}/{args.dataset} holds ECGs of shape {tuple(train_ds[0][0].shape)}; "
                         f"--config {args.config} expects ({cfg.n_leads}, {cfg.length})")
    logger = setup_run_dir(save_dir, args, info.is_main, args.resume)
    seed_everything(args.seed + info.rank)

    core = CVAE(cfg).to(device)
    if resume is None and cfg.amplitude == "standard":
        mean, std = lead_statistics(train_ds)
        core.set_data_stats(mean, std)
        if info.is_main:
            logger.info("amplitude standard: per-lead mean %s, std %s of the [0, 1] training ECGs",
                        np.round(mean, 4).tolist(), np.round(std, 4).tolist())
    opt = torch.optim.Adam(core.parameters(), lr=args.learning_rate, betas=(args.beta1, args.beta2), eps=args.adam_eps)
    epoch0, batch0, step, prev_seconds = 0, 0, 0, 0.0
    if resume is not None:
        core.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        epoch0, batch0 = int(resume["epoch"]), int(resume["batch_in_epoch"])
        step, prev_seconds = int(resume["step"]), float(resume["train_seconds"])
        resume_rng(resume["rng"], info.rank, logger, ckpt_path)
        logger.info("resumed from %s at epoch %d (+%d batches), step %d, %.2f h of training", ckpt_path, epoch0,
                    batch0, step, prev_seconds / 3600)
    model = core
    if info.distributed:
        model = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)

    # Batch norm cannot normalise a batch of one: drop the ragged last batch whenever a full one exists.
    per_rank = len(train_ds) // info.world_size
    sampler = ResumableSampler(len(train_ds), args.batch_size, args.seed, info.rank, info.world_size,
                               drop_last=per_rank >= args.batch_size)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=False,
                              num_workers=args.num_workers, pin_memory=device.type == "cuda",
                              persistent_workers=False, generator=torch.Generator().manual_seed(args.seed))
    # Its own generator too: every DataLoader iterator draws a seed, from the global RNG when given none.
    val_loader = DataLoader(val_ds, batch_size=args.batch_size, shuffle=False, num_workers=0,
                            generator=torch.Generator().manual_seed(VAL_SEED)) if len(val_ds) else None
    steps_per_epoch = sampler.batches_per_epoch()
    if steps_per_epoch == 0 or per_rank < 2:
        raise SystemExit(f"error: {len(train_ds)} training ECGs are too few for batches of at least 2 per process")
    amp = autocast(device, args.amp)

    writer = open_writer(save_dir, enabled=info.is_main)
    if info.is_main:
        counts = parameter_counts(core)
        logger.info("config %s: %s", args.config, cfg.to_dict())
        logger.info("condition %s (dim %d); classes %s; demographics %s", args.condition, cfg.condition_dim,
                    class_names, stats.to_dict())
        logger.info("parameters: %d (%d with batch-norm statistics); train %d ECGs, val %d; %d steps/epoch; "
                    "device %s x%d; amp %s", counts["trainable"], counts["with_bn_statistics"], len(train_ds),
                    len(val_ds), steps_per_epoch, device, info.world_size,
                    args.amp if amp_dtype(device, args.amp) else "none")

    monitor = run_monitor(train_ds, args.quality_every, args.quality_n, info.is_main, logger)
    quality_step = -1
    clock = TrainClock(prev_seconds, args.max_hours)
    train_seconds = clock.seconds

    def quality() -> None:
        nonlocal quality_step
        core.eval()
        monitor(lambda y: core.sample(monitor_condition(args.condition, y.to(device), stats)), writer, logger, step,
                device=device, title="cvae_ecg")
        core.train()
        writer.add_scalar("quality/train_hours", train_seconds() / 3600, step)
        quality_step = step

    def save(epoch_done: int, batch_in_epoch: int, periodic: bool) -> None:
        save_checkpoint(lambda: {
            "kind": CHECKPOINT_KIND, "generator": GENERATOR, "model": core.state_dict(),
            "optimizer": opt.state_dict(), "config": cfg.to_dict(), "args": vars(args), "classes": class_names,
            "condition": args.condition, "demographics": stats.to_dict(), "dataset": args.dataset,
            "bounds": {"lower": train_ds.bounds.lower.tolist(), "upper": train_ds.bounds.upper.tolist()},
            "epoch": epoch_done, "batch_in_epoch": batch_in_epoch, "step": step,
            "train_seconds": train_seconds()}, ckpt_path, info,
            copy_to=save_dir / "checkpoints" / f"epoch_{epoch_done:04d}.pt" if periodic else None)

    def train_step(batch) -> torch.Tensor:
        x, y, d = batch
        x = core.to_model(x.to(device, non_blocking=True))
        c = build_condition(args.condition, d.to(device, non_blocking=True), y.to(device, non_blocking=True))
        with amp:
            recon, mu, logvar = model(x, c)
        total, kl, mse = cvae_loss(x, recon.float(), mu.float(), logvar.float(), kl_weight=args.kl_weight,
                                   rec_weight=args.rec_weight)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return torch.stack([total.detach(), kl.detach(), mse.detach()])

    def on_step(at: int) -> None:
        nonlocal step
        step = at
        if monitor is not None and at % args.quality_every == 0:
            quality()

    def on_epoch(summary: EpochSummary) -> None:
        avg, epoch = summary.means, summary.epoch
        if info.is_main:
            val = validation_loss(core, val_loader, args.condition, device, amp, args.kl_weight,
                                  args.rec_weight) if val_loader is not None else {}
            val_txt = f"; val loss {val['loss']:.4f} KL {val['kl']:.3f} MSE {val['mse']:.5f}" if val else ""
            logger.info("epoch %d%s step %d: loss %.4f KL %.3f MSE %.5f%s (%.1f s, %.2f steps/s; %.3f h trained)",
                        epoch + 1, "" if summary.complete else
                        f" (stopped after {summary.batch_in_epoch}/{steps_per_epoch} batches)",
                        step, avg["loss"], avg["kl"], avg["mse"], val_txt, summary.seconds,
                        summary.batches / max(summary.seconds, 1e-9), train_seconds() / 3600)
            for k, v in avg.items():
                writer.add_scalar(f"epoch/{k}", v, epoch + 1)
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, epoch + 1)
            if args.sample_every and summary.complete and ((epoch + 1) % args.sample_every == 0
                                                           or epoch + 1 == args.epochs):
                _sample_figures(core, writer, step, device, train_ds.bounds, class_names, args.condition, stats,
                                args.seed)
        done = summary.epoch_done
        save(done, 0 if summary.complete else summary.batch_in_epoch,
             periodic=summary.complete and bool(args.save_every) and done % args.save_every == 0)
        if info.is_main:
            writer.flush()

    core.train()
    state = LoopState(epoch0, batch0, step)
    limits = LoopLimits(steps_per_epoch, args.log_every, args.max_steps, args.epochs)
    stop_reason, nonfinite = run_epochs(train_loader, sampler, train_step, ("loss", "kl", "mse"), state, limits,
                                        clock, info, device, writer, on_step=on_step, on_epoch=on_epoch)
    step = state.step
    if nonfinite:
        return nan_exit(logger, writer, step, state.epoch, ckpt_path, info)
    if monitor is not None and step != quality_step:
        quality()
    if info.is_main:
        why = f" ({stop_reason})" if stop_reason else ""
        logger.info("done%s: %d steps, %.3f h; checkpoint %s", why, step, train_seconds() / 3600, ckpt_path)
        writer.close()
    teardown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
