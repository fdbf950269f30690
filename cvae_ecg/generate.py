"""Generate 12-lead ECGs with a trained CVAE (cvae_ecg.train) for given or realistic demographics.

Mirrors ``pulse2pulse.generate`` through the shared driver :mod:`nvae_ecg.generation`: the network is rebuilt from
the checkpoint's configuration, the plan of label combinations and counts comes from the training split
(``--task_type imbalance|addition``) or from ``--labels``/``--count``, z ~ N(0, I) (times ``--temperature``) is
decoded under the condition, and the [0, 1] output is mapped to mV with the checkpoint's bounds and expanded to 12
leads. The demographics of each ECG are drawn from the training split jointly with its label combination
(:class:`nvae_ecg.demographics.DemographicPool`, the default) or fixed with ``--age 70 --sex F`` (either alone
fixes that one and draws the other); the age z-score uses the training statistics stored in the checkpoint. The
requested age and sex of every ECG are stored beside the samples in ``conditions.npy``
(:func:`nvae_ecg.samples.write_conditions`); a model trained with ``--condition classes`` refuses ``--age``/``--sex``
and writes no conditions file. Output: the generated-sample format with ``meta.json`` generator ``cvae_ecg`` (or
WFDB records with ``--format wfdb``).

Example::

    python -m cvae_ecg.generate --checkpoint runs/cvae_ecg/checkpoints/latest.pt --data_dir prepared \\
        --task_type custom --labels AF --count 100 --age 70 --sex F --out_dir results/generated/cvae_ecg_af_70f
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from cvae_ecg.config import CVAEConfig
from cvae_ecg.data import build_condition
from cvae_ecg.model import CVAE
from cvae_ecg.train import CHECKPOINT_KIND, GENERATOR
from nvae_ecg.classes import CLASS_ABBREVS, resolve_classes
from nvae_ecg.demographics import DemographicPool, DemographicStats, add_demographic_args, condition_matrix
from nvae_ecg.generation import add_common_args, bounds_from_checkpoint, build_plan, write_generated
from nvae_ecg.run import load_checkpoint, resolve_device
from nvae_ecg.samples import make_conditions, write_conditions


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (the shared sampler flags of nvae_ecg.generation, --age/--sex, --temperature)."""
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


class ConditionedSampler:
    """The driver's ``sample_fn``: draws (or fixes) demographics per batch, records them in order, decodes."""

    def __init__(self, model: CVAE, condition: str, stats: DemographicStats, pool: DemographicPool | None,
                 age: float | None, sex: str | None, seed: int, device: torch.device):
        self.model, self.condition, self.stats, self.pool = model, condition, stats, pool
        self.age, self.sex, self.device = age, sex, device
        self.rng = np.random.default_rng(seed)
        self.torch_gen = torch.Generator(device=device).manual_seed(seed)
        self.ages: list[np.ndarray] = []
        self.sexes: list[np.ndarray] = []
        self.widened: dict[tuple, str] = {}  # label combinations whose draw had to leave the exact combination

    @property
    def uses_demographics(self) -> bool:
        return self.condition in ("demographics", "both")

    def __call__(self, y: torch.Tensor, t: float) -> torch.Tensor:
        n = y.shape[0]
        if self.uses_demographics:
            if self.pool is None:  # both attributes fixed
                ages, sexes = np.full(n, float(self.age)), np.full(n, self.sex, dtype="<U1")
            else:
                row = y[0].detach().cpu().numpy().round().astype(np.uint8)  # one combination per batch (driver)
                ages, sexes = self.pool.draw(row, n, self.rng, age=self.age, sex=self.sex)
                if self.pool.last_scope != "exact":
                    self.widened[tuple(row.tolist())] = self.pool.last_scope
            self.ages.append(ages)
            self.sexes.append(sexes)
            demo = torch.from_numpy(condition_matrix(ages, sexes, self.stats)).to(self.device)
        else:
            demo = torch.zeros((n, 0), device=self.device)
        c = build_condition(self.condition, demo, y.to(self.device))
        return self.model.sample(c, generator=self.torch_gen, temperature=t)

    def conditions(self) -> np.ndarray:
        """The requested demographics of every ECG drawn so far, in order (CONDITIONS_DTYPE)."""
        return make_conditions(np.concatenate(self.ages), np.concatenate(self.sexes))


def main(args: argparse.Namespace) -> int:
    """Generate and write the ECGs and their conditions."""
    device = resolve_device(args.device)
    model, ckpt, class_cols = load_generator(args.checkpoint, device)
    condition = ckpt["condition"]
    fixed = {k: v for k, v in (("--age", args.age), ("--sex", args.sex)) if v is not None}
    if condition == "classes" and fixed:
        raise SystemExit(f"error: {args.checkpoint} was trained with --condition classes (no demographics); it "
                         f"cannot honour {', '.join(fixed)}")
    plan = build_plan(args, ckpt, class_cols)
    stats = DemographicStats.from_dict(ckpt["demographics"])
    pool = None
    uses_demo = condition in ("demographics", "both")
    if uses_demo and (args.age is None or args.sex is None):
        if args.data_dir is None:
            raise SystemExit("error: drawing demographics needs --data_dir (the training split's ages and sexes); "
                             "or give both --age and --sex")
        pool = DemographicPool.from_prepared(args.data_dir, args.dataset or ckpt.get("dataset", "ptb-xl"), class_cols)
    sampler = ConditionedSampler(model, condition, stats, pool, args.age, args.sex, args.seed, device)
    mode = "none" if not uses_demo else ("fixed" if pool is None else
                                          "drawn from the training split with the labels" + (
                                              f" (fixed {', '.join(fixed)})" if fixed else ""))
    meta = {"generator": args.generator_name, "task_type": args.task_type, "factor": args.factor,
            "checkpoint": str(args.checkpoint), "seed": args.seed, "temperature": args.temperature,
            "model_classes": ckpt["classes"], "model_config": ckpt["config"], "condition": condition,
            "demographics": {"mode": mode, "age": args.age, "sex": args.sex, "stats": ckpt["demographics"],
                             "file": "conditions.npy" if uses_demo else None},
            "epoch": ckpt.get("epoch"), "step": ckpt.get("step"), "train_seconds": ckpt.get("train_seconds"),
            "bounds": ckpt["bounds"], "source_dataset": ckpt.get("dataset"), "code_version": ckpt.get("code_version")}
    code = write_generated(sampler, plan, class_cols, bounds_from_checkpoint(ckpt), args, meta, model.cfg.length,
                           device, temps=[args.temperature] * len(plan))
    if code == 0 and uses_demo and sampler.ages:
        path = write_conditions(args.out_dir, sampler.conditions())
        print(f"wrote the requested age/sex of {sum(len(a) for a in sampler.ages)} ECGs to {path}")
    for row, scope in sampler.widened.items():
        names = "+".join(CLASS_ABBREVS[c] for c, v in zip(class_cols, row) if v) or "none"
        print(f"note: no training record with a known age and sex carries exactly {names}; its demographics were "
              f"drawn from the {scope} scope")
    return code


if __name__ == "__main__":
    sys.exit(main(parse_args()))
