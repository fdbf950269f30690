"""Does cNVAE-ECG learn? The `demo` model must overfit four demo ECGs at full length in a bounded number of steps.

The recipe is the one BENCHMARKS.md ("Why cNVAE-ECG learned slowly") measured: a single logistic per lead
(``num_mixture_dec=1``), Adam at 3e-3 and the KL held at its constant minimum coefficient (a KL warm-up counted in
steps, longer than the run). The authors' settings (a 3-component mixture, Adamax at 1e-3, KL warm-up over 30 %
of a short run) reached a median reconstruction correlation of 0.28-0.74 on the same kind of problem.
"""

from __future__ import annotations

import pytest
import torch

from nvae_ecg.config import get_config
from nvae_ecg.data.datasets import GeneratorDataset
from nvae_ecg.diagnose import posterior_pass, reconstruction_metrics
from nvae_ecg.model import AutoEncoder
from nvae_ecg.objectives import kl_balancer, kl_coeff, reconstruction_loss
from nvae_ecg.train import build_optimizer, kl_schedule


def _overfit(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> float:
    """Median reconstruction correlation (eval mode, decoder mean) after ``steps`` full-batch steps."""
    torch.manual_seed(seed)
    cfg = get_config("demo", length=x.shape[-1], num_classes=y.shape[1])
    model = AutoEncoder(cfg)
    opt = build_optimizer(model.parameters(), "adam", 3e-3, weight_decay=0.0)
    anneal, const = kl_schedule(steps, anneal_portion=0.3, const_portion=1e-4, anneal_steps=10 * steps)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 20)
        out = model(x, y, log_probs=False)
        recon = reconstruction_loss(model.decoder_output(out.logits), x, validate=False)
        kl, _, _ = kl_balancer(out.kl_all, kl_coeff(step, anneal, const, 1e-4))
        loss = (recon + kl).mean() + 1e-2 * model.batchnorm_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    post = posterior_pass(model, x, y)
    return reconstruction_metrics(x, post.dist.mean())["corr_median"]


@pytest.mark.slow
def test_small_model_overfits_four_demo_ecgs(prepared_ptbxl):
    torch.set_num_threads(2)
    ds = GeneratorDataset(prepared_ptbxl, "ptb-xl", split="train", classes="all")
    x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(4)])
    y = torch.stack([torch.as_tensor(ds[i][1]) for i in range(4)])
    assert x.shape == (4, 8, 5000)
    corr = _overfit(x, y, steps=500, seed=1)
    assert corr >= 0.9, f"median reconstruction correlation {corr:.3f} after 500 steps"
