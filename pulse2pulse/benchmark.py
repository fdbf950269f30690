"""Time WGAN-GP training steps of the GAN baselines on random data (for planning wall-clock budgets).

One "step" is what ``pulse2pulse.train`` does per batch: a critic update with the
gradient penalty, plus a generator update every ``--n_critic`` steps. The data are
uniform noise in [0, 1] of the real shape (B, 8, 5000), so the timing excludes data
loading. CUDA timings synchronise only at the start and the end of the timed loop.

Example::

    python -m pulse2pulse.benchmark --model pulse2pulse --config paper --batch_size 32 --amp bf16 --steps 50
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from pulse2pulse.config import CONFIGS, COND_DISCRIMINATORS, MODELS, get_config
from pulse2pulse.models import build_discriminator, build_generator, count_parameters
from pulse2pulse.wgan import critic_loss, generator_loss


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Time WGAN-GP training steps of WaveGAN* / Pulse2Pulse on random data.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="wavegan_star", choices=MODELS, help="generator")
    p.add_argument("--config", default="paper", choices=sorted(CONFIGS), help="named configuration")
    p.add_argument("--cond_discriminator", default="none", choices=COND_DISCRIMINATORS, help="discriminator conditioning")
    p.add_argument("--batch_size", type=int, default=32, help="batch size")
    p.add_argument("--n_critic", type=int, default=5, help="critic steps per generator step")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--amp", default="none", choices=("none", "bf16"), help="bf16 autocast on CUDA")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    """Run the benchmark; prints and returns steps/s, ECG/s and peak GPU memory."""
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) or args.device == "cuda"
                          else "cpu")
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = get_config(args.config, model=args.model, cond_discriminator=args.cond_discriminator)
    g, d = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
    n_g, n_d = count_parameters(g), count_parameters(d)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.9))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and args.amp == "bf16" else None
    b = args.batch_size
    x = torch.rand(b, cfg.num_channels, cfg.length, device=device)
    y = torch.zeros(b, cfg.num_classes, device=device)
    y[torch.arange(b), torch.arange(b) % cfg.num_classes] = 1.0
    y_d = y if cfg.cond_discriminator != "none" else None
    d_params = list(d.parameters())

    def step(i: int) -> None:
        for p_ in d_params:
            p_.requires_grad_(True)
        with torch.no_grad(), (amp if amp is not None else nullcontext()):
            fake = g(g.noise(b, device=device), y)
        opt_d.zero_grad(set_to_none=True)
        critic_loss(d, x, fake.float(), y_d, 10.0, amp)["loss"].backward()
        opt_d.step()
        if (i + 1) % args.n_critic == 0:
            for p_ in d_params:
                p_.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            with amp if amp is not None else nullcontext():
                fake = g(g.noise(b, device=device), y)
            generator_loss(d, fake, y_d, amp).backward()
            opt_g.step()

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"model": args.model, "config": args.config, "device": str(device), "amp": args.amp, "batch_size": b,
           "G_params": n_g, "D_params": n_d, "steps_per_s": args.steps / dt,
           "ecg_per_s": args.steps * b / dt,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")}
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()))
    return out


if __name__ == "__main__":
    main(parse_args())
