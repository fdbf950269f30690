"""Tests of the one switch of the CPU kernels (nvae_ecg.kernels): off, the model runs the plain formulations.

With the kernels on, a training step of the tiny cNVAE-ECG must go through every fast path (CPU ELU, fused
BatchNorm + ELU, GEMM convolution, fused mixture likelihood); with them off (``kernels.disabled()``) none of them
may run (they are replaced by functions that raise) and the step must give the same loss, gradients and BatchNorm
running statistics within float32 rounding. ``CNVAE_KERNELS=0`` must turn the switch off at import, and the
allocator setting must not touch glibc while it is off.

Example::

    python -m pytest tests/test_kernels.py -q
"""

from __future__ import annotations

import copy
import ctypes
import os
import subprocess
import sys

import pytest
import torch

from nvae_ecg import kernels
from nvae_ecg.config import get_config
from nvae_ecg.model import AutoEncoder
from nvae_ecg.objectives import compute_loss, kl_balancer_coeff

#: The entry points through which the model reaches the fast paths.
FAST_PATHS = ("elu", "bn_act_train", "gemm_conv1d", "mixture_log_prob")


@pytest.fixture(autouse=True)
def _kernels_on():
    previous = kernels.set_enabled(True)
    yield
    kernels.set_enabled(previous)


def test_switch_api_and_environment_variable():
    assert kernels.enabled()
    with kernels.disabled():
        assert not kernels.enabled()
        with kernels.disabled():
            assert not kernels.enabled()
        assert not kernels.enabled()
    assert kernels.enabled()
    assert kernels.set_enabled(False) is True and kernels.set_enabled(True) is False
    code = "import nvae_ecg.kernels as k; print(k.enabled())"
    for value, expected in (("0", "False"), ("off", "False"), ("1", "True"), (None, "True")):
        env = {k: v for k, v in os.environ.items() if k != "CNVAE_KERNELS"}
        if value is not None:
            env["CNVAE_KERNELS"] = value
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert out.stdout.strip() == expected, value


def _train_step(model: AutoEncoder, x: torch.Tensor, y: torch.Tensor):
    """One training step's loss, parameter gradients and buffers of a copy of ``model`` (fixed latent noise)."""
    model = copy.deepcopy(model).train()
    alpha_i = kl_balancer_coeff(model.cfg.num_latent_scales, model.groups_per_scale)
    torch.manual_seed(5)
    loss, _, _ = compute_loss(model, x, y, 0.5, alpha_i, 1e-2, kl_balance=True, spectral_regularization=False)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {k: b.clone() for k, b in model.named_buffers()}


def test_switched_off_model_runs_no_fast_path_and_computes_the_same_step(monkeypatch):
    torch.manual_seed(0)
    model = AutoEncoder(get_config("tiny", length=96))
    g = torch.Generator().manual_seed(1)
    x = torch.round(torch.rand(2, 8, 96, generator=g) * 255) / 255
    y = torch.eye(9)[:2]

    calls = dict.fromkeys(FAST_PATHS, 0)

    def counting(name):
        real = getattr(kernels, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as mp:
        for name in FAST_PATHS:
            mp.setattr(kernels, name, counting(name))
        fast = _train_step(model, x, y)
    # On, every fast path runs (otherwise the comparison below would compare the plain model with itself).
    assert all(n > 0 for n in calls.values()), calls

    def fail(name):
        def raiser(*args, **kwargs):
            raise AssertionError(f"kernels.{name} ran with the kernels switched off")

        return raiser

    with monkeypatch.context() as mp:
        for name in FAST_PATHS:
            mp.setattr(kernels, name, fail(name))
        with kernels.disabled():
            plain = _train_step(model, x, y)
    assert kernels.enabled()

    loss, grads, buffers = fast
    p_loss, p_grads, p_buffers = plain
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, p_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == p_grads.keys() and len(grads) > 0
    for k in grads:
        scale = float(p_grads[k].abs().max())
        # A floor of 1e-6: near-zero bias gradients (e.g. 6e-10) differ by float32 rounding (1e-7) with 2 threads.
        torch.testing.assert_close(grads[k], p_grads[k], rtol=1e-3, atol=1e-4 * scale + 1e-6,
                                   msg=lambda m: f"{k}: {m}")
    assert buffers.keys() == p_buffers.keys()
    for k in buffers:
        if buffers[k].dtype.is_floating_point:
            torch.testing.assert_close(buffers[k], p_buffers[k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(buffers[k], p_buffers[k]), k


def test_switched_off_gemm_choice_and_allocator(monkeypatch):
    x, w = torch.randn(2, 3, 10), torch.randn(4, 3, 1)
    assert kernels.use_gemm_conv(x, w)

    def no_libc(*args, **kwargs):
        raise AssertionError("glibc was loaded with the kernels switched off")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    with kernels.disabled():
        assert not kernels.use_gemm_conv(x, w)
        assert kernels.keep_freed_cpu_memory() is False
