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
``--format wfdb``); the shared driver is :mod:`nvae_ecg.sampler_driver`.

Two sampling protocols. ``--protocol plain`` (the default here): one temperature
(``--temperature``, 1.0, or one per combination from ``--temperature_range``) and the
checkpoint's BatchNorm statistics (``--readjust_bn`` re-estimates them once over the
whole plan). ``--protocol authors`` is the authors' ``conditional/generate_signals.py``
with their ``scripts/evaluating_conditional.sh`` settings: for every label combination
a temperature drawn uniformly from {0.6, 0.7, 0.8, 0.9}, the BatchNorm statistics reset
to the checkpoint's and re-estimated by 100 train-mode sampling passes of 32 copies of
that combination at that temperature (BatchNorm momentum 0.05 as trained), then that
combination's ECGs drawn at the same temperature. ``scripts/generate_samples.sh`` uses
``authors`` by default so generated sets compare with the paper's.

Demographics (an extension, models trained with ``--condition demographics`` or ``both``): every ECG is generated
for a target age and sex, fixed with ``--age 70 --sex F`` (either alone fixes that one) or, by default, drawn from
the training split jointly with its label combination (:class:`nvae_ecg.demographics.DemographicPool`); the targets
are written per ECG to ``conditions.npy`` in the same atomic folder. A model trained with ``--condition classes``
(the paper's) refuses ``--age``/``--sex`` and its sets carry no ``conditions.npy``.

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
from torch import nn
from tqdm import tqdm

from nvae_ecg.classes import NUM_CLASSES, resolve_classes, to_model_columns
from nvae_ecg.config import ModelConfig
from nvae_ecg.counts import PlanItem, plan_to_labels
from nvae_ecg.demographics import add_demographic_args
from nvae_ecg.model import AutoEncoder
from nvae_ecg.run import load_checkpoint, load_plain, resolve_device
from nvae_ecg.sampler_driver import (DemographicTargets, Output, PlanRequest, add_common_args, bounds_from_checkpoint,
                                     build_plan, demographic_targets, demographics_meta, write_generated)

#: Generator name written to meta.json per model representation (the benchmarks group generated sets by it).
GENERATOR_NAMES = {"signal": "cnvae", "stft": "nvae2d"}

#: Sampling protocols of --protocol (see the module docstring).
PROTOCOLS = ("plain", "authors")
#: The authors' temperatures: generate_signals.py draws random.choice(np.arange(0.6, 1.0, 0.1)) once per label
#: combination; these are that arange's exact floats (0.6, 0.7, 0.7999999999999999, 0.8999999999999999).
AUTHORS_TEMPERATURES: tuple[float, ...] = tuple(float(t) for t in np.arange(0.6, 1.0, 0.1))
#: BatchNorm re-estimation of the authors' evaluating_conditional.sh: --num_iters 100 --batch_size 32.
AUTHORS_BN_ITERS = 100
AUTHORS_BN_BATCH = 32


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Generate ECGs with a trained cNVAE-ECG.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    add_demographic_args(p)
    p.add_argument("--protocol", default="plain", choices=PROTOCOLS,
                   help="plain: --temperature (or --temperature_range) with the checkpoint's BatchNorm statistics "
                        "(--readjust_bn: re-estimated once); authors: per label combination a temperature from "
                        f"{{0.6, 0.7, 0.8, 0.9}} and BatchNorm re-estimated on {AUTHORS_BN_ITERS} sampling passes "
                        f"of {AUTHORS_BN_BATCH} ECGs of that combination, as the authors' generate_signals.py")
    p.add_argument("--temperature", type=float, default=None,
                   help="plain protocol: sampling temperature of latents and mixture (unset: 1.0)")
    p.add_argument("--temperature_range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="plain protocol: draw one temperature per label combination uniformly from [LOW, HIGH]; "
                        "overrides --temperature")
    p.add_argument("--readjust_bn", action="store_true",
                   help="plain protocol: NVAE's BN re-adjustment, re-estimate BatchNorm statistics once on samples "
                        "of the whole plan before generating")
    p.add_argument("--num_iters", type=int, default=AUTHORS_BN_ITERS,
                   help="sampling passes of the BatchNorm re-estimation (--readjust_bn or --protocol authors)")
    p.add_argument("--bn_batch_size", type=int, default=None,
                   help=f"ECGs per BatchNorm re-estimation pass (unset: {AUTHORS_BN_BATCH} with --protocol "
                        "authors, as the authors' script; --batch_size with --readjust_bn)")
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


def _demographics_of(targets: DemographicTargets | None, rows: np.ndarray, device: torch.device):
    """Condition vectors drawn for label rows (None for a model without demographics)."""
    return None if targets is None else targets.vectors(*targets.draw(rows), device)


@torch.no_grad()
def readjust_bn(model: AutoEncoder, label_pool: np.ndarray, iters: int, batch_size: int, t: float,
                device: torch.device, rng: np.random.Generator, targets: DemographicTargets | None = None) -> None:
    """Re-estimate BN running statistics from the model's own samples (NVAE evaluate.py, set_bn)."""
    model.train()
    for _ in tqdm(range(iters), desc="readjust BN", leave=False):
        rows = label_pool[rng.integers(0, len(label_pool), size=batch_size)]
        model.sample_logits(torch.as_tensor(rows, dtype=torch.float32, device=device), t,
                            demographics=_demographics_of(targets, rows, device))
    model.eval()


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of a model (BatchNorm1d/2d and SyncBatchNorm)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batchnorm_state(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Copies of every BatchNorm layer's running mean, running variance and batch count."""
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
            for m in batchnorm_layers(model)]


@torch.no_grad()
def load_batchnorm_state(model: nn.Module, state: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """Put back BatchNorm running statistics saved by :func:`batchnorm_state`."""
    layers = batchnorm_layers(model)
    if len(layers) != len(state):
        raise ValueError(f"{len(state)} saved BatchNorm states for {len(layers)} layers")
    for m, (mean, var, count) in zip(layers, state):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(count)


@torch.no_grad()
def readjust_bn_combination(model: AutoEncoder, row: np.ndarray, iters: int, batch_size: int, t: float,
                            device: torch.device, targets: DemographicTargets | None = None) -> None:
    """The authors' set_bn for one label combination: ``iters`` train-mode sampling passes of ``batch_size`` copies."""
    # As in generate_signals.py (and NVAE's evaluate.py): train mode only, the layers' own momentum (0.05), so the
    # running statistics become an exponential average over the passes that starts from the current ones.
    rows = np.tile(np.asarray(row, dtype=np.float32), (batch_size, 1))
    y = torch.as_tensor(rows, device=device)
    model.train()
    for _ in range(iters):
        model.sample_logits(y, t, demographics=_demographics_of(targets, rows, device))
    model.eval()


def authors_temperatures(n: int, rng: np.random.Generator) -> np.ndarray:
    """One temperature per label combination, uniform over :data:`AUTHORS_TEMPERATURES` (their random.choice)."""
    return rng.choice(np.asarray(AUTHORS_TEMPERATURES), size=n)


def checkpoint_generator_name(checkpoint: str | os.PathLike) -> str:
    """Generator name (cnvae or nvae2d) of a cNVAE-ECG checkpoint, read memory-mapped (the weights stay on disk)."""
    try:
        # weights_only: a checkpoint carrying other Python objects is refused (SystemExit), never unpickled.
        ckpt = load_plain(checkpoint, map_location="cpu", mmap=True)
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
    plan = build_plan(PlanRequest.from_args(args), ckpt, class_cols)
    targets = demographic_targets(ckpt, class_cols, model.cfg.uses_demographics, checkpoint=args.checkpoint,
                                  seed=args.seed, age=args.age, sex=args.sex, data_dir=args.data_dir,
                                  dataset=args.dataset)
    before_item, bn_batch = None, None
    if args.protocol == "authors":
        given = [f for f, v in (("--temperature", args.temperature), ("--temperature_range", args.temperature_range),
                                ("--readjust_bn", args.readjust_bn)) if v is not None and v is not False]
        if given:
            raise SystemExit(f"error: --protocol authors draws its own temperatures and re-estimates BatchNorm per "
                             f"label combination; drop {', '.join(given)} (or use --protocol plain)")
        temps = authors_temperatures(len(plan), rng)
        bn_batch = args.bn_batch_size or AUTHORS_BN_BATCH
        trained_bn = batchnorm_state(model)

        def before_item(item: PlanItem, t: float) -> None:
            # The authors rebuild the model from the checkpoint for every combination: each one starts from the
            # trained statistics, not from the previous combination's.
            load_batchnorm_state(model, trained_bn)
            readjust_bn_combination(model, to_model_columns(item.labels, class_cols), args.num_iters, bn_batch, t,
                                    device, targets)
    else:
        args.temperature = 1.0 if args.temperature is None else args.temperature
        temps = np.full(len(plan), args.temperature)
        if args.temperature_range is not None:
            temps = rng.uniform(args.temperature_range[0], args.temperature_range[1], size=len(plan))
        if args.readjust_bn:
            bn_batch = args.bn_batch_size or args.batch_size
            if plan:
                pool = to_model_columns(plan_to_labels(plan, NUM_CLASSES), class_cols)
                readjust_bn(model, pool, args.num_iters, bn_batch, float(temps.mean()), device, rng, targets)
    authors = args.protocol == "authors"
    meta = {"generator": name, "representation": model.cfg.representation, "task_type": args.task_type,
            "factor": args.factor, "checkpoint": str(args.checkpoint), "protocol": args.protocol,
            "temperature": args.temperature, "temperature_range": args.temperature_range,
            "temperature_set": list(AUTHORS_TEMPERATURES) if authors else None,
            "temperature_per_combination": temps.tolist(), "seed": args.seed,
            "readjust_bn": bn_batch is not None, "bn_iters": args.num_iters if bn_batch is not None else None,
            "bn_batch_size": bn_batch, "bn_per_combination": authors, "model_classes": ckpt["classes"],
            "model_config": ckpt["config"], "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
            "bounds": ckpt["bounds"], "source_dataset": ckpt.get("dataset"), "code_version": ckpt.get("code_version"),
            "condition": model.cfg.condition, "demographics": demographics_meta(targets, ckpt)}
    if targets is None:
        def sample_fn(y, t):
            return model.sample(y, t=t)
    else:
        def sample_fn(y, t, c):
            return model.sample(y, t=t, demographics=c)
    code = write_generated(sample_fn, plan, class_cols, bounds_from_checkpoint(ckpt), Output.from_args(args, name),
                           meta, model.cfg.length, device, temps, before_item=before_item, targets=targets)
    if targets is not None:
        targets.report_widened(class_cols)
    return code


if __name__ == "__main__":
    sys.exit(main(parse_args()))
