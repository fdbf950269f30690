"""Generate conditional 12-lead ECGs from a trained cNVAE-ECG (or 2D-cNVAE-ECG) checkpoint.

The model is rebuilt from the configuration stored in the checkpoint, so no model
flag is needed; that includes the representation: a 2-D (STFT) model samples a
spectrogram, maps it back to 8 leads with the exact inverse STFT and the
normalisation saved with its weights, and is recorded as generator ``nvae2d``
(the 1-D model as ``cnvae``). How many ECGs of which label combination comes from
:func:`nvae_ecg.counts.generation_plan` on the training split of the prepared data
(``--task_type imbalance`` or ``addition``, paper Table I) or from ``--labels``/``--count``.
Samples are drawn in the [0, 1] space of the 8 independent leads, mapped back to mV
with the normalisation bounds stored in the checkpoint and expanded to 12 leads with
the lead algebra, so the limb-lead identities hold exactly. Output is the
generated-sample format of :mod:`nvae_ecg.samples` (or WFDB records with
``--format wfdb``); the shared driver is :mod:`nvae_ecg.generation`.

Example::

    python -m nvae_ecg.generate --checkpoint runs/demo/checkpoints/latest.pt --data_dir prepared \\
        --task_type imbalance --out_dir generated/cnvae_imbalance
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from nvae_ecg.classes import NUM_CLASSES, resolve_classes
from nvae_ecg.config import ModelConfig
from nvae_ecg.counts import plan_to_labels
from nvae_ecg.generation import (add_common_args, bounds_from_checkpoint, build_plan, resolve_device,
                                 write_generated)
from nvae_ecg.model import AutoEncoder
from nvae_ecg.utils import load_checkpoint

#: Generator name written to meta.json per model representation (the benchmarks group generated sets by it).
GENERATOR_NAMES = {"signal": "cnvae", "stft": "nvae2d"}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Generate ECGs with a trained cNVAE-ECG.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (latents and mixture)")
    p.add_argument("--temperature_range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="draw one temperature per label combination uniformly from [LOW, HIGH] (as the "
                        "authors' generator does); overrides --temperature")
    p.add_argument("--readjust_bn", action="store_true",
                   help="NVAE's BN re-adjustment: re-estimate BatchNorm statistics on samples before generating")
    p.add_argument("--num_iters", type=int, default=100, help="sampling iterations for --readjust_bn")
    p.add_argument("--generator_name", default=None,
                   help="generator name stored in meta.json (default: from the checkpoint, "
                        + " or ".join(f"{v} for a {k} model" for k, v in GENERATOR_NAMES.items()) + ")")
    return p.parse_args(argv)


def load_model(checkpoint: str | os.PathLike, device: torch.device):
    """Rebuild the model from a checkpoint; returns (model in eval mode, checkpoint dict, class columns)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind", "cnvae") != "cnvae":
        raise SystemExit(f"error: {checkpoint} is a {ckpt['kind']} checkpoint; use that generator's sampler")
    cfg = ModelConfig.from_dict(ckpt["config"])
    model = AutoEncoder(cfg)
    model.load_state_dict(ckpt["model"])
    model.to(device=device, dtype=torch.float32).eval()
    class_cols = resolve_classes(ckpt["classes"])
    if len(class_cols) != cfg.num_classes:
        raise ValueError(f"{checkpoint}: {len(class_cols)} classes stored but the model has {cfg.num_classes}")
    return model, ckpt, class_cols


@torch.no_grad()
def readjust_bn(model: AutoEncoder, label_pool: np.ndarray, iters: int, batch_size: int, t: float,
                device: torch.device, rng: np.random.Generator) -> None:
    """Re-estimate BN running statistics from the model's own samples (NVAE evaluate.py, set_bn)."""
    model.train()
    for _ in tqdm(range(iters), desc="readjust BN", leave=False):
        rows = label_pool[rng.integers(0, len(label_pool), size=batch_size)]
        model.sample_logits(torch.as_tensor(rows, dtype=torch.float32, device=device), t)
    model.eval()


def checkpoint_generator_name(checkpoint: str | os.PathLike) -> str:
    """Generator name (cnvae or nvae2d) of a cNVAE-ECG checkpoint, read memory-mapped (the weights stay on disk)."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
    except Exception as e:  # missing, truncated or not a torch file
        raise SystemExit(f"error: cannot read checkpoint {checkpoint} ({e})") from e
    if not isinstance(ckpt, dict) or "config" not in ckpt or ckpt.get("kind", "cnvae") != "cnvae":
        raise SystemExit(f"error: {checkpoint} is not a cNVAE-ECG checkpoint (GAN checkpoints: "
                         "scripts/generate_gan_samples.sh)")
    return GENERATOR_NAMES[ModelConfig.from_dict(ckpt["config"]).representation]


def generator_name(requested: str | None, cfg: ModelConfig, checkpoint) -> str:
    """The meta.json generator name: the requested one, or the one of the checkpoint's representation.

    A request naming the other representation's generator (e.g. ``cnvae`` for a 2-D model) is an error, so a set is
    never filed under the wrong generator in the benchmarks.
    """
    expected = GENERATOR_NAMES[cfg.representation]
    if requested is None:
        return expected
    if requested in GENERATOR_NAMES.values() and requested != expected:
        raise SystemExit(f"error: --generator_name {requested} but {checkpoint} holds a "
                         f"representation={cfg.representation!r} model, whose generator is {expected!r}; pass "
                         f"--generator_name {expected} (GENERATOR={expected} for scripts/generate_samples.sh)")
    return requested


def main(args: argparse.Namespace) -> int:
    """Generate and write the ECGs."""
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, ckpt, class_cols = load_model(args.checkpoint, device)
    name = generator_name(args.generator_name, model.cfg, args.checkpoint)
    plan = build_plan(args, ckpt, class_cols)
    temps = np.full(len(plan), args.temperature)
    if args.temperature_range is not None:
        temps = rng.uniform(args.temperature_range[0], args.temperature_range[1], size=len(plan))
    if args.readjust_bn and plan:
        readjust_bn(model, plan_to_labels(plan, NUM_CLASSES)[:, class_cols], args.num_iters, args.batch_size, float(temps.mean()),
                    device, rng)
    meta = {"generator": name, "representation": model.cfg.representation, "task_type": args.task_type,
            "factor": args.factor, "checkpoint": str(args.checkpoint), "temperature": args.temperature,
            "temperature_range": args.temperature_range, "temperature_per_combination": temps.tolist(),
            "seed": args.seed, "readjust_bn": args.readjust_bn, "model_classes": ckpt["classes"],
            "model_config": ckpt["config"], "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
            "bounds": ckpt["bounds"], "source_dataset": ckpt.get("dataset"), "code_version": ckpt.get("code_version")}
    return write_generated(lambda y, t: model.sample(y, t=t), plan, class_cols, bounds_from_checkpoint(ckpt), args,
                           meta, model.cfg.length, device, temps)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
