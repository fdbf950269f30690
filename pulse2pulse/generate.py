"""Generate conditional 12-lead ECGs from a trained WaveGAN* or Pulse2Pulse checkpoint.

Mirrors ``nvae_ecg.generate``: the generator is rebuilt from the configuration in
the checkpoint; how many ECGs of which label combination comes from
:func:`nvae_ecg.counts.generation_plan` on the training split of the prepared data
(``--task_type imbalance`` or ``addition``, paper Table I, as the authors'
``generate_signals.py`` in univanxx/Pulse2Pulse) or from ``--labels``/``--count``
(``custom``). The generator's [0, 1] output is mapped to mV with the normalisation
bounds stored in the checkpoint and expanded from the 8 independent leads to 12
with the lead algebra, so the limb-lead identities hold exactly. Output is the
generated-sample format of :mod:`nvae_ecg.samples` with ``meta.json`` generator
``wavegan_star`` or ``pulse2pulse`` (or WFDB records with ``--format wfdb``).

Example::

    python -m pulse2pulse.generate --checkpoint runs/wavegan_star/checkpoints/latest.pt --data_dir prepared \\
        --task_type imbalance --out_dir results/generated/wavegan_star_imbalance
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from nvae_ecg.classes import resolve_classes
from nvae_ecg.run import load_checkpoint, resolve_device
from nvae_ecg.sampler_driver import (Output, PlanRequest, add_common_args, bounds_from_checkpoint, build_plan,
                                     write_generated)
from pulse2pulse.config import GANConfig
from pulse2pulse.models import build_generator
from pulse2pulse.train import CHECKPOINT_KIND


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (the shared sampler flags of nvae_ecg.sampler_driver; GANs have no temperature)."""
    p = argparse.ArgumentParser(description="Generate ECGs with a trained WaveGAN* or Pulse2Pulse generator.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--generator_name", default=None,
                   help="generator name stored in meta.json (default: the checkpoint's model, "
                        "wavegan_star or pulse2pulse)")
    return p.parse_args(argv)


def load_generator(checkpoint: str | os.PathLike, device: torch.device):
    """Rebuild the generator from a checkpoint; returns (generator in eval mode, checkpoint dict, class columns)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is not a pulse2pulse GAN checkpoint (a cNVAE-ECG checkpoint? use "
                         "python -m nvae_ecg.generate for those)")
    cfg = GANConfig.from_dict(ckpt["config"])
    generator = build_generator(cfg)
    generator.load_state_dict(ckpt["model"])
    generator.to(device=device, dtype=torch.float32).eval()
    class_cols = resolve_classes(ckpt["classes"])
    if len(class_cols) != cfg.num_classes:
        raise ValueError(f"{checkpoint}: {len(class_cols)} classes stored but the model has {cfg.num_classes}")
    return generator, ckpt, class_cols


def main(args: argparse.Namespace) -> int:
    """Generate and write the ECGs."""
    device = resolve_device(args.device)
    generator, ckpt, class_cols = load_generator(args.checkpoint, device)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    plan = build_plan(PlanRequest.from_args(args), ckpt, class_cols)
    name = args.generator_name or ckpt["generator"]
    meta = {"generator": name, "task_type": args.task_type,
            "factor": args.factor, "checkpoint": str(args.checkpoint), "seed": args.seed,
            "model_classes": ckpt["classes"], "model_config": ckpt["config"], "epoch": ckpt.get("epoch"),
            "step": ckpt.get("step"), "train_seconds": ckpt.get("train_seconds"), "bounds": ckpt["bounds"],
            "source_dataset": ckpt.get("dataset"), "code_version": ckpt.get("code_version")}
    return write_generated(lambda y, t: generator.sample(y, generator=rng), plan, class_cols,
                           bounds_from_checkpoint(ckpt), Output.from_args(args, name), meta, generator.cfg.length,
                           device)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
