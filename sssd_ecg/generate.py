"""Generate conditional 12-lead ECGs from a trained SSSD-ECG checkpoint.

Mirrors ``pulse2pulse.generate`` through the shared driver ``nvae_ecg.sampler_driver``: the denoiser is rebuilt from
the configuration in the checkpoint; how many ECGs of which label combination comes from the training split of
the prepared data (``--task_type imbalance`` or ``addition``, paper Table I) or from ``--labels``/``--count``.
Each batch runs the T = 200 ancestral DDPM steps (a progress bar over them with ``--progress``) with the S4
kernels computed once per batch; the result is resampled from the model's rate (100 Hz by default) to 500 Hz,
mapped to [0, 1] and, by the normalisation bounds stored in the checkpoint, to mV, and expanded from the 8
independent leads to 12 with the lead algebra. Output: the generated-sample format of :mod:`nvae_ecg.samples`
with ``meta.json`` generator ``sssd_ecg`` (or WFDB records with ``--format wfdb``).

Example::

    python -m sssd_ecg.generate --checkpoint runs/sssd_ecg/checkpoints/latest.pt --data_dir prepared \\
        --task_type imbalance --out_dir results/generated/sssd_ecg_imbalance
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
from sssd_ecg.config import SSSDConfig
from sssd_ecg.diffusion import Diffusion
from sssd_ecg.model import build_model
from sssd_ecg.train import CHECKPOINT_KIND, GENERATOR, sampler_fn


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (the shared sampler flags of nvae_ecg.sampler_driver; a diffusion has no temperature)."""
    p = argparse.ArgumentParser(description="Generate ECGs with a trained SSSD-ECG model.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.set_defaults(batch_size=32)  # 200 network evaluations per batch; the paper model's activations grow with it
    p.add_argument("--generator_name", default=GENERATOR, help="generator name stored in meta.json")
    p.add_argument("--progress", action="store_true", help="show a progress bar over the denoising steps")
    return p.parse_args(argv)


def load_generator(checkpoint: str | os.PathLike, device: torch.device):
    """Rebuild the denoiser from a checkpoint; returns (model in eval mode, diffusion, checkpoint, class columns)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is not an SSSD-ECG checkpoint (kind {ckpt.get('kind')!r})")
    cfg = SSSDConfig.from_dict(ckpt["config"])
    model = build_model(cfg, init_kernels=False)  # C comes from the checkpoint
    model.load_state_dict(ckpt["model"])
    model.to(device=device, dtype=torch.float32).eval()
    class_cols = resolve_classes(ckpt["classes"])
    if len(class_cols) != cfg.num_classes:
        raise ValueError(f"{checkpoint}: {len(class_cols)} classes stored but the model has {cfg.num_classes}")
    return model, Diffusion.from_config(cfg), ckpt, class_cols


def main(args: argparse.Namespace) -> int:
    """Generate and write the ECGs."""
    device = resolve_device(args.device)
    model, diffusion, ckpt, class_cols = load_generator(args.checkpoint, device)
    rng = torch.Generator(device=device).manual_seed(args.seed)
    plan = build_plan(PlanRequest.from_args(args), ckpt, class_cols)
    bounds = bounds_from_checkpoint(ckpt)
    sample = sampler_fn(model, diffusion, bounds, generator=rng, progress=args.progress)
    meta = {"generator": args.generator_name, "task_type": args.task_type, "factor": args.factor,
            "checkpoint": str(args.checkpoint), "seed": args.seed, "model_classes": ckpt["classes"],
            "model_config": ckpt["config"], "model_fs": model.cfg.fs, "denoising_steps": diffusion.num_steps,
            "epoch": ckpt.get("epoch"), "step": ckpt.get("step"), "train_seconds": ckpt.get("train_seconds"),
            "bounds": ckpt["bounds"], "source_dataset": ckpt.get("dataset"), "code_version": ckpt.get("code_version")}
    return write_generated(lambda y, t: sample(y), plan, class_cols, bounds,
                           Output.from_args(args, args.generator_name), meta, model.cfg.data_length, device)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
