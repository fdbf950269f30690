"""Diagnose an SSSD-ECG checkpoint: how well it denoises at each noise level, and how much of that it owes to the
labels (the same noisy validation ECGs scored with their true labels, with the labels of other ECGs of the batch,
and with no label at all). A denoiser that uses its labels only at low noise draws fine morphology per class but
decides the coarse structure (heart rate, beat placement) without them: that is the signature of the demo model,
see "What it learns" in ``sssd_ecg/README.md``.

Example::

    python -m sssd_ecg.diagnose --checkpoint sssd_ecg/demo/sssd_ecg_demo.pt --data_dir prepared --n 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nvae_ecg.classes import CLASS_ABBREVS
from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.io import atomic_write_json
from nvae_ecg.run import resolve_device
from sssd_ecg.data import SSSDDataset
from sssd_ecg.diffusion import Diffusion
from sssd_ecg.generate import load_generator

DEFAULT_STEPS = (0, 20, 60, 100, 140, 180, 199)


@torch.no_grad()
def label_reliance(model: torch.nn.Module, diffusion: Diffusion, x: torch.Tensor, y: torch.Tensor,
                   steps: Sequence[int], seed: int = 0) -> list[dict]:
    """Epsilon MSE per diffusion step t with the true, shuffled (a derangement of the batch) and all-zero labels."""
    n = x.shape[0]
    if n < 2:
        raise ValueError("label_reliance needs at least 2 ECGs (the shuffled labels come from the others)")
    g = torch.Generator().manual_seed(seed)
    perm = (torch.arange(n) + 1 + torch.randint(n - 1, (1,), generator=g)) % n  # a cyclic shift: nobody keeps its own
    labels = {"true": y, "shuffled": y[perm], "zero": torch.zeros_like(y)}
    rows = []
    for t in steps:
        if not 0 <= int(t) < diffusion.num_steps:
            raise ValueError(f"step {t} outside [0, {diffusion.num_steps - 1}]")
        tt = torch.full((n,), int(t), device=x.device, dtype=torch.long)
        noise = torch.randn(x.shape, generator=g).to(x)
        x_t = diffusion.q_sample(x, tt, noise)
        mse = {k: float(((model(x_t, v, tt) - noise) ** 2).mean()) for k, v in labels.items()}
        rows.append({"t": int(t), **{f"mse_{k}": v for k, v in mse.items()},
                     "shuffled_over_true": mse["shuffled"] / max(mse["true"], 1e-30)})
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="SSSD-ECG checkpoint (sssd_ecg.train)")
    p.add_argument("--data_dir", required=True, help="prepared-data folder (nvae_ecg.data.prepare)")
    p.add_argument("--dataset", default=None, help="dataset in --data_dir (default: the checkpoint's)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="split the ECGs come from")
    p.add_argument("--n", type=int, default=64, help="ECGs scored (chosen by --seed)")
    p.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)),
                   help="comma-separated diffusion steps t (0: least noise, T-1: pure noise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the ECG choice, the noise and the shuffle")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Load the checkpoint and a batch of ECGs, score them, print a table."""
    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"error: checkpoint {args.checkpoint} does not exist")
    if args.n < 2:
        raise SystemExit("error: --n must be at least 2")
    device = resolve_device(args.device)
    model, diffusion, ckpt, cols = load_generator(args.checkpoint, device)
    dataset = args.dataset or ckpt.get("dataset") or "ptb-xl"
    try:
        base = GeneratorDataset(args.data_dir, dataset, split=args.split,
                                classes=",".join(CLASS_ABBREVS[i] for i in cols))
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from e
    if len(base) < 2:
        raise SystemExit(f"error: fewer than 2 labelled ECGs in {Path(args.data_dir) / dataset} split {args.split!r}")
    ds = SSSDDataset(base, model.cfg.length, model.cfg.amplitude)
    rows = np.sort(np.random.default_rng(args.seed).choice(len(ds), size=min(args.n, len(ds)), replace=False))
    x, y = (torch.stack(v).to(device) for v in zip(*(ds[int(i)] for i in rows)))
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    try:
        result = label_reliance(model, diffusion, x, y.float(), steps, args.seed)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    print(f"{args.checkpoint} (step {ckpt.get('step')}): {len(rows)} ECGs of {dataset}/{args.split}; "
          "epsilon MSE by diffusion step")
    print(f"{'t':>4} {'true':>9} {'shuffled':>9} {'zero':>9} {'shuffled/true':>14}")
    for r in result:
        print(f"{r['t']:>4} {r['mse_true']:>9.5f} {r['mse_shuffled']:>9.5f} {r['mse_zero']:>9.5f} "
              f"{r['shuffled_over_true']:>14.3f}")
    if args.json:
        atomic_write_json(args.json, {"checkpoint": str(args.checkpoint), "step": ckpt.get("step"),
                                      "n": len(rows), "rows": result})
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
