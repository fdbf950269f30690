"""Throughput workloads of the GAN baselines for the benchmark harness of ``nvae_ecg.bench``.

One step is ``pulse2pulse.wgan.train_step`` as ``pulse2pulse.train`` runs it: a critic update with gradient
penalty plus a generator update every ``--n_critic`` steps; the sampler is the generator's forward. Declared
under the entry-point group ``cnvae_ecg.bench`` (pyproject.toml), so ``python -m nvae_ecg.bench --model
wavegan_star`` finds it once the repository is installed; this module runs the same harness on its own.

Example::

    python -m pulse2pulse.bench --model wavegan_star --config small --batch_size 8 --steps 10 --warmup 3
"""

from __future__ import annotations

import argparse
import sys

import torch

from nvae_ecg import bench


def gan_workload(args, device: torch.device, dtype: torch.dtype, mode: str) -> bench.Workload:
    """WGAN-GP step of pulse2pulse.train (critic + generator every n_critic steps) and the generator's sampler."""
    from pulse2pulse.config import get_config
    from pulse2pulse.models import build_discriminator, build_generator, count_parameters
    from pulse2pulse.wgan import train_step

    fast = mode == "fast"
    cfg = get_config(args.config, model=args.model)
    g = build_generator(cfg).to(device=device, dtype=dtype)
    d = build_discriminator(cfg).to(device=device, dtype=dtype)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.9))
    amp = bench.autocast_for(device, fast)
    b = args.batch_size
    x = torch.rand(b, cfg.num_channels, cfg.length, device=device, dtype=dtype)
    y = bench.labels(b, cfg.num_classes, device, dtype)
    y_d = y if cfg.cond_discriminator != "none" else None
    count = [0]

    def step() -> torch.Tensor:
        count[0] += 1
        parts, _ = train_step(g, d, opt_g, opt_d, x, y, y_d, 10.0, amp, count[0] % args.n_critic == 0)
        return parts["loss"]

    @torch.no_grad()
    def sample() -> torch.Tensor:
        with amp:
            return g(g.noise(b, device=device).to(dtype), y)

    n = count_parameters(g) + count_parameters(d)
    return bench.Workload(b, n, step, None, None, sample,
                          [f"one step = critic update + generator update every {args.n_critic} steps"])


def gan_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of the GAN workloads."""
    p.add_argument("--n_critic", type=int, default=5, help="GANs: critic steps per generator step")


#: Entry point ``cnvae_ecg.bench: pulse2pulse`` (pyproject.toml).
BENCHMARKS = (bench.Benchmark("wavegan_star", gan_workload, add_arguments=gan_arguments),
              bench.Benchmark("pulse2pulse", gan_workload, add_arguments=gan_arguments))


def parse_args(argv=None) -> argparse.Namespace:
    """The harness's flags for these workloads."""
    return bench.parse_args(argv, BENCHMARKS)


def main(args: argparse.Namespace) -> dict:
    """Run the harness on these workloads (see ``nvae_ecg.bench.main``)."""
    return bench.main(args, BENCHMARKS)


if __name__ == "__main__":
    from pulse2pulse.bench import BENCHMARKS as _OWN  # under the module's own name, for the spawned modes

    sys.exit(bench.cli(_OWN))
