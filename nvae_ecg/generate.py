"""Generate conditional 12-lead ECGs from a trained cNVAE-ECG checkpoint.

The model is rebuilt from the configuration stored in the checkpoint, so no model
flag is needed. How many ECGs of which label combination comes from
:func:`nvae_ecg.counts.generation_plan` on the training split of the prepared data
(``--task_type imbalance`` or ``addition``, paper Table I) or from ``--labels``/``--count``.
Samples are drawn in the [0, 1] space of the 8 independent leads, mapped back to mV
with the normalisation bounds stored in the checkpoint and expanded to 12 leads with
the lead algebra, so the limb-lead identities hold exactly. Output is the
generated-sample format of :mod:`nvae_ecg.samples` (or WFDB records with
``--format wfdb``).

Example::

    python -m nvae_ecg.generate --checkpoint runs/demo/checkpoints/latest.pt --data_dir prepared \\
        --task_type imbalance --out_dir generated/cnvae_imbalance
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nvae_ecg.classes import CLASS_ABBREVS, CLASS_CODES, NUM_CLASSES, resolve_classes
from nvae_ecg.config import ModelConfig
from nvae_ecg.counts import PlanItem, generation_plan, plan_summary, plan_to_labels
from nvae_ecg.data.bounds import Bounds
from nvae_ecg.leads import eight_to_twelve
from nvae_ecg.model import AutoEncoder
from nvae_ecg.samples import SampleWriter
from nvae_ecg.utils import load_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Generate ECGs with a trained cNVAE-ECG.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint written by nvae_ecg.train")
    p.add_argument("--data_dir", default=None,
                   help="prepared data folder; its training split gives the counts for --task_type")
    p.add_argument("--dataset", default=None, choices=("ptb-xl", "georgia", "ningbo"),
                   help="prepared dataset for the counts (default: the one the model was trained on)")
    p.add_argument("--out_dir", required=True, help="output folder (generated-sample format or WFDB records)")
    p.add_argument("--overwrite", action="store_true", help="replace --out_dir if it exists")
    p.add_argument("--task_type", default="imbalance", choices=("imbalance", "addition", "custom"),
                   help="imbalance: fill every class but SR up to the largest; addition: factor x every label "
                        "combination; custom: --labels and --count")
    p.add_argument("--factor", type=float, default=None,
                   help="multiplier of the counts (default 1 for imbalance, 2 for addition as the authors' script)")
    p.add_argument("--labels", action="append", default=None,
                   help="custom: a label combination such as 'SR,LAD' (repeatable, one per --count)")
    p.add_argument("--count", type=int, action="append", default=None, help="custom: ECGs per --labels")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (latents and mixture)")
    p.add_argument("--temperature_range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="draw one temperature per label combination uniformly from [LOW, HIGH] (as the "
                        "authors' generator does); overrides --temperature")
    p.add_argument("--readjust_bn", action="store_true",
                   help="NVAE's BN re-adjustment: re-estimate BatchNorm statistics on samples before generating")
    p.add_argument("--num_iters", type=int, default=100, help="sampling iterations for --readjust_bn")
    p.add_argument("--batch_size", type=int, default=64, help="ECGs per sampling call")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
    p.add_argument("--format", default="npy", choices=("npy", "wfdb"),
                   help="npy: the repository's generated-sample format; wfdb: Challenge-style .hea/.mat records")
    p.add_argument("--generator_name", default="cnvae", help="generator name stored in meta.json")
    return p.parse_args(argv)


def load_model(checkpoint: str | os.PathLike, device: torch.device):
    """Rebuild the model from a checkpoint; returns (model in eval mode, checkpoint dict, class columns)."""
    ckpt = load_checkpoint(checkpoint)
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


def _plan_from_args(args, ckpt, class_cols) -> list[PlanItem]:
    if args.task_type == "custom":
        if not args.labels or not args.count or len(args.labels) != len(args.count):
            raise SystemExit("error: --task_type custom needs matching --labels and --count (one --count per --labels)")
        plan = []
        for spec, n in zip(args.labels, args.count):
            cols = resolve_classes(spec)
            plan.append(PlanItem(tuple(int(c in cols) for c in range(NUM_CLASSES)), int(n)))
        return plan
    if args.data_dir is None:
        raise SystemExit(f"error: --task_type {args.task_type} needs --data_dir (the prepared data, for the counts)")
    from nvae_ecg.data.datasets import load_prepared, select_indices

    prepared = load_prepared(args.data_dir, args.dataset or ckpt.get("dataset", "ptb-xl"))
    idx = select_indices(prepared, "train", classes=class_cols)
    full = np.asarray(prepared.labels[idx])[:, class_cols]
    sub_plan = generation_plan(full, args.task_type, args.factor)
    plan = []
    for item in sub_plan:  # back to the 9 paper columns
        row = [0] * NUM_CLASSES
        for j, c in enumerate(class_cols):
            row[c] = item.labels[j]
        plan.append(PlanItem(tuple(row), item.count))
    return plan


def main(args: argparse.Namespace) -> int:
    """Generate and write the ECGs."""
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) or args.device == "cuda"
                          else "cpu")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, ckpt, class_cols = load_model(args.checkpoint, device)
    bounds = Bounds(np.asarray(ckpt["bounds"]["lower"]), np.asarray(ckpt["bounds"]["upper"]))
    plan = _plan_from_args(args, ckpt, class_cols)
    for item in plan:
        extra = [CLASS_ABBREVS[c] for c in range(NUM_CLASSES) if item.labels[c] and c not in class_cols]
        if extra:
            raise SystemExit(f"error: the model was trained on {ckpt['classes']} and cannot generate {extra}")
    labels9 = plan_to_labels(plan, NUM_CLASSES)
    n = len(labels9)
    if n == 0:
        print("nothing to generate: the plan is empty (no class below the reference count?)")
        return 0
    print(f"generating {n} ECGs: {plan_summary(plan, CLASS_ABBREVS)}")
    temps = np.full(len(plan), args.temperature)
    if args.temperature_range is not None:
        temps = rng.uniform(args.temperature_range[0], args.temperature_range[1], size=len(plan))
    if args.readjust_bn:
        readjust_bn(model, labels9[:, class_cols], args.num_iters, args.batch_size, float(temps.mean()), device, rng)

    out = Path(args.out_dir)
    length = model.cfg.length
    meta = {"generator": args.generator_name, "task_type": args.task_type, "factor": args.factor,
            "checkpoint": str(args.checkpoint), "temperature": args.temperature,
            "temperature_range": args.temperature_range, "temperature_per_combination": temps.tolist(),
            "seed": args.seed, "readjust_bn": args.readjust_bn, "model_classes": ckpt["classes"],
            "bounds": ckpt["bounds"], "source_dataset": ckpt.get("dataset"),
            "code_version": ckpt.get("code_version")}
    if args.format == "wfdb":
        return _write_wfdb(model, plan, temps, class_cols, bounds, out, args, device)
    with SampleWriter(out, n, length=length, overwrite=args.overwrite) as writer:
        bar = tqdm(total=n, desc="generating", unit="ECG")
        for item, t in zip(plan, temps):
            for start in range(0, item.count, args.batch_size):
                b = min(args.batch_size, item.count - start)
                y9 = np.tile(np.asarray(item.labels, dtype=np.uint8), (b, 1))
                y = torch.as_tensor(y9[:, class_cols], dtype=torch.float32, device=device)
                with torch.no_grad():
                    x01 = model.sample(y, t=float(t))
                x12 = eight_to_twelve(bounds.from_unit(x01.double().cpu().numpy())).astype(np.float32)
                writer.write(x12, y9)
                bar.update(b)
        bar.close()
        path = writer.close(meta)
    print(f"wrote {n} ECGs to {path}")
    return 0


def _write_wfdb(model, plan, temps, class_cols, bounds, out: Path, args, device) -> int:
    from nvae_ecg.data.synthetic import write_challenge_record

    if out.exists() and not args.overwrite:
        raise SystemExit(f"error: {out} exists; pass --overwrite to replace it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    k = 0
    try:
        total = sum(item.count for item in plan)
        with tqdm(total=total, desc="generating (wfdb)", unit="ECG") as bar:
            for item, t in zip(plan, temps):
                codes = [CLASS_CODES[c] for c in range(NUM_CLASSES) if item.labels[c]]
                for start in range(0, item.count, args.batch_size):
                    b = min(args.batch_size, item.count - start)
                    y = torch.as_tensor(np.tile(np.asarray(item.labels)[class_cols], (b, 1)),
                                        dtype=torch.float32, device=device)
                    with torch.no_grad():
                        x01 = model.sample(y, t=float(t))
                    x12 = eight_to_twelve(bounds.from_unit(x01.double().cpu().numpy()))
                    for i in range(b):
                        k += 1
                        write_challenge_record(str(tmp / f"G{k:06d}"), x12[i], 500, None, None, codes)
                    bar.update(b)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {k} WFDB records to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
