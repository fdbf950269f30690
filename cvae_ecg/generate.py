"""Generate 12-lead ECGs with a trained CVAE (cvae_ecg.train) for given or realistic demographics.

Mirrors ``pulse2pulse.generate`` through the shared driver :mod:`nvae_ecg.sampler_driver`: the network is rebuilt from
the checkpoint's configuration, the plan of label combinations and counts comes from the training split
(``--task_type imbalance|addition``) or from ``--labels``/``--count``, z ~ N(0, I) (times ``--temperature``) is
decoded under the condition, and the [0, 1] output is mapped to mV with the checkpoint's bounds and expanded to 12
leads. The demographics of each ECG are drawn from the training split jointly with its label combination
(:class:`nvae_ecg.demographics.DemographicPool`, the default) or fixed with ``--age 70 --sex F`` (either alone
fixes that one and draws the other); the age z-score uses the training statistics stored in the checkpoint. The
requested age and sex of every ECG are stored beside the samples in ``conditions.npy``, written into the same
atomic folder by the shared driver (:class:`nvae_ecg.sampler_driver.DemographicTargets`); a model trained with
``--condition classes`` refuses ``--age``/``--sex`` and writes no conditions file. Output: the generated-sample
format with ``meta.json`` generator ``cvae_ecg`` (or WFDB records with ``--format wfdb``).

Example::

    python -m cvae_ecg.generate --checkpoint runs/cvae_ecg/checkpoints/latest.pt --data_dir prepared \\
        --task_type custom --labels AF --count 100 --age 70 --sex F --out_dir results/generated/cvae_ecg_af_70f
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from cvae_ecg.config import CVAEConfig
from cvae_ecg.data import build_condition
from cvae_ecg.model import CVAE
from cvae_ecg.train import CHECKPOINT_KIND, GENERATOR
from nvae_ecg.classes import resolve_classes
from nvae_ecg.demographics import add_demographic_args
from nvae_ecg.run import load_checkpoint, resolve_device
from nvae_ecg.sampler_driver import (Output, PlanRequest, add_common_args, bounds_from_checkpoint, build_plan,
                                     demographic_targets, demographics_meta, write_generated)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (the shared sampler flags of nvae_ecg.sampler_driver, --age/--sex, --temperature)."""
    p = argparse.ArgumentParser(description="Generate ECGs with a trained CVAE (Sang et al. 2022 port).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    add_demographic_args(p)
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the latent draw z ~ N(0, t^2 I)")
    p.add_argument("--generator_name", default=GENERATOR, help="generator name stored in meta.json")
    return p.parse_args(argv)


def load_generator(checkpoint: str | os.PathLike, device: torch.device):
    """Rebuild the CVAE from a checkpoint; returns (model in eval mode, checkpoint dict, class columns)."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is not a cvae_ecg checkpoint (kind {ckpt.get('kind')!r})")
    model = CVAE(CVAEConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.to(device=device, dtype=torch.float32).eval()
    return model, ckpt, resolve_classes(ckpt["classes"])


def main(args: argparse.Namespace) -> int:
    """Generate and write the ECGs and their conditions."""
    device = resolve_device(args.device)
    model, ckpt, class_cols = load_generator(args.checkpoint, device)
    condition = ckpt["condition"]
    fixed = {k: v for k, v in (("--age", args.age), ("--sex", args.sex)) if v is not None}
    if condition == "classes" and fixed:
        raise SystemExit(f"error: {args.checkpoint} was trained with --condition classes (no demographics); it "
                         f"cannot honour {', '.join(fixed)}")
    plan = build_plan(PlanRequest.from_args(args), ckpt, class_cols)
    # The shared driver draws (or fixes) each batch's demographics and writes them into the same atomic folder.
    targets = demographic_targets(ckpt, class_cols, condition in ("demographics", "both"), checkpoint=args.checkpoint,
                                  seed=args.seed, age=args.age, sex=args.sex, data_dir=args.data_dir,
                                  dataset=args.dataset)
    torch_gen = torch.Generator(device=device).manual_seed(args.seed)

    def sample_fn(y: torch.Tensor, t: float, demo: torch.Tensor | None = None) -> torch.Tensor:
        if demo is None:
            demo = torch.zeros((y.shape[0], 0), device=device)
        return model.sample(build_condition(condition, demo, y.to(device)), generator=torch_gen, temperature=t)

    meta = {"generator": args.generator_name, "task_type": args.task_type, "factor": args.factor,
            "checkpoint": str(args.checkpoint), "seed": args.seed, "temperature": args.temperature,
            "model_classes": ckpt["classes"], "model_config": ckpt["config"], "condition": condition,
            "demographics": demographics_meta(targets, ckpt),
            "epoch": ckpt.get("epoch"), "step": ckpt.get("step"), "train_seconds": ckpt.get("train_seconds"),
            "bounds": ckpt["bounds"], "source_dataset": ckpt.get("dataset"), "code_version": ckpt.get("code_version")}
    code = write_generated(sample_fn, plan, class_cols, bounds_from_checkpoint(ckpt),
                           Output.from_args(args, args.generator_name), meta, model.cfg.length, device,
                           temps=[args.temperature] * len(plan), targets=targets)
    if targets is not None:
        targets.report_widened(class_cols)
    return code


if __name__ == "__main__":
    sys.exit(main(parse_args()))
