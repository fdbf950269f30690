"""Regression test of the 1-D cNVAE-ECG: fixed-seed outputs must match a reference recorded before refactors.

The reference ``tests/data/regression_1d.json`` was written from the 1-D model as
it stood before ``neural_operations``/``model`` were made dimension-generic for the
2-D STFT variant (issue 8). It holds summaries (shape, sum, sum of absolute values
and a few evenly spaced entries) of float64 tensors produced by tiny models with
fixed seeds: parameters at initialisation, a forward pass (decoder logits, every
group's KL, log q, log p, reconstruction NLL), ``sample_logits``/``sample``, the
spectral and BatchNorm regularisers, and the loss before and after one Adamax step
followed by an eval-mode forward (which reads the BN running statistics the step
updated). Anything that changes these numbers beyond ~1e-5 relative changed the
1-D model's behaviour. Regenerate the reference only on purpose, when a change of
the 1-D outputs is intended, and say so in the commit message.

Example::

    python -m pytest tests/test_regression_1d.py -q
    REGEN_REGRESSION=1 python -m pytest tests/test_regression_1d.py -q   # rewrite the reference, then skip
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from nvae_ecg import objectives as O
from nvae_ecg.config import get_config
from nvae_ecg.io import atomic_write_json
from nvae_ecg.model import AutoEncoder

REFERENCE = Path(__file__).resolve().parent / "data" / "regression_1d.json"
REGEN_ENV = "REGEN_REGRESSION"
RTOL = 1e-5
#: Entries kept per tensor, evenly spaced over the flattened tensor.
NUM_VALUES = 8

#: name -> ModelConfig overrides of the `tiny` preset; lengths not divisible by the down-sampling exercise padding.
CASES = {
    "tiny_bnelu_L90": dict(length=90),
    "tiny_bnswish_noSE_noresdist_L64": dict(length=64, arch_instance="res_bnswish", use_se=False, res_dist=False,
                                             ada_groups=False, num_mixture_dec=3),
}


def _summary(t) -> dict:
    """Shape, sum, sum of |.| and NUM_VALUES evenly spaced entries of a tensor (or a Python number)."""
    t = torch.as_tensor(t).detach().to(torch.float64).cpu()
    flat = t.reshape(-1)
    idx = torch.linspace(0, max(flat.numel() - 1, 0), min(NUM_VALUES, flat.numel())).round().long()
    return {"shape": list(t.shape), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "values": [float(v) for v in flat[idx]]}


def _ecg_batch(b: int, length: int, seed: int) -> torch.Tensor:
    """Sine-like 8-lead stand-ins on the 8-bit grid in [0, 1] (float64)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / 500.0
    phase = torch.rand(b, 8, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    rate = 1.0 + torch.rand(b, 1, 1, generator=g, dtype=torch.float64)
    x = 0.5 + 0.3 * torch.sin(2 * math.pi * rate * t + phase) + 0.1 * torch.sin(6 * math.pi * rate * t + phase)
    return torch.round(x.clamp(0, 1) * 255) / 255


def _labels(b: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(b, 9, generator=g) < 0.3).to(torch.float64)
    y[:, 0] = 1.0
    return y


def _loss(model, x, y):
    out = model(x, y)
    recon = O.reconstruction_loss(model.decoder_output(out.logits), x)
    kl, _, _ = O.kl_balancer(out.kl_all)
    return (recon + kl).mean(), out, recon


def compute_case(overrides: dict) -> dict:
    """Every recorded quantity of one configuration, as summaries."""
    res: dict = {}
    torch.manual_seed(0)
    model = AutoEncoder(get_config("tiny", **overrides)).double()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    res["init_params"] = _summary(params)
    res["num_params"] = params.numel()
    length = model.cfg.length
    x, y = _ecg_batch(3, length, seed=11), _labels(3, seed=12)

    torch.manual_seed(1)
    loss, out, recon = _loss(model, x, y)
    res["forward_logits"] = _summary(out.logits)
    res["forward_kl_all"] = _summary(torch.stack(out.kl_all, dim=1))
    res["forward_kl_diag"] = _summary(torch.stack(out.kl_diag, dim=0))
    res["forward_log_q"] = _summary(out.log_q)
    res["forward_log_p"] = _summary(out.log_p)
    res["forward_recon"] = _summary(recon)
    res["forward_loss"] = _summary(loss)

    with torch.no_grad():
        torch.manual_seed(2)
        res["sample_logits"] = _summary(model.sample_logits(y, t=0.8))
        torch.manual_seed(3)
        res["sample"] = _summary(model.sample(y, t=0.7))
        torch.manual_seed(3)
        res["decoder_mean"] = _summary(model.decoder_output(model.sample_logits(y, t=0.7)).mean())

    res["spectral_first"] = _summary(model.spectral_norm_parallel())
    res["spectral_second"] = _summary(model.spectral_norm_parallel())
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1.0 + 0.5 * torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
    res["batchnorm_loss"] = _summary(model.batchnorm_loss())

    opt = torch.optim.Adamax(model.parameters(), lr=1e-2, weight_decay=3e-4, eps=1e-3)
    torch.manual_seed(5)
    loss, _, _ = _loss(model, x, y)
    total = loss + 1e-2 * model.batchnorm_loss() + 1e-2 * model.spectral_norm_parallel()
    res["step_loss_before"] = _summary(total)
    opt.zero_grad()
    total.backward()
    res["step_grad_stem"] = _summary(model.stem.weight.grad)
    res["step_grad_class_table"] = _summary(model.class_features_table.grad)
    opt.step()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    res["step_params_after"] = _summary(params)
    torch.manual_seed(6)
    loss, _, _ = _loss(model, x, y)
    res["step_loss_after"] = _summary(loss)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(7)
        loss, out, _ = _loss(model, x, y)
    res["eval_loss"] = _summary(loss)
    res["eval_logits"] = _summary(out.logits)
    return res


def compute_all() -> dict:
    """All cases, on one intra-op thread (the reference was recorded that way)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: compute_case(ov) for name, ov in CASES.items()}
    finally:
        torch.set_num_threads(n)


def _close(got: float, want: float, scale: float) -> bool:
    return abs(got - want) <= RTOL * max(abs(want), scale) + 1e-12


def _compare(name: str, got: dict, want: dict) -> list[str]:
    errs = []
    for key, w in want.items():
        g = got.get(key)
        if g is None:
            errs.append(f"{name}/{key}: missing")
        elif not isinstance(w, dict):
            if g != w:
                errs.append(f"{name}/{key}: {g} != {w}")
        else:
            if g["shape"] != w["shape"]:
                errs.append(f"{name}/{key}: shape {g['shape']} != {w['shape']}")
                continue
            scale = w["abs_sum"] / max(1, math.prod(w["shape"]))    # mean |entry|: scale for entries near 0
            if not _close(g["abs_sum"], w["abs_sum"], 0.0):
                errs.append(f"{name}/{key}: abs_sum {g['abs_sum']!r} != {w['abs_sum']!r}")
            if not _close(g["sum"], w["sum"], w["abs_sum"]):
                errs.append(f"{name}/{key}: sum {g['sum']!r} != {w['sum']!r}")
            for i, (a, b) in enumerate(zip(g["values"], w["values"])):
                if not _close(a, b, scale):
                    errs.append(f"{name}/{key}: value {i} {a!r} != {b!r}")
    return errs


def test_1d_outputs_match_reference():
    """Fixed-seed tiny 1-D models reproduce the recorded forward, sampling, regulariser and step outputs."""
    got = compute_all()
    if os.environ.get(REGEN_ENV) == "1":
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(REFERENCE, {"about": "see tests/test_regression_1d.py; regenerate with "
                                               f"{REGEN_ENV}=1", "torch_version": torch.__version__, "cases": got})
        pytest.skip(f"{REGEN_ENV}=1: wrote {REFERENCE}")
    if not REFERENCE.is_file():
        pytest.fail(f"{REFERENCE} is missing; it is committed with the repository (regenerate only on purpose "
                    f"with {REGEN_ENV}=1)")
    want = json.loads(REFERENCE.read_text())["cases"]
    assert set(want) == set(CASES), f"cases changed: reference has {sorted(want)}, test has {sorted(CASES)}"
    errs = []
    for name in CASES:
        errs += _compare(name, got[name], want[name])
    assert not errs, "1-D outputs differ from the reference:\n" + "\n".join(errs[:40])


def test_comparison_detects_a_change():
    """The comparison itself is sensitive: a perturbation of 1e-4 relative in one entry is reported."""
    want = {"a": _summary(torch.tensor([1.0, -2.0, 3.0])), "n": 3}
    same = {"a": _summary(torch.tensor([1.0, -2.0, 3.0 * (1 + 1e-7)])), "n": 3}
    moved = {"a": _summary(torch.tensor([1.0, -2.0, 3.0 * (1 + 1e-4)])), "n": 3}
    assert _compare("t", same, want) == []
    assert _compare("t", moved, want)
    assert _compare("t", {"a": want["a"], "n": 4}, want)
