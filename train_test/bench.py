"""Throughput workload of the downstream classifier for the benchmark harness of ``nvae_ecg.bench``.

One step is the XResNet1d101 BCE step of ``train_test.classifier`` (AdamW) on 12-lead input; there is no
sampler. Declared under the entry-point group ``cnvae_ecg.bench`` (pyproject.toml), so ``python -m
nvae_ecg.bench --model xresnet1d101`` finds it once the repository is installed; this module runs the same
harness on its own. fastai is imported only when the workload is built.

Example::

    python -m train_test.bench --model xresnet1d101 --config paper --batch_size 8 --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import sys

import torch

from nvae_ecg import bench


def xresnet_workload(args, device: torch.device, dtype: torch.dtype, mode: str) -> bench.Workload:
    """XResNet1d101 BCE training step of train_test.classifier (AdamW) on 12-lead input; no sampler."""
    from train_test.xresnet1d import build_model, count_parameters

    fast = mode == "fast"
    arch = args.config if args.config != "paper" else "xresnet1d101"
    model = build_model(arch, n_in=12, n_out=9).to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    b = args.batch_size
    length = args.length or 5000
    x = torch.randn(b, 12, length, device=device, dtype=dtype)
    y = bench.labels(b, 9, device, dtype)
    amp = bench.autocast_for(device, fast)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def forward() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with amp:
            logits = model(x)
        return loss_fn(logits.to(dtype), y)

    return bench.Workload(b, count_parameters(model), forward, lambda loss: loss.backward(), opt.step, None,
                          [f"arch {arch}"])


#: Entry point ``cnvae_ecg.bench: train_test`` (pyproject.toml).
BENCHMARKS = (bench.Benchmark("xresnet1d101", xresnet_workload),)


def parse_args(argv=None) -> argparse.Namespace:
    """The harness's flags for this workload."""
    return bench.parse_args(argv, BENCHMARKS)


def main(args: argparse.Namespace) -> dict:
    """Run the harness on this workload (see ``nvae_ecg.bench.main``)."""
    return bench.main(args, BENCHMARKS)


if __name__ == "__main__":
    from train_test.bench import BENCHMARKS as _OWN  # under the module's own name, for the spawned modes

    sys.exit(bench.cli(_OWN))
